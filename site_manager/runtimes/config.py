"""The ``runtimes:`` section of an endpoint config, and the pure decisions about runtimes.

::

    runtimes:
      sci:                              # the name tasks and the registry use
        type: podman                    # host, venv, podman, docker, charliecloud, apptainer, singularity
        image: localhost/fnserve-worker:latest
        min_warm_workers: 1             # hot spares: workers kept running before the first call
        max_blocks: 2
        max_idletime: 300               # seconds idle before its workers are stopped
        pull: never                     # podman/docker: never (default), missing or always
        gpus: nvidia                    # none (default), nvidia or amd: --nv / --rocm / --gpus / CDI
        binds: [/scratch]               # more host paths the workers see (run_dir is always bound)
        env: {OMP_NUM_THREADS: "1"}     # environment set inside the runtime
        run_options: ["--cpus=2"]       # extra arguments for `podman run` / `apptainer exec` / `ch-run`
      py-env:
        type: venv
        python: /opt/envs/sci/bin/python

The endpoint's own engine is the runtime named ``host`` (tasks naming no runtime run there).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from site_manager.config_errors import ConfigError

HOST = "host"
RUNTIME_TYPES = ("host", "venv", "podman", "docker", "charliecloud", "apptainer", "singularity")
CONTAINER_TYPES = ("podman", "docker", "charliecloud", "apptainer", "singularity")
OCI_TYPES = ("podman", "docker")
APPTAINER_TYPES = ("apptainer", "singularity")
PULL_POLICIES = ("never", "missing", "always")
GPU_KINDS = ("none", "nvidia", "amd")
# Parsl's worker pool, started as a module of the runtime's own Python (see node_manager.pool).
POOL_MODULE = "node_manager.pool"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RuntimeConfig:
    """One runtime of the ``runtimes:`` section."""

    name: str
    type: str = HOST
    # Container image: a name (podman/docker), a .sif path, a library://, docker:// or oras:// URI
    # or a sandbox folder (apptainer/singularity), an image folder (charliecloud).
    image: str = ""
    python: str = "python3"  # interpreter: the venv's bin/python, or python3 inside an image
    min_warm_workers: int = 0
    max_blocks: int = 1
    max_idletime: float = 120.0
    run_options: tuple[str, ...] = ()
    # Where the container runtime binary is (default: found on PATH by its type's name; for
    # apptainer, `apptainer` then `singularity`).
    command: str = ""
    # Runtimes able to run the same functions: a warm one is used instead of cold-starting this.
    fallbacks: tuple[str, ...] = ()
    # podman/docker: use only local images (never), pull when absent (missing), or always pull.
    pull: str = "never"
    gpus: str = "none"
    binds: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # apptainer/singularity: `instance start` once per block and `exec instance://` the pool
    # (named, listable, stopped on exit) instead of one plain `exec` per pool.
    instance: bool = False

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
        for what, value, allowed in (("pull", self.pull, PULL_POLICIES), ("gpus", self.gpus, GPU_KINDS)):
            if value not in allowed:
                raise ConfigError(f"{key}.{what} must be one of {', '.join(allowed)}, not {value!r}",
                                  details={"key": f"{key}.{what}", "allowed": list(allowed)})
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                raise ConfigError(f"{key}.env: {name!r} is not an environment variable name", details={"key": f"{key}.env"})
            if self.type in APPTAINER_TYPES and "," in value:
                # `--env A=B,C=D` splits on commas: such a value would arrive cut in two.
                raise ConfigError(f"{key}.env.{name}: apptainer's --env cannot carry a comma; set it in the image instead",
                                  details={"key": f"{key}.env.{name}"})
        if self.gpus != "none" and self.type in ("host", "venv"):
            raise ConfigError(f"{key}.gpus is for container runtimes: host and venv workers see the node's GPUs already",
                              details={"key": f"{key}.gpus"})

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
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
            # The name goes into container names and labels: keep to what every runtime accepts.
            raise ConfigError(f"runtime name {name!r}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)",
                              details={"key": "runtimes"})
        spec = dict(spec or {})
        for key in spec:
            if key not in allowed:
                raise ConfigError(f"runtimes.{name}: unknown key {key!r}; allowed: {', '.join(allowed)}",
                                  details={"key": f"runtimes.{name}.{key}", "allowed": allowed})
        if name == HOST and spec.get("type", HOST) != HOST:
            raise ConfigError("runtime name 'host' is the endpoint's own engine: give this runtime another name",
                              details={"key": "runtimes.host"})
        for key in ("fallbacks", "binds"):
            if key in spec:
                spec[key] = tuple(str(f) for f in (spec[key] or ()))
        if "run_options" in spec:
            opts = spec["run_options"]
            if isinstance(opts, str):
                opts = shlex.split(opts)
            spec["run_options"] = tuple(str(o) for o in opts)
        if "env" in spec:
            if not isinstance(spec["env"], dict):
                raise ConfigError(f"runtimes.{name}.env must be a mapping of NAME: value", details={"key": f"runtimes.{name}.env"})
            spec["env"] = {str(k): str(v) for k, v in spec["env"].items()}
        if "gpus" in spec and spec["gpus"] in (None, False):
            spec["gpus"] = "none"
        try:
            out[name] = RuntimeConfig(name=name, **spec)
        except TypeError as exc:
            raise ConfigError(f"bad runtimes.{name} section: {exc}") from exc
    return out


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

    def start_failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.error = error
        self.retry_at = now + min(self.cap, self.initial * 2 ** (self.failures - 1))

    def started(self) -> None:
        """Workers connected: the runtime works; forget past failures."""
        self.failures, self.retry_at, self.error = 0, 0.0, ""

    def usable(self, now: float) -> bool:
        return not self.failures or now >= self.retry_at


def spares_to_restart(runtimes: dict[str, RuntimeConfig], running: set[str], health: dict[str, PoolHealth], now: float) -> list[str]:
    """Runtimes keeping hot spares whose pool is down and whose backoff has passed (pure).

    A hot spare whose start failed (its image was not there yet) comes back on its own, at the
    pace :class:`PoolHealth` allows, without waiting for a task.

    >>> rts = {"a": RuntimeConfig("a", "podman", image="i", min_warm_workers=1), "b": RuntimeConfig("b", "podman", image="i")}
    >>> h = {"a": PoolHealth(), "b": PoolHealth()}
    >>> h["a"].start_failed(10.0, "image not found")
    >>> spares_to_restart(rts, set(), h, 11.0), spares_to_restart(rts, set(), h, 12.0), spares_to_restart(rts, {"a"}, h, 12.0)
    ([], ['a'], [])
    """
    return sorted(n for n, rt in runtimes.items()
                  if rt.min_warm_workers > 0 and n not in running and health[n].failures and health[n].usable(now))


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


_IMAGE_MISSING = re.compile(
    r"image not known|no such image|unable to find image|manifest unknown|repository does not exist"
    r"|could not open image|image .*not found|failed to retrieve path|not an image directory|can't find image"
    r"|no such file or directory.*(image|\.sif)|pull access denied", re.IGNORECASE)


def start_failure(rt: RuntimeConfig, output: str) -> str:
    """One line saying why ``rt``'s workers did not start, from what its block printed (pure).

    >>> rt = RuntimeConfig("sci", "podman", image="localhost/nope:1")
    >>> start_failure(rt, "Error: localhost/nope:1: image not known")
    "runtime 'sci' (podman localhost/nope:1): image not found: localhost/nope:1 (podman has no such local image; build or pull it on the nodes, or set pull: missing)"
    """
    low = output.lower()
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "") or "no output"
    if _IMAGE_MISSING.search(output):
        if rt.type in OCI_TYPES:
            how = f"{rt.type} has no such local image; build or pull it on the nodes" + (", or set pull: missing" if rt.pull == "never" else "")
        else:
            how = "no such image there; build it (fnserve runtime build) or fix `image`"
        return f"{rt.describe()}: image not found: {rt.image} ({how})"
    if "cannot import" in low or "no module named" in low:
        return f"{rt.describe()}: its workers did not start: {last}; install fnserve[site] (with Parsl) into that environment or image"
    return f"{rt.describe()}: its workers did not start: {last}; check the runtime's settings in the endpoint config"
