"""Capture what a task prints, with a bound so a chatty task cannot flood the result."""

from __future__ import annotations

import io
import sys
from types import TracebackType
from typing import Self

MAX_CAPTURE_CHARS = 64 * 1024
TRUNCATED_MARKER = (
    "\n[fnserve: output truncated, {dropped} more characters not shown]\n"
)


class BoundedWriter(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = MAX_CAPTURE_CHARS) -> None:
        self.limit = limit
        self.dropped = 0
        self._parts: list[str] = []
        self._kept = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self._kept
        if room > 0:
            self._parts.append(text[:room])
            self._kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self.dropped:
            text += TRUNCATED_MARKER.format(dropped=self.dropped)
        return text


class OutputCapture:
    """Swap ``sys.stdout``/``sys.stderr`` for bounded buffers while a task runs.

    Only output written through Python's ``sys`` streams is captured here; what a C library or a
    child process writes straight to file descriptors 1 and 2 is captured by
    :mod:`node_manager.fd_capture`.
    """

    def __init__(self, limit: int = MAX_CAPTURE_CHARS) -> None:
        self._out = BoundedWriter(limit)
        self._err = BoundedWriter(limit)
        self._saved: tuple[object, object] | None = None

    def __enter__(self) -> Self:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._out, self._err
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        sys.stdout, sys.stderr = self._saved

    @property
    def stdout(self) -> str:
        return self._out.getvalue()

    @property
    def stderr(self) -> str:
        return self._err.getvalue()
