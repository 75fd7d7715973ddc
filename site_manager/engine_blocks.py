"""The engine's blocks and batch jobs: which blocks are alive, lost or ended, and the batch
jobs to cancel and to check out of the queue.

:class:`EngineBlocks` is the part of :class:`~site_manager.engine.Engine` that reads the
provider's block states and the workers' exit notes, reports blocks that ended without the
endpoint asking, cancels lost ones once and keeps the job record the CLI reads. The decisions
themselves are pure functions (:mod:`site_manager.scaling`, :mod:`site_manager.batch_jobs`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from site_manager.batch_jobs import GONE_STATES, JobRecord, cancel_jobs, describe_left, in_queue, next_step, query_states
from site_manager.config import ProviderConfig, ScalingConfig
from site_manager.runtimes.blocks import read_exit_notes
from site_manager.scaling import TERMINAL_STATES, BlockView, classify_blocks

logger = logging.getLogger(__name__)


class EngineBlocks:
    """Block and batch-job bookkeeping of an engine (its attributes are set by
    :class:`~site_manager.engine.Engine`)."""

    _executor: Any
    run_dir: Path
    provider_config: ProviderConfig
    scaling: ScalingConfig
    _lock: threading.Lock
    _connected_blocks: set[str]
    _seen_blocks: set[str]
    _lost: dict[str, str]  # block id -> how it was reported lost
    _held: set[str]
    _record: JobRecord
    _cancelling: dict[str, float]
    _ended: set[str]
    _polled_at: float

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

    def saw_blocks(self, where: set[tuple[str, str]]) -> None:
        """``(runtime, block)`` pairs whose workers started tasks: :meth:`note_seen` of their blocks
        (an engine runs one runtime; a pool routes the pairs to its engines)."""
        self.note_seen({block for _, block in where})

    def note_seen(self, blocks: set[str]) -> None:
        """Workers of ``blocks`` started tasks (their start markers name them): those blocks had
        workers, even if they ended before a status poll saw their managers connected. A block
        killed seconds after its first task started is then lost (its tasks re-run), not a
        runtime whose workers did not start."""
        with self._lock:
            # Connected now too: a block seen but not connected counts as lost (classify_blocks)
            # until the next status poll lists its managers.
            self._seen_blocks |= blocks
            self._connected_blocks |= blocks

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
