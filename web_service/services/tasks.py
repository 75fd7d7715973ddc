"""Submitting tasks and reading, waiting for and cancelling them.

The submit hot path: validate the whole batch in memory, authorize each distinct function and
endpoint (in-process cache, else one SQL query for all of them), one pipelined Redis check that
function bodies are cached and endpoints not deleted, then one pipelined Redis write.

A batch is judged task by task: every check yields an outcome per task (a :class:`TaskSpec`
still good, or the error that refused it, naming its index), so one bad task fails alone. An
``atomic`` batch is refused whole when any task is bad (the first bad task's error).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Iterable

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve import resources, serialize, shell, task_resources, user_endpoint_config
from fnserve.errors import FnserveError, Forbidden, NotFound, PayloadTooLarge, SerializationError
from web_service.auth import Identity
from web_service.registry.models import Function
from web_service.services import OwnershipCache
from web_service.services.access import access_for, function_not_allowed, may_use
from web_service.services.endpoints import endpoint_not_found
from web_service.services.ended_tasks import log_cancelled
from web_service.services.functions import forbidden, function_not_found
from web_service.services.runtimes import task_runtimes
from web_service.quotas import QuotaChecker
from web_service.store.record import TaskRecord, TaskSpec, new_task
from web_service.task_store import TaskStore
from web_service.ttl_cache import TTLCache
from web_service.validation import decode_base64, invalid, optional_number, optional_str, require_str

RESULT_FORMATS = ("json", "python")
RETURN_WHEN = ("ALL_COMPLETED", "FIRST_COMPLETED")
MAX_ID_LENGTH = 64
MAX_RETRIES = 100  # per task: reruns after a lost worker or block
MAX_RESOURCE_SPEC_BYTES = 4096  # a task's resource_specification, as JSON


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
    """Validate a ``POST /v1/tasks`` body task by task: a spec per good task, the error (naming
    its index) per bad one. A body that is not a batch at all raises."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise invalid("tasks", "must be a non-empty list")
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


def parse_atomic(body: dict[str, Any]) -> bool:
    """``atomic``: refuse the whole batch if any task is bad (default false: judge each task)."""
    value = body.get("atomic", False)
    if not isinstance(value, bool):
        raise invalid("atomic", "must be true or false")
    return value


def error_entry(index: int, exc: FnserveError) -> dict[str, Any]:
    """How the answer to a batch names one refused task."""
    details = {k: v for k, v in exc.details.items() if k not in ("index", "errors")}
    return {"index": index, "status": exc.http_status, "code": exc.code, "message": exc.message,
            **({"details": details} if details else {})}


def raise_first_error(items: list[Outcome]) -> None:
    """Raise the error of the first refused task, if any (what an atomic batch answers)."""
    for item in items:
        if isinstance(item, FnserveError):
            raise item


def parse_task(index: int, item: Any, max_payload_bytes: int, max_walltime: float = DEFAULT_MAX_WALLTIME) -> TaskSpec:
    prefix = f"tasks[{index}]"
    if not isinstance(item, dict):
        raise invalid(prefix, "must be an object", index=index)
    try:
        function_id = require_str(item, "function_id", f"{prefix}.function_id", MAX_ID_LENGTH)
        endpoint_id = require_str(item, "endpoint_id", f"{prefix}.endpoint_id", MAX_ID_LENGTH)
        runtime = optional_str(item, "runtime", f"{prefix}.runtime", 128)
        walltime = optional_number(item, "walltime", f"{prefix}.walltime", exclusive=True)
        if walltime is not None and walltime > max_walltime:
            # Bounded: a walltime like 1e308 overflows the worker's timers (and means "never").
            raise invalid(f"{prefix}.walltime", f"must be at most {max_walltime:g} s (the service's FNSERVE_MAX_WALLTIME)",
                          limit=max_walltime)
        max_retries = item.get("max_retries")
        if max_retries is not None and (type(max_retries) is not int or not 0 <= max_retries <= MAX_RETRIES):
            raise invalid(f"{prefix}.max_retries", f"must be an integer from 0 to {MAX_RETRIES}")
        result_format = item.get("result_format")
        if result_format is not None and result_format not in RESULT_FORMATS:
            raise invalid(f"{prefix}.result_format", f"must be one of {', '.join(RESULT_FORMATS)}")
        task_group_id = optional_str(item, "task_group_id", f"{prefix}.task_group_id", MAX_ID_LENGTH)
        resource_specification = _resource_specification(item.get("resource_specification"), prefix)
        user_config = item.get("user_endpoint_config")
        if user_config is not None:
            try:
                user_config = user_endpoint_config.check_values(user_config, None)
            except FnserveError as exc:
                exc.message = f"{prefix}.{exc.message}"
                exc.details["field"] = f"{prefix}.{exc.details.get('field', 'user_endpoint_config')}"
                raise
        payload = _payload(item, prefix, max_payload_bytes)
    except FnserveError as exc:
        exc.details.setdefault("index", index)
        raise
    if result_format == "json" or (result_format is None and payload.startswith(_JSON_HEADER_START)):
        result_strategy: str | None = serialize.JSON_DATA
    else:
        result_strategy = None
    return TaskSpec(function_id=function_id, endpoint_id=endpoint_id, payload=payload, runtime=runtime, walltime=walltime,
                    result_strategy=result_strategy, max_retries=max_retries, task_group_id=task_group_id,
                    resource_specification=resource_specification, user_endpoint_config=user_config)


def _resource_specification(value: Any, prefix: str) -> bytes | None:
    """A JSON object the endpoint gets with the task (e.g. ``{"num_nodes": 2}``); kept as text.

    The service only records and forwards it: what the keys mean is the endpoint's business."""
    if value is None:
        return None
    field = f"{prefix}.resource_specification"
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise invalid(field, "must be a JSON object")
    if user_endpoint_config.ROUTING_KEY in value:  # set by the service only: who submitted it
        raise invalid(f"{field}.{user_endpoint_config.ROUTING_KEY}", "is set by the service; leave it out")
    text = msgspec.json.encode(value)
    if len(text) > MAX_RESOURCE_SPEC_BYTES:
        raise invalid(field, f"must be at most {MAX_RESOURCE_SPEC_BYTES} bytes as JSON", limit=MAX_RESOURCE_SPEC_BYTES)
    return text


_JSON_HEADER_START = f"{serialize.MAGIC} {serialize.JSON_DATA} ".encode()


def _payload(item: dict[str, Any], prefix: str, max_bytes: int) -> bytes:
    has_args = "args" in item or "kwargs" in item
    if item.get("payload") is not None:
        if has_args:
            raise invalid(f"{prefix}.payload", "cannot be combined with args/kwargs: send one or the other")
        try:
            buf = decode_base64(item["payload"], f"{prefix}.payload", max_bytes)
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
    args = item.get("args", [])
    kwargs = item.get("kwargs", {})
    if not isinstance(args, list):
        raise invalid(f"{prefix}.args", "must be a list")
    if not isinstance(kwargs, dict):
        raise invalid(f"{prefix}.kwargs", "must be an object")
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
    ids = body.get("task_ids")
    if not isinstance(ids, list) or not ids:
        raise invalid("task_ids", "must be a non-empty list of task ids")
    if len(ids) > max_batch:
        raise PayloadTooLarge(f"at most {max_batch} task ids per call", code="batch_too_large", details={"field": "task_ids", "limit": max_batch})
    for i, tid in enumerate(ids):
        if not isinstance(tid, str) or not tid or len(tid) > MAX_ID_LENGTH:
            raise invalid(f"task_ids[{i}]", "must be a task id string", index=i)
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
            raise invalid(field, "must be a number of seconds >= 0") from None
    wait = optional_number({field: value}, field)
    return wait or 0.0


# -- submit ----------------------------------------------------------------------------------------


def submit_tasks(session: Session, store: TaskStore, owner: Identity, specs: list[Outcome], cache: OwnershipCache | None = None,
                 quotas: QuotaChecker | None = None, *, atomic: bool = True,
                 task_ids: list[str] | None = None) -> list[str | FnserveError]:
    """Authorize, count against quotas and durably queue a validated batch.

    ``specs`` holds a spec per task, or the error that already refused it (see
    :func:`parse_task_items`). Returns, in batch order, the task id of each accepted task and
    the error of each refused one. ``atomic``: refuse the whole batch (raise the first task's
    error) unless every task passes; otherwise the good tasks are queued and the bad ones fail
    alone. A batch in which no task passes raises its first error either way.

    ``task_ids`` (one per spec): ids fixed in advance (trigger firings); a task whose id
    already exists is not written again (see :meth:`TaskStore.submit_new`).
    """
    outcomes = list(specs)
    live = [i for i, s in enumerate(outcomes) if isinstance(s, TaskSpec)]
    for stage in (_authorize, _check_allowlists, _ensure_usable):
        if not live:
            break
        view = {i: outcomes[i] for i in live}
        refused = stage(session, store, owner, view, cache)  # type: ignore[arg-type]
        for i, s in view.items():  # a stage may stamp a spec (a multi-user endpoint's task)
            outcomes[i] = s
        for i, err in refused.items():
            outcomes[i] = err
        live = [i for i in live if i not in refused]
    runtimes = _runtimes(session, store, owner, outcomes, live, cache)
    if atomic or not runtimes:
        errors = [error_entry(i, o) for i, o in enumerate(outcomes) if isinstance(o, FnserveError)]
        if len(errors) > 1:  # refused whole: the first error's body lists every bad task
            next(o for o in outcomes if isinstance(o, FnserveError)).details["errors"] = errors
        raise_first_error(outcomes)
    tasks = []
    for i, runtime in runtimes.items():
        s = outcomes[i]
        assert isinstance(s, TaskSpec)
        tasks.append(new_task(s, task_ids[i] if task_ids is not None else str(uuid.uuid4()), owner.user_id, runtime=runtime))
    reservation = quotas.reserve(session, owner.user_id, len(tasks)) if quotas is not None else None
    try:
        if task_ids is None:
            store.submit(tasks)
        else:
            written = set(store.submit_new(tasks))
            if reservation is not None and len(written) < len(tasks):
                reservation.release(len(tasks) - len(written))
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    for i, task in zip(runtimes, tasks):
        outcomes[i] = task.task_id  # type: ignore[call-overload]
    return outcomes  # type: ignore[return-value]


def _authorize(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
               cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """Each task's function and endpoint are live and usable by ``owner`` (owned, shared or
    public). Cached snapshots make this zero SQL queries on the warm path."""
    keys = {k: None for s in specs.values() for k in (("function", s.function_id), ("endpoint", s.endpoint_id))}
    access = access_for(session, keys, cache)
    usable: dict[tuple[str, str], bool] = {}
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        for kind, ident in (("function", s.function_id), ("endpoint", s.endpoint_id)):
            acc = access.get((kind, ident))
            if acc is None:
                refused[i] = (function_not_found if kind == "function" else endpoint_not_found)(ident, index=i)
                break
            if (kind, ident) not in usable:
                usable[(kind, ident)] = may_use(session, owner, acc, cache)
            if not usable[(kind, ident)]:
                refused[i] = forbidden(kind, ident, index=i)
                break
    return refused


def _check_allowlists(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
                      cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """A restricted endpoint runs only the functions on its allowlist."""
    access = access_for(session, {("endpoint", s.endpoint_id): None for s in specs.values()}, cache)
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        acc = access.get(("endpoint", s.endpoint_id))
        if acc is not None and acc.restricted and s.function_id not in acc.allowed:
            refused[i] = function_not_allowed(s.function_id, s.endpoint_id, index=i)
    return refused


def _ensure_usable(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
                   cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """One Redis round trip: function bodies present, endpoints not deleted meanwhile, and each
    task's arguments in a strategy its endpoint loads (:func:`_serializer_refusal`)."""
    functions = list({s.function_id: None for s in specs.values()})
    endpoints = list({s.endpoint_id: None for s in specs.values()})
    heads, deleted, status = store.submit_checks(functions, endpoints, len(_SHELL_HEADER_START), ("serializers", "mpi_nodes", "offers", "user_config_schema"))
    declared = {e: _policy(v[0]) for e, v in status.items()}
    mpi_nodes = {e: int(v[1]) if v[1] is not None else -1 for e, v in status.items()}
    offers = {e: json.loads(v[2]) if v[2] else None for e, v in status.items()}
    # A multi-user endpoint's schema; "": an ordinary endpoint, or one that never connected.
    schemas = {e: v[3].decode() if v[3] else "" for e, v in status.items()}
    gone: set[tuple[str, str]] = set()
    for ident in deleted:
        if cache is not None:
            cache.forget(("endpoint", ident))
        gone.add(("endpoint", ident))
    missing = [f for f in functions if f not in heads]
    if missing:
        gone |= {("function", f) for f in _recache_functions(session, store, missing, cache)}
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        if ("function", s.function_id) in gone:
            refused[i] = function_not_found(s.function_id, index=i)
        elif ("endpoint", s.endpoint_id) in gone:
            refused[i] = endpoint_not_found(s.endpoint_id, index=i)
    access = access_for(session, {("endpoint", e): None for e in declared}, cache)
    for i, s in specs.items():
        if i not in refused:
            err = _serializer_refusal(i, s, declared.get(s.endpoint_id), access.get(("endpoint", s.endpoint_id)))
            if err is not None:
                refused[i] = err
    for i, s in specs.items():
        if i not in refused and s.resource_specification is not None:
            err = _resource_refusal(i, s, mpi_nodes.get(s.endpoint_id, -1), offers.get(s.endpoint_id))
            if err is not None:
                refused[i] = err
        schema = schemas.get(s.endpoint_id, "")
        if i not in refused and (schema or s.user_endpoint_config is not None):
            # Other tasks' resource_specification is forwarded as the caller gave it.
            stamped = _stamp_for_multi_user(i, s, owner, schema)
            if isinstance(stamped, FnserveError):
                refused[i] = stamped
            else:
                specs[i] = stamped
    shells = {ident for ident, head in heads.items() if head == _SHELL_HEADER_START}
    if shells:
        templates = _shell_templates(store, shells)
        for i, s in specs.items():
            if i not in refused and s.function_id in templates:
                err = _shell_refusal(i, s, templates[s.function_id])
                if err is not None:
                    refused[i] = err
    return refused


def _stamp_for_multi_user(index: int, s: TaskSpec, owner: Identity, schema: str) -> TaskSpec | FnserveError:
    """A task for a multi-user endpoint: its values checked against the schema the endpoint said
    (none said: not connected yet; it checks them itself), and the submitter's identity stamped
    beside them for the endpoint's identity mapping (an ordinary endpoint ignores the stamp).
    A task without the stamp reaching a multi-user endpoint (queued before it first connected,
    with no user_endpoint_config) fails there with ``identity_not_mapped``, saying to submit again."""
    try:
        values = user_endpoint_config.check_values(s.user_endpoint_config, json.loads(schema) if schema else None)
    except FnserveError as exc:
        return type(exc)(f"tasks[{index}].{exc.message} (endpoint {s.endpoint_id})", code=exc.code,
                         details={**exc.details, "field": f"tasks[{index}].{exc.details.get('field')}", "index": index})
    spec = msgspec.json.decode(s.resource_specification) if s.resource_specification else None
    stamped = user_endpoint_config.stamp(spec, {"username": owner.username, "user_id": owner.user_id}, values)
    # The values now ride in the stamp: the spec's own field is consumed here (never stored).
    return msgspec.structs.replace(s, resource_specification=msgspec.json.encode(stamped), user_endpoint_config=None)


def _resource_refusal(index: int, s: TaskSpec, mpi_nodes: int, offers: dict[str, Any] | None = None) -> FnserveError | None:
    """A request the endpoint can never run (it said how big its MPI blocks and workers are when
    it connected): refused now rather than failed after a trip to the endpoint."""
    try:
        spec = msgspec.json.decode(s.resource_specification or b"{}")
        task_resources.check_offers(spec, offers)
        resources.check_request(spec, mpi_nodes)
    except FnserveError as exc:
        return type(exc)(f"tasks[{index}]: {exc.message} (endpoint {s.endpoint_id})", code=exc.code,
                         details={**exc.details, "field": f"tasks[{index}].{exc.details.get('field', 'resource_specification')}",
                                  "index": index, "endpoint_id": s.endpoint_id})
    return None


_SHELL_HEADER_START = f"{serialize.MAGIC} {serialize.SHELL} ".encode()
# function id -> its shell template (functions never change; a deleted one fails before this).
_shell_template_cache: TTLCache[str, str] = TTLCache(ttl=3600.0, max_entries=10_000)


def _shell_templates(store: TaskStore, function_ids: set[str]) -> dict[str, str]:
    """The command templates of these shell functions (one Redis round trip for those not cached)."""
    found = {f: t for f in function_ids if (t := _shell_template_cache.get(f)) is not None}
    missing = sorted(function_ids - set(found))
    if missing:
        for fid, body in store.function_bodies(missing).items():
            if body:
                header = serialize.parse_header(body)
                found[fid] = shell.load_spec(body[header.length:]).command
                _shell_template_cache.put(fid, found[fid])
    return found


def _shell_refusal(index: int, s: TaskSpec, command: str) -> FnserveError | None:
    """JSON arguments of a shell function's task fill its placeholders exactly (``missing_placeholder``
    names the first one without an argument). Other strategies are checked by the worker."""
    text = serialize.json_body(s.payload)
    if text is None:
        return None
    try:
        value = msgspec.json.decode(text)
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        shell.check_arguments(command, args, kwargs)
    except FnserveError as exc:
        return type(exc)(f"tasks[{index}]: {exc.message}", code=exc.code,
                         details={**exc.details, "index": index, "function_id": s.function_id})
    except (msgspec.DecodeError, AttributeError):
        return None  # not an arguments object: the worker says so with its own code
    return None


def _policy(raw: bytes | None) -> tuple[str, ...] | None:
    if raw is None or raw == b"*":
        return None
    return tuple(s for s in raw.decode().split(",") if s)


def _serializer_refusal(index: int, s: TaskSpec, declared: tuple[str, ...] | None, acc: Any) -> FnserveError | None:
    """Arguments only in strategies the endpoint loads; and for an endpoint restricted to
    allowed functions, no code-capable argument strategy (a dill argument is code that runs
    before the allowed function does). Headers only: nothing is loaded here."""
    restricted = acc is not None and acc.restricted
    policy = serialize.narrow(declared, serialize.data_only(None) if restricted else None)
    if policy is None:
        return None
    try:
        serialize.check_allowed(s.payload, policy, f"tasks[{index}] arguments")
    except SerializationError as exc:
        why = "it runs only allowed functions" if restricted else "its allowed_serializers"
        return type(exc)(f"{exc.message} (endpoint {s.endpoint_id}: {why})", code=exc.code,
                         details={**exc.details, "index": index, "endpoint_id": s.endpoint_id})
    return None


def _recache_functions(session: Session, store: TaskStore, function_ids: list[str], cache: OwnershipCache | None) -> list[str]:
    """Cache the bodies of live functions again; returns the ids that are gone."""
    # Rare: after a Redis flush/restart, or the function was deleted by another process.
    rows: dict[str, bytes] = {
        fid: body for fid, body in session.execute(
            sa.select(Function.id, Function.body).where(Function.id.in_(function_ids), Function.deleted_at.is_(None))
        )
    }
    gone = [fid for fid in function_ids if fid not in rows]
    for fid in gone:
        if cache is not None:
            cache.forget(("function", fid))
    for fid, body in rows.items():
        store.cache_function(fid, body)
    return gone


def _runtimes(session: Session, store: TaskStore, owner: Identity, outcomes: list[Outcome], live: list[int],
              cache: OwnershipCache | None) -> dict[int, str | None]:
    """The runtime each live task runs in; a task whose runtime is refused gets its error in
    ``outcomes`` instead (checked again without it, which happens only when one is refused)."""
    live = list(live)
    while live:
        specs = [outcomes[i] for i in live]
        try:
            names = task_runtimes(session, store, owner, [(s.function_id, s.endpoint_id, s.runtime) for s in specs], cache)  # type: ignore[union-attr]
        except FnserveError as exc:
            pos = exc.details.get("index")
            if not isinstance(pos, int) or not 0 <= pos < len(live):
                raise
            exc.details["index"] = live[pos]
            outcomes[live.pop(pos)] = exc
            continue
        return dict(zip(live, names))
    return {}


# -- reading, waiting, cancelling --------------------------------------------------------------------


def get_tasks(store: TaskStore, owner: Identity, task_ids: list[str], wait: float = 0.0, any_: bool = False) -> list[TaskRecord]:
    """The owner's tasks, in order, after waiting up to ``wait`` seconds for them to finish.

    Unknown (or expired) ids are ``task_not_found`` and other users' ids ``forbidden``, for the
    whole call, before any waiting.
    """
    # The common single-task read skips the pipeline machinery.
    records = {task_ids[0]: store.get(task_ids[0])} if len(task_ids) == 1 else store.get_many(task_ids)
    _check_owned(records.items(), owner)
    pending = [tid for tid, rec in records.items() if rec is not None and not rec.finished]
    done_some = len(pending) < len(records)
    if wait > 0 and pending and not (any_ and done_some):
        records.update(store.wait(owner.user_id, task_ids, wait, any_=any_))
        _check_owned(records.items(), owner)  # a task can expire while we wait
    return [records[tid] for tid in task_ids]  # type: ignore[misc]


def _check_owned(records: Iterable[tuple[str, TaskRecord | None]], owner: Identity) -> None:
    for tid, rec in records:
        if rec is None:
            raise task_not_found(tid)
        if rec.owner != owner.user_id:
            raise Forbidden(f"task {tid!r} belongs to another user", details={"task_id": tid})


def group_tasks(store: TaskStore, owner: Identity, task_group_id: str, offset: int, limit: int) -> tuple[list[TaskRecord], int]:
    """A page of the owner's tasks in one of their task groups, and how many ids it holds.

    Groups are kept per owner (another user's group of the same id is another group), and a
    task that expired after its result TTL is left out."""
    if len(task_group_id) > MAX_ID_LENGTH:
        raise invalid("task_group_id", f"must be 1 to {MAX_ID_LENGTH} characters")
    ids, total = store.group_task_ids(owner.user_id, task_group_id, offset, limit)
    records = store.get_many(ids) if ids else {}
    return [r for r in records.values() if r is not None and r.owner == owner.user_id], total


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


def cancel_task(store: TaskStore, owner: Identity, task_id: str) -> TaskRecord:
    """Cancel one of the owner's tasks unless it already finished; returns it afterwards."""
    rec = get_tasks(store, owner, [task_id])[0]
    if not rec.finished:
        if store.cancel(task_id, owner.user_id) not in (None, "success", "failed", "cancelled"):
            log_cancelled(store, rec)
        rec = get_tasks(store, owner, [task_id])[0]
    return rec


__all__ = [
    "Outcome", "TaskSpec", "check_task_id", "error_entry", "parse_atomic", "parse_task_batch", "parse_task_items", "raise_first_error",
    "parse_task", "parse_task_ids", "parse_return_when", "parse_wait", "submit_tasks", "get_tasks", "cancel_task", "group_tasks",
    "parse_count",
]
