"""The decisions behind :class:`fnserve.Executor`, free of sockets, threads and clocks.

:class:`BatchPolicy` decides when queued submissions go out and how many at once;
:func:`split_by_bytes` cuts a batch into requests the service accepts; :func:`submit_outcomes`
reads the service's answer task by task; :class:`Outstanding` pairs task ids with their futures
and the completions that arrive, including a completion that arrives before the submit request
that created the task has returned. All are fed plain values and answer plain values, so they
are tested without a service.

:func:`run_chunk` is what ``Executor.map(..., chunksize=n)`` runs on the endpoint (this module
imports nothing heavy, so workers load it quickly).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

F = TypeVar("F")


@dataclass(frozen=True)
class BatchPolicy:
    """When to send queued submissions.

    ``batch_size`` caps tasks per request. ``max_delay`` (seconds) is how long the oldest queued
    task may wait for company; 0 (the default) sends whatever is queued as soon as the sender is
    free. Batches then form by themselves: while one request is in flight, new submissions queue
    up and leave together in the next, so a lone task pays no delay and a burst pays one
    request per ``batch_size`` tasks.
    """

    batch_size: int = 1000
    max_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_delay < 0:
            raise ValueError("max_delay must be >= 0")

    def decide(self, queued: int, oldest_age: float, closing: bool = False) -> int | float | None:
        """How many queued tasks to send now (an ``int`` > 0), or how long to wait for more
        (a ``float``, seconds), or ``None``: nothing queued, wait for a submission.

        ``closing`` (shutdown) sends at once whatever is queued.
        """
        if queued <= 0:
            return None
        if queued >= self.batch_size:
            return self.batch_size
        if closing or self.max_delay <= 0 or oldest_age >= self.max_delay:
            return queued
        return float(self.max_delay - oldest_age)


class Outstanding(Generic[F]):
    """Futures of submitted tasks by task id, and completions waiting for their future.

    A task can finish, and its completion be read, before the request that submitted it has
    returned its id. While a submit request is in flight, completions of unknown tasks are kept
    (:meth:`completed`) and matched when the ids arrive (:meth:`sent`); otherwise an unknown id is
    another client's task of the same user, and is ignored.
    """

    def __init__(self) -> None:
        self.futures: dict[str, F] = {}
        self._early: dict[str, Any] = {}
        self._posting = 0

    def __len__(self) -> int:
        return len(self.futures)

    def posting(self) -> None:
        """A submit request is about to be sent."""
        self._posting += 1

    @property
    def posting_now(self) -> bool:
        """A submit request is in flight (its tasks may finish before it returns)."""
        return self._posting > 0

    def sent(self, pairs: Iterable[tuple[str, F]]) -> list[tuple[F, Any]]:
        """A submit request returned (``pairs`` of task id and future; none if it failed).

        Returns ``(future, completion)`` for tasks whose completion came first.
        """
        self._posting -= 1
        ready = []
        for task_id, future in pairs:
            early = self._early.pop(task_id, None)
            if early is None:
                self.futures[task_id] = future
            else:
                ready.append((future, early))
        if not self._posting:
            self._early.clear()  # whatever is left belongs to someone else
        return ready

    def completed(self, completions: Iterable[tuple[str, Any]]) -> list[tuple[F, Any]]:
        """Completions read from the service, as ``(task_id, completion)``; returns the
        ``(future, completion)`` pairs to resolve, each task once."""
        ready = []
        for task_id, completion in completions:
            future = self.futures.pop(task_id, None)
            if future is not None:
                ready.append((future, completion))
            elif self._posting:
                self._early[task_id] = completion
        return ready

    def forget(self, task_id: str) -> F | None:
        """Stop waiting for ``task_id`` (resolved some other way, e.g. cancelled)."""
        return self.futures.pop(task_id, None)

    def started(self, task_ids: Iterable[str]) -> list[F]:
        """Futures of tasks the service says started running (they stay outstanding)."""
        return [f for f in (self.futures.get(t) for t in task_ids) if f is not None]

    def adopt(self, task_id: str, future: F) -> F:
        """Wait for an already submitted task (reloaded from a task group); if this id is
        already outstanding, its future is kept and returned."""
        return self.futures.setdefault(task_id, future)

    def ids(self) -> list[str]:
        return list(self.futures)


def completions_wanted(outstanding: int, linger: float, threshold: int = 64) -> tuple[int, float]:
    """``(min_tasks, linger)`` for the next completions read.

    With few tasks outstanding every result is wanted at once. With many, the service may hold
    an answer up to ``linger`` seconds to gather a quarter of them: under load that turns hundreds
    of tiny requests a second into a few large ones, and costs nothing when results are scarce.
    """
    if outstanding < threshold or linger <= 0:
        return 1, 0.0
    return min(outstanding // 4, 2000), linger


def chunks(items: list[Hashable], size: int) -> list[list[Hashable]]:
    """``items`` in consecutive lists of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# JSON around one task's payload in a submit request: ids, keys, small options. Generous, so a
# request never ends up over the limit; the resource specification is counted separately.
SPEC_OVERHEAD = 1024


def spec_size(spec: dict[str, Any]) -> int:
    """About how many bytes ``spec`` takes in a submit request's JSON body (never fewer)."""
    size = SPEC_OVERHEAD + len(spec.get("payload", ""))
    for key in ("resource_specification", "user_endpoint_config"):
        extra = spec.get(key)
        if extra:
            import json

            size += len(json.dumps(extra))
    return size


def split_by_bytes(sizes: list[int], max_bytes: int, max_count: int) -> list[int]:
    """How many consecutive items go in each request so that no request holds more than
    ``max_count`` items or ``max_bytes`` (an item larger than that alone goes alone)."""
    counts: list[int] = []
    n = total = 0
    for size in sizes:
        if n and (n >= max_count or total + size > max_bytes):
            counts.append(n)
            n = total = 0
        n += 1
        total += size
    if n:
        counts.append(n)
    return counts


def payload_bytes(spec: dict[str, Any]) -> int:
    """The decoded size of a spec's base64 payload (what the service's payload limit counts)."""
    text: str = spec.get("payload", "")
    return len(text) * 3 // 4 - text[-2:].count("=")


def submit_outcomes(count: int, answer: dict[str, Any] | None = None,
                    error: Any = None) -> list[tuple[str | None, dict[str, Any] | None]]:
    """Per task of a submit request of ``count`` tasks: ``(task_id, None)`` if accepted, or
    ``(None, error)`` with the error object ``{"status", "code", "message", "details"}``.

    ``answer`` is a 2xx body (``task_ids`` with ``null`` where refused, and ``errors``);
    ``error`` a refused request's ``FnserveError``: when its details list ``errors`` they are
    per task, otherwise the one error applies to every task (a bad token, a quota, ...).
    """
    if answer is not None:
        ids = list(answer.get("task_ids") or [])
        errors = {e["index"]: e for e in answer.get("errors") or []}
        return [(tid, None) if tid else (None, errors.get(i) or _unknown(i)) for i, tid in
                enumerate(ids + [None] * (count - len(ids)))]
    per_task = (error.details or {}).get("errors") if error is not None else None
    if per_task:
        by_index = {e["index"]: e for e in per_task}
        return [(None, by_index.get(i) or _as_dict(error)) for i in range(count)]
    return [(None, _as_dict(error))] * count


def _as_dict(error: Any) -> dict[str, Any]:
    details = {k: v for k, v in (getattr(error, "details", None) or {}).items() if k not in ("index", "errors")}
    return {"status": getattr(error, "http_status", 400), "code": getattr(error, "code", "error"),
            "message": getattr(error, "message", str(error)), "details": details}


def _unknown(index: int) -> dict[str, Any]:
    return {"status": 500, "code": "no_answer", "message": f"the service answered nothing for task {index}"}


def chunked(items: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """``items`` in consecutive tuples of ``size`` (the last may be shorter)."""
    it = iter(items)
    while chunk := tuple(islice(it, size)):
        yield chunk


def run_chunk(fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """Runs on the endpoint for ``Executor.map(..., chunksize=n)``: ``fn`` on each argument
    tuple of the chunk, in order (the first exception ends the chunk, as in the standard
    library's ``ProcessPoolExecutor``)."""
    return [fn(*args) for args in chunk]
