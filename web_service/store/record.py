"""The task's shape, defined once: what a submitter chooses, the hash stored in Redis, and how
the dispatched :class:`fnserve.messages.TaskMessage` and the read :class:`TaskRecord` come from it.

``TaskOptions`` holds the per-task choices a submit carries; :class:`TaskBody` what is stored of
one submission, :class:`TaskSpec` (one task of a
``POST /v1/tasks`` body), :class:`NewTask` (accepted, with id and owner) and :class:`StoredTask`
(the ``task:{id}`` hash as submit writes it) extend it. Adding a task field is one line in
``TaskOptions`` (plus its validation in ``services/tasks.parse_task``): the submit's HSET
(:func:`hash_fields`), the claim's HMGET list (:data:`DISPATCH_FIELDS`) and its unpack
(:func:`task_message`) and the record read (:data:`RECORD_FIELDS`, :func:`task_record`) are
derived from the structs; a field reaches the endpoint when ``TaskMessage`` has a field of that
name, and is read back when ``TaskRecord`` has one (``tests/unit/test_store_rules.py`` checks
the field sets agree).
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field, fields as dc_fields
from typing import Any, Callable

import msgspec

from fnserve.messages import ResultMessage, TaskMessage
from fnserve.states import TERMINAL, TaskState


class TaskOptions(msgspec.Struct, kw_only=True):
    """What a submitter chooses for one task besides function, endpoint and arguments."""

    runtime: str | None = None
    walltime: float | None = None  # seconds
    result_strategy: str | None = None  # "json-data" when the caller wants JSON back
    max_retries: int | None = None  # reruns after a lost worker or block
    task_group_id: str | None = msgspec.field(default=None, name="task_group")
    # A JSON object (kept as its text), recorded and forwarded as is; the endpoint decides.
    resource_specification: bytes | None = msgspec.field(default=None, name="resource_spec")


class TaskBody(TaskOptions, kw_only=True):
    """What is stored of one task's submission: its options, function, endpoint and arguments."""

    function_id: str
    endpoint_id: str
    payload: bytes  # serialized arguments (or a reference to them)


class TaskSpec(TaskBody, kw_only=True):
    """One valid task of a submitted batch, not yet authorized."""

    # Values for a multi-user endpoint's config template (fnserve.user_endpoint_config): checked
    # and moved into resource_specification's stamp at submit (services/tasks.py), never stored.
    user_endpoint_config: dict[str, Any] | None = None


class NewTask(TaskBody, kw_only=True):
    """A task accepted at submit, before it is written."""

    task_id: str
    owner: str


class StoredTask(TaskBody, kw_only=True):
    """The ``task:{id}`` hash as submit writes it (later changes are the scripts')."""

    owner: str
    state: TaskState = TaskState.WAITING
    t_submitted: float
    arg_bytes: int  # the arguments' size, kept after the payload is dropped
    # The object holding the arguments when passed by reference: the one object the task's data
    # token may read besides those its worker makes (web_service.object_rules.check_access).
    arg_ref: str | None = None


_SPEC = TaskBody.__struct_fields__


def new_task(spec: TaskSpec, task_id: str, owner: str, **changes: Any) -> NewTask:
    """The accepted task of ``spec`` (with ``changes``, e.g. the runtime it resolved to)."""
    values = {name: getattr(spec, name) for name in _SPEC}
    return NewTask(task_id=task_id, owner=owner, **{**values, **changes})


_STORED = tuple((f.name, f.encode_name) for f in msgspec.structs.fields(StoredTask))
# The spec's fields as stored: (name, hash field, optional: written only when set).
_SPEC_KEYS = tuple((f.name, f.encode_name, not f.required) for f in msgspec.structs.fields(TaskBody))
_WAITING = TaskState.WAITING.value


def hash_fields(task: NewTask, now: float, arg_ref: str | None = None) -> dict[str, Any]:
    """The HSET mapping that stores ``task`` as :class:`StoredTask` (submitted at ``now``): every
    field by its stored name, optional ones only when set (redis-py writes numbers with ``repr``).
    Built straight from the task (this runs per task on the accept path); the unit tests check
    it writes exactly StoredTask's fields."""
    out: dict[str, Any] = {}
    for name, key, optional in _SPEC_KEYS:
        value = getattr(task, name)
        if optional and (value is None or value == "" or value == b""):
            continue
        out[key] = value
    out["owner"] = task.owner
    out["state"] = _WAITING
    out["t_submitted"] = now
    out["arg_bytes"] = len(task.payload)
    if arg_ref:
        out["arg_ref"] = arg_ref
    return out


# -- decoding hash values by the type of the field they land in ----------------------------------


def _decoder(tp: Any) -> Callable[[bytes], Any]:
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    origin = typing.get_origin(base) or base
    if origin is bytes:
        return lambda raw: raw
    if origin is str:
        return bytes.decode
    if origin in (dict, list):
        return json.loads
    if origin in (int, float):
        return origin  # type: ignore[no-any-return]  # both parse bytes
    raise TypeError(f"no hash decoding for {tp!r}")


def _decoders(target: type, names: tuple[str, ...]) -> tuple[tuple[str, Callable[[bytes], Any]], ...]:
    """How to read each of ``names`` from the hash as the type ``target`` gives it."""
    hints = typing.get_type_hints(target)
    return tuple((name, _decoder(hints[name])) for name in names)


def _decoded(decoders: tuple[tuple[str, Callable[[bytes], Any]], ...], values: list[bytes | None]) -> dict[str, Any]:
    """The hash values that are set, each as its field's type (absent or empty ones are left to
    the field's default)."""
    return {name: decode(raw) for (name, decode), raw in zip(decoders, values) if raw}


# -- dispatch: the claim's HMGET list and the TaskMessage it unpacks to ------------------------------

# Stored fields the endpoint gets: those of TaskMessage's names (the service keeps the others).
DISPATCHED = tuple((name, key) for name, key in _STORED if name in TaskMessage.__struct_fields__)
# The claim script's HMGET list: the dispatched fields, then when the task was submitted.
DISPATCH_FIELDS = tuple(key for _, key in DISPATCHED) + ("t_submitted",)
_MESSAGE = _decoders(TaskMessage, tuple(name for name, _ in DISPATCHED))


def task_message(task_id: str, values: list[bytes | None], function: bytes) -> tuple[TaskMessage, float]:
    """The claim script's values of one task (in :data:`DISPATCH_FIELDS` order) as the message
    its endpoint gets, and when it was submitted (unix s; 0.0 if unknown)."""
    msg = TaskMessage(task_id=task_id, function=function, **_decoded(_MESSAGE, values))
    submitted = values[len(DISPATCHED)]
    return msg, float(submitted) if submitted else 0.0


# -- reading a task back -------------------------------------------------------------------------------


@dataclass
class TaskRecord:
    """What the store knows of one task."""

    task_id: str
    owner: str
    function_id: str
    endpoint_id: str
    state: TaskState
    runtime: str | None = None
    timestamps: dict[str, float] = field(default_factory=dict)
    result: bytes | None = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    # Where it ran (block, job_id, node, runtime, container); kept in the hash's resources field
    # under PLACEMENT_KEY, so recording a result stays one field per value.
    placement: dict[str, str] = field(default_factory=dict)
    max_retries: int | None = None
    task_group_id: str | None = None
    resource_specification: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


PLACEMENT_KEY = "placement"
TIMESTAMPS = ("submitted", "dispatched", "running", "finished")
# The result fields the record script writes (one hash field per value), from a ResultMessage
# by result_values.
RESULT_FIELDS = ("result", "error", "stdout", "stderr", "timings", "resources")


def result_values(res: ResultMessage) -> tuple[Any, ...]:
    """A result's values in RESULT_FIELDS order, as the task hash keeps them (JSON for the
    structured ones; placement inside resources, so recording stays one field per value)."""
    resources = {**res.resources, PLACEMENT_KEY: res.placement} if res.placement else res.resources
    return (res.data, msgspec.json.encode(res.error) if res.error else b"", res.stdout, res.stderr,
            json.dumps(res.timings), json.dumps(resources))
# Stored options TaskRecord shows, read by their types there.
_READ_OPTIONS = tuple((name, key) for name, key in _STORED
                      if name in TaskOptions.__struct_fields__ and name in {f.name for f in dc_fields(TaskRecord)})
_RECORD = _decoders(TaskRecord, tuple(name for name, _ in _READ_OPTIONS))
RECORD_FIELDS = ("owner", "function_id", "endpoint_id", "state", *RESULT_FIELDS,
                 *(f"t_{n}" for n in TIMESTAMPS), *(key for _, key in _READ_OPTIONS))


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def task_record(task_id: str, values: list[bytes | None]) -> TaskRecord | None:
    """A task read with ``HMGET task:{id} *RECORD_FIELDS`` (None when it does not exist)."""
    row = dict(zip(RECORD_FIELDS, values))
    if row["state"] is None:
        return None
    resources = json.loads(row["resources"]) if row["resources"] else {}
    options = _decoded(_RECORD, [row[key] for _, key in _READ_OPTIONS])
    return TaskRecord(
        task_id=task_id,
        owner=_text(row["owner"]),
        function_id=_text(row["function_id"]),
        endpoint_id=_text(row["endpoint_id"]),
        state=TaskState(row["state"].decode()),
        timestamps={n: float(row[f"t_{n}"]) for n in TIMESTAMPS if row[f"t_{n}"]},  # type: ignore[arg-type]
        result=row["result"],
        error=json.loads(row["error"]) if row["error"] else None,
        stdout=_text(row["stdout"]),
        stderr=_text(row["stderr"]),
        timings=json.loads(row["timings"]) if row["timings"] else {},
        placement=resources.pop(PLACEMENT_KEY, None) or {},
        resources=resources,
        **options,
    )
