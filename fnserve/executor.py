"""``fnserve.Executor``: run Python callables on an endpoint as ``concurrent.futures`` futures.

Example::

    from fnserve import Executor

    def square(x):
        return x * x

    with Executor(endpoint_id) as ex:
        fut = ex.submit(square, 7)
        print(fut.result())                      # 49
        print(list(ex.map(square, range(10))))   # [0, 1, 4, ...]

It is also a drop-in for Globus Compute's ``Executor`` (``Executor(endpoint_id=...)``,
``submit_to_registered_function``, task groups and ``reload_tasks()``, ``resource_specification``,
a mutable ``batch_size``): docs/executor.md has the porting table.

How it works, and why it is fast:

* A function is registered once, the first time it is submitted (by the sha-256 of its
  serialized bytes, so the same function is not registered twice by this process).
* ``submit`` only serializes the arguments and queues the task; a background sender posts what
  is queued in batches, each request under the service's size limits, and the service accepts
  or refuses each task on its own (:mod:`fnserve.pipeline`).
* Results are pushed: a background reader keeps one long-poll open on the completions log,
  which also says when tasks start running (:mod:`fnserve.result_reader`).
* Futures follow ``concurrent.futures`` exactly where it defines behaviour
  (:mod:`fnserve.futures`); a remote exception is raised as its own type when its class is
  imported here (:mod:`fnserve.remote_errors`).

Everything runs in plain threads, so it works unchanged inside Jupyter's running event loop
(``await asyncio.wrap_future(fut)`` works there too; :mod:`fnserve.aio` has an asyncio
executor without threads).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from fnserve import serialize
from fnserve.batching import BatchPolicy, chunked, run_chunk
from fnserve.client import Client
from fnserve.task_specs import task_spec
from fnserve.futures import TaskFuture, settle
from fnserve.pipeline import Pipeline
from fnserve.shell import ShellFunction
from fnserve.task_groups import reload_group

# Functions this process registered: (service url, token, sha-256 of the buffer) -> function id.
_REGISTERED: dict[tuple[str, str | None, str], str] = {}
_REGISTERED_LOCK = threading.Lock()


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose tasks run on an fnserve endpoint.

    ``endpoint_id``: where tasks run (may be set later, before the first submit). ``client``: a
    :class:`~fnserve.client.Client` (default: one from ``~/.fnserve/client.yaml``). ``runtime``:
    the endpoint's runtime to use, if it has several. ``task_group_id``: the task group new tasks
    join (default: a new one; :meth:`reload_tasks` gets a group's futures back, e.g. after a
    kernel restart). ``resource_specification``: a JSON object each task carries to the endpoint
    (e.g. ``{"num_nodes": 2}``). ``max_retries``: reruns of a task after a lost worker (default:
    the endpoint's setting). ``batch_size``: at most this many tasks per submit request (can be
    changed at any time). ``batch_delay``: how long (s) a queued task may wait for others to fill
    a batch; 0 sends at once (batches still form under load). ``walltime``: per-task limit (s).
    ``serializer``: how functions are serialized (``"dill-code"``, ``"source"`` or ``"auto"``; see
    :func:`fnserve.serialize.serialize_function`). ``progress``: show a progress bar.
    ``wait``: seconds each result long-poll may stay open. ``result_linger``: with many tasks
    outstanding, how long (s) the service may hold a results answer to gather more.
    """

    def __init__(
        self,
        endpoint_id: str | None = None,
        client: Client | None = None,
        runtime: str | None = None,
        *,
        task_group_id: str | uuid.UUID | None = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        max_retries: int | None = None,
        batch_size: int = 1000,
        batch_delay: float = 0.0,
        walltime: float | None = None,
        serializer: str | None = None,
        progress: bool = False,
        wait: float = 30.0,
        result_linger: float = 0.05,
    ) -> None:
        self.endpoint_id = None if endpoint_id is None else str(endpoint_id)
        self.client = client or Client()
        self.runtime = runtime
        self.walltime = walltime
        self.serializer = serializer
        self.max_retries = max_retries
        self.resource_specification = resource_specification
        # A multi-user endpoint's template values for each new task (e.g. {"partition": "debug"}).
        self.user_endpoint_config = user_endpoint_config
        self.task_group_id = str(task_group_id) if task_group_id is not None else str(uuid.uuid4())
        self._pipeline = Pipeline(self.client, BatchPolicy(batch_size, batch_delay), wait, result_linger, progress,
                                  on_refused=self._forget_functions)
        self._functions: dict[int, tuple[Callable[..., Any], str]] = {}
        self._functions_lock = threading.Lock()

    # -- settings --------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """At most this many tasks go in one submit request; assign to change it."""
        return self._pipeline.policy.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._pipeline.policy = replace(self._pipeline.policy, batch_size=int(value))

    @property
    def resource_specification(self) -> dict[str, Any] | None:
        """What each new task asks of the endpoint's resources (a JSON object), or None."""
        return self._resource_specification

    @resource_specification.setter
    def resource_specification(self, value: dict[str, Any] | None) -> None:
        if value is not None:
            import json

            if not isinstance(value, dict):
                raise TypeError(f"resource_specification must be a dict, not {type(value).__name__}")
            json.dumps(value)  # a TypeError now, not a refused task later
        self._resource_specification = value

    @property
    def requests(self) -> dict[str, int]:
        """HTTP requests made so far, by kind (submit, completions, cancel)."""
        return self._pipeline.requests

    # -- concurrent.futures.Executor ---------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint; returns its future at once.

        A function or arguments that cannot be serialized (or registered) fail the future, as
        the standard library's process pool does; only submitting after shutdown raises."""
        self._check_open()
        try:
            if isinstance(fn, ShellFunction):  # its placeholders are checked here already
                fn.render(*args, **kwargs)
            function_id = self.register_function(fn)
        except Exception as exc:  # noqa: BLE001 - it belongs on the future
            return self._failed(exc)
        return self.submit_to_registered_function(function_id, args, kwargs)

    def submit_to_registered_function(self, function_id: str, args: Iterable[Any] | None = None,
                                      kwargs: dict[str, Any] | None = None) -> TaskFuture:
        """Run an already registered function (yours, or one shared with you) by its id, as
        Globus Compute's method of the same name does."""
        self._check_open()
        if self.endpoint_id is None:
            raise ValueError("no endpoint: pass endpoint_id to Executor() or set ex.endpoint_id")
        try:
            spec = task_spec(str(function_id), self.endpoint_id, tuple(args or ()), kwargs, self.runtime, self.walltime,
                              None, self.client._json_results, getattr(self.client, "_by_reference", None),
                              getattr(self.client, "_prepare_call", None),
                              max_retries=self.max_retries, task_group_id=self.task_group_id,
                              resource_specification=self.resource_specification,
                              user_endpoint_config=self.user_endpoint_config)
        except Exception as exc:  # noqa: BLE001 - e.g. arguments dill cannot serialize
            return self._failed(exc)
        future = TaskFuture(self._pipeline)
        self._pipeline.enqueue(future, spec)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like :func:`map`, running on the endpoint; results in order. Every call is submitted
        at once. With ``timeout``, iterating raises ``TimeoutError`` if a result is not ready that
        many seconds after ``map`` was called, and the calls not started yet are cancelled (as the
        standard library does). ``chunksize``: calls per task (each task runs ``chunksize`` calls
        in a row on one worker: fewer, longer tasks for many quick calls)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        if chunksize == 1:
            futures = [self.submit(fn, *args) for args in calls]
        else:
            chunk_fn = functools.partial(run_chunk, fn)
            futures = [self.submit(chunk_fn, chunk) for chunk in chunked(calls, chunksize)]

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    future = futures.pop()
                    try:
                        value = future.result(None if end is None else end - time.monotonic())
                    finally:
                        future.cancel()  # a no-op once done; stops one that timed out
                    if chunksize == 1:
                        yield value
                    else:
                        yield from value
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; send what is queued. ``wait``: block until every task has finished.
        ``cancel_futures``: cancel the tasks that have not started running (queued here or in
        the service), as the standard library does."""
        self._pipeline.close(wait, cancel_futures)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    # -- task groups -------------------------------------------------------------------------

    def reload_tasks(self, task_group_id: str | uuid.UUID | None = None) -> list[TaskFuture]:
        """Futures for every task of a task group (default: this executor's), in submission
        order: finished ones already done, the others completed as their results arrive. Use it
        to get your futures back after a kernel restart::

            ex = Executor(endpoint_id, task_group_id=saved_group_id)
            futures = ex.reload_tasks()
        """
        self._check_open()
        return reload_group(self._pipeline, str(task_group_id or self.task_group_id))

    # -- functions ---------------------------------------------------------------------------

    def register_function(self, fn: Callable[..., Any], function_id: str | None = None) -> str:
        """The function id of ``fn``, registering it on first use (by content hash). With
        ``function_id``, use that already registered function for ``fn`` instead."""
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn and function_id is None:
            return known[1]
        with self._functions_lock:
            if function_id is None:
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

    register = register_function  # the name this class used first

    def _forget_functions(self, function_ids: set[str]) -> None:
        # The service no longer knows them (deleted): register again on the next submit.
        with self._functions_lock, _REGISTERED_LOCK:
            for key in [k for k, v in _REGISTERED.items() if v in function_ids]:
                del _REGISTERED[key]
            for fn_key in [k for k, (_, v) in self._functions.items() if v in function_ids]:
                del self._functions[fn_key]

    # -- helpers -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._pipeline.shutdown:
            raise RuntimeError("cannot submit after shutdown")

    def _failed(self, exc: BaseException) -> TaskFuture:
        future = TaskFuture(self._pipeline)
        future._sent.set()
        settle(future, future.set_exception, exc)
        return future

    def __repr__(self) -> str:
        return (f"Executor(endpoint_id={self.endpoint_id!r}, task_group_id={self.task_group_id!r}, "
                f"batch_size={self.batch_size})")


__all__ = ["Executor", "TaskFuture"]
