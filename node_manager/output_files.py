"""Ships a running task's output files to the object store as they are closed.

Started only when the function asks for its folder (``fnserve.output_dir()``): a task that writes
no files costs nothing. A watchdog observer (inotify on Linux) notes each file closed after
writing; one uploader thread sends it (in chunks, read from the file) and reports it as a live
output ``{"file", "object_id", "size", "sha256"}``. When the function returns, the files not
shipped as they now stand are sent, then the folder is removed.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fnserve import output_files, outputs
from fnserve.messages import TaskMessage

logger = logging.getLogger(__name__)


class Shipper:
    def __init__(self, task: TaskMessage) -> None:
        self.task = task
        self.folder: Path | None = None
        self.shipped: dict[str, tuple[int, int]] = {}
        self.failures: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._lock = threading.Lock()

    def folder_path(self) -> Path:
        with self._lock:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix=f"fnserve-out-{self.task.task_id[:8]}-"))
                self._thread = threading.Thread(target=self._upload_loop, name="fnserve-output-files", daemon=True)
                self._thread.start()
                self._watch(self.folder)
            return self.folder

    def _watch(self, folder: Path) -> None:
        try:
            from watchdog.events import FileClosedEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # no live shipping: everything goes when the function returns
            return
        q = self._queue

        class Closed(FileSystemEventHandler):
            def on_closed(self, event: FileClosedEvent) -> None:
                if not event.is_directory:
                    q.put(str(event.src_path))

        self._observer = Observer()
        self._observer.schedule(Closed(), str(folder), recursive=True)
        self._observer.start()

    def _upload_loop(self) -> None:
        while (path := self._queue.get()) is not None:
            self._ship(Path(path))

    def _signature(self, path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def _ship(self, path: Path) -> None:
        assert self.folder is not None
        rel = path.relative_to(self.folder).as_posix()
        sig = self._signature(path)
        if sig is None or self.shipped.get(rel) == sig:
            return
        from fnserve.object_transfer import ObjectStoreClient

        try:
            ref = ObjectStoreClient(self.task.data_url or "", self.task.data_token or "").put_file(path, name=rel)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be stored must not fail the task
            self.failures.append(f"{rel}: {exc}")
            logger.warning("output file %s of task %s not stored: %s", rel, self.task.task_id, exc)
            return
        self.shipped[rel] = sig
        outputs.report(file=rel, object_id=ref.object_id, size=ref.size, sha256=ref.sha256)

    def finish(self) -> None:
        if self.folder is None:
            return
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        listing = {}
        for root, _, names in os.walk(self.folder):
            for name in names:
                p = Path(root, name)
                sig = self._signature(p)
                if sig is not None:
                    listing[p.relative_to(self.folder).as_posix()] = sig
        for rel in output_files.files_to_ship(listing, self.shipped):
            self._ship(self.folder / rel)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def shipping(task: TaskMessage) -> Iterator[Shipper | None]:
    """While the block runs, ``fnserve.output_dir()`` is this task's folder (with an object store)."""
    if not (task.data_url and task.data_token):
        yield None
        return
    shipper = Shipper(task)
    output_files._provider = shipper.folder_path
    try:
        yield shipper
    finally:
        output_files._provider = None
        shipper.finish()
