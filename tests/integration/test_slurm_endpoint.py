"""An endpoint on the real single-node Slurm, driven the way a site admin drives it.

`fnserve endpoint configure --template slurm` / `start` / `list` / `stop` / `restart` / `delete`
against the embedded stack (`fnserve up`), with Parsl's SlurmProvider and SrunLauncher
submitting real sbatch jobs (scripts/start_slurm.sh brings Slurm up).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
import urllib.request

import pytest

from fnserve.errors import NotFound, TaskFailed
from tests.integration.runtime_support import assert_interchange_encrypted
from fnserve.testing.stack import Stack
from tests.integration.slurm_support import (
    assert_no_jobs,
    batch_jobs,
    block_pool,
    failing_scancel,
    hold_until,
    job_processes,
    nap,
    nap_then_where,
    note_then_nap,
    queued,
    require_slurm,
    result_in_block,
    wait_for,
    where_am_i,
)

# Short enough to watch an idle endpoint give its block back, and a lost block be noticed.
IDLE_SECONDS = 4
# Half a core per worker: a block of 2 workers asks Slurm for 1 CPU (--cpus-per-task), so that it
# fits beside other jobs on the 2-CPU test node.
ENGINE = {"max_workers_per_node": 2, "cores_per_worker": 0.5, "heartbeat_period": 1, "heartbeat_threshold": 4}


def job_cpus(job: str) -> int:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%C"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_slurm()
    s = Stack(tmp_path_factory.mktemp("fnserve-slurm"))
    s.up()
    try:
        yield s
    finally:
        s.down(check=False)


def _configure(stack: Stack, name: str, engine: dict | None = None, worker_init: str = "", **scaling: float) -> None:
    stack.configure(
        name, "slurm",
        engine={**ENGINE, **(engine or {})},
        provider={"walltime": "00:10:00"},
        scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": IDLE_SECONDS, **scaling},
        worker_init=worker_init,
    )


# Four cold starts of real batch jobs, a scale-in and stop / restart / delete: on a loaded 2-core
# machine whose node other jobs share, a block may wait for CPUs; this bounds the whole story.
@pytest.mark.timeout(600)
def test_slurm_endpoint_lifecycle_scales_out_on_demand_and_back_in_when_idle(stack: Stack) -> None:
    fc = stack.client()
    run_dir = stack.endpoint_dir("hpc") / "run"
    _configure(stack, "hpc")

    started = stack.cli("endpoint", "start", "hpc")
    assert "registered endpoint hpc" in started.stdout and "connected" in started.stdout
    endpoint_id = stack.id_of("hpc")
    creds = stack.endpoint_dir("hpc") / "credentials.yaml"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "fnse_" not in (stack.endpoint_dir("hpc") / "config.yaml").read_text()  # no secret in the config

    # 0 blocks at start: nothing in the batch queue until a task arrives.
    assert_no_jobs(run_dir, "start with init_blocks 0")
    status = fc.get_endpoint_status(endpoint_id)
    assert status["connected"] is True
    assert wait_for(lambda: fc.get_endpoint_status(endpoint_id).get("site"), 15, "first status report")["blocks_running"] == 0

    # The first task scales out a block (an sbatch job) and runs inside it. A second one holds a
    # worker until the test has looked, so that the block cannot go idle (and be cancelled after
    # IDLE_SECONDS) however slow the looking is on a loaded machine.
    fid = fc.register_function(where_am_i, serializer="source")
    release = stack.home / "release-hpc"
    held = fc.submit(fc.register_function(hold_until, serializer="source"), endpoint_id, [str(release), 300])
    first = result_in_block(fc, fc.run(fid, endpoint_id), run_dir)
    assert first["job"] is not None
    assert batch_jobs(run_dir) == [first["job"]]
    # The block asked for the CPUs its workers use: 2 workers x 0.5 cores.
    assert job_cpus(first["job"]) == 1
    # The batch job's workers reached the interchange over CurveZMQ, keys from the shared run_dir.
    assert_interchange_encrypted(run_dir / "engine")

    # Status while the block is up: the REST route, the SDK and both CLI listings show it.
    site = wait_for(lambda: (fc.get_endpoint_status(endpoint_id).get("site") or {}).get("workers") and
                    fc.get_endpoint_status(endpoint_id)["site"], 20, "workers in the status report")
    assert site["blocks_running"] == 1 and site["workers"] == 2
    req = urllib.request.Request(f"{stack.url}/v1/endpoints/{endpoint_id}/status",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        rest = json.loads(resp.read())
    assert rest["endpoint_id"] == endpoint_id and rest["connected"] is True and rest["site"]["blocks_running"] == 1
    listed = stack.cli("endpoint", "list").stdout
    line = next(ln for ln in listed.splitlines() if ln.startswith("hpc "))
    assert "running" in line and endpoint_id in line and "workers=2" in line
    overview = stack.cli("endpoints").stdout
    assert endpoint_id in overview and "blocks=1" in overview
    release.touch()
    assert result_in_block(fc, held, run_dir) == first["job"]

    # Idle for IDLE_SECONDS: the block is cancelled and the nodes go back to Slurm.
    try:
        wait_for(lambda: batch_jobs(run_dir) == [], 30, "idle block cancelled")
    except AssertionError as exc:  # a COMPLETING job and a leak look different
        raise AssertionError(f"{exc}; this endpoint's jobs: {queued(run_dir)}") from None
    assert "cancelled block(s)" in stack.log("hpc")

    # The next task is a cold start again, on a new block.
    second = result_in_block(fc, fc.run(fid, endpoint_id), run_dir)
    assert second["job"] not in (None, first["job"])

    # One stop is enough: the process is gone and so are its batch jobs (stop waited for them to
    # leave the queue, COMPLETING included).
    stopped = stack.cli("endpoint", "stop", "hpc", timeout=120)
    assert "stopped, no batch job left" in stopped.stdout
    assert_no_jobs(run_dir, "endpoint stop")
    line = next(ln for ln in stack.cli("endpoint", "list").stdout.splitlines() if ln.startswith("hpc "))
    assert "stopped" in line
    assert wait_for(lambda: not fc.get_endpoint_status(endpoint_id)["connected"], 20, "disconnected at the service")
    # Stopped with no blocks: the last report of a gone site manager is not shown as current.
    after = fc.get_endpoint_status(endpoint_id)
    assert (after.get("site") or {}).get("blocks_running", 0) == 0 and (after.get("site") or {}).get("workers", 0) == 0
    assert "blocks=0+0 pending workers=0" in line

    # Restart keeps the identity: no new registration, same endpoint id, tasks run again.
    restarted = stack.cli("endpoint", "restart", "hpc")
    assert "registered" not in restarted.stdout and "connected" in restarted.stdout
    assert stack.id_of("hpc") == endpoint_id
    assert result_in_block(fc, fc.run(fid, endpoint_id), run_dir)["job"] is not None

    # Delete: stopped, gone from the service, its directory removed.
    deleted = stack.cli("endpoint", "delete", "hpc", "--yes", timeout=120)
    assert f"deleted endpoint {endpoint_id}" in deleted.stdout
    assert not stack.endpoint_dir("hpc").exists()
    assert_no_jobs(run_dir, "endpoint delete")
    with pytest.raises(NotFound):
        fc.get_endpoint(endpoint_id)


@pytest.mark.timeout(600)  # three blocks in turn; each may wait for a CPU on a shared node
def test_scancel_of_a_block_mid_task_fails_or_retries_its_tasks_and_a_new_block_takes_over(stack: Stack) -> None:
    fc = stack.client()
    run_dir = stack.endpoint_dir("lossy") / "run"
    _configure(stack, "lossy")
    stack.cli("endpoint", "start", "lossy")
    endpoint_id = stack.id_of("lossy")
    try:
        fid = fc.register_function(nap, serializer="source")
        # One task may not be rerun (it must fail, naming the lost block); one may be rerun once.
        no_retry = fc.submit(fid, endpoint_id, [120], max_retries=0)
        retried = fc.submit(fc.register_function(nap_then_where, serializer="source"), endpoint_id, [20], max_retries=1)
        # Wait until the block's workers hold both tasks (as the endpoint reports it).
        try:
            wait_for(lambda: (fc.get_endpoint_status(endpoint_id).get("site") or {}).get("tasks_running") == 2,
                     180, "both tasks running in the block")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; this endpoint's jobs: {queued(run_dir)}") from None
        jobs = batch_jobs(run_dir)
        assert len(jobs) == 1
        lost_at = time.monotonic()
        subprocess.run(["scancel", jobs[0]], check=True)

        # Noticed at once, by whichever comes first: the queue poll (every scaling.poll_period, 5 s)
        # or the workers' silence (engine.heartbeat_threshold, 4 s here). Logged with the job id and
        # its state, and the status no longer counts the block or its workers.
        def lost_line() -> str | None:
            return next((ln for ln in stack.log("lossy").splitlines()
                         if f"block 0 (batch job {jobs[0]})" in ln and ("ended" in ln or "was lost" in ln)), None)

        line = wait_for(lost_line, 15, "the lost block in the site manager's log")
        noticed = time.monotonic() - lost_at
        assert re.search(r"state (CANCELLED|COMPLETED|RUNNING)", line), line
        wait_for(lambda: (fc.get_endpoint_status(endpoint_id).get("site") or {}).get("workers") == 0, 15,
                 "the lost block's workers dropped from the status")
        assert noticed < 15

        # Never hung: the task without retries ends well before its 120 s of sleep, naming the block.
        with pytest.raises(TaskFailed) as info:
            fc.get_result(no_retry, timeout=60)
        assert info.value.code == "worker_lost", info.value
        assert f"block 0 (batch job {jobs[0]})" in info.value.message
        assert time.monotonic() - lost_at < 60

        # The other one is rerun on a new block and finishes there.
        rerun_in = result_in_block(fc, retried, run_dir)
        assert rerun_in not in (None, jobs[0])

        # A new block takes over for the next task.
        where = result_in_block(fc, fc.run(fc.register_function(where_am_i, serializer="source"), endpoint_id), run_dir)
        assert where["job"] not in (None, jobs[0])
    finally:
        stack.cli("endpoint", "stop", "lossy", timeout=120)
    assert_no_jobs(run_dir, "endpoint stop")
    assert os.path.exists(stack.endpoint_dir("lossy") / "config.yaml")


def test_stop_fails_loudly_naming_the_job_when_scancel_fails_and_a_second_stop_clears_it(
        stack: Stack, tmp_path) -> None:
    fc = stack.client()
    run_dir = stack.endpoint_dir("stuck") / "run"
    # A pool that does not know its site manager (the variable it would watch is unset, as on a
    # node of its own) waits up to 10 s for its gone interchange: the job does not end by itself
    # before stop checks the queue (on this one-node cluster the pool would otherwise end with
    # its site manager at once, node_manager.parent_watch, and the job with it).
    _configure(stack, "stuck", engine={"heartbeat_threshold": 120}, worker_init="unset FNSERVE_SITE_MANAGER",
               cancel_timeout=3)
    broken = failing_scancel(tmp_path / "bin")
    # The site manager inherits the PATH it was started with: its own cancels fail too.
    stack.cli("endpoint", "start", "stuck", env=broken)
    try:
        job = result_in_block(fc, fc.run(fc.register_function(where_am_i, serializer="source"),
                                         stack.id_of("stuck")), run_dir)["job"]
        assert batch_jobs(run_dir) == [job]

        stopped = stack.cli("endpoint", "stop", "stuck", "--jobs-timeout", "3", env=broken, check=False)
        assert stopped.returncode != 0, stopped.stdout + stack.log("stuck")
        assert f"job {job} (RUNNING)" in stopped.stderr, stopped.stderr
        assert "fnserve endpoint stop stuck" in stopped.stderr  # what to do next
        assert batch_jobs(run_dir) == [job]  # the failure is real: the job still runs
        log = stack.log("stuck")
        assert f"cancelling batch job(s) {job} failed" in log and f"job {job} (RUNNING)" in log
        # The process is gone all the same.
        line = next(ln for ln in stack.cli("endpoint", "list").stdout.splitlines() if ln.startswith("stuck "))
        assert "stopped" in line
    finally:
        # With a working scancel the same command clears what was left.
        again = stack.cli("endpoint", "stop", "stuck", check=False)
    assert again.returncode == 0, again.stderr
    assert "no batch job left" in again.stdout
    assert_no_jobs(run_dir, "the second endpoint stop")


@pytest.mark.timeout(300)
def test_a_block_pool_killed_alone_takes_its_workers_along_and_its_task_reruns_once(stack: Stack) -> None:
    """kill -9 of a block's worker pool by pid (the OOM killer, an admin): its workers die with it
    at once (not left to the batch system's process tracking, which with proctrack/linuxproc lost
    them and held the job COMPLETING for a minute), the job leaves the queue, and the task that was
    running reruns once on a new block."""
    fc = stack.client()
    run_dir = stack.endpoint_dir("poolkill") / "run"
    runs = stack.home / "poolkill-runs"
    _configure(stack, "poolkill")
    stack.cli("endpoint", "start", "poolkill")
    endpoint_id = stack.id_of("poolkill")
    try:
        task = fc.submit(fc.register_function(note_then_nap, serializer="source"), endpoint_id, [str(runs), 4])
        wait_for(runs.exists, 180, "the task running in a block")
        [job] = batch_jobs(run_dir)
        procs = job_processes(job)
        pool, below = block_pool(procs)  # below: its workers and Parsl's Manager server
        worker = int(runs.read_text().split()[0])
        assert worker in below, f"the worker {worker} is not a child of the pool {pool}: {procs}"
        os.kill(pool, 9)
        killed_at = time.monotonic()

        def left() -> dict[int, tuple[int, str]]:
            return {p: v for p, v in job_processes(job).items() if p in below}

        try:
            wait_for(lambda: not left(), 5, "the killed pool's workers gone")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {left()}; job {job}: {queued(run_dir)}") from None
        assert result_in_block(fc, task, run_dir) not in (None, job)
        recovered = time.monotonic() - killed_at
        assert len(runs.read_text().split()) == 2, runs.read_text()  # ran once, killed, reran once
        wait_for(lambda: job not in queued(run_dir), 30, f"job {job} out of the queue ({queued(run_dir)})")
        print(f"pool killed to task done: {recovered:.1f} s")
    finally:
        stack.cli("endpoint", "stop", "poolkill", timeout=120)
    assert_no_jobs(run_dir, "endpoint stop")
