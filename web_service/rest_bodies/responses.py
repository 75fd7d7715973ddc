"""What the service answers: one Struct per REST response body (encoded by ``routes._http.respond``).

Fields a response may leave out are ``UNSET`` (left out of the JSON and not ``required`` in the
OpenAPI document); ``None`` is sent as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from web_service.rest_bodies.refs import BASE64_PATTERN, ref
from web_service.rest_bodies.requests import Allowlist, Id, RuleFilter, Sharing, TriggerKind

Timestamp = Annotated[str, Meta(description="ISO 8601 time, UTC")]
Object = dict[str, Any]
TaskStateName = Literal["waiting-for-endpoint", "dispatched", "running", "success", "failed", "cancelled"]


class ErrorDetail(Struct, kw_only=True):
    code: Annotated[str, Meta(description="stable machine-readable code")]
    message: str
    details: Object | UnsetType = UNSET


class Error(Struct, kw_only=True):
    """Every 4xx/5xx answer of the service."""

    error: ErrorDetail


class VersionLimits(Struct, kw_only=True):
    max_payload_bytes: int
    max_request_bytes: int
    max_batch: int


class Version(Struct, kw_only=True):
    version: str
    protocol_version: int
    api: str
    auth: Object
    limits: VersionLimits | UnsetType = UNSET


class Health(Struct, kw_only=True):
    status: Literal["ok", "unavailable"]
    redis: bool
    database: bool


class WhoAmI(Struct, kw_only=True):
    user_id: str
    username: str
    auth_mode: str


class ObjectUsage(Struct, kw_only=True):
    bytes: int
    quota_bytes: int


class Usage(Struct, kw_only=True):
    since: str
    until: str
    user: Object
    endpoints: list[Object]
    objects: ObjectUsage


class Function(Struct, kw_only=True):
    function_id: str
    name: str
    description: str
    strategy: str
    python: str
    created_at: Timestamp
    owner_id: str
    runtime_id: str | None = None
    shell: Annotated[Object, Meta(description="shell functions: the template, and the placeholders a task passes")] \
        | UnsetType = UNSET


class FunctionList(Struct, kw_only=True):
    functions: list[Function]


class FunctionDeleted(Struct, kw_only=True):
    function_id: str
    deleted: bool


class EndpointStatus(Struct, kw_only=True):
    connected: bool
    tasks_waiting: int
    tasks_in_flight: int
    last_heartbeat: float | None | UnsetType = UNSET
    connected_since: float | None | UnsetType = UNSET
    disconnected_since: float | None | UnsetType = UNSET
    site: Object | UnsetType = UNSET


class EndpointStatusOf(EndpointStatus, kw_only=True):
    endpoint_id: str


class Endpoint(Struct, kw_only=True):
    endpoint_id: str
    name: str
    description: str
    created_at: Timestamp
    owner_id: str
    restricted: bool
    status: EndpointStatus | UnsetType = UNSET


class EndpointRegistered(Endpoint, kw_only=True):
    """A new endpoint, with its secrets (shown this once)."""

    secret: str
    forwarder_address: str
    curve_public_key: str | None = None
    curve_secret_key: str | None = None
    forwarder_public_key: str | None = None


class EndpointList(Struct, kw_only=True):
    endpoints: list[Endpoint]


class EndpointDeleted(Struct, kw_only=True):
    endpoint_id: str
    deleted: bool
    tasks_failed: int
    tasks_cancelled: Annotated[int, Meta(description="the same as tasks_failed (its name of old)")]


class AllowlistOf(Allowlist, kw_only=True):
    endpoint_id: str


class Runtime(Struct, kw_only=True):
    runtime_id: str
    name: str
    type: str
    image: str
    description: str
    owner_id: str
    created_at: Timestamp


class RuntimeList(Struct, kw_only=True):
    runtimes: list[Runtime]


class RuntimeDeleted(Struct, kw_only=True):
    runtime: str
    deleted: bool


class TaskError(Struct, kw_only=True):
    code: str
    message: str
    type: str = ""
    traceback: str = ""
    module: Annotated[str, Meta(description="module of the exception's class (user_exception)")] | UnsetType = UNSET
    qualname: Annotated[str, Meta(description="qualified name of the exception's class")] | UnsetType = UNSET
    args: Annotated[list[Any], Meta(description="the exception's args, when all are JSON scalars")] | UnsetType = UNSET


class Task(Struct, kw_only=True):
    task_id: str
    state: TaskStateName
    function_id: str
    endpoint_id: str
    timestamps: dict[str, float]
    runtime: str | None = None
    result: Annotated[str, Meta(description="base64 of the serialized result",
                                extra_json_schema={"pattern": BASE64_PATTERN})] | None = None
    result_json: Annotated[Any, Meta(description="the result as JSON, for results made with the JSON strategy")] \
        | UnsetType = UNSET
    error: TaskError | None = None
    stdout: str | None = None
    stderr: str | None = None
    timings: Object | None = None
    resources: Object | None = None
    placement: Annotated[dict[str, str], Meta(description="where it ran: block, job_id (the block's batch job), "
                                                         "node, runtime, container")] | None = None
    max_retries: int | UnsetType = UNSET
    task_group_id: str | UnsetType = UNSET
    resource_specification: Object | UnsetType = UNSET
    user_endpoint_config: Object | UnsetType = UNSET


class BatchError(Struct, kw_only=True):
    index: Annotated[int, Meta(ge=0, description="the refused task's position in the batch")]
    status: Annotated[int, Meta(description="the HTTP status this error has on its own")]
    code: str
    message: str
    details: Object | UnsetType = UNSET


class TasksSubmitted(Struct, kw_only=True):
    task_ids: Annotated[list[str | None], Meta(description="in batch order; null for a refused task")]
    errors: list[BatchError] = []
    tasks: Annotated[list[Task], Meta(description="with wait: the tasks finished by then")] | UnsetType = UNSET


class TaskList(Struct, kw_only=True):
    tasks: list[Task]


class Completions(Struct, kw_only=True):
    cursor: str
    tasks: list[Task]
    gap: bool


class TaskGroupPage(Struct, kw_only=True):
    task_group_id: str
    tasks: list[Task]
    total: int
    next_offset: int | None


class Outputs(Struct, kw_only=True):
    task_id: str
    outputs: list[Object]
    cursor: str
    complete: bool
    state: str | UnsetType = UNSET
    truncated: bool | UnsetType = UNSET


class ObjectMetadata(Struct, kw_only=True):
    object_id: str
    size: int
    sha256: str
    received: int
    complete: bool
    expires: float
    chunk_bytes: int
    read_token: Annotated[str, Meta(description="in the answer to create: a token that reads this object only")] \
        | UnsetType = UNSET


class ObjectDeleted(Struct, kw_only=True):
    object_id: str
    deleted: bool


class Group(Struct, kw_only=True):
    group_id: str
    name: str
    owner: str | None | UnsetType = UNSET
    members: list[str] | UnsetType = UNSET


class GroupList(Struct, kw_only=True):
    groups: list[Group]


class Rule(Struct, kw_only=True):
    function_id: Id
    endpoint_id: Id
    rule_id: str | UnsetType = UNSET
    owner_id: Annotated[str, Meta(description="who bound the rule (its tasks run as them)")] | None | UnsetType = UNSET
    args_template: Object | UnsetType = UNSET
    filters: Annotated[list[Object], Meta(extra_json_schema={"items": ref("RuleFilter")})] | UnsetType = UNSET
    max_concurrency: int | None | UnsetType = UNSET


class Trigger(Struct, kw_only=True):
    trigger_id: str
    name: str
    kind: TriggerKind
    config: Object
    rules: list[Rule]
    owner_id: str | UnsetType = UNSET
    created_at: Timestamp | UnsetType = UNSET
    webhook_path: Annotated[str, Meta(description="webhook triggers: where to POST signed events")] | UnsetType = UNSET
    next_time: Annotated[str, Meta(description="schedule triggers: the next time it fires (UTC)")] | UnsetType = UNSET
    secret: Annotated[str, Meta(description="webhook triggers, in the answer to create only: the signing secret")] \
        | UnsetType = UNSET


class TriggerList(Struct, kw_only=True):
    triggers: list[Trigger]


class TriggerDeleted(Struct, kw_only=True):
    trigger_id: str
    deleted: bool


class RuleDeleted(Struct, kw_only=True):
    rule_id: str
    deleted: bool


class FiringError(Struct, kw_only=True):
    code: str
    message: str


class Firing(Struct, kw_only=True):
    rule_id: str
    task_id: str
    state: Literal["pending", "submitted", "done", "refused"]
    error: FiringError | UnsetType = UNSET


class Delivered(Struct, kw_only=True):
    event_id: str
    duplicate: bool
    firings: list[Firing]


class Event(Struct, kw_only=True):
    event_id: str
    event_key: str | None
    kind: str | None
    time: str | None
    data: Any
    firings: list[Firing]


class TriggerEvents(Struct, kw_only=True):
    trigger_id: str
    events: list[Event]


__all__ = ["Sharing", "Allowlist", "RuleFilter"]  # re-exported: a request body that is also the answer
