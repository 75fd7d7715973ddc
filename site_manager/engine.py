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
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

from fnserve.private_files import private_dir
from node_manager import parent_watch
from site_manager.batch_jobs import JobRecord, describe_left, settle
from site_manager.config import EngineConfig, LauncherConfig, MpiConfig, ProviderConfig, ScalingConfig
from site_manager.engine_blocks import EngineBlocks
from site_manager.engine_build import TASK_EXECUTOR, build_executor, make_provider, pool_launch_cmd, prepare_environment
from site_manager.failures import BlockLost, EngineLost
from site_manager.runtimes.blocks import ended_dir
from site_manager.scaling import decide, idle_from
from site_manager.status import EngineStatus, ready_workers, summarize

logger = logging.getLogger(__name__)

# Imported from here by other modules and tests: the builders live in site_manager.engine_build.
__all__ = ["Engine", "make_provider", "pool_launch_cmd", "split_lost"]


def _worker_logs(logdir: str | None, block: str, manager: str) -> int:
    """How many workers of a pool have opened their log (Parsl: LOGDIR/block-B/MANAGER/worker_N.log)."""
    try:
        return sum(1 for n in os.listdir(os.path.join(logdir or "", f"block-{block}", manager)) if n.startswith("worker_"))
    except OSError:
        return 0


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


class Engine(EngineBlocks):
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
        prepare_environment()
        private_dir(self.run_dir)
        # Block ids start again from 0 with each executor: notes of an earlier one name other blocks.
        shutil.rmtree(ended_dir(self.run_dir), ignore_errors=True)
        ex = build_executor(self.config, self.provider_config, self.scaling, self.launcher_config,
                            private_dir(self.run_dir / "submit_scripts"), self.run_dir, self.label,
                            self.worker_init, self.launch_cmd, self.mpi)
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
                if parent_watch.start_time(int(pid)) is None:  # a zombie nobody reaped has a group still
                    raise ProcessLookupError(pid)
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
        live = [m for m in managers or [] if self._holding or m.get("active", True)]
        ready = ready_workers(live, lambda block, manager: _worker_logs(ex.worker_logdir, block, manager))
        return EngineStatus(len(view.pending), len(view.running), st.workers, st.tasks_queued, st.tasks_running,
                            workers_ready=ready)

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
