"""``AsyncExecutor``: awaitable futures for asyncio code, with no thread at all.

Example::

    from fnserve.aio import AsyncClient
    from fnserve.aio_executor import AsyncExecutor

    async with AsyncExecutor(endpoint_id) as ex:
        fut = ex.submit(square, 7)                 # an asyncio future, at once
        print(await fut)                           # 49
        print(await ex.map(square, range(10)))     # [0, 1, 4, ...]

Like :class:`fnserve.Executor`: functions are registered once by content, submissions leave in
batches (under the service's size limits; a refused task fails alone), and results arrive
through one completions long-poll. Here both loops are asyncio tasks in your event loop.
Cancelling a future cancels its task in the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fnserve import serialize
from fnserve.aio import AsyncClient
from fnserve.batching import Outstanding, payload_bytes, spec_size, split_by_bytes, submit_outcomes
from fnserve.task_results import result_of
from fnserve.task_specs import task_spec
from fnserve.errors import FnserveError, PayloadTooLarge, ServiceUnavailable, error_from_dict

_FINISHED = ("success", "failed", "cancelled")
_REQUEST_MARGIN = 64 * 1024


class TaskAwaitable(asyncio.Future[Any]):
    """An asyncio future for one task; ``task_id`` once accepted, ``task`` once finished."""

    task_id: str | None = None
    task: dict[str, Any] | None = None


class AsyncExecutor:
    """Run callables on an endpoint from asyncio code; ``submit`` returns awaitable futures.

    Options as :class:`fnserve.Executor`: ``task_group_id``, ``resource_specification``,
    ``user_endpoint_config``, ``max_retries``, ``batch_size``, ``walltime``, ``runtime``, ``serializer``, ``wait``."""

    def __init__(self, endpoint_id: str, client: AsyncClient | None = None, *, runtime: str | None = None,
                 task_group_id: str | None = None, resource_specification: dict[str, Any] | None = None,
                 max_retries: int | None = None, batch_size: int = 1000, walltime: float | None = None,
                 serializer: str | None = None, wait: float = 30.0, user_endpoint_config: dict[str, Any] | None = None) -> None:
        self.endpoint_id = str(endpoint_id)
        self.client = client or AsyncClient()
        self.runtime, self.walltime, self.serializer, self.wait = runtime, walltime, serializer, wait
        self.max_retries, self.resource_specification = max_retries, resource_specification
        self.user_endpoint_config = user_endpoint_config
        self.task_group_id = str(task_group_id or uuid.uuid4())
        self.batch_size = batch_size
        self._queue: list[tuple[TaskAwaitable, Any, tuple[Any, ...], dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._outstanding: Outstanding[TaskAwaitable] = Outstanding()
        self._functions: dict[str, str] = {}  # sha-256 of the buffer -> function id
        self._cursor: str | None = None
        self._closed = False
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskAwaitable:
        """Queue ``fn(*args, **kwargs)``; returns its future at once (call from the event loop)."""
        return self._enqueue(fn, args, kwargs)

    def submit_to_registered_function(self, function_id: str, args: Iterable[Any] | None = None,
                                      kwargs: dict[str, Any] | None = None) -> TaskAwaitable:
        return self._enqueue(str(function_id), tuple(args or ()), kwargs or {})

    async def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """All results, in order (the first exception is raised)."""
        return list(await asyncio.gather(*(self.submit(fn, *args) for args in zip(*iterables))))

    async def shutdown(self, cancel_futures: bool = False) -> None:
        """No new tasks; wait until every submitted one has finished (or cancel them)."""
        self._closed = True
        if cancel_futures:
            for future in [f for f, *_ in self._queue] + list(self._outstanding.futures.values()):
                future.cancel()
        self._wake.set()
        if self._sender is not None:
            await self._sender
        while len(self._outstanding):
            self._idle.clear()
            await self._idle.wait()
        if self._reader is not None:
            self._reader.cancel()  # its long-poll waits for nothing now: no need to let it time out
            await asyncio.gather(self._reader, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------------

    def _enqueue(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskAwaitable:
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        future = TaskAwaitable()
        future.add_done_callback(self._on_done)
        self._queue.append((future, fn, args, kwargs))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._wake.set()
        return future

    def _on_done(self, future: TaskAwaitable) -> None:
        if future.cancelled() and future.task_id is not None and self._outstanding.forget(future.task_id) is not None:
            asyncio.get_running_loop().create_task(self._cancel(future.task_id))
            self._check_idle()

    async def _cancel(self, task_id: str) -> None:
        try:
            await self.client.cancel(task_id)
        except FnserveError:
            pass  # finished or expired meanwhile: the future is cancelled either way

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:self.batch_size], self._queue[self.batch_size:]
                await self._send([b for b in batch if not b[0].done()])
            if self._closed:
                return

    async def _spec(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if isinstance(fn, str):
            function_id = fn
        else:
            buf = serialize.serialize_function(fn, self.serializer)
            key = hashlib.sha256(buf).hexdigest()
            if key not in self._functions:
                self._functions[key] = await self.client.register_buffer(buf, getattr(fn, "__name__", "function"))
            function_id = self._functions[key]
        return task_spec(function_id, self.endpoint_id, args, kwargs, self.runtime, self.walltime, None,
                          self.client._json_results, max_retries=self.max_retries, task_group_id=self.task_group_id,
                          resource_specification=self.resource_specification,
                          user_endpoint_config=self.user_endpoint_config)

    async def _send(self, batch: list[tuple[TaskAwaitable, Any, tuple[Any, ...], dict[str, Any]]]) -> None:
        ready: list[tuple[TaskAwaitable, dict[str, Any]]] = []
        try:
            limits = await self.client.limits()
            if self._cursor is None:  # before the first task exists: no completion precedes it
                self._cursor = (await self.client.completions(None, 0))["cursor"]
        except FnserveError as exc:
            for future, *_ in batch:
                _settle(future, exc)
            return
        for future, fn, args, kwargs in batch:
            try:
                spec = await self._spec(fn, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - serialization or registration: this future only
                _settle(future, exc)
                continue
            if payload_bytes(spec) > limits["max_payload_bytes"]:
                _settle(future, PayloadTooLarge(f"the task's arguments are {payload_bytes(spec)} bytes serialized, more "
                                                f"than the service accepts ({limits['max_payload_bytes']} bytes)"))
                continue
            ready.append((future, spec))
        start = 0
        for count in split_by_bytes([spec_size(s) for _, s in ready], limits["max_request_bytes"] - _REQUEST_MARGIN,
                                    min(limits["max_batch"], self.batch_size)):
            await self._post(ready[start:start + count])
            start += count

    async def _post(self, part: list[tuple[TaskAwaitable, dict[str, Any]]]) -> None:
        answer, error = None, None
        try:
            answer = await self.client.submit_specs([spec for _, spec in part])
        except FnserveError as exc:
            error = exc
        for (future, _), (task_id, err) in zip(part, submit_outcomes(len(part), answer, error)):
            if task_id is None:
                _settle(future, error_from_dict(err or {}, int((err or {}).get("status", 400))))
                continue
            future.task_id = task_id
            if future.cancelled():
                asyncio.get_running_loop().create_task(self._cancel(task_id))
            else:
                self._outstanding.adopt(task_id, future)
        if len(self._outstanding) and self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        delay = 0.2
        while True:
            if not len(self._outstanding):
                self._idle.set()
            try:
                page = await self.client.completions(self._cursor, self.wait)
            except ServiceUnavailable:
                await asyncio.sleep(delay)  # reconnect backoff, not on the path of a result
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.2
            self._cursor = page["cursor"]
            tasks = page["tasks"]
            if page.get("gap"):
                ids = self._outstanding.ids()
                tasks += await self.client.wait(ids, 0) if ids else []
            for future, task in self._outstanding.completed((t["task_id"], t) for t in tasks if t["state"] in _FINISHED):
                future.task = task
                try:
                    value = result_of(task, self.client.allowed_result_serializers)
                except Exception as exc:  # noqa: BLE001 - the remote error, or a cancellation
                    _settle(future, exc)
                else:
                    if not future.done():
                        future.set_result(value)
            self._check_idle()

    def _check_idle(self) -> None:
        if not len(self._outstanding):
            self._idle.set()


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    from fnserve.errors import TaskCancelled

    if future.done():
        return
    if isinstance(exc, TaskCancelled):
        future.cancel()
    else:
        future.set_exception(exc)


__all__ = ["AsyncExecutor", "TaskAwaitable"]
