"""The thread that completes an Executor's futures: one long-poll on the completions log.

It keeps one ``GET /v1/tasks/completions?running=true`` open, which answers as soon as any of
this user's tasks finish (with their results) or start running, and hands back a cursor for the
next call: no request per task, no sleeping between requests. It opens once a submit request
has returned accepted tasks, not while that request is on its way: opened at the same moment,
the long-poll's own work (authentication, admission, the blocking read) ran in the client and
the service alongside the submit's, on the warm path of every lone task, while the task itself
needs milliseconds more to run anyway. Nothing is missed by opening later: the cursor was taken
before the first task existed, and a completion that comes before its submit request returns
(tasks of an earlier request, still being read) is kept until the ids arrive
(:class:`~fnserve.batching.Outstanding`).

The long-poll has its own connection (:meth:`Transport.fork`), so shutting down can break it
off at once when nothing is outstanding instead of waiting for it to time out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from fnserve.batching import chunks, completions_wanted
from fnserve.errors import FnserveError, ServiceUnavailable, TooManyRequests
from fnserve.futures import mark_running

if TYPE_CHECKING:
    from fnserve.pipeline import Pipeline

log = logging.getLogger("fnserve.executor")

_RETRY_FIRST, _RETRY_MAX = 0.2, 10.0  # reconnect backoff (s)
_FINISHED = ("success", "failed", "cancelled")


class ResultReader:
    """Reads completions for a :class:`~fnserve.pipeline.Pipeline` in a thread of its own."""

    def __init__(self, pipeline: Pipeline, wait: float, linger: float) -> None:
        self.pipeline = pipeline
        self.wait = wait
        self.linger = linger
        self.cursor: str | None = None
        self.transport = pipeline.client.transport.fork()
        self._thread: threading.Thread | None = None
        self._aborted = False

    def start(self) -> None:
        """Start the thread (under the pipeline's lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fnserve-executor-results", daemon=True)
            self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def abort(self) -> None:
        """Stop now, breaking off a long-poll in flight (nothing is outstanding)."""
        self._aborted = True
        with self.pipeline.lock:
            self.pipeline.lock.notify_all()
        self.transport.abort()

    def first_cursor(self) -> str:
        return str(self._get(None, 0)["cursor"])

    def _get(self, cursor: str | None, wait: float) -> dict[str, Any]:
        self.pipeline.requests["completions"] += 1
        params: dict[str, Any] = {"wait": wait}
        if cursor is not None:
            min_tasks, linger = completions_wanted(len(self.pipeline.outstanding), self.linger)
            params.update(cursor=cursor, running="true")
            if min_tasks > 1:
                params.update(min_tasks=min_tasks, linger=linger)
        return self.transport.get("/v1/tasks/completions", **params, _timeout=wait + self.transport.timeout)  # type: ignore[no-any-return]

    def _idle(self) -> bool:
        """Wait while there is nothing to read; True when the reader should stop."""
        p = self.pipeline
        with p.lock:
            while not len(p.outstanding):  # tasks accepted and not finished (see the module's docstring)
                if self._aborted or (p.shutdown and not p.queue and p.sender_done):
                    return True
                p.lock.wait()
            return self._aborted

    def _loop(self) -> None:
        delay = _RETRY_FIRST
        p = self.pipeline
        try:
            while not self._idle():
                try:
                    page = self._get(self.cursor, self.wait)
                except (ServiceUnavailable, TooManyRequests) as exc:
                    if self._aborted:
                        return
                    # e.g. 429 too_many_waits: this user holds as many long-polls as the service
                    # allows (other clients of theirs); wait as long as the service says.
                    delay = max(delay, float(exc.details.get("retry_after", 0)))
                    log.warning("results: %s; retrying in %.1f s", exc.message, delay)
                    time.sleep(delay)  # reconnect backoff, not on the path of a result
                    delay = min(delay * 2, _RETRY_MAX)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. the token was revoked: fail loudly
                    self._fail_outstanding(exc)
                    continue
                delay = _RETRY_FIRST
                self.cursor = page["cursor"]
                tasks = [t for t in page["tasks"] if t["state"] in _FINISHED]
                started = [t["task_id"] for t in page["tasks"] if t["state"] not in _FINISHED]
                if page.get("gap"):
                    tasks = tasks + self._read_missed()
                with p.lock:
                    running = p.outstanding.started(started)
                    ready = p.outstanding.completed((t["task_id"], t) for t in tasks)
                for future in running:
                    mark_running(future)
                p.resolve_all(ready)
        finally:
            p.close_progress()

    def _read_missed(self) -> list[dict[str, Any]]:
        """The log was trimmed past our cursor: read our outstanding tasks directly, once."""
        p = self.pipeline
        with p.lock:
            ids = p.outstanding.ids()
        found: list[dict[str, Any]] = []
        for part in chunks(ids, 1000):  # type: ignore[arg-type]
            try:
                tasks = self.transport.post("/v1/tasks/results", {"task_ids": part})["tasks"]
            except FnserveError as exc:  # e.g. a task expired: fail those futures, not the reader
                tasks = [{"task_id": i, "state": "failed", "error": {"code": exc.code, "message": exc.message}} for i in part]
            found += [t for t in tasks if t["state"] in _FINISHED]
        return found

    def _fail_outstanding(self, exc: Exception) -> None:
        from fnserve.futures import settle

        p = self.pipeline
        with p.lock:
            futures = [p.outstanding.forget(i) for i in p.outstanding.ids()]
        for future in futures:
            if future is not None:
                settle(future, future.set_exception, exc)


__all__ = ["ResultReader"]
