"""Batch jobs accounted for: cancel, check, retry, wait until they left the queue, say which did not.

A block is a batch job (sbatch, qsub). Cancelling one can fail (``scancel`` exits 1, or hits
Parsl's command timeout under load) and a cancelled job stays in the queue a while (Slurm's
COMPLETING). Stop, delete and ``fnserve down`` therefore never trust one cancel call:

* :func:`next_step` (pure) decides, from each job's state in the queue and when it was last
  cancelled, which jobs to cancel (again) now, and when to stop waiting with which jobs left;
* :func:`settle` (I/O) carries the steps out with a Parsl provider: cancel, log each failed
  cancel with its job ids, query the queue, repeat until every job left it or the time is up;
* each engine keeps the ids of its live jobs in ``batch_jobs.json`` in its run folder
  (:class:`JobRecord`), so that the CLI can check and cancel what a site manager left behind
  (it could not cancel them, or it was killed) with ``python -m site_manager --reap-jobs``.

A job counts as gone when the scheduler reports it ended (CANCELLED, COMPLETED, FAILED, TIMEOUT)
or no longer knows it. A job whose state cannot be read (the query itself failed) counts as still
there: "gone" is only ever said on the scheduler's word.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.private_files import write_private

logger = logging.getLogger(__name__)

# Parsl JobState names of a job that is out of the queue for good (MISSING: the scheduler no
# longer knows the id; SCALED_IN: Parsl's own mark for a block it cancelled).
GONE_STATES = frozenset({"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "MISSING", "SCALED_IN"})
# What a job's state is when the queue could not be asked.
UNKNOWN = "UNKNOWN"

RECORD_NAME = "batch_jobs.json"


@dataclass(frozen=True)
class Step:
    """What to do next: cancel these jobs now, or stop (``done``) with ``left`` still queued."""

    cancel: tuple[str, ...] = ()
    done: bool = False
    left: tuple[str, ...] = ()


def in_queue(states: Mapping[str, str]) -> list[str]:
    """Jobs not known to be gone (an unreadable state counts as still there)."""
    return sorted(j for j, s in states.items() if s not in GONE_STATES)


def next_step(
    states: Mapping[str, str],
    last_cancel: Mapping[str, float],
    now: float,
    deadline: float,
    retry_every: float,
) -> Step:
    """The next step of cancelling ``states``' jobs (pure).

    ``states``: job id -> Parsl job state name from the latest queue query (``UNKNOWN`` when the
    query failed). ``last_cancel``: job id -> when a cancel was last sent (absent: never).
    Every job still in the queue is cancelled at once, then again every ``retry_every`` seconds
    (a failed ``scancel``, a lost reply); the verdict comes from the queue, never from the cancel
    command's exit status: done when no job is left, or at ``deadline`` with the ones left.

    >>> next_step({"7": "RUNNING", "8": "COMPLETED"}, {}, 0.0, 30.0, 2.0)
    Step(cancel=('7',), done=False, left=())
    >>> next_step({"7": "RUNNING"}, {"7": 0.0}, 1.0, 30.0, 2.0)
    Step(cancel=(), done=False, left=())
    >>> next_step({"7": "RUNNING"}, {"7": 0.0}, 30.0, 30.0, 2.0)
    Step(cancel=(), done=True, left=('7',))
    """
    queued = in_queue(states)
    if not queued:
        return Step(done=True)
    if now >= deadline:
        return Step(done=True, left=tuple(queued))
    due = tuple(j for j in queued if j not in last_cancel or now - last_cancel[j] >= retry_every)
    return Step(cancel=due)


def describe_left(states: Mapping[str, str]) -> str:
    """``job 12 (RUNNING), job 13 (UNKNOWN)``: what an admin needs to find the jobs left."""
    return ", ".join(f"job {j} ({states.get(j, UNKNOWN)})" for j in sorted(states))


# -- I/O -------------------------------------------------------------------------------------------


def query_states(provider: Any, job_ids: Iterable[str]) -> dict[str, str]:
    """Each job's state, asked of the scheduler now (not Parsl's cached poll).

    Parsl's providers only re-query jobs they do not already hold as ended, and keep the old
    state when the query fails; every job is marked UNKNOWN first, so what comes back is either
    the scheduler's answer or UNKNOWN.
    """
    from parsl.jobs.states import JobState, JobStatus

    jobs = [str(j) for j in job_ids]
    if not jobs:
        return {}
    resources = provider.resources
    for job in jobs:
        entry = resources.setdefault(job, {"job_id": job, "job_stdout_path": None, "job_stderr_path": None})
        entry["status"] = JobStatus(JobState.UNKNOWN)
    try:
        statuses = provider.status(jobs)
    except Exception as exc:  # noqa: BLE001 - a failing scheduler command: states stay unknown
        logger.warning("cannot read the state of batch job(s) %s: %s", ", ".join(jobs), exc)
        return dict.fromkeys(jobs, UNKNOWN)
    states = {job: st.state.name for job, st in zip(jobs, statuses)}
    for job in [j for j, s in states.items() if s == UNKNOWN]:
        if _forgotten_by_slurm(provider, job):
            states[job] = "MISSING"
    return states


def _forgotten_by_slurm(provider: Any, job: str) -> bool:
    # squeue exits 1 for a list of job ids that it has all purged (MinJobAge after they ended), so
    # Parsl leaves them unknown; asked alone, "Invalid job id" means the job is long gone.
    if type(provider).__name__ != "SlurmProvider":
        return False
    try:
        code, _out, err = provider.execute_wait(f"squeue --noheader --job {job}")
    except Exception:  # noqa: BLE001
        return False
    return code != 0 and "Invalid job id" in (err or "")


def cancel_jobs(provider: Any, job_ids: list[str]) -> list[str]:
    """Ask the scheduler to cancel ``job_ids``; returns the ones whose cancel failed (logged)."""
    try:
        results = list(provider.cancel(job_ids))
    except Exception as exc:  # noqa: BLE001 - Parsl's command timeout, a missing scancel...
        logger.warning("cancelling batch job(s) %s failed: %s", ", ".join(job_ids), exc)
        return list(job_ids)
    failed = [j for j, ok in zip(job_ids, results) if not ok]
    if failed:
        logger.warning("cancelling batch job(s) %s failed (the scheduler's cancel command refused); retrying",
                       ", ".join(failed))
    return failed


def settle(
    provider: Any,
    job_ids: Iterable[str],
    timeout: float,
    retry_every: float = 2.0,
    poll: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Cancel ``job_ids`` and wait up to ``timeout`` s until they left the queue.

    Returns the jobs still queued at the end with their last known state (empty: all gone).
    """
    jobs = sorted({str(j) for j in job_ids})
    if not jobs:
        return {}
    deadline = clock() + timeout
    last_cancel: dict[str, float] = {}
    states = query_states(provider, jobs)
    while True:
        step = next_step(states, last_cancel, clock(), deadline, retry_every)
        if step.done:
            return {j: states[j] for j in step.left}
        if step.cancel:
            cancel_jobs(provider, list(step.cancel))
            now = clock()
            last_cancel.update(dict.fromkeys(step.cancel, now))
        sleep(poll)
        # Only jobs not yet seen gone are asked again (a purged id is not "back").
        states = {**states, **query_states(provider, in_queue(states))}


@dataclass
class JobRecord:
    """The batch jobs an engine has in the queue, kept in ``<run_dir>/batch_jobs.json`` (0600)."""

    path: Path

    @classmethod
    def in_dir(cls, run_dir: Path) -> JobRecord:
        return cls(run_dir / RECORD_NAME)

    def read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        jobs = data.get("jobs") if isinstance(data, dict) else None
        return [str(j) for j in jobs] if isinstance(jobs, list) else []

    def write(self, jobs: Iterable[str]) -> None:
        jobs = sorted({str(j) for j in jobs})
        if not jobs:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        write_private(tmp, json.dumps({"jobs": jobs}))
        os.replace(tmp, self.path)  # a reader never sees half a record


def records_under(run_path: Path) -> list[JobRecord]:
    """Every engine's job record below an endpoint's run folder (host engine and runtimes)."""
    if not run_path.exists():
        return []
    return [JobRecord(Path(d) / RECORD_NAME) for d, _, files in os.walk(run_path) if RECORD_NAME in files]


def reap(provider: Any, run_path: Path, timeout: float, say: Callable[[str], None] = print) -> dict[str, str]:
    """Cancel every job the endpoint's records still list and wait for them to leave the queue.

    Records are updated to what is left (removed when nothing is). Returns the jobs left.
    """
    left_all: dict[str, str] = {}
    for record in records_under(run_path):
        jobs = record.read()
        if not jobs:
            record.write([])
            continue
        left = settle(provider, jobs, timeout)
        gone = sorted(set(jobs) - set(left))
        if gone:
            say(f"batch job(s) {', '.join(gone)} are out of the queue")
        record.write(left)
        left_all.update(left)
    return left_all
