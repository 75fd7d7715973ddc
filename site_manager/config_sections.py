"""The sections of an endpoint config, one dataclass each (``provider``, ``launcher``,
``scaling``, ``mpi``, ``engine``, ``triggers``), with the Parsl classes they name and the checks
of their keys against those classes' own signatures. The whole config, and reading it from
YAML, is :mod:`site_manager.config`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

from site_manager.config_errors import ConfigError


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
        cfg = build_section(cls, "triggers", dict(data or {}))
        folders = cfg.allowed_folders or ()
        if isinstance(folders, str) or not all(isinstance(f, str) and os.path.isabs(os.path.expanduser(f)) for f in folders):
            raise ConfigError("triggers.allowed_folders must be a list of absolute folder paths",
                              details={"key": "triggers.allowed_folders"})
        return cls(allowed_folders=tuple(os.path.realpath(os.path.expanduser(f)) for f in folders))


def build_section(cls: Any, name: str, data: dict[str, Any]) -> Any:
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
