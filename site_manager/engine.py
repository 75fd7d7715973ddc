"""The engine: Parsl's HighThroughputExecutor, used directly (no DataFlowKernel).

Each task is submitted as its encoded :class:`~fnserve.messages.TaskMessage` with
``node_manager.execute.execute_task`` as Parsl's ``task_executor``, so the worker runs our
node manager on the bytes as they came from the forwarder and Parsl never pickles a function.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fnserve.private_files import private_dir
from site_manager.config import (
    LAUNCHERS,
    PROVIDERS,
    EngineConfig,
    LauncherConfig,
    ProviderConfig,
    ScalingConfig,
    parsl_class,
)
from site_manager.batch_jobs import GONE_STATES, JobRecord, cancel_jobs, describe_left, in_queue, next_step, query_states, settle
from site_manager.block_size import block_cpus, cpu_note
from site_manager.failures import BlockLost
from site_manager.interchange import LAUNCH_CMD as INTERCHANGE_LAUNCH_CMD
from site_manager.scaling import BlockView, classify_blocks, decide
from site_manager.status import EngineStatus, summarize

logger = logging.getLogger(__name__)

TASK_EXECUTOR = {"task_executor": {"f": "node_manager.execute.execute_task"}}
WORKER_UMASK = "umask 077"


def make_launcher(launcher: LauncherConfig) -> Any:
    """The Parsl launcher object a config's ``launcher`` section names."""
    return parsl_class(LAUNCHERS[launcher.type])(**launcher.options)


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
    ) -> None:
        self.config = engine
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
        # Batch jobs: the record the CLI reads, jobs cancelled and not yet seen out of the queue
        # (job id -> when the last cancel was sent), blocks whose end was already reported.
        self._record = JobRecord.in_dir(run_dir)
        self._cancelling: dict[str, float] = {}
        self._ended: set[str] = set()
        self._polled_at = 0.0
        self._holding = False  # stopping: no task more to any worker
        self._lock = threading.Lock()  # the bookkeeping above is also read on Parsl's result thread

    def start(self) -> None:
        """Start the interchange and the configured initial blocks."""
        from parsl.executors import HighThroughputExecutor

        _prepare_environment()
        private_dir(self.run_dir)
        script_dir = private_dir(self.run_dir / "submit_scripts")
        cfg = self.config
        ex = HighThroughputExecutor(
            label=self.label,
            provider=make_provider(
                self.provider_config, self.scaling, script_dir, self.launcher_config, self.worker_init, cfg
            ),
            max_workers_per_node=cfg.max_workers_per_node,
            cores_per_worker=cfg.cores_per_worker,
            mem_per_worker=cfg.mem_per_worker,
            prefetch_capacity=cfg.prefetch_capacity,
            heartbeat_period=cfg.heartbeat_period,
            heartbeat_threshold=cfg.heartbeat_threshold,
            # Parsl's error handler would put the executor in a bad state for good after block
            # failures; here lost blocks are replaced and their tasks fail with a clear error.
            block_error_handler=False,
            # CurveZMQ: Parsl writes the keys under run_dir (0700), which workers in containers
            # see through their bind mount and batch jobs through the shared file system.
            encrypted=cfg.encrypted,
            **({"launch_cmd": self.launch_cmd} if self.launch_cmd else {}),
            **{"interchange_launch_cmd": INTERCHANGE_LAUNCH_CMD,
               **interchange_address(self.provider_config.type, cfg.options), **cfg.options},
        )
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

    def submit(self, task_bytes: bytes) -> Future[bytes]:
        """Run one encoded task message; the future's result is the encoded result message."""
        inner = self._executor.submit_payload(TASK_EXECUTOR, task_bytes)
        outer: Future[bytes] = Future()
        inner.add_done_callback(lambda fut: self._settle(outer, fut))
        self._scale_out_if_cold()
        return outer

    def _settle(self, outer: Future[bytes], inner: Future[bytes]) -> None:
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
        slots = self.config.max_workers_per_node * sc.nodes_per_block
        d = decide(now, view.live, ex.outstanding(), self._idle_since, sc.min_blocks, sc.max_blocks, sc.max_idletime,
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

    def status(self) -> EngineStatus:
        """Blocks, workers and tasks right now (asks the interchange: call at heartbeat pace)."""
        ex = self._executor
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
            return
        job_ids = sorted(self._live_jobs() | set(self._cancelling))
        self._executor = None
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
        logger.info("engine stopped")
