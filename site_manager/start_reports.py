"""When to report that a task runs: a worker's start marker is held for a short moment first.

A warm no-op finishes about a millisecond after its worker starts it. Reporting every start at
once cost each task one more message to the forwarder, one more Redis script run (``running``),
two forwarder wakeups and, for an Executor, a completion-log entry that ended its long-poll a
moment before the result would have: a second request per task. So a start marker is held for
``delay`` seconds: a task still running then is reported running (with its worker's start time,
so ``timestamps.running`` stays exact); one that finished meanwhile is not, and its record takes
its start time from the result's own ``worker_started`` timing (``record.lua``) instead. A task
that sends live outputs is reported at once, before them: an output of a running task never
reaches a client ahead of its state. Pure: the caller passes its monotonic clock.
"""

from __future__ import annotations

# Seconds a start marker waits before it is reported ("a short moment": a task running longer
# shows "running" this much later, with its exact start time).
RUNNING_REPORT_DELAY = 0.05


class StartReports:
    """Start markers not yet reported: task id -> (worker's start time, when to report it)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._held: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def started(self, markers: list[tuple[str, float]], now: float) -> list[tuple[str, float]]:
        """Tasks whose workers started them (``(task id, start time)``): the ones to report now
        (all of them without a delay); the others are held until :meth:`due`."""
        if self.delay <= 0:
            return markers
        for task_id, at in markers:
            self._held.setdefault(task_id, (at, now + self.delay))
        return []

    def due(self, now: float) -> list[tuple[str, float]]:
        """Held markers whose moment has passed: report them now."""
        ready = [(t, at) for t, (at, when) in self._held.items() if when <= now]
        for task_id, _ in ready:
            del self._held[task_id]
        return ready

    def take(self, task_ids: set[str]) -> list[tuple[str, float]]:
        """Held markers of these tasks, to report now (they sent outputs)."""
        return [(t, self._held.pop(t)[0]) for t in [t for t in task_ids if t in self._held]]

    def drop(self, task_id: str) -> None:
        """The task ended before its moment: never reported running."""
        self._held.pop(task_id, None)

    def clear(self) -> None:
        self._held.clear()

    def next_due(self) -> float | None:
        return min((when for _, when in self._held.values()), default=None)


__all__ = ["RUNNING_REPORT_DELAY", "StartReports"]
