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

The sections' dataclasses live in :mod:`site_manager.config_sections` (importable from here too).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnserve.errors import BadRequest
from site_manager.block_size import CPU_OPTIONS, block_cpus
from site_manager.config_errors import ConfigError
from site_manager.runtimes import parse_runtimes
from site_manager.config_sections import (
    LAUNCHERS,
    PROVIDERS,
    EngineConfig,
    LauncherConfig,
    MpiConfig,
    ProviderConfig,
    ScalingConfig,
    TriggersConfig,
    check_options,
    parsl_class,
)
from site_manager.config_sections import build_section as _section


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


# Names other modules import from here; the sections are defined in site_manager.config_sections.
__all__ = [
    "LAUNCHERS", "PROVIDERS", "ConfigError", "EndpointConfig", "EngineConfig", "LauncherConfig", "MpiConfig",
    "ProviderConfig", "ScalingConfig", "TriggersConfig", "check_options", "load_config", "parsl_class",
]
