"""What moves an Executor's tasks: the queue, the sender thread, and what is outstanding.

``submit`` only queues a future and its task spec. The sender thread takes everything queued
(up to ``batch_size``; :class:`~fnserve.batching.BatchPolicy` decides), cuts it into requests
the service accepts (by count and by bytes, :func:`~fnserve.batching.split_by_bytes`; a task
whose arguments alone pass the service's payload limit fails alone, unsent) and posts each as
one ``POST /v1/tasks``. The service answers task by task, so a refused task fails only its own
future. Accepted tasks become outstanding; the :class:`~fnserve.result_reader.ResultReader`
thread completes them from the completions long-poll.

The sender also sends the cancellations of tasks already in the service (``cancel()`` never
blocks on HTTP), and stops once shut down with nothing queued.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from fnserve.batching import BatchPolicy, Outstanding, payload_bytes, spec_size, split_by_bytes, submit_outcomes
from fnserve.errors import FnserveError, PayloadTooLarge, error_from_dict
from fnserve.futures import TaskFuture, resolve, settle
from fnserve.result_reader import ResultReader

if TYPE_CHECKING:
    from fnserve.client import Client

log = logging.getLogger("fnserve.executor")

_REQUEST_MARGIN = 64 * 1024  # bytes kept free under the service's request limit


class Pipeline:
    """The queue, the sender thread and the outstanding tasks of one Executor."""

    def __init__(self, client: Client, policy: BatchPolicy, wait: float, result_linger: float, progress: bool = False,
                 on_refused: Any = None) -> None:
        self.client = client
        self.policy = policy
        self.requests = {"submit": 0, "completions": 0, "cancel": 0}  # HTTP requests made, by kind
        self.lock = threading.Condition()
        self.queue: deque[tuple[TaskFuture, dict[str, Any], float]] = deque()
        self.outstanding: Outstanding[TaskFuture] = Outstanding()
        self.shutdown = False
        self.sender_done = False
        self.reader = ResultReader(self, wait, result_linger)
        self._cancels: deque[str] = deque()
        self._sender: threading.Thread | None = None
        self._progress_wanted = progress
        self._on_refused = on_refused  # called with (function ids, error) when the service lost functions
        self.bar: Any = None
        _LIVE.add(self)

    # -- called by the Executor and its futures -----------------------------------------------

    def enqueue(self, future: TaskFuture, spec: dict[str, Any]) -> None:
        with self.lock:
            if self.shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self.queue.append((future, spec, time.monotonic()))
            self._start()
            self.lock.notify_all()

    def adopt(self, task_id: str, future: TaskFuture) -> TaskFuture:
        """Wait for an already submitted task (a reloaded task group); returns the future that
        waits for it (an existing one if this pipeline already does)."""
        with self.lock:
            kept = self.outstanding.adopt(task_id, future)
            self._start()
            self.reader.start()
            self.lock.notify_all()
        return kept

    def cancelled(self, future: TaskFuture) -> None:
        """``future`` was just cancelled: cancel its task in the service, in the background."""
        with self.lock:
            if not future._taken:
                return  # still queued: the sender skips it
            if future.task_id is None:
                return  # its submit request is in flight: the sender cancels it once it has the id
            self.outstanding.forget(future.task_id)
            self._cancels.append(future.task_id)
            self._start()
            self.lock.notify_all()

    def close(self, wait: bool, cancel_futures: bool) -> None:
        with self.lock:
            self.shutdown = True
            queued = [f for f, _, _ in self.queue] if cancel_futures else []
            self.lock.notify_all()
        for future in queued:
            future.cancel()
        if cancel_futures:
            for future in list(self.outstanding.futures.values()):
                future.cancel()  # not those already running, as in the standard library
        if not wait:
            return
        if self._sender is not None:
            self._sender.join()
        with self.lock:
            idle = not len(self.outstanding) and not self.outstanding.posting_now
        if idle:
            self.reader.abort()  # its long-poll waits for nothing: break it off now
        self.reader.join()
        self.close_progress()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every queued task has been sent; True if so."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.queue or self.outstanding.posting_now:
                left = deadline - time.monotonic()
                if left <= 0 or self.sender_done:
                    break
                self.lock.wait(left)
            return not self.queue and not self.outstanding.posting_now

    def ensure_cursor(self) -> None:
        """Take the completions cursor (once, before the first task exists, so that no
        completion can precede it) and start the reader."""
        with self.lock:
            if self.reader.cursor is not None:
                return
        cursor = self.reader.first_cursor()
        with self.lock:
            if self.reader.cursor is None:
                self.reader.cursor = cursor
            self.reader.start()
            self.lock.notify_all()

    # -- sender ----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="fnserve-executor-send", daemon=True)
            self._sender.start()
        if self._progress_wanted and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="task", desc="fnserve", dynamic_ncols=True)

    def _next_work(self) -> tuple[list[tuple[TaskFuture, dict[str, Any]]], list[str]] | None:
        """Block until a batch is due (the policy decides) or cancellations wait; None once
        shut down with nothing left."""
        with self.lock:
            while True:
                cancels = list(self._cancels)
                self._cancels.clear()
                oldest = time.monotonic() - self.queue[0][2] if self.queue else 0.0
                decision = self.policy.decide(len(self.queue), oldest, closing=self.shutdown)
                batch: list[tuple[TaskFuture, dict[str, Any]]] = []
                if isinstance(decision, int):
                    for _ in range(decision):
                        future, spec, _t = self.queue.popleft()
                        if future.cancelled():
                            continue  # cancelled while queued (already notified)
                        future._taken = True
                        batch.append((future, spec))
                if batch or cancels:
                    return batch, cancels
                if isinstance(decision, int):
                    continue
                if self.shutdown and not self.queue:
                    return None
                self.lock.wait(decision)

    def _send_loop(self) -> None:
        try:
            while (work := self._next_work()) is not None:
                batch, cancels = work
                for task_id in cancels:
                    self._cancel_in_service(task_id)
                if batch:
                    self._send(batch)
        finally:
            with self.lock:
                self.sender_done = True
                self.lock.notify_all()  # the reader may now be done

    def _cancel_in_service(self, task_id: str) -> None:
        self.requests["cancel"] += 1
        try:
            self.client.cancel(task_id)
        except FnserveError as exc:  # e.g. it expired: the future is cancelled either way
            log.warning("cancelling task %s in the service: %s", task_id, exc)

    def _send(self, batch: list[tuple[TaskFuture, dict[str, Any]]]) -> None:
        try:
            self.ensure_cursor()
            limits = self.client.limits()
        except Exception as exc:  # noqa: BLE001 - the service is unreachable: these tasks fail
            self._fail([f for f, _ in batch], exc)
            return
        fits = []
        for future, spec in batch:
            size = payload_bytes(spec)
            if size > limits["max_payload_bytes"]:
                self._fail([future], PayloadTooLarge(
                    f"the task's arguments are {size} bytes serialized, more than the service accepts "
                    f"({limits['max_payload_bytes']} bytes, its max_payload_bytes); pass large data by reference "
                    "(a file path, a URL, ProxyStore) instead", details={"limit": limits["max_payload_bytes"], "size": size}))
            else:
                fits.append((future, spec))
        budget = limits["max_request_bytes"] - _REQUEST_MARGIN
        start = 0
        for count in split_by_bytes([spec_size(s) for _, s in fits], budget, limits["max_batch"]):
            self._post(fits[start:start + count])
            start += count

    def _post(self, part: list[tuple[TaskFuture, dict[str, Any]]]) -> None:
        with self.lock:
            self.outstanding.posting()
            self.lock.notify_all()  # flush() waits for this
        answer, error = None, None
        self.requests["submit"] += 1
        try:
            answer = self.client.transport.post("/v1/tasks", {"tasks": [spec for _, spec in part]})
        except FnserveError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - any other failure fails these futures
            error = FnserveError(f"submitting tasks failed: {type(exc).__name__}: {exc}", code="submit_failed")
        if error is not None and error.http_status == 413 and "index" not in error.details and len(part) > 1:
            # The request as a whole was too large for the service (a lower limit than it
            # announced, e.g. a proxy's): send it again in halves.
            with self.lock:
                self.outstanding.sent(())
            half = len(part) // 2
            self._post(part[:half])
            self._post(part[half:])
            return
        self._settle_part(part, submit_outcomes(len(part), answer, error))

    def _settle_part(self, part: list[tuple[TaskFuture, dict[str, Any]]],
                     outcomes: list[tuple[str | None, dict[str, Any] | None]]) -> None:
        accepted: list[tuple[str, TaskFuture]] = []
        late_cancels: list[tuple[str, TaskFuture]] = []
        refused: list[tuple[TaskFuture, dict[str, Any], FnserveError]] = []
        for (future, spec), (task_id, err) in zip(part, outcomes):
            if task_id is None:
                refused.append((future, spec, error_from_dict(err or {}, int((err or {}).get("status", 400)))))
                continue
            future.task_id = task_id
            (late_cancels if future.cancelled() else accepted).append((task_id, future))
        with self.lock:
            early = self.outstanding.sent(accepted)
            self._cancels.extend(task_id for task_id, _ in late_cancels)
            self.lock.notify_all()  # flush() and the reader wait for this
        for future, _ in part:
            future._sent.set()
        lost = {spec["function_id"] for _, spec, exc in refused if exc.code == "function_not_found"}
        if lost and self._on_refused is not None:
            self._on_refused(lost)  # deleted in the service: register again on the next submit
        for future, _, exc in refused:
            settle(future, future.set_exception, exc)
        bar = self.bar
        if bar is not None and accepted:
            bar.total += len(accepted)
            bar.refresh()
        self.resolve_all(early)

    def _fail(self, futures: list[TaskFuture], exc: BaseException) -> None:
        for future in futures:
            future._sent.set()
            settle(future, future.set_exception, exc)

    # -- shared with the reader ------------------------------------------------------------------

    def resolve_all(self, ready: list[tuple[TaskFuture, dict[str, Any]]]) -> None:
        if not ready:
            return
        delivered = time.time()
        for future, task in ready:
            task.setdefault("timestamps", {})["delivered"] = delivered
            resolve(future, task)
        bar = self.bar
        if bar is not None:
            bar.update(len(ready))

    def close_progress(self) -> None:
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()


# Executors alive in this process: at exit (a script's end, a notebook kernel's restart) what
# they queued is still sent, so that the tasks exist and reload_tasks() finds them later.
_LIVE: weakref.WeakSet[Pipeline] = weakref.WeakSet()
_EXIT_FLUSH_SECONDS = 4.0  # a kernel restart waits about 5 s before it kills the kernel


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + _EXIT_FLUSH_SECONDS
    for pipeline in list(_LIVE):
        if pipeline.queue or pipeline.outstanding.posting_now:
            pipeline.flush(max(0.0, deadline - time.monotonic()))


__all__ = ["Pipeline"]
