"""Decisions and small mechanisms behind "every process dies with its parent": the parent
watchdog's identity, the worker pool's pacing, which tasks of a dead engine run again, the cancel
notes a worker checks, and how `fnserve up`/`down` recognise their own leftovers (real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from fnserve import serialize
from fnserve.cli.processes import TAG, Managed, kill_and_wait, tagged_processes
from fnserve.messages import TaskMessage, decode_result, encode_task
from node_manager import execute, parent_watch, running
from node_manager.pool import debug_records_wanted, paced
from site_manager.engine import pool_launch_cmd, split_lost
from site_manager.session import Session


def test_identity_names_this_process_and_is_read_back_only_on_this_host():
    ident = parent_watch.identity()
    pid, start = parent_watch.parse(ident, socket.gethostname())
    assert pid == os.getpid() and start == parent_watch.start_time(os.getpid())
    assert parent_watch.parse(ident, "another-host") is None
    assert parent_watch.parse("garbled", socket.gethostname()) is None


def test_start_time_tells_a_dead_or_recycled_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert parent_watch.start_time(child.pid) is None


def test_watch_calls_back_when_the_watched_process_ends(monkeypatch):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    monkeypatch.setenv(parent_watch.ENV, parent_watch.identity(child.pid))
    ended = []
    assert parent_watch.watch(lambda: ended.append(True), interval=0.02)
    child.kill()
    child.wait()
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended


def test_watch_is_not_armed_without_a_visible_site_manager(monkeypatch):
    monkeypatch.delenv(parent_watch.ENV, raising=False)
    assert not parent_watch.watch(lambda: None)
    monkeypatch.setenv(parent_watch.ENV, f"{socket.gethostname()}:{os.getpid()}:1")  # start time differs
    assert not parent_watch.watch(lambda: None)


def test_the_worker_pool_checks_its_workers_every_second_and_waits_10_s_at_most_for_its_interchange():
    assert paced(["--hb_period=30", "--hb_threshold=120"]) == ["--hb_period=1", "--hb_threshold=10"]
    assert paced(["--hb_period=1", "--hb_threshold=4"]) == ["--hb_period=1", "--hb_threshold=4"]
    assert paced(["-p", "0", "--hb_threshold=x"]) == ["-p", "0", "--hb_threshold=x"]


# A stand-in for Parsl's worker pool: starts two children through the spawn context as the pool
# does (a worker busy in a long "task", and one started from another thread, as Parsl's watchdog
# restarts a worker), prints their pids, then waits to be killed.
_POOL = """
import multiprocessing, sys, threading, time
from node_manager import pool_children
if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    pool_children.die_with_pool(ctx)
    kids = [ctx.Process(target=time.sleep, args=(60,), name="HTEX-Worker-0")]
    kids[0].start()
    def restart():
        kids.append(ctx.Process(target=time.sleep, args=(60,))); kids[1].start(); time.sleep(60)
    threading.Thread(target=restart, daemon=True).start()
    while len(kids) < 2 or kids[1].pid is None:
        time.sleep(0.01)
    print(kids[0].pid, kids[1].pid, flush=True)
    time.sleep(60)
"""


def test_a_worker_pools_children_die_with_it_when_it_is_killed_alone():
    pool = subprocess.Popen([sys.executable, "-c", _POOL], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    kids: list[int] = []
    try:
        assert pool.stdout is not None
        kids = [int(p) for p in pool.stdout.readline().split()]
        assert len(kids) == 2 and all(parent_watch.start_time(k) for k in kids)
        time.sleep(1)  # each child is past its start (module imports) and in its "task"
        pool.kill()  # kill -9 of the pool alone, by pid
        pool.wait()
        deadline = time.monotonic() + 3
        while any(parent_watch.start_time(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [k for k in kids if parent_watch.start_time(k)] == [], "children outlived their pool"
    finally:
        for pid in [pool.pid, *kids]:
            if parent_watch.start_time(pid):
                os.kill(pid, 9)


def test_the_worker_pool_builds_debug_records_only_when_asked():
    argv = ["-c", "1.0", "--poll", "10", "--hb_period=30"]
    assert not debug_records_wanted(argv, {})
    assert debug_records_wanted([*argv, "--debug"], {}) and debug_records_wanted(["-d", *argv], {})  # HTEX worker_debug
    assert debug_records_wanted(argv, {"FNSERVE_WORKER_POOL_DEBUG": "1"})


def test_local_pools_start_through_the_node_manager_entry_point():
    assert pool_launch_cmd("process_worker_pool.py {debug} -p {x}", "/py") == "/py -m node_manager.pool {debug} -p {x}"
    assert pool_launch_cmd("something else", "/py") == "something else"


def test_every_batch_block_pool_mpi_mode_too_starts_through_the_node_manager_entry_point(tmp_path):
    # The executors as an engine builds them (Parsl objects only, nothing started or submitted).
    from site_manager.config import EngineConfig, LauncherConfig, MpiConfig, ProviderConfig, ScalingConfig
    from site_manager.engine_build import build_executor

    def launch_cmd(mpi: MpiConfig | None) -> str:
        ex = build_executor(EngineConfig(), ProviderConfig(type="slurm"), ScalingConfig(), LauncherConfig(),
                            tmp_path, tmp_path, "t", mpi=mpi)
        return ex.launch_cmd

    htex, mpi = launch_cmd(None), launch_cmd(MpiConfig())
    assert htex.startswith("python3 -m node_manager.pool ") and mpi.startswith("python3 -m node_manager.pool ")
    assert "{enable_mpi_mode}" in mpi  # Parsl fills in --enable_mpi_mode for the MPI engine's pool


def test_a_dead_engine_resubmits_only_tasks_no_worker_started():
    again, lost = split_lost({"queued", "running", ""}, {"running"})
    assert again == {"queued"}
    assert lost == {"running", ""}  # an unknown id counts as started: never run twice unseen


def _touch(path: str) -> None:
    open(path, "w").close()


def test_a_worker_skips_a_task_cancelled_before_it_started(tmp_path):
    side_effect = tmp_path / "ran"
    task = TaskMessage(task_id="t-1", function_id="f-cancel", function=serialize.serialize_function(_touch),
                       payload=serialize.serialize_args((str(side_effect),), {}), control_dir=str(tmp_path))
    running.note_cancelled(tmp_path, ("t-1",))
    result = decode_result(execute.execute_task(encode_task(task)))
    assert not result.ok and result.error.code == "cancelled"
    assert not side_effect.exists()
    assert not (tmp_path / "cancel-t-1").exists()  # the note is consumed
    assert running.pids_running(tmp_path, {"t-1"}) == {}  # and no kill is aimed at this worker


def test_session_knows_which_running_tasks_a_worker_started():
    from fnserve.messages import TaskBatch, TaskOutput

    s = Session("ep", "secret", {}, heartbeat_period=1, heartbeat_threshold=5)
    s.state = s.state.READY
    s.received(TaskBatch(tasks=[TaskMessage(task_id=t, function_id="f", function=b"", payload=b"") for t in "ab"]),
               0.0, 0.0)
    s.outputs_ready([TaskOutput(task_id="a", seq=-1, kind="start", time=1.0)])
    assert s.started == {"a"}


def test_up_and_down_find_the_leftovers_of_a_dead_leader(tmp_path):
    proc = Managed("thing", tmp_path)
    # A leader that starts a child in another process group (as Parsl's local blocks are), then
    # is killed: the child is a leftover of ours.
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            "start_new_session=True); time.sleep(60)")
    leader = proc.start([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while len(proc.leftovers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in proc.leftovers() if p != leader]
    assert len(left) == 1
    os.kill(leader, 9)
    os.waitpid(leader, 0)
    assert proc.pid() is None and proc.leftovers() == left
    assert proc.clean_leftovers() == left
    assert proc.leftovers() == []
    assert tagged_processes(str(proc.pid_file)) == [] and TAG == "FNSERVE_PID_FILE"
    assert kill_and_wait([]) == []


def test_a_worker_dying_idle_ends_its_pool_and_a_busy_one_does_not():
    # An idle worker holds the pool's task-queue lock in Queue.get: killed, it would leave the
    # other workers unable to take a task (the chaos suite's worker_kill9 hung on it).
    import logging

    from node_manager.pool import POOL_LOGGER, IdleWorkerDeath, is_idle_death

    ended = []
    log = logging.getLogger(POOL_LOGGER + ".test")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = IdleWorkerDeath(lambda: ended.append(1))
    log.addHandler(handler)
    try:
        log.info("Worker {} was busy when it died".format(1))
        assert ended == []
        log.info("Worker {} was not busy when it died".format(1))
        assert ended == [1]
    finally:
        log.removeHandler(handler)
    assert is_idle_death("Worker 0 was not busy when it died") and not is_idle_death("Worker 0 has died")


_WORKER = """
import sys
from fnserve import serialize
from fnserve.messages import TaskMessage, decode_result, encode_task
from node_manager import execute

def touch(path):
    open(path, "w").close()

for name in sys.argv[1:]:
    task = TaskMessage(task_id=name, function_id="f-touch", function=serialize.serialize_function(touch),
                       payload=serialize.serialize_args((name,), {}))
    print(decode_result(execute.execute_task(encode_task(task))).ok, flush=True)
    sys.stdin.readline()  # the test kills the site manager here
"""


def test_a_worker_whose_site_manager_died_starts_no_further_task(tmp_path):
    """A task handed out before its site manager died would run twice (the restarted site manager
    sends it again): the worker ends instead of starting it."""
    site_manager = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    env = {**os.environ, parent_watch.ENV: parent_watch.identity(site_manager.pid)}
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, first, second], env=env, cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "True" and os.path.exists(first)  # ran while it lived
        site_manager.kill()
        site_manager.wait()
        worker.stdin.write("\n")
        worker.stdin.flush()
        assert worker.wait(30) == 0
        assert not os.path.exists(second), "a task started after its site manager died"
    finally:
        site_manager.kill()
        worker.kill()
