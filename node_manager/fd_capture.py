"""Capture what a task writes to file descriptors 1 and 2, bounded, without ever blocking it.

``print`` goes through ``sys.stdout`` (captured by :mod:`node_manager.capture`); ``os.write(1,
...)``, C libraries and child processes write to the descriptors themselves. During a task, fds 1
and 2 are pipes (fresh for each task); a small helper process, started once per worker, reads
them as fast as they fill, keeps the first ``limit`` bytes of each and counts the rest. A helper
*process*, not a thread: a C extension that writes while holding the GIL would otherwise block
on a full pipe that no thread could drain, forever.

After the task the worker puts its own fds 1 and 2 back and asks the helper for the segment: the
helper reads what the pipes still hold (every write the task finished is in them), answers, and
closes its ends. A child process the task left running that writes on gets EPIPE (SIGPIPE), as
a program whose terminal was closed does; it never writes into the next task's output.

Where no helper can be started (no ``sys.executable``, no fd passing), tasks run as before: what
they write to the fds goes to the worker's own log.
"""

from __future__ import annotations

import os
import struct
import sys
from types import TracebackType
from typing import Self

DEFAULT_LIMIT = 64 * 1024  # bytes kept per stream per task
CUT = "\n[fnserve: output written to file descriptor {fd} cut at {limit} bytes; {dropped} more bytes not kept]\n"
_HEADER = struct.Struct("!QQQQ")

# The helper, run as ``python -S -c HELPER SOCKET_FD LIMIT`` (only the standard library).
HELPER = r"""
import os, select, socket, struct, sys
sock = socket.socket(fileno=int(sys.argv[1]))
limit = int(sys.argv[2])
poller = select.poll()
poller.register(sock.fileno(), select.POLLIN)
seg = {}  # fd -> [kept chunks, kept bytes, dropped bytes, open]

def take(fd, data):
    s = seg[fd]
    room = limit - s[1]
    if room > 0:
        s[0].append(data[:room])
        s[1] += min(room, len(data))
    s[2] += max(0, len(data) - max(room, 0))

def read_some(fd):
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return False
    if not data:
        seg[fd][3] = False
        poller.unregister(fd)
        return False
    take(fd, data)
    return True

while True:
    for fd, _ in poller.poll():
        if fd != sock.fileno():
            if fd in seg and seg[fd][3]:
                read_some(fd)
            continue
        msg, fds, _, _ = socket.recv_fds(sock, 16, 4)
        if not msg:
            sys.exit(0)
        if msg == b"S":
            for f in fds:
                os.set_blocking(f, False)
                seg[f] = [[], 0, 0, True]
                poller.register(f, select.POLLIN)
            order = fds
        elif msg == b"E":
            reply = []
            for f in order:
                while seg[f][3] and read_some(f):
                    pass
                if seg[f][3]:
                    poller.unregister(f)
                os.close(f)
                reply.append(seg.pop(f))
            head = struct.pack("!QQQQ", reply[0][1], reply[0][2], reply[1][1], reply[1][2])
            sock.sendall(head + b"".join(reply[0][0]) + b"".join(reply[1][0]))
"""


class _Helper:
    def __init__(self, limit: int):
        import socket  # here, not at import: the node manager's import time stays small
        import subprocess

        self.limit = limit
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", "-c", HELPER, str(theirs.fileno()), str(limit)], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.sock = ours

    def start(self, read_ends: list[int]) -> None:
        import socket

        socket.send_fds(self.sock, [b"S"], read_ends)

    def end(self) -> tuple[bytes, int, bytes, int]:
        self.sock.send(b"E")
        data = self.sock.recv(_HEADER.size + 2 * self.limit)
        kept_out, dropped_out, kept_err, dropped_err = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        return body[:kept_out], dropped_out, body[kept_out:kept_out + kept_err], dropped_err

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(5)


_helper: _Helper | None = None
_helper_failed = False


def _get_helper(limit: int) -> _Helper | None:
    global _helper, _helper_failed
    if _helper is None and not _helper_failed:
        try:
            _helper = _Helper(limit)
        except (OSError, AttributeError):  # no interpreter to start, or no fd passing here
            _helper_failed = True
    return _helper


def start_helper(limit: int = DEFAULT_LIMIT) -> _Helper | None:
    """Start this worker's helper now, ahead of its first task (:mod:`node_manager.warm_up`):
    a task waits for a new helper's interpreter to start, 30-100 ms on a loaded machine."""
    return _get_helper(limit)


def _flush_python_streams() -> None:
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _text(data: bytes, dropped: int, fd: int, limit: int) -> str:
    text = data.decode("utf-8", "replace")
    return text + CUT.format(fd=fd, limit=limit, dropped=dropped) if dropped else text


class FdCapture:
    """Context manager: fds 1 and 2 go to bounded buffers while a task runs.

    ``stdout`` / ``stderr`` hold the text afterwards (empty when nothing was written, or when
    this worker cannot capture at the fd level).
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.stdout = ""
        self.stderr = ""
        self._saved: tuple[int, int] | None = None
        self._helper: _Helper | None = None

    def __enter__(self) -> Self:
        helper = _get_helper(self.limit)
        if helper is None:
            return self
        try:
            saved = (os.dup(1), os.dup(2))
        except OSError:  # the worker runs with fd 1 or 2 closed: nothing to capture there
            return self
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            helper.start([out_r, err_r])
        except OSError:
            for fd in (out_r, out_w, err_r, err_w, *saved):
                os.close(fd)
            _drop_helper()
            return self
        os.close(out_r)
        os.close(err_r)
        _flush_python_streams()  # what the worker printed before is not the task's
        self._saved = saved
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        self._helper = helper
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._saved is None or self._helper is None:
            return
        _flush_python_streams()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._saved = None
        try:
            out, dropped_out, err, dropped_err = self._helper.end()
        except (OSError, struct.error):
            _drop_helper()  # a new one next task
            return
        self.stdout = _text(out, dropped_out, 1, self.limit)
        self.stderr = _text(err, dropped_err, 2, self.limit)


def _drop_helper() -> None:
    global _helper
    if _helper is not None:
        try:
            _helper.close()
        except OSError:
            pass  # already gone with its process: nothing left to close
    _helper = None


__all__ = ["CUT", "DEFAULT_LIMIT", "HELPER", "FdCapture", "start_helper"]
