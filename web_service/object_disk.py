"""The object store's local-disk backend: objects as files under ``root`` (0700 folders, 0600
files), and a pool of deleted objects' files that new uploads overwrite.

**Recycling.** Writing an upload into a new file fills new page cache, and on a VM whose host
takes freed guest memory back (free page reporting) every new page is paid again (perf: a third
of the web worker's time in a round trip went to ``copy_folio_from_iter_atomic``; a 100 MiB
write cost 0.2-0.36 CPU s into a new file against 0.02 s over a cached one). Objects are one-shot
(a task's arguments, its result), so the service deletes as fast as it writes: a deleted
object's file is moved into ``recycle/`` (up to ``recycle_bytes`` in all) and the next upload
takes it over and overwrites its cached pages, the way databases recycle log segments. At most
the pool's bytes stay on disk besides the live objects.

A recycled file once held another object (maybe another user's), so no old byte may reach a
reader: uploads are sequential and reads stop at ``received`` (bytes the upload wrote), the file
is cut to the object's size when its last chunk is in, and a file is recycled only while nobody
has it open. Readers and writers hold a shared ``flock`` while they use a file and check that
its path still names it; deleting takes the exclusive lock without waiting and deletes the file
outright when it is busy. Creating an object's file from the pool is a rename to a private name
(one process wins it) and a link to the object's path (fails if the path exists).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from web_service.native_threads import in_native_thread
from web_service.object_rules import pick_recycled, recycle_room

_COPY = 1024 * 1024
RECYCLE_DIR = "recycle"


def _write_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


class LocalDiskBackend:
    """Objects as files under ``root``; ``recycle_bytes``: the most bytes of deleted objects'
    files kept for new uploads to overwrite (0: deleted at once)."""

    def __init__(self, root: str | os.PathLike[str], recycle_bytes: int = 0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recycle_bytes = recycle_bytes
        self.pool = self.root / RECYCLE_DIR
        self.pool.mkdir(exist_ok=True, mode=0o700)

    def path(self, object_id: str) -> Path:
        return self.root / object_id[:2] / object_id

    @contextmanager
    def _open(self, path: Path, flags: int) -> Iterator[int]:
        """``path`` open, held against recycling (a shared lock, and still the file ``path``
        names). FileNotFoundError if it is gone, or was recycled between the open and the lock."""
        fd = os.open(path, flags, 0o600)
        try:
            if self.recycle_bytes:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(str(path))
            yield fd
        finally:
            os.close(fd)

    def _sizes(self) -> list[tuple[str, int]]:
        out = []
        for entry in os.scandir(self.pool):
            try:
                out.append((entry.name, entry.stat().st_size))
            except FileNotFoundError:
                pass  # taken meanwhile
        return out

    def _take_recycled(self, path: Path, need: int) -> None:
        """Give ``path`` (not there yet) a recycled file, if the pool has one."""
        pool = self._sizes()
        while pool:
            name = pick_recycled(pool, need)
            mine = path.parent / f".{uuid.uuid4().hex}"
            try:
                os.rename(self.pool / name, mine)  # one process wins each pooled file
            except FileNotFoundError:
                pool = [p for p in pool if p[0] != name]
                continue
            try:
                os.link(mine, path)
            except FileExistsError:
                os.rename(mine, self.pool / name)  # the path got a file meanwhile: back to the pool
            finally:
                try:
                    os.unlink(mine)
                except FileNotFoundError:
                    pass
            return

    def write(self, object_id: str, offset: int, stream: IO[bytes], length: int, size: int | None = None) -> int:
        """Copy ``length`` bytes of ``stream`` into the object at ``offset`` (1 MiB at a time);
        ``size``: the object's, to cut the file there once its last byte is in.

        Each block is written by a native thread while the next is read from ``stream``: at most
        one block in flight and one in hand (filling new page cache costs as much as receiving)."""
        path = self.path(object_id)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        if self.recycle_bytes and offset == 0 and not path.exists():
            self._take_recycled(path, size if size is not None else length)
        done = 0
        pending = None
        with self._open(path, os.O_WRONLY | os.O_CREAT) as fd:
            try:
                while done < length:
                    piece = stream.read(min(_COPY, length - done))
                    if not piece:
                        break
                    if pending is not None:
                        pending()
                    pending = in_native_thread(_write_all, fd, piece, offset + done)
                    done += len(piece)
            finally:
                if pending is not None:
                    pending()
                if size is None:
                    os.ftruncate(fd, offset + done)  # a retried chunk leaves no stale tail
                elif offset + done == size:
                    # Bytes past ``received`` are never read (a recycled file's old ones, or a
                    # broken chunk's): the file is cut only at the end, keeping its pages till then.
                    os.ftruncate(fd, size)
        return done

    def sha256(self, object_id: str) -> str:
        digest = hashlib.sha256()
        with self._open(self.path(object_id), os.O_RDONLY) as fd, open(fd, "rb", closefd=False) as f:
            while piece := f.read(4 * _COPY):
                digest.update(piece)
        return digest.hexdigest()

    def read(self, object_id: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self._open(self.path(object_id), os.O_RDONLY) as fd:
            at = start
            while end is None or at < end:
                piece = os.pread(fd, _COPY if end is None else min(_COPY, end - at), at)
                if not piece:
                    return
                at += len(piece)
                yield piece

    def exists(self, object_id: str) -> bool:
        return self.path(object_id).exists()

    def delete(self, object_id: str) -> None:
        path = self.path(object_id)
        try:
            if self.recycle_bytes and self._recycle(path):
                return
            path.unlink()
        except FileNotFoundError:
            pass

    def _recycle(self, path: Path) -> bool:
        """Move ``path`` into the pool if it has room and nobody has the file open."""
        fd = os.open(path, os.O_RDONLY)
        try:
            if not recycle_room([s for _, s in self._sizes()], os.fstat(fd).st_size, self.recycle_bytes):
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # being read or written: deleted instead
            os.rename(path, self.pool / uuid.uuid4().hex)
            return True
        finally:
            os.close(fd)
