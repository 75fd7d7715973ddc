"""Endpoint configuration: where the forwarder is, who we are, and how to run workers.

Reads like Parsl's own composition, in YAML for site admins, and maps onto Parsl's classes
(never copies of them)::

    forwarder: tcp://fnserve.example.org:55001
    endpoint_id: 5f1c...            # written by `fnserve endpoint start` on first start
    secret: ...                     # never logged
    run_dir: ~/.fnserve/endpoints/mysite/run
    engine:                         # parsl.executors.HighThroughputExecutor options
      max_workers_per_node: 4
      cores_per_worker: 1
      mem_per_worker: 2             # GB
      prefetch_capacity: 0
      heartbeat_period: 30          # worker manager <-> interchange, seconds
      heartbeat_threshold: 120      # silence before a block's workers count as lost
      encrypted: true               # CurveZMQ interchange <-> workers (default; see docs/security.md)
      # address: 10.0.0.5           # interface the interchange binds (default: loopback for
                                    # local blocks, every interface for batch providers)
    provider:                       # where blocks come from: local, slurm, pbspro, torque, kubernetes
      type: slurm
      partition: debug
      walltime: "01:00:00"
    launcher:                       # how workers start inside a block: single_node, srun, mpiexec, aprun
      type: srun
    scaling:
      init_blocks: 0
      min_blocks: 0
      max_blocks: 4
      nodes_per_block: 1
      max_idletime: 120             # seconds with nothing to do before idle blocks are cancelled
      poll_period: 5                # seconds between batch-queue polls (a lost block is noticed)
      cancel_timeout: 20            # seconds stop waits for cancelled blocks to leave the queue
    worker_init: "source ~/venv/bin/activate"
    runtimes:                       # warm pools in containers / other Pythons: site_manager/runtimes.py
      sci: {type: podman, image: localhost/fnserve-worker:latest, min_warm_workers: 1}
    allowed_serializers: [dill-code, source, json-data]   # optional: arguments as JSON only
    triggers:                       # file triggers may watch only these folders (docs/triggers.md)
      allowed_folders: [/data/beamline]
    mpi:                            # optional: run tasks that ask for MPI in Parsl's MPI mode
      launcher: openmpi             # $PARSL_MPI_PREFIX: openmpi (mpiexec), mpiexec (MPICH), srun, aprun
      nodes_per_block: 2            # nodes of one MPI block (a task gets num_nodes of them)
      max_workers_per_block: 2      # MPI tasks at once per block
      max_blocks: 1
      launcher_options: ""          # added to each task's prefix unless it sets its own

Every key of ``provider`` / ``launcher`` except ``type`` is passed to the Parsl class unchanged,
and checked against that class's own signature, so a typo is named with the allowed keys.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnserve.errors import BadRequest
from site_manager.block_size import CPU_OPTIONS, block_cpus
from site_manager.config_errors import ConfigError
from site_manager.runtimes import parse_runtimes


# Provider names a config may use, and the Parsl class each one means.
PROVIDERS: dict[str, str] = {
    "local": "parsl.providers.LocalProvider",
    "slurm": "parsl.providers.SlurmProvider",
    "pbspro": "parsl.providers.PBSProProvider",
    "torque": "parsl.providers.TorqueProvider",
    "kubernetes": "parsl.providers.KubernetesProvider",
}

# Launcher names, and the Parsl class each one means.
LAUNCHERS: dict[str, str] = {
    "single_node": "parsl.launchers.SingleNodeLauncher",
    "srun": "parsl.launchers.SrunLauncher",
    "mpiexec": "parsl.launchers.MpiExecLauncher",
    "aprun": "parsl.launchers.AprunLauncher",
}

# Provider keys the endpoint sets itself, and the section of the config they belong in.
_PROVIDER_KEYS_ELSEWHERE = {
    "init_blocks": "scaling",
    "min_blocks": "scaling",
    "max_blocks": "scaling",
    "nodes_per_block": "scaling",
    "parallelism": "scaling",
    "launcher": "launcher",
}

# HighThroughputExecutor arguments the engine sets itself (not for the config).
_ENGINE_RESERVED = {
    "label", "provider", "launch_cmd", "interchange_launch_cmd",
    "block_error_handler", "storage_access", "manager_selector", "remote_monitoring_radio",
}
# Older names of engine keys, still read.
_ENGINE_ALIASES = {
    "worker_heartbeat_period": "heartbeat_period",
    "worker_heartbeat_threshold": "heartbeat_threshold",
}


def parsl_class(dotted: str) -> type[Any]:
    """The Parsl class a dotted path such as ``parsl.providers.SlurmProvider`` names."""
    module_name, _, class_name = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def _parameters(cls: type[Any]) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return params


def check_options(section: str, cls: type, options: dict[str, Any], reserved: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Refuse keys ``cls`` does not take, naming the bad key and the allowed ones."""
    params = _parameters(cls)
    allowed = sorted(set(params) - set(reserved))
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"{section}: unknown key {key!r} for {cls.__name__}; allowed: {', '.join(allowed)}",
                details={"key": f"{section}.{key}", "allowed": allowed},
            )
    missing = [
        name for name, p in params.items()
        if p.default is inspect.Parameter.empty and name not in options
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if missing:
        raise ConfigError(f"{section}: {cls.__name__} needs {', '.join(missing)}", details={"key": f"{section}.{missing[0]}"})


def _kind(section: str, data: dict[str, Any], table: dict[str, str], default: str) -> str:
    kind = str(data.pop("type", default))
    if kind not in table:
        raise ConfigError(
            f"unknown {section} type {kind!r}; known: {', '.join(sorted(table))}",
            details={"key": f"{section}.type", "allowed": sorted(table)},
        )
    return kind


@dataclass
class ProviderConfig:
    """Where worker blocks come from: a Parsl provider named by ``type`` and its options."""

    type: str = "local"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProviderConfig:
        data = dict(data or {})
        kind = _kind("provider", data, PROVIDERS, "local")
        for key, section in _PROVIDER_KEYS_ELSEWHERE.items():
            if key in data:
                raise ConfigError(
                    f"provider.{key} is set by the endpoint: put it in the {section!r} section",
                    details={"key": f"provider.{key}"},
                )
        check_options("provider", parsl_class(PROVIDERS[kind]), data, set(_PROVIDER_KEYS_ELSEWHERE))
        return cls(type=kind, options=data)


@dataclass
class LauncherConfig:
    """How a block starts its workers: a Parsl launcher named by ``type`` and its options."""

    type: str = "single_node"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LauncherConfig:
        data = dict(data or {})
        kind = _kind("launcher", data, LAUNCHERS, "single_node")
        check_options("launcher", parsl_class(LAUNCHERS[kind]), data)
        return cls(type=kind, options=data)


@dataclass
class ScalingConfig:
    """How many blocks, how big, and how long an idle endpoint keeps them."""

    init_blocks: int = 1
    min_blocks: int = 0
    max_blocks: int = 1
    nodes_per_block: int = 1
    # Seconds with no task queued or running before blocks above min_blocks are cancelled.
    max_idletime: float = 120.0
    # Seconds between polls of the batch queue while blocks are alive: a block that ends without
    # the endpoint asking (scancel, node failure, walltime) is logged and dropped within this.
    poll_period: float = 5.0
    # Seconds stop waits for its cancelled blocks to leave the queue (cancels are retried).
    cancel_timeout: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_blocks <= self.max_blocks:
            raise ConfigError(
                "scaling blocks must satisfy 0 <= min_blocks <= max_blocks",
                details={"key": "scaling.min_blocks"},
            )
        if not self.min_blocks <= self.init_blocks <= self.max_blocks:
            raise ConfigError(
                "scaling.init_blocks must lie between min_blocks and max_blocks",
                details={"key": "scaling.init_blocks"},
            )
        if self.nodes_per_block < 1:
            raise ConfigError("scaling.nodes_per_block must be at least 1", details={"key": "scaling.nodes_per_block"})
        if self.max_idletime < 0:
            raise ConfigError("scaling.max_idletime must be 0 or more seconds", details={"key": "scaling.max_idletime"})
        if not 0 < self.poll_period <= 600:
            raise ConfigError("scaling.poll_period must be in (0, 600] seconds", details={"key": "scaling.poll_period"})
        if not 0 < self.cancel_timeout <= 3600:
            raise ConfigError("scaling.cancel_timeout must be in (0, 3600] seconds", details={"key": "scaling.cancel_timeout"})


@dataclass
class MpiConfig:
    """Parsl's MPI mode for tasks whose ``resource_specification`` asks for MPI ranks: an engine
    of its own (``parsl.executors.MPIExecutor``) whose blocks hold ``nodes_per_block`` nodes, and
    whose workers hand each task its nodes and the launcher prefix (``$PARSL_MPI_PREFIX``)."""

    launcher: str = "openmpi"
    nodes_per_block: int = 1
    max_workers_per_block: int = 1
    init_blocks: int = 0
    min_blocks: int = 0
    max_blocks: int = 1
    max_idletime: float = 120.0
    launcher_options: str = ""

    def __post_init__(self) -> None:
        from fnserve.resources import LAUNCHERS

        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"mpi.launcher must be one of {', '.join(LAUNCHERS)}, not {self.launcher!r}",
                              details={"key": "mpi.launcher", "allowed": list(LAUNCHERS)})
        for key in ("nodes_per_block", "max_workers_per_block"):
            if type(getattr(self, key)) is not int or getattr(self, key) < 1:
                raise ConfigError(f"mpi.{key} must be a whole number of at least 1", details={"key": f"mpi.{key}"})
        if not isinstance(self.launcher_options, str):
            raise ConfigError("mpi.launcher_options must be a string", details={"key": "mpi.launcher_options"})
        _ = self.scaling  # checks the block counts

    @property
    def scaling(self) -> ScalingConfig:
        try:
            return ScalingConfig(init_blocks=self.init_blocks, min_blocks=self.min_blocks, max_blocks=self.max_blocks,
                                 nodes_per_block=self.nodes_per_block, max_idletime=self.max_idletime)
        except ConfigError as exc:
            raise ConfigError(f"mpi: {exc.message}", details={"key": "mpi." + str(exc.details.get("key", "")).split(".")[-1]}) from None

    @property
    def parsl_launcher(self) -> str:
        """The ``mpi_launcher`` Parsl composes prefixes for (OpenMPI's is composed by the worker)."""
        return "mpiexec" if self.launcher == "openmpi" else self.launcher


@dataclass
class EngineConfig:
    """How tasks run: options of Parsl's HighThroughputExecutor.

    The named fields are the ones site admins set most; ``options`` holds any other
    HighThroughputExecutor argument (``address``, ``worker_port_range``, ``cpu_affinity``...).
    """

    max_workers_per_node: int = 1
    cores_per_worker: float = 1.0
    mem_per_worker: float | None = None  # GB
    prefetch_capacity: int = 0
    # Seconds between Parsl's worker-manager heartbeats, and silence before a manager is lost.
    heartbeat_period: int = 30
    heartbeat_threshold: int = 120
    # CurveZMQ between the interchange and its worker pools (Parsl's own): without it, anyone who
    # can reach the interchange's worker port can send it a pickle that runs as this account.
    encrypted: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_workers_per_node < 1:
            raise ConfigError("engine.max_workers_per_node must be at least 1", details={"key": "engine.max_workers_per_node"})
        if self.cores_per_worker <= 0:
            raise ConfigError("engine.cores_per_worker must be more than 0", details={"key": "engine.cores_per_worker"})
        if self.prefetch_capacity < 0:
            raise ConfigError("engine.prefetch_capacity must be 0 or more", details={"key": "engine.prefetch_capacity"})
        if type(self.encrypted) is not bool:
            raise ConfigError(f"engine.encrypted must be true or false, not {self.encrypted!r}",
                              details={"key": "engine.encrypted"})
        if not 0 < self.heartbeat_period < self.heartbeat_threshold:
            raise ConfigError(
                "need 0 < engine.heartbeat_period < engine.heartbeat_threshold",
                details={"key": "engine.heartbeat_period"},
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EngineConfig:
        data = dict(data or {})
        for old, new in _ENGINE_ALIASES.items():
            if old in data:
                data.setdefault(new, data.pop(old))
        named = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {k: data.pop(k) for k in list(data) if k not in named}
        from parsl.executors import HighThroughputExecutor

        check_options("engine", HighThroughputExecutor, options, _ENGINE_RESERVED)
        try:
            return cls(**data, options=options)
        except TypeError as exc:
            raise ConfigError(f"bad engine section: {exc}") from exc


@dataclass
class TriggersConfig:
    """What file triggers may do at this endpoint (the site admin's say)."""

    allowed_folders: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TriggersConfig":
        cfg = _section(cls, "triggers", dict(data or {}))
        folders = cfg.allowed_folders or ()
        if isinstance(folders, str) or not all(isinstance(f, str) and os.path.isabs(os.path.expanduser(f)) for f in folders):
            raise ConfigError("triggers.allowed_folders must be a list of absolute folder paths",
                              details={"key": "triggers.allowed_folders"})
        return cls(allowed_folders=tuple(os.path.realpath(os.path.expanduser(f)) for f in folders))


@dataclass
class EndpointConfig:
    """Everything a site manager needs to run. Build with :meth:`from_dict` or :func:`load_config`."""

    forwarder: str
    endpoint_id: str
    secret: str = field(repr=False)
    heartbeat_period: float = 2.0
    heartbeat_threshold: float = 10.0
    run_dir: str = "~/.fnserve/endpoint"
    # Reconnect backoff: first delay, and the cap it doubles up to.
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    # On SIGTERM: how long to wait for running tasks and for the forwarder's acks.
    drain_timeout: float = 30.0
    # Reruns of a task whose worker or block was lost (a task's own max_retries overrides it).
    max_retries: int = 2
    # Seconds past its walltime a task may keep running before the site manager kills its worker
    # (site_manager.walltime: the limit enforced from outside the task).
    walltime_grace: float = 5.0
    # Largest serialized result a task may return; a bigger one fails with result_too_large.
    max_result_bytes: int = 10 * 1024 * 1024
    # Most tasks the endpoint holds at once (sent to it, not yet finished); the service keeps
    # the rest queued. 0: automatic (see `task_capacity`).
    max_tasks_held: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)
    provider: ProviderConfig = field(default_factory=ProviderConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    # Shell lines run in each block before the workers start (e.g. activate a venv).
    worker_init: str = ""
    # Runtimes beside the host one: name -> site_manager.runtimes.RuntimeConfig (warm pools).
    runtimes: dict[str, Any] = field(default_factory=dict)
    # CurveZMQ (Z85 text, from registration): the forwarder's public key and this endpoint's
    # keypair. Set all three, or none for a plaintext forwarder on loopback.
    forwarder_public_key: str = ""
    curve_public_key: str = ""
    curve_secret_key: str = field(default="", repr=False)
    # Serializer strategies workers may load (functions and arguments); None: any. E.g.
    # [dill-code, source, json-data]: functions as usual, arguments JSON only (no pickles).
    allowed_serializers: tuple[str, ...] | None = None
    # Prometheus metrics on HOST:PORT (site_manager/metrics.py); "" : $FNSERVE_SITE_METRICS, else none.
    metrics: str = ""
    # File triggers: ``{"allowed_folders": [...]}``, the folders (and everything under them)
    # users' file triggers may watch here. None or empty: no file triggers on this endpoint.
    triggers: TriggersConfig = field(default_factory=lambda: TriggersConfig())
    # Parsl's MPI mode for tasks that ask for MPI ranks (None: such tasks are refused).
    mpi: MpiConfig | None = None
    # A multi-user endpoint (run by root): identity mapping, user config template and schema
    # (site_manager.multi_user_config.MultiUserConfig); None: tasks run as this account.
    multi_user: Any = None

    def __post_init__(self) -> None:
        keys = (self.forwarder_public_key, self.curve_public_key, self.curve_secret_key)
        if any(keys) and not all(len(k) == 40 for k in keys):
            raise ConfigError("forwarder_public_key, curve_public_key and curve_secret_key go together: 40-character Z85 keys from `fnserve endpoint create`")
        if not self.forwarder.startswith(("tcp://", "ipc://")):
            raise ConfigError(
                f"forwarder must be a ZMQ address like tcp://host:port, got {self.forwarder!r}"
            )
        if not self.endpoint_id:
            raise ConfigError("endpoint_id is required")
        if (
            self.heartbeat_period <= 0
            or self.heartbeat_threshold <= self.heartbeat_period
        ):
            raise ConfigError("need 0 < heartbeat_period < heartbeat_threshold")
        if type(self.max_retries) is not int or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {self.max_retries!r}",
                              details={"key": "max_retries"})
        if type(self.max_tasks_held) is not int or self.max_tasks_held < 0:
            raise ConfigError(f"max_tasks_held must be an integer >= 0 (0: automatic), got {self.max_tasks_held!r}",
                              details={"key": "max_tasks_held"})
        self._check_serializers()
        if isinstance(self.walltime_grace, bool) or not isinstance(self.walltime_grace, (int, float)) or not 0 < self.walltime_grace <= 3600:
            raise ConfigError(f"walltime_grace must be a number of seconds in (0, 3600], got {self.walltime_grace!r}",
                              details={"key": "walltime_grace"})
        if self.metrics:
            from fnserve.metrics_bind import MetricsBindError, parse_bind

            try:
                parse_bind(str(self.metrics))
            except MetricsBindError as exc:
                raise ConfigError(str(exc), details={"key": "metrics"}) from None
        if type(self.max_result_bytes) is not int or self.max_result_bytes <= 0:
            raise ConfigError(f"max_result_bytes must be a positive integer, got {self.max_result_bytes!r}",
                              details={"key": "max_result_bytes"})

    def _check_serializers(self) -> None:
        from fnserve.serialize import CODE_STRATEGIES, DATA_STRATEGIES, parse_policy

        try:
            self.allowed_serializers = parse_policy(self.allowed_serializers)
        except BadRequest as exc:
            raise ConfigError(exc.message, details={"key": "allowed_serializers"}) from None
        allowed = self.allowed_serializers
        if allowed is not None and not (set(allowed) & set(CODE_STRATEGIES) and set(allowed) & set(DATA_STRATEGIES)):
            raise ConfigError(
                f"allowed_serializers must name at least one function strategy ({', '.join(CODE_STRATEGIES)}) and one "
                f"data strategy ({', '.join(DATA_STRATEGIES)}), or nothing could run; got {list(allowed)}",
                details={"key": "allowed_serializers"})

    @property
    def task_capacity(self) -> int:
        """Tasks to hold at once: ``max_tasks_held``, or by default enough to keep every worker
        the endpoint may start busy (4 per worker, for every runtime's pool), at least 1,024.

        Bounded so that a burst of 100,000 tasks waits in the service's queue (where it can
        still be cancelled or re-routed) instead of swamping this process and its heartbeats.
        """
        if self.max_tasks_held:
            return self.max_tasks_held
        s = self.scaling
        workers = self.engine.max_workers_per_node * s.nodes_per_block * max(s.max_blocks, 1)
        return max(4096, 4 * workers * (1 + len(self.runtimes)))

    @property
    def run_path(self) -> Path:
        return Path(os.path.expandvars(self.run_dir)).expanduser()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointConfig:
        """Build a config from plain data (as parsed from YAML), checking every key."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown endpoint config keys: {', '.join(unknown)}")
        missing = [k for k in ("forwarder", "endpoint_id", "secret") if k not in data]
        if missing:
            raise ConfigError(
                f"endpoint config is missing: {', '.join(missing)} (`fnserve endpoint start NAME` "
                "registers the endpoint and passes them in its credentials file)",
                details={"key": missing[0]},
            )
        engine = dict(data.pop("engine", None) or {})
        scaling = dict(data.pop("scaling", None) or {})
        # Configs written before the scaling section kept block counts under engine.
        for key in ("init_blocks", "min_blocks", "max_blocks"):
            if key in engine:
                if key in scaling:
                    raise ConfigError(f"{key} is set in both engine and scaling: keep the one in scaling",
                                      details={"key": f"engine.{key}"})
                scaling[key] = engine.pop(key)
        data["engine"] = EngineConfig.from_dict(engine)
        data["scaling"] = _section(ScalingConfig, "scaling", scaling)
        data["provider"] = ProviderConfig.from_dict(data.pop("provider", None))
        data["launcher"] = LauncherConfig.from_dict(data.pop("launcher", None))
        if data.get("mpi") is not None:
            if not isinstance(data["mpi"], dict):
                raise ConfigError("mpi must be a mapping (see docs/site-admin.md)", details={"key": "mpi"})
            data["mpi"] = _section(MpiConfig, "mpi", data["mpi"])
            if data["provider"].type == "kubernetes":
                raise ConfigError("mpi mode needs a batch or local provider, not kubernetes", details={"key": "mpi"})
        data["runtimes"] = parse_runtimes(data.pop("runtimes", None))
        data["triggers"] = TriggersConfig.from_dict(data.pop("triggers", None))
        if data.get("multi_user") is not None:
            from site_manager.multi_user_config import MultiUserConfig

            data["multi_user"] = MultiUserConfig.from_dict(data["multi_user"])
        if data.get("worker_init") and "worker_init" in data["provider"].options:
            raise ConfigError("worker_init is set both at the top level and in provider: keep one",
                              details={"key": "provider.worker_init"})
        _, problem = block_cpus(data["provider"].type, data["provider"].options,
                                data["engine"].cores_per_worker, data["engine"].max_workers_per_node)
        if problem:
            raise ConfigError(problem, details={"key": f"provider.{CPU_OPTIONS[data['provider'].type]}"})
        if data["provider"].type == "kubernetes" and data["launcher"].type != "single_node":
            raise ConfigError("the kubernetes provider takes no launcher: remove the launcher section",
                              details={"key": "launcher.type"})
        return cls(**data)


def _section(cls: Any, name: str, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from section ``name``, naming unknown keys and the allowed ones."""
    allowed = sorted(f.name for f in dataclasses.fields(cls))
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{name}: unknown key {key!r}; allowed: {', '.join(allowed)}",
                              details={"key": f"{name}.{key}", "allowed": allowed})
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"bad {name} section: {exc}") from exc


def _read_yaml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping")
    return data


# Keys a credentials file may hold (written by `fnserve endpoint start` at registration).
CREDENTIAL_KEYS = ("endpoint_id", "secret", "forwarder", "forwarder_public_key", "curve_public_key", "curve_secret_key")


def load_config(path: str | os.PathLike[str], credentials: str | os.PathLike[str] | None = None) -> EndpointConfig:
    """Read an endpoint config from a YAML file.

    ``credentials`` names a second file with the endpoint's identity (``endpoint_id``,
    ``secret``, ``forwarder``), kept apart so that the config a site admin edits holds no secret.
    """
    data = _read_yaml(path, "endpoint config")
    if credentials is not None:
        creds = _read_yaml(credentials, "endpoint credentials")
        for key in CREDENTIAL_KEYS:
            if key in creds:
                data.setdefault(key, creds[key])
    return EndpointConfig.from_dict(data)
