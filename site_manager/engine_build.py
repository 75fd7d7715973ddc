"""How the engine's Parsl objects are built: the provider, its launcher, the executor.

:func:`make_provider` turns a config's ``provider`` / ``launcher`` / ``scaling`` sections into
Parsl's provider object; :func:`build_executor` makes the HighThroughputExecutor (or
MPIExecutor) an :class:`~site_manager.engine.Engine` starts. Nothing here starts a process.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any

from site_manager.block_size import block_cpus, cpu_note
from site_manager.config import (
    LAUNCHERS,
    PROVIDERS,
    EngineConfig,
    LauncherConfig,
    MpiConfig,
    ProviderConfig,
    ScalingConfig,
    parsl_class,
)
from site_manager.interchange import LAUNCH_CMD as INTERCHANGE_LAUNCH_CMD

logger = logging.getLogger(__name__)

TASK_EXECUTOR = {"task_executor": {"f": "node_manager.execute.execute_task"}}
WORKER_UMASK = "umask 077"
BATCH_PYTHON = "python3"  # the worker pool's interpreter in a batch job (after worker_init)


def pool_launch_cmd(default: str, python: str = sys.executable) -> str:
    """Parsl's worker pool command, run through :mod:`node_manager.pool` (pure): the pool then
    ends with its site manager (on its host) or its interchange (anywhere), replaces dead workers
    at once, and its workers end with it.

    >>> pool_launch_cmd("process_worker_pool.py -p {x}", "/py")
    '/py -m node_manager.pool -p {x}'
    """
    head, _, rest = default.partition(" ")
    if not head.endswith("process_worker_pool.py"):
        return default
    return f"{python} -m node_manager.pool {rest}".rstrip()


def make_launcher(launcher: LauncherConfig) -> Any:
    """The Parsl launcher object a config's ``launcher`` section names."""
    return parsl_class(LAUNCHERS.get(launcher.type) or _OWN_LAUNCHERS[launcher.type])(**launcher.options)


# Launchers the engine picks itself (not offered in configs): MPI mode needs Parsl's SimpleLauncher.
_OWN_LAUNCHERS = {"simple": "parsl.launchers.SimpleLauncher"}


def make_provider(
    provider: ProviderConfig,
    scaling: ScalingConfig,
    script_dir: Path,
    launcher: LauncherConfig | None = None,
    worker_init: str = "",
    engine: EngineConfig | None = None,
) -> Any:
    """The Parsl provider object a config's ``provider`` section names.

    Block counts come from ``scaling`` and the launcher from ``launcher``; the engine decides
    when to scale (no DataFlowKernel), so Parsl's own scaling strategy never sees them. A
    block asks for the CPUs ``engine``'s workers use (:func:`site_manager.block_size.block_cpus`).
    """
    cls = parsl_class(PROVIDERS[provider.type])
    options = dict(provider.options)
    if engine is not None:
        options.update(block_cpus(provider.type, options, engine.cores_per_worker, engine.max_workers_per_node)[0])
    if worker_init:
        options["worker_init"] = worker_init
    if "worker_init" in inspect.signature(cls.__init__).parameters:
        # Block files (worker logs, Parsl's run dirs) private on every scheduler, whatever
        # umask the batch system gives jobs (PBS does not pass the submitter's on).
        options["worker_init"] = f"{WORKER_UMASK}\n{options.get('worker_init') or ''}".rstrip("\n")
    if provider.type != "kubernetes":  # pods start their worker pool themselves
        options["launcher"] = make_launcher(launcher or LauncherConfig())
    obj = cls(
        init_blocks=scaling.init_blocks,
        min_blocks=scaling.min_blocks,
        max_blocks=scaling.max_blocks,
        nodes_per_block=scaling.nodes_per_block,
        **options,
    )
    obj.script_dir = str(script_dir)
    return obj


def interchange_address(provider_type: str, options: dict[str, Any]) -> dict[str, str]:
    """Where the interchange listens for worker pools (pure): the narrowest address the provider
    needs. Local blocks run on this host, so loopback; batch blocks run on compute nodes, so
    Parsl's default (every interface) unless the admin names one with ``engine.address``.

    >>> interchange_address("local", {})
    {'address': '127.0.0.1'}
    >>> interchange_address("slurm", {})
    {}
    """
    if "address" in options or provider_type != "local":
        return {}
    return {"address": "127.0.0.1"}


def prepare_environment() -> None:
    # HTEX starts interchange.py and process_worker_pool.py by name, and workers import
    # node_manager: make both findable for the processes the provider launches from here.
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    spec = importlib.util.find_spec("node_manager")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).parent.parent)
        pythonpath = [
            p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ]
        if root not in pythonpath:
            os.environ["PYTHONPATH"] = os.pathsep.join([root, *pythonpath])


def build_executor(
    cfg: EngineConfig,
    provider: ProviderConfig,
    scaling: ScalingConfig,
    launcher: LauncherConfig,
    script_dir: Path,
    run_dir: Path,
    label: str,
    worker_init: str = "",
    launch_cmd: str | None = None,
    mpi: MpiConfig | None = None,
) -> Any:
    """The executor an engine starts (not started yet): HTEX, or Parsl's MPIExecutor when
    ``mpi`` is set. ``launch_cmd`` replaces the worker pool's command (a runtime's container)."""
    from parsl.executors import HighThroughputExecutor, MPIExecutor

    if launch_cmd is None:
        from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

        # Every block's pool, MPI mode's too (the same command with --enable_mpi_mode), runs through
        # node_manager.pool. A batch job's pool runs the Python that worker_init puts first on the
        # node's PATH (the site manager's may not exist there), as Parsl's process_worker_pool.py would.
        launch_cmd = pool_launch_cmd(DEFAULT_LAUNCH_CMD, sys.executable if provider.type == "local" else BATCH_PYTHON)
    if mpi is not None:
        # MPI mode: Parsl requires SimpleLauncher (one pool on the block's first node; the
        # tasks' own launcher reaches the other nodes).
        cls: Any = MPIExecutor
        launcher = LauncherConfig(type="simple")
        sizing: dict[str, Any] = {"max_workers_per_block": mpi.max_workers_per_block,
                                  "mpi_launcher": mpi.parsl_launcher}
    else:
        cls = HighThroughputExecutor
        sizing = {"max_workers_per_node": cfg.max_workers_per_node, "cores_per_worker": cfg.cores_per_worker,
                  "mem_per_worker": cfg.mem_per_worker}
    accepted = set(inspect.signature(cls.__init__).parameters)
    ex = cls(
        label=label,
        provider=make_provider(provider, scaling, script_dir, launcher, worker_init, cfg),
        **sizing,
        prefetch_capacity=cfg.prefetch_capacity,
        heartbeat_period=cfg.heartbeat_period,
        heartbeat_threshold=cfg.heartbeat_threshold,
        # Parsl's error handler would put the executor in a bad state for good after block
        # failures; here lost blocks are replaced and their tasks fail with a clear error.
        block_error_handler=False,
        # CurveZMQ: Parsl writes the keys under run_dir (0700), which workers in containers
        # see through their bind mount and batch jobs through the shared file system.
        encrypted=cfg.encrypted,
        **({"launch_cmd": launch_cmd} if launch_cmd else {}),
        **{k: v for k, v in {**interchange_address(provider.type, cfg.options), **cfg.options}.items()
           if k in accepted},
    )
    # Set after construction: MPIExecutor's signature types it as a string, HTEX runs the list as is.
    ex.interchange_launch_cmd = INTERCHANGE_LAUNCH_CMD
    ex.run_dir = str(run_dir)
    if not cfg.encrypted:
        logger.warning("engine.encrypted is off: any process that reaches the interchange's worker port (%s) can "
                       "run code as this account; turn it on unless every such process is trusted",
                       ex.address or "every interface")
    note = cpu_note(provider.type)
    if note and cfg.max_workers_per_node * cfg.cores_per_worker > 1:
        logger.warning("blocks may get fewer CPUs than their %d worker(s) use: %s", cfg.max_workers_per_node, note)
    return ex
