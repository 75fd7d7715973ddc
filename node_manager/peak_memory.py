"""The peak memory of one task, not of the worker process that ran many.

``getrusage``'s ``ru_maxrss`` is the process's lifetime peak: after one task of 10 GB every later
task in that worker, of whatever user, would be billed 10 GB. On Linux, writing ``5`` to
``/proc/self/clear_refs`` resets the process's peak resident set (``VmHWM``) to what it holds
now; reading ``VmHWM`` after the task gives the task's own peak (with what the worker itself
holds, which is small and the same for every task). About 30 us a task.

Where ``clear_refs`` cannot be written (not Linux, a locked-down /proc), the lifetime peak is
used only when it rose during the task (then it is this task's); otherwise the task is billed
the resident set at its end. Child processes the task waited for count through
``RUSAGE_CHILDREN`` when their peak rose during the task.
"""

from __future__ import annotations

import os
import resource

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _write_clear_refs() -> bool:
    try:
        fd = os.open(_CLEAR_REFS, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(fd, b"5")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _status_kb(field: bytes) -> float | None:
    try:
        fd = os.open(_STATUS, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 16384)
    finally:
        os.close(fd)
    start = data.find(field)
    if start < 0:
        return None
    end = data.find(b"kB", start)
    try:
        return float(data[start + len(field):end])
    except ValueError:
        return None


class TaskMemory:
    """Made when a task starts; :meth:`peak_kb` when it ends."""

    def __init__(self) -> None:
        self.reset = _write_clear_refs()
        self.self_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def peak_kb(self, usage_after: resource.struct_rusage | None = None) -> float:
        """Peak resident memory of the task, in KiB."""
        after = usage_after or resource.getrusage(resource.RUSAGE_SELF)
        peak = _status_kb(b"VmHWM:") if self.reset else None
        if peak is None:
            grew = after.ru_maxrss > self.self_before
            peak = float(after.ru_maxrss) if grew else (_status_kb(b"VmRSS:") or float(after.ru_maxrss))
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if children > self.children_before:
            peak = max(peak, float(children))
        return peak


__all__ = ["TaskMemory"]
