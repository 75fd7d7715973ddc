"""Wire messages between the forwarder, the site manager and the node manager.

Defined once here and used by every piece. Each message is a typed msgspec struct, encoded as
MessagePack, tagged with its ``type`` and carrying the protocol version ``v``. User payloads
(function, arguments, results) are opaque ``bytes`` inside them: the forwarder moves them
without reading them.

Forwarder <-> site manager (ZMQ ROUTER/DEALER, one message per frame)::

    site manager                     forwarder
    Register          ------------->
                      <-------------  Registered | Refused
    Heartbeat         <------------>  Heartbeat
                      <-------------  TaskBatch
                      <-------------  CancelTasks       (cancelled after dispatch: stop them)
    TaskStatusBatch   ------------->                (tasks handed to workers: "running")
    ResultBatch       ------------->
                      <-------------  Ack
    EndpointStatus    ------------->
    TaskOutputBatch   ------------->                (live outputs of running tasks; not acked)
                      <-------------  WatchFolders      (the endpoint's file triggers, whole list)
    FileEventBatch    ------------->                (files that arrived and settled)
                      <-------------  FileEventsAck     (recorded: the site manager forgets them)
                      <-------------  Disconnect(connect_to=...)  (served by another forwarder:
                                                       register there; web_service/forwarder_pool.py)

Site manager -> node manager: one ``TaskMessage`` encoded with :func:`encode_task`, answered by
one ``ResultMessage`` (:func:`encode_result`). While a task runs, the node manager pushes each
``fnserve.report(...)`` as one ``TaskOutput`` (:func:`encode_output`) to the ZMQ address the
task message names in ``outputs_address``.
"""

from __future__ import annotations

from typing import Any, TypeVar, Union

import msgspec

from fnserve.errors import BadRequest
from fnserve.version import PROTOCOL_VERSION


class _Message(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    v: int = PROTOCOL_VERSION


# -- payload-carrying structs ------------------------------------------------------------------


class TaskMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One task as the site manager and the node manager see it."""

    task_id: str
    function_id: str
    function: bytes  # serialized function (fnserve.serialize header + body)
    payload: bytes  # serialized arguments
    runtime: str | None = None
    walltime: float | None = None  # seconds; None means no limit
    # Reruns after a system failure (lost worker/block); None: the endpoint's max_retries.
    max_retries: int | None = None
    # Largest serialized result the endpoint sends back (bytes); set by the site manager.
    max_result_bytes: int | None = None
    result_strategy: str | None = None  # "json-data" when the caller wants JSON back
    timings: dict[str, float] = {}  # hop -> unix time, filled as the task moves
    # Where the worker sends live outputs (fnserve.report): the site manager's PULL socket.
    outputs_address: str | None = None
    # CurveZMQ keys for that socket (z85): the server's public key and the client's secret key,
    # known only to the site manager and its workers (site_manager.outputs).
    outputs_keys: list[str] | None = None
    # Node-local directory where the worker notes which task it runs (node_manager.running),
    # so that the site manager can stop a cancelled one.
    control_dir: str | None = None
    # Seconds past ``walltime`` after which the worker's watchdog kills it (node_manager.watchdog);
    # set by the site manager (walltime_grace), None: the node manager's default.
    walltime_grace: float | None = None
    # Serializer strategies the worker may load for this task's function and arguments (None:
    # any); the worker checks the headers before loading anything (see fnserve.serialize).
    allowed_serializers: list[str] | None = None
    # What the submitter asked of the resources (a JSON object, e.g. {"num_nodes": 2}); the
    # service records and forwards it, the endpoint decides what it means.
    resource_specification: dict[str, Any] | None = None
    # The data plane (docs/data.md): the service's URL and this task's data token, with which
    # the worker downloads arguments passed by reference and uploads a large result; and the
    # size above which a result goes by reference (None: fnserve.data_refs' default).
    data_url: str | None = None
    data_token: str | None = None
    ref_threshold: int | None = None
    # In Parsl's MPI mode, the endpoint's launcher ("openmpi": the worker composes OpenMPI's
    # prefix in $PARSL_MPI_PREFIX from the nodes Parsl gave the task; others are Parsl's own).
    mpi_launcher: str | None = None


class RemoteError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Why a task failed: the user's exception, or a system error with a stable code."""

    code: str  # "user_exception" when the function raised; a system code otherwise
    type: str
    message: str
    traceback: str = ""
    # The exception's class as module and qualified name, and its args when they are plain
    # JSON scalars: enough for a client to raise the same class again (never a pickle).
    module: str = ""
    qualname: str = ""
    args: list[Any] | None = None


class ResultMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    task_id: str
    ok: bool
    data: bytes = b""  # serialized return value when ok
    error: RemoteError | None = None
    stdout: str = ""
    stderr: str = ""
    timings: dict[str, float] = {}
    resources: dict[str, float] = {}  # wall_time, cpu_time, max_rss_kb
    # Where it ran: block, job_id (the block's batch job), node, runtime, container (node_manager.placement).
    placement: dict[str, str] = {}


class TaskOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One live output of a running task (``fnserve.report(**values)``), or a marker.

    ``kind`` is ``"output"`` (``values`` holds JSON values), ``"truncated"`` (the task passed
    its output budget: later outputs were dropped), ``"end"`` (the function returned: nothing
    follows from this attempt) or ``"start"`` (a worker starts the function now; seq -1: the
    site manager turns it into a ``TaskStatusBatch`` and does not relay it). ``seq`` counts a
    task attempt's outputs from 0.
    """

    task_id: str
    seq: int
    time: float
    kind: str = "output"
    values: dict[str, Any] = {}


# -- forwarder <-> site manager --------------------------------------------------------------


class Register(_Message, tag="register"):
    endpoint_id: str
    secret: str
    software: dict[str, str] = {}  # fnserve, python, parsl versions
    # Tasks this site manager still runs or holds results for (after a reconnect): the
    # forwarder leaves these in flight instead of dispatching them again.
    holding: list[str] = []
    # Flow control: the most tasks this site manager wants in flight at once (dispatched and
    # not yet finished); the forwarder keeps the rest queued. 0: no limit.
    capacity: int = 0
    # Serializer strategies this endpoint loads (its config's allowed_serializers; None: any):
    # the service refuses other argument strategies at submit.
    allowed_serializers: list[str] | None = None
    # Folders the endpoint's admin lets file triggers watch (config ``triggers.allowed_folders``):
    # the service refuses file triggers elsewhere; the site manager refuses them too.
    watch_folders: list[str] = []
    # MPI mode: the most nodes one task may ask for (its MPI blocks' size); 0: no MPI mode;
    # -1: not said (an older site manager). The service refuses requests that can never fit.
    mpi_nodes: int = -1
    # Per-task resources: executor name -> what one of its workers offers (cores, memory MB,
    # gpus, walltime s; fnserve.task_resources.Offer). The service refuses tasks no worker holds.
    offers: dict[str, dict[str, float]] | None = None
    # A multi-user endpoint's JSON schema of user_endpoint_config (JSON text; "" for an endpoint
    # that runs tasks as its own account): the service checks each task's values against it.
    user_config_schema: str = ""


class Registered(_Message, tag="registered"):
    heartbeat_period: float
    heartbeat_threshold: float
    # Addresses of every live forwarder: where to try next if this one goes silent.
    forwarders: list[str] = []


class Refused(_Message, tag="refused"):
    code: str
    reason: str


class Heartbeat(_Message, tag="heartbeat"):
    sent_at: float


class TaskBatch(_Message, tag="tasks"):
    tasks: list[TaskMessage]


class CancelTasks(_Message, tag="cancel"):
    """The owner cancelled these tasks after they were sent: stop them, send no result."""

    task_ids: list[str]


class TaskStatusBatch(_Message, tag="task_status"):
    running: list[str] = []
    started_at: float = 0.0


class ResultBatch(_Message, tag="results"):
    results: list[ResultMessage]


class Ack(_Message, tag="ack"):
    task_ids: list[str]


class EndpointStatus(_Message, tag="endpoint_status"):
    blocks_pending: int = 0
    blocks_running: int = 0
    workers: int = 0
    tasks_queued: int = 0
    tasks_running: int = 0
    runtimes: dict[str, dict[str, int]] = {}


class TaskOutputBatch(_Message, tag="outputs"):
    """Live outputs relayed as they come; best effort (not acked, not kept across reconnects)."""

    outputs: list[TaskOutput]


class Disconnect(_Message, tag="disconnect"):
    reason: str = ""
    # Forwarder -> site manager: connect to this forwarder instead and register there (the
    # endpoint is assigned to it: web_service/forwarder_pool.py). Empty: reconnect here.
    connect_to: str = ""


class FolderWatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One file trigger as its endpoint sees it: files matching ``pattern`` in ``folder`` that
    changed at or after ``since`` (unix s) fire once they are ``settle`` s unchanged."""

    trigger_id: str
    folder: str
    pattern: str = "*"
    recursive: bool = False
    settle: float = 1.0
    poll: bool = False  # stat the folder on an interval instead of inotify (network filesystems)
    since: float = 0.0


class FileEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    trigger_id: str
    path: str
    size: int
    mtime: float
    key: str  # trigger, path, mtime and size: the same file version is one event wherever it is seen


def file_event_key(path: str, size: int, mtime: float) -> str:
    """The event key of one version of a file (path, size, mtime to the microsecond): the site
    manager and the service compute it alike, so seeing a file again (a rescan after a restart,
    a resend) is the same event, and a rewritten file is a new one."""
    import hashlib

    digest = hashlib.sha256(f"{path}\0{size}\0{round(mtime * 1_000_000)}".encode("utf-8", "surrogateescape")).hexdigest()
    return "file:" + digest


class WatchFolders(_Message, tag="watch"):
    """The endpoint's file triggers (the whole list: it replaces the previous one)."""

    watches: list[FolderWatch] = []


class FileEventBatch(_Message, tag="file_events"):
    events: list[FileEvent]


class FileEventsAck(_Message, tag="file_ack"):
    """These events are recorded (or refused for good): do not send them again."""

    keys: list[str]


SiteMessage = Union[Register, Heartbeat, TaskStatusBatch, ResultBatch, EndpointStatus, TaskOutputBatch, Disconnect, FileEventBatch]
ForwarderMessage = Union[Registered, Refused, Heartbeat, TaskBatch, CancelTasks, Ack, Disconnect, WatchFolders, FileEventsAck]


class ProtocolError(BadRequest):
    code = "protocol_error"


_encoder = msgspec.msgpack.Encoder()
_site_decoder = msgspec.msgpack.Decoder(SiteMessage)
_fwd_decoder = msgspec.msgpack.Decoder(ForwarderMessage)
_task_decoder = msgspec.msgpack.Decoder(TaskMessage)
_result_decoder = msgspec.msgpack.Decoder(ResultMessage)
_output_decoder = msgspec.msgpack.Decoder(TaskOutput)


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


_M = TypeVar("_M")


def _checked(decoder: msgspec.msgpack.Decoder[_M], buf: bytes) -> _M:
    try:
        msg = decoder.decode(buf)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed wire message: {exc}") from exc
    version = getattr(msg, "v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"wire protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION}); upgrade fnserve on both sides")
    return msg


def decode_from_site(buf: bytes) -> SiteMessage:
    """Decode a message a site manager sent (used by the forwarder)."""
    return _checked(_site_decoder, buf)


def decode_from_forwarder(buf: bytes) -> ForwarderMessage:
    """Decode a message the forwarder sent (used by the site manager)."""
    return _checked(_fwd_decoder, buf)


def encode_task(task: TaskMessage) -> bytes:
    return _encoder.encode(task)


def decode_task(buf: bytes) -> TaskMessage:
    return _checked(_task_decoder, buf)


def encode_result(result: ResultMessage) -> bytes:
    return _encoder.encode(result)


def decode_result(buf: bytes) -> ResultMessage:
    return _checked(_result_decoder, buf)


def encode_output(output: TaskOutput) -> bytes:
    return _encoder.encode(output)


def decode_output(buf: bytes) -> TaskOutput:
    return _checked(_output_decoder, buf)
