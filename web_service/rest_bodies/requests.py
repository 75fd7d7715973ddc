"""What clients send: one Struct per REST request body (decoded by :func:`.decoding.decode`).

Constraints are declared here once; they both check requests and appear in the OpenAPI
document. Checks that depend on the service's settings (payload and batch limits, the
walltime cap) or on stored data stay with the routes' services.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from web_service.rest_bodies.refs import BASE64_PATTERN, ref

MAX_ID_LENGTH = 64
MAX_RETRIES = 100  # per task: reruns after a lost worker or block
MAX_RULES = 32  # per trigger

Name = Annotated[str, Meta(min_length=1, max_length=255)]
Description = Annotated[str, Meta(min_length=1, max_length=10_000)]
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Seconds = Annotated[float, Meta(ge=0, description="seconds")]
Wait = Annotated[float, Meta(ge=0, description="seconds to long-poll (capped by the service's FNSERVE_MAX_WAIT)")]
# Documented as base64; checked (strictly, after the size limit) by validation.decode_base64.
Base64Text = Annotated[str, Meta(extra_json_schema={"pattern": BASE64_PATTERN})]
RuntimeType = Literal["host", "venv", "apptainer", "singularity", "podman", "docker", "charliecloud"]
TriggerKind = Literal["schedule", "webhook", "file"]
ReturnWhen = Literal["ALL_COMPLETED", "FIRST_COMPLETED"]
FilterOp = Literal["eq", "ne", "in", "glob", "gt", "ge", "lt", "le", "exists"]


def _see(name: str, description: str) -> Meta:
    """Documented as component ``name``; decoded loosely and checked by its own parser, whose
    errors have codes and field names of their own (e.g. ``invalid_shell_template``)."""
    return Meta(description=description, extra_json_schema=ref(name))


class FunctionRegistration(Struct, kw_only=True):
    """``POST /v1/functions``: a function buffer, or a shell command template."""

    name: Name
    description: Description | None = None
    function: Annotated[Base64Text, Meta(description="base64 of a function buffer made by fnserve.serialize")] | None = None
    shell: Annotated[Any, _see(
        "ShellSpec", "a shell function instead of a buffer (docs/user-guide.md#shell-functions-run-an-existing-executable)")] = None
    runtime: Annotated[str, Meta(min_length=1, max_length=128, description="the function's default runtime (id or name)")] | None = None


class EndpointRegistration(Struct, kw_only=True):
    """``POST /v1/endpoints``."""

    name: Name
    description: Description | None = None


class RuntimeRegistration(Struct, kw_only=True):
    """``POST /v1/runtimes``: a container image or Python environment tasks may run in."""

    name: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^\S+$",
                              description="names the runtime in endpoint configs: no spaces")]
    type: RuntimeType
    image: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    description: Description | None = None


class TaskRequest(Struct, kw_only=True):
    """One task of a ``POST /v1/tasks`` batch: the REST form of ``store.record.TaskSpec``."""

    function_id: Id
    endpoint_id: Id
    runtime: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    walltime: Annotated[float, Meta(gt=0, description="seconds; at most the service's FNSERVE_MAX_WALLTIME "
                                                      "(30 days by default)")] | None = None
    result_format: Literal["json", "python"] | None = None
    max_retries: Annotated[int, Meta(ge=0, le=MAX_RETRIES, description="reruns after a lost worker or block "
                                                                       "(default: the endpoint's max_retries)")] | None = None
    payload: Annotated[Base64Text, Meta(description="base64 of arguments made by fnserve.serialize "
                                                    "(not with args/kwargs)")] | None = None
    args: Annotated[list[Any], Meta(description="JSON arguments (instead of payload)")] | UnsetType = UNSET
    kwargs: Annotated[dict[str, Any], Meta(description="JSON keyword arguments (instead of payload)")] | UnsetType = UNSET
    task_group_id: Annotated[Id, Meta(description="a task group of the caller's to add the task to "
                                                  "(any id they choose)")] | None = None
    resource_specification: Annotated[dict[str, Any], Meta(
        description="what the task asks of the endpoint's resources (recorded and forwarded to the endpoint; "
                    "at most 4 KiB as JSON)")] | None = None
    user_endpoint_config: Annotated[Any, Meta(
        description="values for a multi-user endpoint's config template (checked against it)")] = None


class TaskSubmission(Struct, kw_only=True):
    """``POST /v1/tasks``: a batch, judged task by task (each decoded on its own as a
    :class:`TaskRequest`, so one bad task does not refuse the others)."""

    tasks: Annotated[list[Any], Meta(min_length=1, extra_json_schema={"items": ref("TaskRequest")})]
    wait: Wait = 0.0
    atomic: Annotated[bool, Meta(description="refuse the whole batch if any task is bad")] = False


class TaskResultsRequest(Struct, kw_only=True):
    """``POST /v1/tasks/results``: read many tasks, optionally waiting for them."""

    task_ids: Annotated[list[Id], Meta(min_length=1)]
    wait: Wait = 0.0
    return_when: ReturnWhen = "ALL_COMPLETED"


class ObjectCreation(Struct, kw_only=True):
    """``POST /v1/objects``: then PUT its bytes."""

    size: Annotated[int, Meta(ge=0)]
    sha256: Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="left out: the last chunk sends it as "
                                                                       "X-Checksum-SHA256")] | None = None
    ttl: Annotated[float, Meta(gt=0, description="seconds (capped by the service's maximum)")] | None = None
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None


class Sharing(Struct, kw_only=True):
    """Who a resource is shared with (``PUT`` replaces it; also the answer)."""

    public: bool = False
    users: Annotated[list[Name], Meta(max_length=1000)] = []
    groups: Annotated[list[Name], Meta(max_length=1000)] = []


class Allowlist(Struct, kw_only=True):
    """The functions an endpoint is restricted to (``restricted: false`` lifts it)."""

    restricted: bool = True
    function_ids: Annotated[list[Id], Meta(max_length=10_000)] = []


class GroupCreation(Struct, kw_only=True):
    """``POST /v1/groups``."""

    name: Name


class MemberChanges(Struct, kw_only=True):
    """``POST /v1/groups/{name}/members``: usernames to add and to remove."""

    add: list[Name] = []
    remove: list[Name] = []


class RuleFilter(Struct, kw_only=True):
    field: Name
    op: FilterOp = "eq"
    value: Any = None


class ArgsTemplate(Struct, kw_only=True):
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class RuleRequest(Struct, kw_only=True):
    """A trigger's rule as sent (``POST /v1/triggers/{id}/rules``, or in a new trigger's ``rules``);
    checked by ``triggers.config.parse_rule``."""

    function_id: Id
    endpoint_id: Id
    args_template: ArgsTemplate | None = None
    filters: Annotated[list[RuleFilter], Meta(max_length=16)] = []
    max_concurrency: Annotated[int, Meta(ge=1, le=100_000)] | None = None


class TriggerConfig(Struct, kw_only=True):
    """A trigger's settings by kind (schedule: cron or every; file: endpoint_id and folder)."""

    cron: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    every: Annotated[float, Meta(ge=1)] | UnsetType = UNSET
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    catch_up: Annotated[int, Meta(ge=0, le=100)] | UnsetType = UNSET
    endpoint_id: Id | UnsetType = UNSET
    folder: Annotated[str, Meta(min_length=1, max_length=1024)] | UnsetType = UNSET
    pattern: Name | UnsetType = UNSET
    recursive: bool | UnsetType = UNSET
    settle: Annotated[float, Meta(ge=0, le=3600)] | UnsetType = UNSET
    poll: bool | UnsetType = UNSET


class TriggerCreation(Struct, kw_only=True):
    """``POST /v1/triggers``; ``config`` and ``rules`` are checked by ``triggers.config``."""

    name: Name
    kind: TriggerKind
    config: Annotated[dict[str, Any], _see("TriggerConfig", "the trigger's settings by kind")] | None = None
    rules: Annotated[list[Any], Meta(max_length=MAX_RULES, extra_json_schema={"items": ref("RuleRequest")})] | None = None


class FireRequest(Struct, kw_only=True):
    """``POST /v1/triggers/{id}/fire``: an event sent by hand."""

    data: Any = {}
    event_id: Annotated[str, Meta(max_length=160, description="makes a retry fire once")] | None = None
