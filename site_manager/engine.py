"""The engine: Parsl's HighThroughputExecutor, used directly (no DataFlowKernel).

Each task is submitted as its encoded :class:`~fnserve.messages.TaskMessage` with
``node_manager.execute.execute_task`` as Parsl's ``task_executor``, so the worker runs our
node manager on the bytes as they came from the forwarder and Parsl never pickles a function.

The engine watches its own processes at heartbeat pace (:meth:`Engine.status`): an interchange
that exited, or a local block whose worker pool died while connected, restarts the engine
(:meth:`Engine.restart`). Tasks that had not started are submitted again to the new interchange
(once: they never ran); tasks that had started fail with ``worker_lost`` and the site manager
reruns them within the retry bounds (:mod:`site_manager.retries`). Which ones had started comes
from :attr:`Engine.started_probe` (the workers' start notes and start markers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

from fnserve.private_files import private_dir
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
from site_manager.batch_jobs import GONE_STATES, JobRecord, cancel_jobs, describe_left, in_queue, next_step, query_states, settle
from site_manager.block_size import block_cpus, cpu_note
from site_manager.failures import BlockLost, EngineLost
from site_manager.interchange import LAUNCH_CMD as INTERCHANGE_LAUNCH_CMD
from site_manager.runtimes.blocks import ended_dir, read_exit_notes
from site_manager.scaling import TERMINAL_STATES, BlockView, classify_blocks, decide, idle_from
from site_manager.status import EngineStatus, summarize

logger = logging.getLogger(__name__)

TASK_EXECUTOR = {"task_executor": {"f": "node_manager.execute.execute_task"}}
WORKER_UMASK = "umask 077"


def pool_launch_cmd(default: str, python: str = sys.executable) -> str:
    """Parsl's worker pool command, run through :mod:`node_manager.pool` (pure): the pool then
    ends with its site manager and replaces dead workers at once.

    >>> pool_launch_cmd("process_worker_pool.py -p {x}", "/py")
    '/py -m node_manager.pool -p {x}'
    """
    head, _, rest = default.partition(" ")
    if not head.endswith("process_worker_pool.py"):
        return default
    return f"{python} -m node_manager.pool {rest}".rstrip()


def split_lost(task_ids: set[str], started: set[str]) -> tuple[set[str], set[str]]:
    """Tasks of a dead engine: ``(to submit again, to fail as lost)`` (pure).

    A task no worker started never ran: it is submitted once more, not counted as an attempt.
    One that started may have run (partly): it fails with ``worker_lost`` and the site manager's
    retry rules decide. An unknown id (no task id given) counts as started: the safe side.

    >>> split_lost({"a", "b", ""}, {"b"})
    ({'a'}, {'', 'b'})
    """
    again = {t for t in task_ids if t and t not in started}
    return again, task_ids - again


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


def _prepare_environment() -> None:
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


class Engine:
    """Runs encoded task messages on a HighThroughputExecutor, scales its blocks, reports its state.

    Example::

        engine = Engine(EngineConfig(max_workers_per_node=2), ProviderConfig(), Path("/tmp/ep"))
        engine.start()
        result_bytes = engine.submit(encode_task(task)).result()
        engine.shutdown()
    """

    def __init__(
        self,
        engine: EngineConfig,
        provider: ProviderConfig,
        run_dir: Path,
        label: str = "fnserve",
        launcher: LauncherConfig | None = None,
        scaling: ScalingConfig | None = None,
        worker_init: str = "",
        launch_cmd: str | None = None,
        mpi: MpiConfig | None = None,
    ) -> None:
        self.config = engine
        # Parsl's MPI mode (MPIExecutor): one worker pool per block hands tasks nodes and a launcher prefix.
        self.mpi = mpi
        # The worker pool's command (Parsl's own when None): a runtime wraps it in its container.
        self.launch_cmd = launch_cmd
        self.provider_config = provider
        self.launcher_config = launcher or LauncherConfig()
        self.scaling = scaling or ScalingConfig()
        self.worker_init = worker_init
        self.run_dir = run_dir
        self.label = label
        self._executor: Any = None
        # What the interchange said at the last status(): refreshed at heartbeat pace so that
        # submit() never waits on it.
        self._connected_blocks: set[str] = set()
        self._seen_blocks: set[str] = set()
        self._manager_blocks: dict[str, str] = {}  # worker manager id -> block id
        self._lost: dict[str, str] = {}  # block id -> how it was reported lost
        self._idle_since: float | None = None
        self._last_activity: float | None = None  # a task submitted or finished (monotonic)
        self._held: set[str] = set()  # ended blocks whose managers the interchange was told to hold
        # Batch jobs: the record the CLI reads, jobs cancelled and not yet seen out of the queue
        # (job id -> when the last cancel was sent), blocks whose end was already reported.
        self._record = JobRecord.in_dir(run_dir)
        self._cancelling: dict[str, float] = {}
        self._ended: set[str] = set()
        self._polled_at = 0.0
        self._holding = False  # stopping: no task more to any worker
        self._lock = threading.Lock()  # the bookkeeping above is also read on Parsl's result thread
        # Submitted and not settled: outer future -> (task bytes, task id, Parsl's future).
        self._inflight: dict[Future[bytes], tuple[bytes, str, Future[Any], dict[str, Any]]] = {}
        self._groups: dict[str, int] = {}  # local block -> its process group (to kill what it left)
        # Which of these task ids a worker started (set by the site manager); None: assume all did.
        self.started_probe: Callable[[set[str]], set[str]] | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the interchange and the configured initial blocks."""
        from parsl.executors import HighThroughputExecutor, MPIExecutor

        _prepare_environment()
        private_dir(self.run_dir)
        # Block ids start again from 0 with each executor: notes of an earlier one name other blocks.
        shutil.rmtree(ended_dir(self.run_dir), ignore_errors=True)
        script_dir = private_dir(self.run_dir / "submit_scripts")
        cfg = self.config
        launch_cmd = self.launch_cmd
        if launch_cmd is None and self.provider_config.type == "local":
            from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

            launch_cmd = pool_launch_cmd(DEFAULT_LAUNCH_CMD)
        if self.mpi is not None:
            # MPI mode: Parsl requires SimpleLauncher (one pool on the block's first node; the
            # tasks' own launcher reaches the other nodes).
            cls: Any = MPIExecutor
            launcher = LauncherConfig(type="simple")
            sizing: dict[str, Any] = {"max_workers_per_block": self.mpi.max_workers_per_block,
                                      "mpi_launcher": self.mpi.parsl_launcher}
        else:
            cls, launcher = HighThroughputExecutor, self.launcher_config
            sizing = {"max_workers_per_node": cfg.max_workers_per_node, "cores_per_worker": cfg.cores_per_worker,
                      "mem_per_worker": cfg.mem_per_worker}
        accepted = set(inspect.signature(cls.__init__).parameters)
        ex = cls(
            label=self.label,
            provider=make_provider(
                self.provider_config, self.scaling, script_dir, launcher, self.worker_init, cfg
            ),
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
            **{k: v for k, v in {**interchange_address(self.provider_config.type, cfg.options), **cfg.options}.items()
               if k in accepted},
        )
        # Set after construction: MPIExecutor's signature types it as a string, HTEX runs the list as is.
        ex.interchange_launch_cmd = INTERCHANGE_LAUNCH_CMD
        ex.run_dir = str(self.run_dir)
        if not cfg.encrypted:
            logger.warning("engine.encrypted is off: any process that reaches the interchange's worker port (%s) can "
                           "run code as this account; turn it on unless every such process is trusted",
                           ex.address or "every interface")
        note = cpu_note(self.provider_config.type)
        if note and cfg.max_workers_per_node * cfg.cores_per_worker > 1:
            logger.warning("blocks may get fewer CPUs than their %d worker(s) use: %s", cfg.max_workers_per_node, note)
        ex.start()
        self._executor = ex
        # Jobs a killed predecessor recorded stay listed until they are seen out of the queue.
        self._cancelling.update(dict.fromkeys(self._record.read(), 0.0))
        if self.scaling.init_blocks:
            ex.scale_out_facade(self.scaling.init_blocks)
        self._save_jobs()
        logger.info("engine started: %r", ex.provider)

    def submit(self, task_bytes: bytes, task_id: str = "", resource_spec: dict[str, Any] | None = None) -> Future[bytes]:
        """Run one encoded task message; the future's result is the encoded result message.

        ``task_id`` lets a restart after a dead interchange tell queued tasks from started ones.
        ``resource_spec``: in MPI mode, the task's checked request
        (:meth:`fnserve.resources.MpiRequest.parsl_spec`): Parsl's workers give it its nodes."""
        context = {**TASK_EXECUTOR, "resource_spec": resource_spec} if resource_spec else TASK_EXECUTOR
        self._last_activity = time.monotonic()
        outer: Future[bytes] = Future()
        self._dispatch(outer, task_bytes, task_id, context)
        self._scale_out_if_cold()
        return outer

    def _dispatch(self, outer: Future[bytes], task_bytes: bytes, task_id: str, context: dict[str, Any]) -> None:
        inner = self._executor.submit_payload(context, task_bytes)
        with self._lock:
            self._inflight[outer] = (task_bytes, task_id, inner, context)
        inner.add_done_callback(lambda fut: self._settle(outer, fut))

    def _settle(self, outer: Future[bytes], inner: Future[bytes]) -> None:
        self._last_activity = time.monotonic()
        with self._lock:
            entry = self._inflight.get(outer)
            if entry is None or entry[2] is not inner:
                return  # from an engine that was restarted: the task went to the new one
            del self._inflight[outer]
        if outer.done():
            return  # already failed by its runtime pool (workers that could not start)
        exc = inner.exception()
        if exc is None:
            outer.set_result(inner.result())
        elif type(exc).__name__ == "ManagerLost":
            outer.set_exception(self._block_lost(exc))
        else:
            outer.set_exception(exc)

    def _block_lost(self, exc: Any) -> BlockLost:
        """Name the block a lost worker manager belonged to, and count that block as gone."""
        manager = getattr(exc, "manager_id", b"")
        manager = manager.decode() if isinstance(manager, bytes) else str(manager)
        with self._lock:
            block = self._manager_blocks.get(manager)
            if block is not None:
                self._lost.setdefault(block, "its workers stopped sending heartbeats")
        ex = self._executor
        job = ex.blocks_to_job_id.get(block) if ex is not None and block is not None else None
        return BlockLost(
            block=block,
            job_id=job,
            host=str(getattr(exc, "hostname", "") or "unknown host"),
            threshold=self.config.heartbeat_threshold,
        )

    def _view(self) -> BlockView:
        ex = self._executor
        states = {b: s.state.name for b, s in list(ex.status_facade.items())}
        # A block whose script left an exit note has ended, whatever the provider's last poll says.
        states.update((b, "COMPLETED") for b in read_exit_notes(self.run_dir) if b in states)
        with self._lock:
            view = classify_blocks(states, self._connected_blocks, self._seen_blocks)
        return view

    # -- batch jobs ---------------------------------------------------------------------------------

    def _live_jobs(self) -> set[str]:
        ex = self._executor
        if ex is None:
            return set()
        states = {b: s.state.name for b, s in list(ex.status_facade.items())}
        return {str(j) for b, j in list(ex.blocks_to_job_id.items())
                if j is not None and states.get(b, "PENDING") not in GONE_STATES}

    def _save_jobs(self) -> None:
        """Write the batch jobs in the queue (live blocks, cancelled ones not yet gone) for the CLI."""
        if self.provider_config.type in ("local", "kubernetes"):
            return  # no batch queue: the process tree is the whole story
        try:
            self._record.write(self._live_jobs() | set(self._cancelling))
        except OSError as exc:
            logger.warning("cannot write %s: %s", self._record.path, exc)

    def _poll_blocks(self, now: float) -> None:
        """Ask the batch system about every block at ``scaling.poll_period`` (Parsl's own pace is 60 s
        for Slurm): a block that ended without our asking is reported and dropped at once."""
        ex = self._executor
        if now - self._polled_at < self.scaling.poll_period:
            return
        self._polled_at = now
        ex._last_poll_time = 0  # Parsl's poll_facade keeps its own pace; this poll is due now
        try:
            ex.poll_facade()
        except Exception as exc:  # noqa: BLE001 - a failing batch system must not stop heartbeats
            logger.warning("cannot poll block states: %s", exc)
        self._report_ended()
        self._settle_cancelled(now)
        self._save_jobs()

    def _report_ended(self) -> None:
        """Log once each block whose job ended without the endpoint cancelling it, with its state."""
        ex = self._executor
        for block, st in list(ex.status_facade.items()):
            name = st.state.name
            if name not in GONE_STATES or name == "SCALED_IN" or block in self._ended:
                continue
            self._ended.add(block)
            if self._lost.get(block) == "cancelled":
                continue  # reported when it was found lost, and cancelled then
            job = ex.blocks_to_job_id.get(block)
            with self._lock:
                had_workers = block in self._seen_blocks
                self._lost.setdefault(block, f"its batch job ended ({name})")
                self._connected_blocks.discard(block)
            logger.warning("block %s (batch job %s) ended without the endpoint asking: state %s%s; %s", block, job, name,
                           f" ({st.message})" if st.message else "",
                           "its workers no longer count; the tasks it held are retried or fail as lost"
                           if had_workers else "no worker of it had connected")

    def _settle_cancelled(self, now: float) -> None:
        """Check jobs cancelled earlier against the queue; cancel again those still in it."""
        if not self._cancelling or self.provider_config.type in ("local", "kubernetes"):
            return
        ex = self._executor
        states = query_states(ex.provider, list(self._cancelling))
        step = next_step(states, self._cancelling, now, float("inf"), self.scaling.cancel_timeout / 4)
        for job in set(self._cancelling) - set(in_queue(states)):
            del self._cancelling[job]
        if step.cancel:
            logger.warning("batch job(s) %s still in the queue after a cancel: cancelling again",
                           describe_left({j: states[j] for j in step.cancel}))
            cancel_jobs(ex.provider, list(step.cancel))
            self._cancelling.update(dict.fromkeys(step.cancel, now))

    def _scale_out_if_cold(self) -> None:
        # Only the cold start is decided on the task's path (from cached state, no round trip);
        # everything else waits for scale() at heartbeat pace.
        if self._view().live == 0 and not self._holding:
            self.scale()

    def scale(self, now: float | None = None) -> int:
        """Start or cancel blocks as :func:`site_manager.scaling.decide` says; returns the change."""
        ex = self._executor
        if self._holding:
            return 0  # stopping: what is queued goes back to the service, not to a new block
        now = time.monotonic() if now is None else now
        view = self._view()
        self._forget_lost(view)
        sc = self.scaling
        slots = self.mpi.max_workers_per_block if self.mpi is not None else self.config.max_workers_per_node * sc.nodes_per_block
        idle_since = idle_from(self._idle_since, self._last_activity)
        d = decide(now, view.live, ex.outstanding(), idle_since, sc.min_blocks, sc.max_blocks, sc.max_idletime,
                   slots_per_block=slots)
        self._idle_since = d.idle_since
        if d.add:
            logger.info("starting %d block(s) (%d task(s) outstanding, %d block(s) alive)", d.add, ex.outstanding(), view.live)
            ex.scale_out_facade(d.add)
            self._save_jobs()
        if d.remove:
            # max_idletime=0: Parsl picks blocks whose workers hold no task (pending ones first).
            removed = ex.scale_in_facade(d.remove, max_idletime=0.0)
            jobs = [str(ex.blocks_to_job_id[b]) for b in removed if ex.blocks_to_job_id.get(b) is not None]
            # Parsl marks them SCALED_IN whatever scancel said: they are checked against the
            # queue at each poll until they left it (see _settle_cancelled).
            self._cancelling.update(dict.fromkeys(jobs, time.monotonic()))
            self._save_jobs()
            logger.info("idle for %.0f s: cancelled block(s) %s (batch job(s) %s)", now - (d.idle_since or now),
                        ", ".join(removed) or "none", ", ".join(jobs) or "none")
            return d.add - len(removed)
        return d.add

    def _forget_lost(self, view: BlockView) -> None:
        """Cancel a lost block's batch job once (a hung job must not hold nodes).

        Lost blocks no longer count as alive (see :func:`classify_blocks`), so a new block
        starts for the tasks still waiting.
        """
        ex = self._executor
        for block in view.lost:
            with self._lock:
                if self._lost.get(block) == "cancelled":
                    continue
                why = self._lost.get(block, "its workers disconnected")
                self._lost[block] = "cancelled"
            job = ex.blocks_to_job_id.get(block)
            st = ex.status_facade.get(block)
            logger.warning("block %s (batch job %s) was lost: %s; state %s at the last poll of the queue; cancelling it",
                           block, job, why, st.state.name if st is not None else "unknown")
            if job is not None and self.provider_config.type in ("local", "kubernetes"):
                try:
                    ex.provider.cancel([job])
                except Exception as exc:  # noqa: BLE001 - usually the job is already gone
                    logger.info("cancelling lost block %s: %s", block, exc)
            elif job is not None:
                cancel_jobs(ex.provider, [str(job)])
                self._cancelling[str(job)] = time.monotonic()  # checked against the queue at each poll
                self._save_jobs()

    def ended_blocks(self) -> dict[str, str]:
        """Blocks that ended, and how: the block script's exit note (written the moment its
        container exits) or the provider's terminal state. Tasks a worker started there will
        never finish; the interchange would say so only after ``heartbeat_threshold``.

        The managers of a newly ended block are put on hold, so that a task re-run now is not
        sent to them while the interchange still counts them connected.
        """
        ex = self._executor
        if ex is None:
            return {}
        ended = {b: f"its batch job ended ({s.state.name}{'' if s.exit_code is None else f', exit code {s.exit_code}'})"
                 for b, s in list(ex.status_facade.items()) if s.state.name in TERMINAL_STATES}
        for block, status in read_exit_notes(self.run_dir).items():
            ended[block] = f"its container exited with status {status}" + (" (killed)" if status == "137" else "")
        for block in set(ended) - self._held:
            self._held.add(block)
            try:
                ex._hold_block(block)  # Parsl's own call: no new task goes to that block's managers
            except Exception as exc:  # noqa: BLE001 - the interchange may be gone (shutdown)
                logger.info("holding ended block %s: %s", block, exc)
        return ended

    def block_states(self) -> dict[str, str]:
        """Each block's state at the provider's last poll (``RUNNING``, ``COMPLETED``...)."""
        ex = self._executor
        return {b: s.state.name for b, s in list(ex.status_facade.items())} if ex is not None else {}

    def outstanding(self) -> int:
        """Tasks submitted and not finished (queued at the interchange or running)."""
        ex = self._executor
        return int(ex.outstanding()) if ex is not None else 0

    def failed_starts(self) -> list[tuple[str, str]]:
        """Blocks that ended before any worker connected, with the tail of their stderr.

        Such a block never ran anything: its workers could not start (a missing image, a
        container that refuses to start, an interpreter without fnserve). Read from the
        provider's last poll (refreshed by :meth:`status`).
        """
        ex = self._executor
        if ex is None:
            return []
        with self._lock:
            seen = set(self._seen_blocks)
        out = []
        for block, st in list(ex.status_facade.items()):
            if block in seen or not st.terminal or st.state.name in ("SCALED_IN",) or st.message == "cancelled":
                continue
            if st.state.name == "CANCELLED" and st.message != "Killed":
                continue  # cancelled by us (scale-in, shutdown)
            err = (st.stderr_summary or st.message or "").strip()
            out.append((block, "\n".join(err.splitlines()[-6:]) or f"exit code {st.exit_code}"))
        return out

    # -- dead processes ---------------------------------------------------------------------------

    def dead_process(self) -> str | None:
        """What died under this engine, or None: its interchange, or a local block's worker pool
        (its launcher exited while it was connected and not cancelled by us)."""
        ex = self._executor
        if ex is None:
            return None
        proc = getattr(ex, "interchange_proc", None)
        if proc is not None and proc.poll() is not None:
            return f"its interchange (pid {proc.pid}) exited with status {proc.returncode}"
        if self.provider_config.type != "local" or self.launch_cmd is not None:
            # A runtime's block (its pool in a container or venv) that ends is replaced on its own
            # and its tasks re-run (its ended note, or the provider's poll): restarting the whole
            # engine as well started a second container beside the replacement.
            return None
        with self._lock:
            seen = set(self._seen_blocks)
        for block, pid in self._note_local_groups(ex):
            if block in seen:
                return f"the worker pool of block {block} (launcher pid {pid}) died"
        return None

    def _note_local_groups(self, ex: Any) -> list[tuple[str, int]]:
        """Note each live local block's process group; returns the blocks whose launcher is gone
        (not cancelled by us), with its pid."""
        gone = []
        resources = getattr(ex.provider, "resources", {})
        for block, job in list(ex.blocks_to_job_id.items()):
            info = resources.get(job) or {}
            pid = info.get("remote_pid")
            if pid is None or info.get("cancelled"):
                self._groups.pop(block, None)  # scaled in: Parsl signalled its group already
                continue
            try:
                self._groups[block] = os.getpgid(int(pid))
            except (ProcessLookupError, ValueError):
                gone.append((block, int(pid)))
        return gone

    def _kill_local_blocks(self) -> None:
        """SIGKILL the process groups of local blocks (a pool killed alone leaves its workers)."""
        for block, pgid in list(self._groups.items()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            self._groups.pop(block, None)

    def restart(self, reason: str) -> None:
        """Replace a broken engine: stop what is left of it, start a fresh one, and hand it the
        tasks that had not started; the started ones fail with ``worker_lost`` (retried above)."""
        old = self._executor
        with self._lock:
            entries = list(self._inflight.items())
            self._inflight.clear()  # whatever the old engine reports about them from now is ignored
        logger.error("engine %s: %s; restarting it (%d task(s) in it)", self.label, reason, len(entries))
        if old is not None and self.provider_config.type == "local":
            self._note_local_groups(old)
        self._kill_local_blocks()
        if old is not None:
            try:
                jobs = [j for j in old.blocks_to_job_id.values() if j is not None]
                if jobs and self.provider_config.type != "local":
                    old.provider.cancel(jobs)
            except Exception as exc:  # noqa: BLE001
                logger.warning("cancelling the old engine's blocks: %s", exc)
            try:
                old.shutdown(timeout=2)
            except Exception as exc:  # noqa: BLE001 - it is broken already
                logger.warning("stopping the old engine: %s", exc)
        ids = {tid for _, (_, tid, _, _) in entries}
        probe = self.started_probe
        started = probe({t for t in ids if t}) if probe is not None else set(ids)
        again, lost = split_lost(ids, started)
        self._executor = None
        with self._lock:
            self._connected_blocks, self._seen_blocks = set(), set()
            self._manager_blocks, self._lost = {}, {}
        self.restarts += 1
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - fail its tasks clearly rather than hang them
            logger.error("engine %s did not start again: %s", self.label, exc)
            self._executor = None
            again = set()  # none goes to an engine that is not there: all fail below
            reason = f"{reason}; the engine did not start again: {exc}"
        resubmitted = 0
        for outer, (task_bytes, tid, _, context) in entries:
            if outer.done():
                continue
            if tid in again:
                self._dispatch(outer, task_bytes, tid, context)
                resubmitted += 1
            else:
                with contextlib.suppress(InvalidStateError):
                    outer.set_exception(EngineLost(f"the endpoint's engine died while the task ran: {reason}"))
        logger.warning("engine %s restarted: %d task(s) that had not started submitted again, %d that had "
                       "started reported lost", self.label, resubmitted, len(entries) - resubmitted)

    def status(self) -> EngineStatus:
        """Blocks, workers and tasks right now (asks the interchange: call at heartbeat pace).

        Also the moment a dead interchange or worker pool is noticed and the engine restarted.
        """
        dead = self.dead_process()
        if dead is not None:
            self.restart(dead)
        ex = self._executor
        if ex is None:
            return EngineStatus()
        # A failing batch system or interchange must not stop heartbeats: report what we know.
        self._poll_blocks(time.monotonic())
        try:
            managers = ex.connected_managers()
        except Exception as exc:  # noqa: BLE001
            logger.warning("cannot list worker managers: %s", exc)
            managers = None
        if managers is not None:
            # Workers of a block whose batch job ended are gone, whatever the interchange says
            # until their heartbeats time out.
            managers = [m for m in managers if str(m.get("block_id")) not in self._ended]
            with self._lock:
                self._connected_blocks = {str(m.get("block_id")) for m in managers}
                self._seen_blocks |= self._connected_blocks
                self._manager_blocks.update(
                    (str(m.get("manager")), str(m.get("block_id"))) for m in managers
                )
        if self._holding and managers:
            self._hold(managers)  # blocks that connected since the stop began
        view = self._view()
        st = summarize((), managers or [], ex.outstanding(), include_held=self._holding)
        return EngineStatus(len(view.pending), len(view.running), st.workers, st.tasks_queued, st.tasks_running)

    def hold(self) -> None:
        """Stopping: the interchange sends no more task to any worker, and no block starts.

        Tasks already on workers run to the end; the ones queued in the interchange never start
        (the site manager hands them back to the service).
        """
        self._holding = True
        ex = self._executor
        if ex is not None:
            self._hold(ex.connected_managers())

    def _hold(self, managers: list[dict[str, Any]]) -> None:
        ex = self._executor
        for m in managers:
            if m.get("active", True):
                ex._hold_manager(str(m.get("manager")))  # Parsl's own scale-in holds managers the same way

    def shutdown(self) -> None:
        """Cancel the blocks and stop the interchange."""
        ex = self._executor
        if ex is None:
            self._kill_local_blocks()
            return
        job_ids = sorted(self._live_jobs() | set(self._cancelling))
        self._executor = None
        if self.provider_config.type == "local":
            self._note_local_groups(ex)  # for the kill below
        left: dict[str, str] = {}
        if job_ids and self.provider_config.type in ("local", "kubernetes"):
            try:  # no batch queue to wait on: the provider kills the process tree / deletes the pod
                ex.provider.cancel(job_ids)
            except Exception:
                logger.exception("cancelling blocks failed")
        elif job_ids:
            logger.info("cancelling %d block(s): batch job(s) %s", len(job_ids), ", ".join(job_ids))
            try:
                left = settle(ex.provider, job_ids, self.scaling.cancel_timeout)
            except Exception:
                logger.exception("cancelling blocks failed")
                left = dict.fromkeys(job_ids, "UNKNOWN")
        if self.provider_config.type not in ("local", "kubernetes"):
            self._record.write(left)
        if left:
            logger.error("batch job(s) still in the queue %.0f s after cancelling them: %s; `fnserve endpoint stop` "
                         "retries, or cancel them by hand", self.scaling.cancel_timeout, describe_left(left))
        elif job_ids and self.provider_config.type not in ("local", "kubernetes"):
            logger.info("batch job(s) %s are out of the queue", ", ".join(job_ids))
        elif job_ids:
            logger.info("cancelled block(s) %s", ", ".join(job_ids))
        ex.shutdown()
        self._kill_local_blocks()  # whatever a cancelled block left (workers of a killed pool)
        logger.info("engine stopped")
