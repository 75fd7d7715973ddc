"""Hand finished results from Parsl's threads to the I/O loop.

ZMQ sockets must stay on the loop's thread, so callbacks put results on a thread-safe queue and
write one byte to a pipe that the loop's ``zmq.Poller`` watches: the loop sleeps in ``poll``
and wakes as soon as something is ready, with no polling interval.
"""

from __future__ import annotations

import os
import queue
from typing import Generic, TypeVar

from fnserve.messages import ResultMessage

T = TypeVar("T")


class Inbox(Generic[T]):
    """A thread-safe queue with a file descriptor that is readable when non-empty."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def put(self, result: T) -> None:
        """Add an item (any thread)."""
        self._queue.put(result)
        self.wake()

    def wake(self) -> None:
        """Make the loop's poll return (any thread, and signal handlers)."""
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the loop will wake anyway

    def drain(self) -> list[T]:
        """Every item put so far (loop thread)."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        results: list[T] = []
        while True:
            try:
                results.append(self._queue.get_nowait())
            except queue.Empty:
                return results

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class ResultInbox(Inbox[ResultMessage]):
    """Finished results, from Parsl's threads to the loop."""
