"""Runtimes an endpoint runs: the ``runtimes:`` config section and worker launch commands (pure).

Each runtime gets its own HighThroughputExecutor whose worker pool starts *inside* the runtime:
the pool's launch command is wrapped by the container runtime, or run by another interpreter::

    runtimes:
      sci:                              # the name tasks and the registry use
        type: podman                    # host, venv, podman, docker, charliecloud, apptainer, singularity
        image: localhost/fnserve-worker:latest
        min_warm_workers: 1             # hot spares: workers kept running before the first call
        max_blocks: 2
        max_idletime: 300               # seconds idle before its workers are stopped
        run_options: ["--cpus=2"]       # extra arguments for `podman run` / `apptainer exec` / `ch-run`
      py-env:
        type: venv
        python: /opt/envs/sci/bin/python

The endpoint's own engine is the runtime named ``host`` (tasks naming no runtime run there).
Inside a runtime the worker pool is ``python -m node_manager.pool``, which names a missing
fnserve installation clearly instead of failing on a bare import.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from site_manager.config import ConfigError

HOST = "host"
RUNTIME_TYPES = ("host", "venv", "podman", "docker", "charliecloud", "apptainer", "singularity")
CONTAINER_TYPES = ("podman", "docker", "charliecloud", "apptainer", "singularity")
# Parsl's worker pool, started as a module of the runtime's own Python (see node_manager.pool).
POOL_MODULE = "node_manager.pool"


@dataclass(frozen=True)
class RuntimeConfig:
    """One runtime of the ``runtimes:`` section."""

    name: str
    type: str = HOST
    image: str = ""  # container image (name, .sif path or directory), for container types
    python: str = "python3"  # interpreter: the venv's bin/python, or python3 inside an image
    min_warm_workers: int = 0
    max_blocks: int = 1
    max_idletime: float = 120.0
    run_options: tuple[str, ...] = ()
    # Where the container runtime binary is (default: found on PATH by its type's name).
    command: str = ""
    # Runtimes able to run the same functions: a warm one is used instead of cold-starting this.
    fallbacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        key = f"runtimes.{self.name}"
        if self.type not in RUNTIME_TYPES:
            raise ConfigError(f"{key}.type must be one of {', '.join(RUNTIME_TYPES)}, not {self.type!r}",
                              details={"key": f"{key}.type", "allowed": list(RUNTIME_TYPES)})
        if self.type in CONTAINER_TYPES and not self.image:
            raise ConfigError(f"{key}: a {self.type} runtime needs `image`", details={"key": f"{key}.image"})
        if self.type == "venv" and self.python == "python3":
            raise ConfigError(f"{key}: a venv runtime needs `python`: the environment's interpreter, e.g. /opt/env/bin/python",
                              details={"key": f"{key}.python"})
        if self.min_warm_workers < 0 or self.max_blocks < 1:
            raise ConfigError(f"{key}: need min_warm_workers >= 0 and max_blocks >= 1", details={"key": f"{key}.max_blocks"})
        if self.max_idletime < 0:
            raise ConfigError(f"{key}.max_idletime must be 0 or more seconds", details={"key": f"{key}.max_idletime"})

    def min_blocks(self, workers_per_block: int) -> int:
        """Blocks that hold ``min_warm_workers`` hot spares (within ``max_blocks``)."""
        return min(self.max_blocks, math.ceil(self.min_warm_workers / max(1, workers_per_block)))

    def describe(self) -> str:
        """How error messages name the runtime: ``runtime 'sci' (podman localhost/img)``."""
        where = self.image if self.type in CONTAINER_TYPES else self.python if self.type == "venv" else "the endpoint's Python"
        return f"runtime {self.name!r} ({self.type} {where})"


def parse_runtimes(data: Any) -> dict[str, RuntimeConfig]:
    """The ``runtimes:`` section: name -> :class:`RuntimeConfig`, every key checked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("runtimes must be a mapping of runtime name to its settings", details={"key": "runtimes"})
    allowed = sorted(f for f in RuntimeConfig.__dataclass_fields__ if f != "name")
    out: dict[str, RuntimeConfig] = {}
    for name, spec in data.items():
        name = str(name)
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"runtime name {name!r} must be non-empty without spaces", details={"key": "runtimes"})
        spec = dict(spec or {})
        for key in spec:
            if key not in allowed:
                raise ConfigError(f"runtimes.{name}: unknown key {key!r}; allowed: {', '.join(allowed)}",
                                  details={"key": f"runtimes.{name}.{key}", "allowed": allowed})
        if name == HOST and spec.get("type", HOST) != HOST:
            raise ConfigError("runtime name 'host' is the endpoint's own engine: give this runtime another name",
                              details={"key": "runtimes.host"})
        if "fallbacks" in spec:
            spec["fallbacks"] = tuple(str(f) for f in (spec["fallbacks"] or ()))
        if "run_options" in spec:
            opts = spec["run_options"]
            if isinstance(opts, str):
                opts = shlex.split(opts)
            spec["run_options"] = tuple(str(o) for o in opts)
        try:
            out[name] = RuntimeConfig(name=name, **spec)
        except TypeError as exc:
            raise ConfigError(f"bad runtimes.{name} section: {exc}") from exc
    return out


def _pool_args(default_launch_cmd: str) -> str:
    """Parsl's default launch command without its leading ``process_worker_pool.py``."""
    head, _, rest = default_launch_cmd.partition(" ")
    assert head.endswith("process_worker_pool.py"), default_launch_cmd
    return rest


def launch_command(rt: RuntimeConfig, default_launch_cmd: str, binds: list[str], env: dict[str, str] | None = None) -> str | None:
    """The HighThroughputExecutor ``launch_cmd`` that starts ``rt``'s worker pool inside it.

    ``default_launch_cmd`` is Parsl's (its ``{...}`` fields are filled in by Parsl later);
    ``binds`` are host directories the workers must see at the same path (Parsl's log
    directory). ``None`` for the host runtime: Parsl's own command as is.

    >>> cmd = launch_command(RuntimeConfig("sci", "podman", image="img"), "process_worker_pool.py -p {x}", ["/run"])
    >>> cmd
    'podman run --rm --network host -v /run:/run img python3 -m node_manager.pool -p {x}'
    """
    if rt.type == HOST:
        return None
    # Braces in paths or options must survive Parsl's str.format of the whole command.
    q = lambda s: shlex.quote(s).replace("{", "{{").replace("}", "}}")
    pool = f"{q(rt.python)} -m {POOL_MODULE} {_pool_args(default_launch_cmd)}"
    env = env or {}
    opts = " ".join(q(o) for o in rt.run_options)
    if rt.type == "venv":
        # Isolated (-I): only the environment's own packages, not the endpoint's PYTHONPATH or
        # working directory, which would hide a venv that lacks fnserve.
        sets = " ".join(f"{k}={q(v)}" for k, v in env.items())
        return f"{'env ' + sets + ' ' if sets else ''}{q(rt.python)} -I -m {POOL_MODULE} {_pool_args(default_launch_cmd)}"
    binary = q(rt.command or ("ch-run" if rt.type == "charliecloud" else rt.type))
    if rt.type in ("podman", "docker"):
        # Host network: workers connect to the interchange on this host. On scale-in Parsl
        # signals the `podman run` client, which passes the signal on to the pool (sig-proxy).
        mounts = " ".join(f"-v {q(b)}:{q(b)}" for b in binds)
        envs = " ".join(f"-e {q(k)}={q(v)}" for k, v in env.items())
        parts = [binary, "run --rm --network host", mounts, envs, opts, q(rt.image), pool]
    elif rt.type == "charliecloud":
        mounts = " ".join(f"-b {q(b)}:{q(b)}" for b in binds)
        envs = " ".join(f"--set-env={q(k)}={q(v)}" for k, v in env.items())
        # ch-run refuses to start without $USER, which daemons often lack.
        parts = ['env USER="$(id -un)"', binary, "--unset-env=PYTHONPATH", mounts, envs, opts, q(rt.image), "--", pool]
    else:  # apptainer / singularity: the same exec interface
        mounts = " ".join(f"--bind {q(b)}" for b in binds)
        envs = " ".join(f"--env {q(k)}={q(v)}" for k, v in env.items())
        parts = [binary, "exec --cleanenv", mounts, envs, opts, q(rt.image), pool]
    return " ".join(p for p in parts if p)


@dataclass
class PoolHealth:
    """Whether a runtime's pool may start workers now (pure; the pool feeds it events).

    A pool whose workers die before connecting (image missing, container refusing to start,
    fnserve absent from a venv) is not restarted in a tight loop: tasks for it fail at once with
    the cause until ``retry_at``; the wait doubles with each failed start up to ``cap``.

    >>> h = PoolHealth(initial=1.0, cap=8.0)
    >>> h.start_failed(100.0, "image not found"); h.usable(100.5), h.retry_at
    (False, 101.0)
    >>> h.start_failed(101.5, "image not found"); h.retry_at
    103.5
    >>> h.started(); h.usable(0.0)
    True
    """

    initial: float = 2.0
    cap: float = 60.0
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""
    _history: list[float] = field(default_factory=list, repr=False)

    def start_failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.error = error
        self.retry_at = now + min(self.cap, self.initial * 2 ** (self.failures - 1))

    def started(self) -> None:
        """Workers connected: the runtime works; forget past failures."""
        self.failures, self.retry_at, self.error = 0, 0.0, ""

    def usable(self, now: float) -> bool:
        return not self.failures or now >= self.retry_at


def route(requested: str | None, configured: set[str], warm: set[str], fallbacks: dict[str, tuple[str, ...]] | None = None) -> str | None:
    """Which runtime runs a task (pure): ``None`` when the endpoint does not run it.

    A task names one runtime (or none: ``host``). Where a runtime lists ``fallbacks`` (runtimes
    able to run the same functions), a warm one among them is preferred to a cold start.

    >>> route(None, {"host"}, set())
    'host'
    >>> route("sci", {"host", "sci", "sci-b"}, {"sci-b"}, {"sci": ("sci-b",)})
    'sci-b'
    >>> route("gpu", {"host"}, set()) is None
    True
    """
    name = requested or HOST
    if name not in configured:
        return None
    if name in warm:
        return name
    for alt in (fallbacks or {}).get(name, ()):
        if alt in configured and alt in warm:
            return alt
    return name
