"""``fnserve.Executor``: run Python callables on an endpoint as ``concurrent.futures`` futures.

Example::

    from fnserve import Executor

    def square(x):
        return x * x

    with Executor(endpoint_id) as ex:
        fut = ex.submit(square, 7)
        print(fut.result())                      # 49
        print(list(ex.map(square, range(10))))   # [0, 1, 4, ...]

How it works, and why it is fast:

* A function is registered once, the first time it is submitted (by the sha-256 of its
  serialized bytes, so the same function is not registered twice by this process).
* ``submit`` only serializes the arguments and queues the task. A background sender takes
  everything queued (up to ``batch_size``) and sends it in one ``POST /v1/tasks``; while that
  request is in flight new tasks queue up and leave together in the next one.
* Results are pushed: a background reader keeps one long-poll open on
  ``GET /v1/tasks/completions``, which answers as soon as any of this user's tasks finish, with
  their results. There is no request per task, and no sleeping between requests.
* Futures complete in the reader thread; a remote exception is raised from ``result()`` as
  :class:`~fnserve.errors.RemoteExecutionError` with the remote traceback.

Everything runs in plain threads, so it works unchanged inside Jupyter's running event loop
(``await asyncio.wrap_future(fut)`` works there too).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from fnserve import serialize
from fnserve.batching import BatchPolicy, Outstanding, chunks, completions_wanted
from fnserve.client import Client, _task_spec, result_of
from fnserve.errors import (
    FnserveError,
    RemoteExecutionError,
    ServiceUnavailable,
    TaskCancelled,
    TaskFailed,
    TaskPending,
    TooManyRequests,
)

log = logging.getLogger(__name__)

# Functions this process registered: (service url, token, sha-256 of the buffer) -> function id.
_REGISTERED: dict[tuple[str, str | None, str], str] = {}
_REGISTERED_LOCK = threading.Lock()

_RETRY_FIRST, _RETRY_MAX = 0.2, 10.0  # reconnect backoff of the result reader (s)


class TaskFuture(Future):  # type: ignore[type-arg]
    """A :class:`concurrent.futures.Future` for one fnserve task.

    ``task_id`` is set once the task is accepted by the service; ``task`` holds the task object
    (state, timestamps, hop timings, stdout/stderr) once it finished. ``cancel()`` cancels the
    task in the service too.
    """

    def __init__(self, executor: Executor) -> None:
        super().__init__()
        self.task_id: str | None = None
        self.task: dict[str, Any] | None = None
        self._executor = executor
        self._taken = False  # picked up by the sender: cancelling now needs the service
        self._sent = threading.Event()

    def cancel(self) -> bool:
        """Cancel the task: locally while still queued, else in the service (one request).

        Returns False if it already finished (or the service could not cancel it).
        """
        return self._executor._cancel(self)

    def submitted(self, timeout: float | None = None) -> str | None:
        """Block until the service has accepted the task; returns its id (None if the
        submission failed or ``timeout`` passed first)."""
        self._sent.wait(timeout)
        return self.task_id

    def outputs(self, timeout: float | None = None) -> Any:
        """Iterate over the task's live outputs (``fnserve.report``) as they arrive, until it
        ends: ``{"seq", "time", "values"}`` each (see :meth:`Client.watch_outputs`)."""
        task_id = self.submitted(timeout)
        if task_id is None:
            self.result(0)  # the submission failed: raise why; None while still unsent
            raise TimeoutError("the task was not submitted within the timeout")
        return self._executor.client.watch_outputs(task_id, timeout=timeout)

    def _cancel_locally(self) -> bool:
        if self.cancelled():
            return True
        ok = Future.cancel(self)
        if ok:
            try:
                # Wakes concurrent.futures.wait() / as_completed() callers too.
                self.set_running_or_notify_cancel()
            except RuntimeError:
                pass  # another thread cancelled and notified it at the same moment
        return ok

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" task_id={self.task_id}>"


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose tasks run on an fnserve endpoint.

    ``endpoint_id``: where tasks run. ``client``: a :class:`~fnserve.client.Client` (default:
    one from ``~/.fnserve/client.yaml``). ``runtime``: the endpoint's runtime to use, if it has
    several. ``batch_size``: at most this many tasks per submit request. ``batch_delay``: how long
    (s) a queued task may wait for others to fill a batch; 0 sends at once (batches still form
    under load). ``walltime``: per-task limit (s). ``serializer``: how functions are serialized
    (``"dill-code"`` or ``"source"``; default dill, falling back to source). ``progress``: show a
    progress bar (tqdm: a widget in Jupyter, text in a terminal). ``wait``: seconds each result
    long-poll may stay open. ``result_linger``: with many tasks outstanding, how long (s) the
    service may hold a results answer to gather more (fewer, larger answers under load).
    """

    def __init__(
        self,
        endpoint_id: str,
        client: Client | None = None,
        runtime: str | None = None,
        *,
        batch_size: int = 1000,
        batch_delay: float = 0.0,
        walltime: float | None = None,
        serializer: str | None = None,
        progress: bool = False,
        wait: float = 30.0,
        result_linger: float = 0.05,
    ) -> None:
        self.endpoint_id = str(endpoint_id)
        self.client = client or Client()
        self.runtime = runtime
        self.walltime = walltime
        self.serializer = serializer
        self.policy = BatchPolicy(batch_size, batch_delay)
        self.wait = wait
        self.result_linger = result_linger
        self.requests = {"submit": 0, "completions": 0}  # HTTP requests made, by kind
        self._progress_wanted = progress
        self._bar: Any = None
        self._lock = threading.Condition()
        self._queue: deque[tuple[TaskFuture, dict[str, Any], float]] = deque()
        self._outstanding: Outstanding[TaskFuture] = Outstanding()
        self._functions: dict[int, tuple[Callable[..., Any], str]] = {}
        self._functions_lock = threading.Lock()
        self._cursor: str | None = None
        self._shutdown = False
        self._sender: threading.Thread | None = None
        self._sender_done = False
        self._reader: threading.Thread | None = None

    # -- concurrent.futures.Executor ---------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint; returns its future at once."""
        function_id = self.register(fn)
        spec = _task_spec(function_id, self.endpoint_id, args, kwargs, self.runtime, self.walltime, None,
                          self.client._json_results)
        future = TaskFuture(self)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.append((future, spec, time.monotonic()))
            self._start_threads()
            self._lock.notify_all()
        return future

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Any:
        """Like :func:`map`, running on the endpoint; results in order. All tasks are submitted
        at once (in batches); ``chunksize`` is accepted for compatibility and not needed."""
        end = None if timeout is None else time.monotonic() + timeout
        futures = [self.submit(fn, *args) for args in zip(*iterables)]

        def results() -> Any:
            try:
                futures.reverse()
                while futures:
                    left = None if end is None else end - time.monotonic()
                    yield futures.pop().result(left)
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; send what is queued. ``wait``: block until every task has finished.
        ``cancel_futures``: cancel tasks not finished yet (queued or in the service)."""
        with self._lock:
            self._shutdown = True
            queued = [f for f, _, _ in self._queue] if cancel_futures else []
            self._lock.notify_all()
        for future in queued:
            future.cancel()
        if cancel_futures:
            for future in list(self._outstanding.futures.values()):
                future.cancel()
        if wait:
            if self._sender is not None:
                self._sender.join()
            if self._reader is not None:
                self._reader.join()
            self._close_progress()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    # -- functions ---------------------------------------------------------------------------

    def register(self, fn: Callable[..., Any]) -> str:
        """The function id of ``fn``, registering it on first use (by content hash)."""
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        with self._functions_lock:
            buf = serialize.serialize_function(fn, self.serializer)
            key = (self.client.service_url, self.client.transport.token, hashlib.sha256(buf).hexdigest())
            with _REGISTERED_LOCK:
                function_id = _REGISTERED.get(key)
            if function_id is None:
                name = getattr(fn, "__name__", type(fn).__name__)
                function_id = self.client._register(buf, name, "")
                with _REGISTERED_LOCK:
                    _REGISTERED[key] = function_id
            # Holding fn keeps id(fn) from being reused by another object while cached.
            self._functions[id(fn)] = (fn, function_id)
            return function_id

    def _forget_functions(self, function_ids: set[str]) -> None:
        # The service no longer knows them (deleted): register again on the next submit.
        with self._functions_lock, _REGISTERED_LOCK:
            for key in [k for k, v in _REGISTERED.items() if v in function_ids]:
                del _REGISTERED[key]
            for key in [k for k, (_, v) in self._functions.items() if v in function_ids]:
                del self._functions[key]

    # -- sender ------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="fnserve-executor-send", daemon=True)
            self._sender.start()
        if self._progress_wanted and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=0, unit="task", desc="fnserve", dynamic_ncols=True)

    def _next_batch(self) -> list[tuple[TaskFuture, dict[str, Any]]] | None:
        """Block until a batch is due (the policy decides); None once shut down and empty."""
        with self._lock:
            while True:
                oldest = time.monotonic() - self._queue[0][2] if self._queue else 0.0
                decision = self.policy.decide(len(self._queue), oldest, closing=self._shutdown)
                if isinstance(decision, int):
                    batch = []
                    for _ in range(decision):
                        future, spec, _t = self._queue.popleft()
                        if future.cancelled():
                            continue  # cancelled while queued (already notified)
                        future._taken = True
                        batch.append((future, spec))
                    if batch:
                        self._outstanding.posting()
                        self._lock.notify_all()  # the reader opens its long-poll now
                        return batch
                    continue
                if self._shutdown and not self._queue:
                    return None
                self._lock.wait(decision)

    def _send_loop(self) -> None:
        try:
            self._send_batches()
        finally:
            with self._lock:
                self._sender_done = True
                self._lock.notify_all()  # the reader may now be done

    def _send_batches(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                if self._cursor is None:
                    # Taken before the first task exists, so no completion can precede it.
                    self._cursor = self._get_completions(None, 0)["cursor"]
                    with self._lock:
                        self._start_reader()
                        self._lock.notify_all()
                self.requests["submit"] += 1
                ids = self.client.transport.post("/v1/tasks", {"tasks": [spec for _, spec in batch]})["task_ids"]
            except Exception as exc:  # noqa: BLE001 - any failure fails this batch's futures
                self._fail_batch(batch, exc)
                continue
            for (future, _), task_id in zip(batch, ids):
                future.task_id = task_id
            with self._lock:
                early = self._outstanding.sent((task_id, future) for (future, _), task_id in zip(batch, ids))
                self._lock.notify_all()
            for future, _ in batch:
                future._sent.set()
            bar = self._bar
            if bar is not None:
                bar.total += len(batch)
                bar.refresh()
            self._resolve_all(early)

    def _fail_batch(self, batch: list[tuple[TaskFuture, dict[str, Any]]], exc: Exception) -> None:
        if isinstance(exc, FnserveError) and exc.code == "function_not_found":
            self._forget_functions({spec["function_id"] for _, spec in batch})
        with self._lock:
            self._outstanding.sent(())
            self._lock.notify_all()
        for future, _ in batch:
            future._sent.set()
        for future, _ in batch:
            if not future.done():
                future.set_exception(exc)

    # -- reader ------------------------------------------------------------------------------

    def _start_reader(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, name="fnserve-executor-results", daemon=True)
            self._reader.start()

    def _get_completions(self, cursor: str | None, wait: float) -> dict[str, Any]:
        self.requests["completions"] += 1
        params: dict[str, Any] = {"wait": wait}
        if cursor is not None:
            min_tasks, linger = completions_wanted(len(self._outstanding), self.result_linger)
            params["cursor"] = cursor
            if min_tasks > 1:
                params.update(min_tasks=min_tasks, linger=linger)
        return self.client.transport.get("/v1/tasks/completions", **params, _timeout=wait + self.client.transport.timeout)  # type: ignore[no-any-return]

    def _idle(self) -> bool:
        """Wait while there is nothing to read; True when the reader should stop.

        The long-poll opens as soon as a submit request is on its way, not once it returns: a
        quick task's result then arrives on a request that is already waiting for it.
        """
        with self._lock:
            while not (len(self._outstanding) or self._outstanding.posting_now):
                if self._shutdown and not self._queue and self._sender_done:
                    return True
                self._lock.wait()
            return False

    def _read_loop(self) -> None:
        delay = _RETRY_FIRST
        try:
            while not self._idle():
                try:
                    page = self._get_completions(self._cursor, self.wait)
                except (ServiceUnavailable, TooManyRequests) as exc:
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
                self._cursor = page["cursor"]
                tasks = page["tasks"]
                if page.get("gap"):
                    tasks = tasks + self._read_missed()
                with self._lock:
                    ready = self._outstanding.completed((t["task_id"], t) for t in tasks)
                self._resolve_all(ready)
        finally:
            self._close_progress()

    def _read_missed(self) -> list[dict[str, Any]]:
        """The log was trimmed past our cursor: read our outstanding tasks directly, once."""
        with self._lock:
            ids = self._outstanding.ids()
        found: list[dict[str, Any]] = []
        for part in chunks(ids, 1000):  # type: ignore[arg-type]
            try:
                tasks = self.client.transport.post("/v1/tasks/results", {"task_ids": part})["tasks"]
            except FnserveError as exc:  # e.g. a task expired: fail those futures, not the reader
                tasks = [{"task_id": i, "state": "failed", "error": {"code": exc.code, "message": exc.message}} for i in part]
            found += [t for t in tasks if t["state"] in ("success", "failed", "cancelled")]
        return found

    def _fail_outstanding(self, exc: Exception) -> None:
        with self._lock:
            futures = [self._outstanding.forget(i) for i in self._outstanding.ids()]
        for future in futures:
            if future is not None and not future.done():
                future.set_exception(exc)

    def _resolve_all(self, ready: list[tuple[TaskFuture, dict[str, Any]]]) -> None:
        if not ready:
            return
        delivered = time.time()
        for future, task in ready:
            task.setdefault("timestamps", {})["delivered"] = delivered
            _resolve(future, task)
        bar = self._bar
        if bar is not None:
            bar.update(len(ready))

    def _close_progress(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    # -- cancel ------------------------------------------------------------------------------

    def _cancel(self, future: TaskFuture) -> bool:
        with self._lock:
            if future.done():
                return future.cancelled()
            if not future._taken:
                return future._cancel_locally()  # still queued: the sender skips it
        future._sent.wait()
        if future.task_id is None or future.done():
            return future.cancelled()
        task = self.client.cancel(future.task_id)
        if task["state"] != "cancelled":
            return False  # it finished first; its result arrives as usual
        with self._lock:
            self._outstanding.forget(future.task_id)
        future.task = task
        return future._cancel_locally()


def _resolve(future: TaskFuture, task: dict[str, Any]) -> None:
    """Complete ``future`` from a finished task object (first completion wins)."""
    future.task = task
    if future.done():
        return
    try:
        # The client's allowed_result_serializers hold for futures too.
        value = result_of(task, future._executor.client.allowed_result_serializers)
    except TaskCancelled:
        future._cancel_locally()
        return
    except (RemoteExecutionError, TaskFailed, TaskPending, FnserveError) as exc:
        _settle(future.set_exception, exc)
        return
    _settle(future.set_result, value)


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    try:
        setter(value)
    except InvalidStateError:
        pass  # cancelled meanwhile by its owner


__all__ = ["Executor", "TaskFuture"]
