"""What one submitted task carries: the task spec of a ``POST /v1/tasks`` body, and
:class:`Batch`, several of them sent in one request (``Client.batch_run``)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from fnserve import oob_frames, serialize
from fnserve.oob_frames import Part


def b64(buf: bytes) -> str:
    return base64.b64encode(buf).decode("ascii")


@dataclass
class Batch:
    """Several task submissions sent in one request (see :meth:`Client.batch_run`).

    ``task_group_id`` and ``resource_specification``, when set, apply to every task added."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    task_group_id: str | None = None
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    json_results: bool = False  # the client refuses dill results: ask for JSON
    reference: Callable[[list[Part]], bytes] | None = None  # large payloads by reference (the client's)
    prepare: Callable[..., Any] | None = None  # large arguments as ProxyStore proxies (the client's)

    def add(self, function_id: str, endpoint_id: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
            runtime: str | None = None, walltime: float | None = None, serializer: str | None = None,
            max_retries: int | None = None) -> None:
        self.tasks.append(task_spec(function_id, endpoint_id, tuple(args), kwargs, runtime, walltime, serializer,
                                     self.json_results, self.reference, self.prepare, max_retries=max_retries, task_group_id=self.task_group_id,
                                     resource_specification=self.resource_specification,
                                     user_endpoint_config=self.user_endpoint_config))

    def __len__(self) -> int:
        return len(self.tasks)


def task_spec(function_id: str, endpoint_id: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
               runtime: str | None, walltime: float | None, serializer: str | None, json_results: bool = False,
               reference: Callable[[list[Part]], bytes] | None = None, prepare: Callable[..., Any] | None = None,
               **options: Any) -> dict[str, Any]:
    """One task of a ``POST /v1/tasks`` body. ``json_results``: ask for a JSON result (a client
    that refuses dill results). ``reference``: what turns a large payload into a reference
    buffer (``Client._by_reference``). ``prepare``: what turns large arguments into ProxyStore
    proxies (``Client._prepare_call``). ``options``: ``max_retries``, ``task_group_id``,
    ``resource_specification`` (left out when None)."""
    call_options = None
    if prepare is not None and (serializer or serialize.DILL_DATA) == serialize.DILL_DATA:
        args, kwargs, call_options = prepare(args, kwargs or {})
    parts = serialize.serialize_args_parts(args, kwargs, strategy=serializer or serialize.DILL_DATA, options=call_options)
    # Large arrays stay views of the caller's memory until they are sent (by reference).
    payload = reference(parts) if reference is not None else oob_frames.join(parts)
    spec: dict[str, Any] = {
        "function_id": str(function_id),
        "endpoint_id": str(endpoint_id),
        "payload": b64(payload),
        "result_format": "json" if serializer == serialize.JSON_DATA or json_results else "python",
    }
    if runtime:
        spec["runtime"] = runtime
    if walltime is not None:
        spec["walltime"] = walltime
    spec.update((k, v) for k, v in options.items() if v is not None)
    return spec


