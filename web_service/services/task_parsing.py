"""Reading a task request: the ``POST /v1/tasks`` body and its tasks, task ids, wait times and
counts (pure: nothing here touches Redis or the database).

A batch is judged task by task: :func:`parse_task_items` gives an outcome per task (a
:class:`TaskSpec` still good, or the error that refused it, naming its index).
"""

from __future__ import annotations

import math
import re
from typing import Any, get_args

import msgspec

from fnserve import serialize, user_endpoint_config
from fnserve.errors import FnserveError, NotFound, PayloadTooLarge, SerializationError
from web_service.rest_bodies.decoding import decode
from web_service.rest_bodies.requests import MAX_ID_LENGTH, ReturnWhen, TaskRequest, TaskResultsRequest, TaskSubmission
from web_service.rest_bodies.responses import BatchError
from web_service.store.record import TaskSpec
from web_service.validation import decode_base64, invalid

RETURN_WHEN: tuple[str, ...] = get_args(ReturnWhen)
MAX_RESOURCE_SPEC_BYTES = 4096  # a task's resource_specification, as JSON

__all__ = ["MAX_ID_LENGTH"]

# What one task of a batch came to: still good, or the error that refused it.
Outcome = TaskSpec | FnserveError


# -- validation (pure) ---------------------------------------------------------------------------


DEFAULT_MAX_WALLTIME = 30 * 24 * 3600.0  # FNSERVE_MAX_WALLTIME's default


def parse_task_batch(body: dict[str, Any], *, max_payload_bytes: int, max_batch: int,
                     max_walltime: float = DEFAULT_MAX_WALLTIME) -> list[TaskSpec]:
    """Validate a whole ``POST /v1/tasks`` body; the first bad task's error names its index."""
    items = parse_task_items(body, max_payload_bytes=max_payload_bytes, max_batch=max_batch, max_walltime=max_walltime)
    raise_first_error(items)
    return items  # type: ignore[return-value]


def parse_task_items(body: dict[str, Any], *, max_payload_bytes: int, max_batch: int,
                     max_walltime: float = DEFAULT_MAX_WALLTIME) -> list[Outcome]:
    """Validate a ``POST /v1/tasks`` body task by task (see :func:`judge_tasks`)."""
    return judge_tasks(decode(body, TaskSubmission), max_payload_bytes=max_payload_bytes, max_batch=max_batch,
                       max_walltime=max_walltime)


def judge_tasks(body: TaskSubmission, *, max_payload_bytes: int, max_batch: int,
                max_walltime: float = DEFAULT_MAX_WALLTIME) -> list[Outcome]:
    """A spec per good task of a batch, the error (naming its index) per bad one. A batch
    larger than ``max_batch`` raises."""
    tasks = body.tasks
    if len(tasks) > max_batch:
        raise PayloadTooLarge(
            f"a batch may hold at most {max_batch} tasks, this one has {len(tasks)}; split it",
            code="batch_too_large", details={"field": "tasks", "limit": max_batch, "count": len(tasks)},
        )
    items: list[Outcome] = []
    for i, item in enumerate(tasks):
        try:
            items.append(parse_task(i, item, max_payload_bytes, max_walltime))
        except FnserveError as exc:
            exc.details.setdefault("index", i)
            items.append(exc)
    return items


def error_entry(index: int, exc: FnserveError) -> BatchError:
    """How the answer to a batch names one refused task."""
    details = {k: v for k, v in exc.details.items() if k not in ("index", "errors")}
    return BatchError(index=index, status=exc.http_status, code=exc.code, message=exc.message,
                      details=details or msgspec.UNSET)


def raise_first_error(items: list[Outcome]) -> None:
    """Raise the error of the first refused task, if any (what an atomic batch answers)."""
    for item in items:
        if isinstance(item, FnserveError):
            raise item


def parse_task(index: int, item: Any, max_payload_bytes: int, max_walltime: float = DEFAULT_MAX_WALLTIME) -> TaskSpec:
    """One task of a batch (a :class:`TaskRequest` as sent) as the :class:`TaskSpec` it asks for."""
    prefix = f"tasks[{index}]"
    try:
        req = decode(item, TaskRequest, prefix)
        if req.walltime is not None and req.walltime > max_walltime:
            # Bounded: a walltime like 1e308 overflows the worker's timers (and means "never").
            raise invalid(f"{prefix}.walltime", f"must be at most {max_walltime:g} s (the service's FNSERVE_MAX_WALLTIME)",
                          limit=max_walltime)
        resource_specification = _resource_specification(req.resource_specification, prefix)
        user_config = req.user_endpoint_config
        if user_config is not None:
            try:
                user_config = user_endpoint_config.check_values(user_config, None)
            except FnserveError as exc:
                exc.message = f"{prefix}.{exc.message}"
                exc.details["field"] = f"{prefix}.{exc.details.get('field', 'user_endpoint_config')}"
                raise
        payload = _payload(req, prefix, max_payload_bytes)
    except FnserveError as exc:
        exc.details.setdefault("index", index)
        raise
    if req.result_format == "json" or (req.result_format is None and payload.startswith(_JSON_HEADER_START)):
        result_strategy: str | None = serialize.JSON_DATA
    else:
        result_strategy = None
    return TaskSpec(function_id=req.function_id, endpoint_id=req.endpoint_id, payload=payload, runtime=req.runtime,
                    walltime=req.walltime, result_strategy=result_strategy, max_retries=req.max_retries,
                    task_group_id=req.task_group_id, resource_specification=resource_specification,
                    user_endpoint_config=user_config)


def _resource_specification(value: dict[str, Any] | None, prefix: str) -> bytes | None:
    """A JSON object the endpoint gets with the task (e.g. ``{"num_nodes": 2}``); kept as text.

    The service only records and forwards it: what the keys mean is the endpoint's business."""
    if value is None:
        return None
    field = f"{prefix}.resource_specification"
    if user_endpoint_config.ROUTING_KEY in value:  # set by the service only: who submitted it
        raise invalid(f"{field}.{user_endpoint_config.ROUTING_KEY}", "is set by the service; leave it out")
    text = msgspec.json.encode(value)
    if len(text) > MAX_RESOURCE_SPEC_BYTES:
        raise invalid(field, f"must be at most {MAX_RESOURCE_SPEC_BYTES} bytes as JSON", limit=MAX_RESOURCE_SPEC_BYTES)
    return text


_JSON_HEADER_START = f"{serialize.MAGIC} {serialize.JSON_DATA} ".encode()


def _payload(req: TaskRequest, prefix: str, max_bytes: int) -> bytes:
    has_args = req.args is not msgspec.UNSET or req.kwargs is not msgspec.UNSET
    if req.payload is not None:
        if has_args:
            raise invalid(f"{prefix}.payload", "cannot be combined with args/kwargs: send one or the other")
        try:
            buf = decode_base64(req.payload, f"{prefix}.payload", max_bytes)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(
                f"{exc.message} for arguments sent inline; pass large arguments by reference: the SDK "
                "uploads arguments over its ref_threshold to the object store (Client(ref_threshold=...)), "
                "or upload them yourself (POST /v1/objects) and send a reference payload (docs/data.md)",
                code=exc.code, details=exc.details) from None
        try:
            header = serialize.parse_header(buf)
        except SerializationError as exc:
            raise SerializationError(f"{prefix}.payload: {exc.message}", code=exc.code, details={"field": f"{prefix}.payload"}) from None
        if header.is_code:
            raise SerializationError(
                f"{prefix}.payload must be arguments (a data strategy), not {header.strategy!r}",
                code="wrong_strategy", details={"field": f"{prefix}.payload", "strategy": header.strategy},
            )
        return buf
    args = [] if req.args is msgspec.UNSET else req.args
    kwargs = {} if req.kwargs is msgspec.UNSET else req.kwargs
    # Plain JSON in, plain JSON out: wrapping it is safe (no code is deserialized).
    buf = serialize.serialize_args(args, kwargs, strategy=serialize.JSON_DATA)
    if len(buf) > max_bytes:
        raise PayloadTooLarge(f"{prefix} arguments are larger than the limit of {max_bytes} bytes", details={"field": f"{prefix}.args", "limit": max_bytes})
    return buf


# What the service hands out as task ids (str(uuid4())). Anything else names no task, and is
# never used to build a Redis key (``<id>:out`` would name another key type: a 500 before this).
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def task_not_found(task_id: str, **details: Any) -> NotFound:
    return NotFound(f"no task {task_id!r} (unknown, or expired after its result TTL)", code="task_not_found",
                    details={"task_id": task_id, **details})


def check_task_id(task_id: str, **details: Any) -> str:
    """``task_id`` if it has the form of a task id, else 404 ``task_not_found``."""
    if not _TASK_ID.fullmatch(task_id):
        raise task_not_found(task_id, **details)
    return task_id


def parse_task_ids(body: dict[str, Any], max_batch: int) -> list[str]:
    """The task ids of a ``POST /v1/tasks/results`` body (see :func:`check_task_ids`)."""
    return check_task_ids(decode(body, TaskResultsRequest).task_ids, max_batch)


def check_task_ids(ids: list[str], max_batch: int) -> list[str]:
    """``ids`` if there are at most ``max_batch`` and each has the form of a task id."""
    if len(ids) > max_batch:
        raise PayloadTooLarge(f"at most {max_batch} task ids per call", code="batch_too_large", details={"field": "task_ids", "limit": max_batch})
    for i, tid in enumerate(ids):
        check_task_id(tid, index=i)
    return ids


def parse_return_when(body: dict[str, Any]) -> bool:
    """True for FIRST_COMPLETED."""
    value = body.get("return_when", "ALL_COMPLETED")
    if value not in RETURN_WHEN:
        raise invalid("return_when", f"must be one of {', '.join(RETURN_WHEN)}")
    return bool(value == "FIRST_COMPLETED")


def parse_wait(value: Any, field: str = "wait") -> float:
    """A long-poll duration in seconds (0 when absent); strings come from query parameters."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    # bool is an int in Python but never a sensible number of seconds.
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise invalid(field, "must be a number >= 0")
    return float(value)


#: Largest count a query parameter may carry: Redis takes signed 64-bit offsets, JSON clients
#: exact integers up to 2**53; a larger one was a 500 from Redis before this bound.
MAX_COUNT = 2**53 - 1


def parse_count(value: Any, field: str, default: int, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An integer from a query parameter, between ``minimum`` and ``maximum``."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = None
    if n is None or not minimum <= n <= maximum:
        raise invalid(field, f"must be an integer from {minimum} to {maximum}")
    return n
