"""What an endpoint says a task may not be, checked at submit time from what it said when it
connected: multi-user stamping (its ``user_endpoint_config`` checked and the submitter's identity
stamped), resource requests it can never run, shell-function arguments, argument serializers.

Each check returns the error refusing one task (naming its index), or None.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from fnserve import resources, serialize, shell, task_resources, user_endpoint_config
from fnserve.errors import FnserveError, SerializationError
from web_service.auth import Identity
from web_service.store.record import TaskSpec
from web_service.task_store import TaskStore
from web_service.ttl_cache import TTLCache

def stamp_for_multi_user(index: int, s: TaskSpec, owner: Identity, schema: str) -> TaskSpec | FnserveError:
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


def resource_refusal(index: int, s: TaskSpec, mpi_nodes: int, offers: dict[str, Any] | None = None) -> FnserveError | None:
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


SHELL_HEADER_START = f"{serialize.MAGIC} {serialize.SHELL} ".encode()
# function id -> its shell template (functions never change; a deleted one fails before this).
_shell_template_cache: TTLCache[str, str] = TTLCache(ttl=3600.0, max_entries=10_000)


def shell_templates(store: TaskStore, function_ids: set[str]) -> dict[str, str]:
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


def shell_refusal(index: int, s: TaskSpec, command: str) -> FnserveError | None:
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


def serializer_policy(raw: bytes | None) -> tuple[str, ...] | None:
    if raw is None or raw == b"*":
        return None
    return tuple(s for s in raw.decode().split(",") if s)


def serializer_refusal(index: int, s: TaskSpec, declared: tuple[str, ...] | None, acc: Any) -> FnserveError | None:
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
