"""File triggers in polling mode (``poll: true``, for network filesystems where inotify sees no
other host's writes): the real FileWatcher with watchdog's PollingObserver on a real folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fnserve.messages import FileEvent, FolderWatch
from site_manager.file_watch import FileWatcher
from site_manager.inbox import Inbox


def _collect(inbox: Inbox[FileEvent], want: int, timeout: float) -> list[FileEvent]:
    got: list[FileEvent] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += inbox.drain()
        time.sleep(0.05)  # the test's own wait on the watcher's thread
    time.sleep(1.0)  # and a moment more: nothing further may arrive
    return got + inbox.drain()


def test_polling_watch_fires_once_per_file_with_its_final_size(tmp_path: Path) -> None:
    folder = tmp_path / "detector"
    folder.mkdir()
    inbox: Inbox[FileEvent] = Inbox()
    watcher = FileWatcher([str(tmp_path)], inbox)
    try:
        refused = watcher.update([FolderWatch(trigger_id="t", folder=str(folder), pattern="*.h5", settle=0.6, poll=True)])
        assert refused == []
        (folder / "a.h5").write_bytes(b"x" * 100)
        (folder / "skip.txt").write_bytes(b"not matched")
        with open(folder / "slow.h5", "wb") as f:  # written in chunks, slower than the poll interval
            for _ in range(4):
                f.write(b"y" * 1000)
                f.flush()
                os.fsync(f.fileno())
                time.sleep(0.3)
        events = _collect(inbox, 2, 20)
    finally:
        watcher.stop()
    by_path = {Path(e.path).name: e for e in events}
    assert sorted(Path(e.path).name for e in events) == ["a.h5", "slow.h5"], events  # each once
    assert by_path["a.h5"].size == 100
    assert by_path["slow.h5"].size == 4000  # taken once settled, not half-written
    assert all(e.trigger_id == "t" for e in events)
