"""File triggers at the endpoint: watch folders, and report each file once it has settled.

The service sends the endpoint's file triggers (:class:`fnserve.messages.FolderWatch`); this
module watches their folders with watchdog (inotify, or stat polling for network filesystems
where inotify sees nothing) and hands settled files to the loop as
:class:`fnserve.messages.FileEvent`.

When is a file taken (:class:`Settler`, pure)? It becomes a candidate when it is written and
closed (inotify ``IN_CLOSE_WRITE``), moved into the folder, seen by a poll, or found by the
scan when a watch starts (files changed since the trigger was made: what arrived while this
site manager was down). It is taken once nothing about it (size, mtime) changed for ``settle``
seconds, so a file still being written, or reopened and appended to, is not taken half done.
Each version of a file (path, size, mtime) is reported once per process; the service's event
key makes a version seen again after a restart the same event.

Only folders under the admin's ``triggers.allowed_folders`` are watched
(:func:`folder_allowed`); others are refused and logged.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from dataclasses import dataclass

from watchdog.events import FileSystemEventHandler

from fnserve.messages import FileEvent, FolderWatch, file_event_key
from site_manager.inbox import Inbox

logger = logging.getLogger(__name__)

# How often pending candidates are looked at again (seconds; bounded below by latency needs).
SETTLE_TICK = 0.02
POLL_INTERVAL = 0.5  # stat polling, for watches with poll: true


def folder_allowed(folder: str, allowed: list[str]) -> bool:
    """Whether ``folder`` (resolved: symlinks and ``..`` followed) is one of ``allowed`` or
    inside one. Both sides are resolved the same way, so a link out of an allowed folder is
    judged by where it leads."""
    target = os.path.realpath(folder)
    for root in allowed:
        base = os.path.realpath(root)
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def matches(watch: FolderWatch, path: str) -> bool:
    """Whether ``path`` is a file this watch takes: under its folder (directly, unless
    recursive) and its name matching the pattern; hidden files (``.name``, often partial
    downloads) are left out."""
    rel = os.path.relpath(path, watch.folder)
    if rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
        return False
    if not watch.recursive and os.sep in rel:
        return False
    name = os.path.basename(path)
    return not name.startswith(".") and fnmatch.fnmatchcase(name, watch.pattern)


@dataclass
class _Seen:
    size: int
    mtime: float
    changed_at: float


class Settler:
    """Candidates per (trigger, path) and when each last changed; :meth:`due` gives the ones
    unchanged for their settle time. Pure: times are given, nothing is read from disk."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], _Seen] = {}
        self.reported: dict[tuple[str, str], tuple[int, float]] = {}

    def observe(self, trigger_id: str, path: str, size: int, mtime: float, now: float) -> None:
        """The file was seen with ``size`` and ``mtime`` at ``now`` (a new candidate, or a
        change that restarts its settle time)."""
        key = (trigger_id, path)
        if self.reported.get(key) == (size, mtime):
            return  # this version was already taken
        seen = self.pending.get(key)
        if seen is None or (seen.size, seen.mtime) != (size, mtime):
            self.pending[key] = _Seen(size, mtime, now)

    def touch(self, trigger_id: str, path: str, now: float) -> None:
        """A write is going on (no stat yet): a pending candidate waits a full settle time more."""
        seen = self.pending.get((trigger_id, path))
        if seen is not None:
            seen.changed_at = now

    def forget(self, trigger_id: str, path: str) -> None:
        self.pending.pop((trigger_id, path), None)

    def drop_trigger(self, trigger_id: str) -> None:
        for key in [k for k in self.pending if k[0] == trigger_id]:
            del self.pending[key]
        for key in [k for k in self.reported if k[0] == trigger_id]:
            del self.reported[key]

    def due(self, now: float, settle: dict[str, float]) -> list[tuple[str, str, int, float]]:
        """Candidates unchanged for their trigger's settle time: ``(trigger, path, size,
        mtime)``, each taken once (marked reported)."""
        out = []
        for (trigger_id, path), seen in list(self.pending.items()):
            if now - seen.changed_at >= settle.get(trigger_id, 0.0):
                del self.pending[(trigger_id, path)]
                self.reported[(trigger_id, path)] = (seen.size, seen.mtime)
                out.append((trigger_id, path, seen.size, seen.mtime))
        return out


class FileWatcher:
    """Watches the folders of the current :class:`FolderWatch` list (see :meth:`update`) and
    puts settled files on ``inbox`` as :class:`FileEvent` (a thread of its own)."""

    def __init__(self, allowed_folders: list[str], inbox: Inbox[FileEvent]) -> None:
        self.allowed = list(allowed_folders)
        self.inbox = inbox
        self.settler = Settler()
        self.watches: dict[str, FolderWatch] = {}
        self._observers: dict[str, object] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name="file-triggers", daemon=True)
        self._thread.start()

    # -- the watch list (loop thread) ------------------------------------------------------

    def update(self, watches: list[FolderWatch]) -> list[str]:
        """Replace the watch list; returns why each refused watch was refused."""
        refused = []
        wanted: dict[str, FolderWatch] = {}
        for w in watches:
            if not folder_allowed(w.folder, self.allowed):
                refused.append(f"trigger {w.trigger_id}: {w.folder} is not under this endpoint's triggers.allowed_folders")
                continue
            if not os.path.isdir(w.folder):
                refused.append(f"trigger {w.trigger_id}: {w.folder} is not a folder here")
                continue
            wanted[w.trigger_id] = w
        for r in refused:
            logger.warning("file trigger refused: %s", r)
        with self._lock:
            for trigger_id in [t for t in self.watches if t not in wanted or wanted[t] != self.watches[t]]:
                self._unwatch(trigger_id)
            for trigger_id, w in wanted.items():
                if trigger_id not in self.watches:
                    self._watch(w)
        return refused

    def _watch(self, w: FolderWatch) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=POLL_INTERVAL) if w.poll else Observer()
        observer.schedule(_Handler(self, w), w.folder, recursive=w.recursive)
        observer.daemon = True
        observer.start()
        self.watches[w.trigger_id] = w
        self._observers[w.trigger_id] = observer
        logger.info("watching %s for trigger %s (%s, pattern %s, settle %g s)", w.folder, w.trigger_id,
                    "polling" if w.poll else "inotify", w.pattern, w.settle)
        self._scan(w)  # after the observer started: a file arriving now is seen by one or both

    def _unwatch(self, trigger_id: str) -> None:
        observer = self._observers.pop(trigger_id, None)
        self.watches.pop(trigger_id, None)
        self.settler.drop_trigger(trigger_id)
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            logger.info("stopped watching for trigger %s", trigger_id)

    def _scan(self, w: FolderWatch) -> None:
        """Files already there that changed since the trigger was made: they arrived while no
        one watched (this site manager was down, or the trigger is new)."""
        now = time.time()
        walker = os.walk(w.folder) if w.recursive else [(w.folder, [], os.listdir(w.folder))]
        for root, _, names in walker:
            for name in names:
                path = os.path.join(root, name)
                if matches(w, path):
                    self._stat_and_observe(w, path, now, scanned=True)

    # -- events (watchdog's threads) -------------------------------------------------------

    def _stat_and_observe(self, w: FolderWatch, path: str, now: float, scanned: bool = False) -> None:
        try:
            st = os.stat(path)
        except OSError:
            self.settler.forget(w.trigger_id, path)
            return
        if not os.path.isfile(path) or st.st_mtime < w.since:
            return
        # A file found by a scan has been still since its mtime: it may be due at once.
        changed = min(now, st.st_mtime) if scanned else now
        self.settler.observe(w.trigger_id, path, st.st_size, st.st_mtime, changed)
        self._kick.set()

    def on_event(self, w: FolderWatch, kind: str, path: str) -> None:
        with self._lock:
            if self.watches.get(w.trigger_id) is not w or not matches(w, path):
                return
            now = time.time()
            if kind == "write":
                self.settler.touch(w.trigger_id, path, now)
            elif kind == "gone":
                self.settler.forget(w.trigger_id, path)
            else:  # closed after writing, moved in, or seen changed by a poll
                self._stat_and_observe(w, path, now)

    # -- settling (own thread) ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(SETTLE_TICK if self.settler.pending else 1.0)
            self._kick.clear()
            with self._lock:
                events = self._take_due()
            for e in events:
                self.inbox.put(e)

    def _take_due(self) -> list[FileEvent]:
        now = time.time()
        settle = {t: w.settle for t, w in self.watches.items()}
        out = []
        for trigger_id, path, size, mtime in self.settler.due(now, settle):
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone before it settled: nothing to report
            if (st.st_size, st.st_mtime) != (size, mtime):  # changed at the last moment: wait again
                self.settler.reported.pop((trigger_id, path), None)
                self.settler.observe(trigger_id, path, st.st_size, st.st_mtime, now)
                continue
            out.append(FileEvent(trigger_id=trigger_id, path=path, size=size, mtime=mtime,
                                 key=file_event_key(path, size, mtime)))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        with self._lock:
            for trigger_id in list(self.watches):
                self._unwatch(trigger_id)
        self._thread.join(5)


class _Handler(FileSystemEventHandler):
    """watchdog's callback object for one watch: turns its events into ours."""

    def __init__(self, watcher: FileWatcher, watch: FolderWatch) -> None:
        super().__init__()
        self.watcher = watcher
        self.watch = watch

    def dispatch(self, event: object) -> None:
        if getattr(event, "is_directory", False):
            return
        kind = getattr(event, "event_type", "")
        src = os.fsdecode(getattr(event, "src_path", ""))
        if kind == "moved":
            self.watcher.on_event(self.watch, "gone", src)
            self.watcher.on_event(self.watch, "arrived", os.fsdecode(getattr(event, "dest_path", "")))
        elif kind == "deleted":
            self.watcher.on_event(self.watch, "gone", src)
        elif kind == "closed":
            self.watcher.on_event(self.watch, "arrived", src)
        elif kind in ("created", "modified"):
            # inotify: the writer is still at it (it is taken when it closes); polling has no
            # close: a changed stat is the news.
            self.watcher.on_event(self.watch, "arrived" if self.watch.poll else "write", src)


__all__ = ["FileWatcher", "Settler", "folder_allowed", "matches"]
