"""``AsyncClient``: the SDK for asyncio programs (services, notebooks), without threads.

Every call is a coroutine over one ``httpx.AsyncClient`` connection pool (``pip install
'fnserve[async]'``); waiting for results is the service's long-poll, so an ``await`` costs no
thread and no polling. Example::

    from fnserve.aio import AsyncClient

    async with AsyncClient() as fc:                  # ~/.fnserve/client.yaml, as Client()
        fid = await fc.register_function(add)
        task_id = await fc.submit(fid, endpoint_id, (1, 2))
        print(await fc.get_result(task_id, timeout=30))   # 3

:class:`fnserve.aio_executor.AsyncExecutor` gives awaitable futures on top of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from fnserve import serialize
from fnserve.client import _DEFAULT_LIMITS, _LONG_POLL, Client
from fnserve.task_results import result_of, status_entry
from fnserve.task_specs import b64, task_spec
from fnserve.config import ClientConfig
from fnserve.errors import ServiceUnavailable
from fnserve.transport import decode_answer

_FINISHED = ("success", "failed", "cancelled")


class AsyncClient:
    """A connection to an fnserve service for asyncio code, acting as one user.

    ``service_url`` and ``token`` as for :class:`fnserve.Client` (default: the client config;
    a Globus login is honoured: its token is read once, when the client is made)."""

    def __init__(self, service_url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 config: ClientConfig | None = None, allowed_result_serializers: Iterable[str] | None = None) -> None:
        import httpx

        # The same config, login and result-serializer rules as Client.
        sync = Client(service_url, token, timeout=timeout, config=config, allowed_result_serializers=allowed_result_serializers)
        self.allowed_result_serializers = sync.allowed_result_serializers
        self._json_results = sync._json_results
        self.service_url = sync.service_url
        self.timeout = timeout
        self._token = sync.token()
        self._limits: dict[str, int] | None = None
        self._http = httpx.AsyncClient(base_url=self.service_url.rstrip("/"), timeout=timeout,
                                       headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"})

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """One REST call; the decoded JSON answer, or the service's error raised as FnserveError."""
        import httpx

        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            resp = await self._http.request(method, path, content=content, params=params, headers=headers,
                                            timeout=timeout or self.timeout)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"cannot reach the fnserve service at {self.service_url} ({type(exc).__name__}); "
                                     "is it running? (`fnserve up` starts a local one)", code="service_unreachable") from exc
        return decode_answer(resp.status_code, resp.content)

    async def limits(self) -> dict[str, int]:
        """The service's size limits, as :meth:`fnserve.Client.limits`."""
        if self._limits is None:
            found = (await self.request("GET", "/v1/version")).get("limits") or {}
            self._limits = {**_DEFAULT_LIMITS, **{k: int(v) for k, v in found.items() if k in _DEFAULT_LIMITS}}
        return self._limits

    # -- functions and tasks ---------------------------------------------------------------------

    async def register_function(self, function: Callable[..., Any], name: str | None = None, description: str = "", *,
                                serializer: str | None = None) -> str:
        return await self.register_buffer(serialize.serialize_function(function, serializer),
                                          name or str(getattr(function, "__name__", "function")), description)

    async def register_buffer(self, buf: bytes, name: str, description: str = "") -> str:
        body = {"name": name, "function": b64(buf), **({"description": description} if description else {})}
        return str((await self.request("POST", "/v1/functions", body))["function_id"])

    async def submit(self, function_id: str, endpoint_id: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
                     *, runtime: str | None = None, walltime: float | None = None, **options: Any) -> str:
        """Run a registered function; returns the task id. ``options``: ``max_retries``,
        ``task_group_id``, ``resource_specification``, ``user_endpoint_config``, as :meth:`fnserve.Client.submit`."""
        spec = task_spec(function_id, endpoint_id, tuple(args), kwargs, runtime, walltime, None, self._json_results, **options)
        return str((await self.request("POST", "/v1/tasks", {"tasks": [spec]}))["task_ids"][0])

    async def run(self, function_id: str, endpoint_id: str, *args: Any, **kwargs: Any) -> str:
        return await self.submit(function_id, endpoint_id, args, kwargs)

    async def submit_specs(self, specs: list[dict[str, Any]]) -> dict[str, Any]:
        """Post task specs (as ``fnserve.task_specs.task_spec`` makes them) as one batch, judged task
        by task; the answer as the REST API gives it."""
        return await self.request("POST", "/v1/tasks", {"tasks": specs})  # type: ignore[no-any-return]

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/tasks/{task_id}")  # type: ignore[no-any-return]

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/v1/tasks/{task_id}/cancel", {})  # type: ignore[no-any-return]

    async def wait(self, task_ids: list[str], timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> list[dict[str, Any]]:
        """Wait (long-poll) until the tasks finish, or the first one, or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _LONG_POLL if deadline is None else max(0.0, min(_LONG_POLL, deadline - time.monotonic()))
            answer = await self.request("POST", "/v1/tasks/results", {"task_ids": list(task_ids), "wait": left,
                                                                      "return_when": return_when}, timeout=left + self.timeout)
            tasks: list[dict[str, Any]] = answer["tasks"]
            done = [t for t in tasks if t["state"] in _FINISHED]
            if len(done) == len(tasks) or (return_when == "FIRST_COMPLETED" and done) or left <= 0 or (
                deadline is not None and time.monotonic() >= deadline
            ):
                return tasks

    async def get_result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a task and return its result; re-raise its remote exception."""
        return result_of((await self.wait([task_id], timeout))[0], self.allowed_result_serializers)

    async def get_batch_result(self, task_ids: list[str], timeout: float = 0.0) -> dict[str, dict[str, Any]]:
        """Status of many tasks at once, as :meth:`fnserve.Client.get_batch_result`."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(task_ids), 1000):
            for task in await self.wait(task_ids[start:start + 1000], timeout):
                out[task["task_id"]] = status_entry(task, self.allowed_result_serializers)
        return out

    async def completions(self, cursor: str | None, wait: float, **params: Any) -> dict[str, Any]:
        """One read of your completion log (``GET /v1/tasks/completions``)."""
        query: dict[str, Any] = {"wait": wait, **params}
        if cursor is not None:
            query["cursor"] = cursor
        return await self.request("GET", "/v1/tasks/completions", params=query, timeout=wait + self.timeout)  # type: ignore[no-any-return]


__all__ = ["AsyncClient"]
