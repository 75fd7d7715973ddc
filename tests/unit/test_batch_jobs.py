"""Batch jobs accounted for: the cancel/retry/wait decisions, the job record, a block's CPU request."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_manager.batch_jobs import JobRecord, describe_left, next_step, records_under
from site_manager.block_size import block_cpus, cores_needed
from site_manager.config import ConfigError, EndpointConfig

BASE = {"forwarder": "tcp://127.0.0.1:55001", "endpoint_id": "ep-1", "secret": "s"}


# -- next_step: cancel at once, retry while queued, verdict from the queue --------------------------

def test_every_queued_job_is_cancelled_at_once_and_ended_ones_are_left_alone() -> None:
    step = next_step({"1": "RUNNING", "2": "PENDING", "3": "COMPLETED", "4": "CANCELLED"}, {}, 0.0, 30.0, 2.0)
    assert step.cancel == ("1", "2") and not step.done


def test_a_job_still_queued_is_cancelled_again_after_retry_every() -> None:
    assert next_step({"1": "RUNNING"}, {"1": 10.0}, 11.0, 30.0, 2.0).cancel == ()
    assert next_step({"1": "RUNNING"}, {"1": 10.0}, 12.0, 30.0, 2.0).cancel == ("1",)


def test_done_only_when_the_queue_no_longer_holds_them() -> None:
    # A failed scancel and a successful one look the same here: only the queue's word counts.
    assert next_step({"1": "COMPLETED", "2": "MISSING"}, {"1": 0.0}, 1.0, 30.0, 2.0).done
    assert not next_step({"1": "RUNNING"}, {"1": 0.0}, 1.0, 30.0, 2.0).done  # COMPLETING reads as RUNNING


def test_a_job_whose_state_cannot_be_read_counts_as_still_queued() -> None:
    step = next_step({"1": "UNKNOWN"}, {"1": 0.0}, 30.0, 30.0, 2.0)
    assert step.done and step.left == ("1",)


def test_at_the_deadline_the_verdict_names_each_job_left() -> None:
    step = next_step({"9": "RUNNING", "10": "PENDING", "11": "CANCELLED"}, {"9": 28.0, "10": 28.0}, 30.0, 30.0, 2.0)
    assert step.done and step.left == ("10", "9") and step.cancel == ()
    assert describe_left({"9": "RUNNING", "10": "PENDING"}) == "job 10 (PENDING), job 9 (RUNNING)"


def test_no_jobs_is_done_at_once() -> None:
    assert next_step({}, {}, 0.0, 0.0, 2.0).done


# -- settle: the loop over a scheduler whose cancel fails first ------------------------------------

class FlakyScheduler:
    """A provider stand-in for the loop only: the first cancel fails (as scancel exiting 1 does)."""

    def __init__(self, fail_first: int = 1, stuck: bool = False) -> None:
        self.resources: dict = {}
        self.queue = {"5": "RUNNING", "6": "RUNNING"}
        self.cancels: list[list[str]] = []
        self.fail_first = fail_first
        self.stuck = stuck

    def status(self, jobs):
        from parsl.jobs.states import JobState, JobStatus

        return [JobStatus(JobState[self.queue.get(j, "COMPLETED")]) for j in jobs]

    def cancel(self, jobs):
        self.cancels.append(list(jobs))
        if len(self.cancels) <= self.fail_first or self.stuck:
            return [False] * len(jobs)
        for j in jobs:
            self.queue.pop(j, None)
        return [True] * len(jobs)


def _clock():
    t = [0.0]
    return (lambda: t[0]), (lambda dt: t.__setitem__(0, t[0] + dt))


def test_settle_retries_a_failed_cancel_until_the_jobs_left_the_queue() -> None:
    from site_manager.batch_jobs import settle

    sched = FlakyScheduler(fail_first=1)
    clock, sleep = _clock()
    assert settle(sched, ["5", "6"], timeout=30, retry_every=2, poll=0.5, clock=clock, sleep=sleep) == {}
    assert sched.cancels == [["5", "6"], ["5", "6"]]


def test_settle_gives_up_at_the_timeout_and_names_the_jobs_left() -> None:
    from site_manager.batch_jobs import settle

    sched = FlakyScheduler(stuck=True)
    clock, sleep = _clock()
    left = settle(sched, ["5", "6"], timeout=10, retry_every=2, poll=0.5, clock=clock, sleep=sleep)
    assert left == {"5": "RUNNING", "6": "RUNNING"}
    assert 4 <= len(sched.cancels) <= 6 and clock() >= 10


# -- the record the CLI reads -------------------------------------------------------------------------

def test_the_job_record_is_private_and_vanishes_when_empty(tmp_path: Path) -> None:
    record = JobRecord.in_dir(tmp_path / "engine")
    record.path.parent.mkdir()
    record.write(["12", "3"])
    assert record.read() == ["12", "3"] and oct(record.path.stat().st_mode & 0o777) == "0o600"
    assert records_under(tmp_path) == [record]
    record.write([])
    assert not record.path.exists() and records_under(tmp_path) == []


# -- a block asks for the CPUs its workers use ----------------------------------------------------------

def test_cores_needed_rounds_up() -> None:
    assert (cores_needed(1, 2), cores_needed(0.5, 3), cores_needed(2, 4), cores_needed(0.25, 1)) == (2, 2, 8, 1)


def test_the_slurm_request_is_filled_in_from_the_engine() -> None:
    assert block_cpus("slurm", {}, 1, 2) == ({"cores_per_node": 2}, None)
    assert block_cpus("pbspro", {}, 2, 3) == ({"cpus_per_node": 6}, None)
    assert block_cpus("slurm", {"cores_per_node": 8}, 1, 2) == ({}, None)


def test_a_slurm_block_gets_cpus_per_task_for_its_workers(tmp_path: Path) -> None:
    from site_manager.engine import make_provider

    config = EndpointConfig.from_dict({**BASE, "provider": {"type": "slurm"}, "launcher": {"type": "srun"},
                                       "engine": {"max_workers_per_node": 2, "cores_per_worker": 1}})
    provider = make_provider(config.provider, config.scaling, tmp_path, config.launcher, "", config.engine)
    assert provider.cores_per_node == 2


def test_a_config_asking_fewer_cpus_than_its_workers_use_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        EndpointConfig.from_dict({**BASE, "provider": {"type": "slurm", "cores_per_node": 1},
                                  "engine": {"max_workers_per_node": 2}})
    assert info.value.details["key"] == "provider.cores_per_node"
    assert "Set provider.cores_per_node to 2" in info.value.message
