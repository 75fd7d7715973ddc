"""A worker does its first task's one-time work as it starts (node_manager.warm_up): a hot
spare's first call finds the fd-capture helper running (and the task runner imported), its
connection to the pool's Manager server open and its result queue's feeder thread running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from node_manager import warm_up

# Spawned as Parsl's pool spawns: through pool_children's hook on a spawn context. ``worker`` is
# named as Parsl's worker function; ``_run_server`` as the Manager server's.
SCRIPT = textwrap.dedent('''
    import json, multiprocessing, os, sys, threading
    from node_manager import pool_children

    def sockets():
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                found += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
            except OSError:  # the listing's own fd, closed by now
                pass
        return found

    def state():
        from node_manager import fd_capture
        h = getattr(fd_capture, "_helper", None) if "node_manager.fd_capture" in sys.modules else None
        return {"imported": "node_manager.execute" in sys.modules,
                "helper_pid": h.proc.pid if h is not None and h.proc.poll() is None else None}

    def worker(q, task_queue, result_queue, tasks_in_progress):
        before = state()
        task_queue.get(timeout=60)
        # What Parsl's worker does with the pool's task table and result queue on each task.
        opened = sockets()
        tasks_in_progress[0] = "t1"
        before["sockets_opened_by_task_table"] = sockets() - opened
        threads = threading.active_count()
        result_queue.put("result")
        before["threads_started_by_result"] = threading.active_count() - threads
        from fnserve import serialize
        from fnserve.messages import TaskMessage, decode_result, encode_task
        from node_manager import execute
        task = TaskMessage(task_id="t1", function_id="f", function=serialize.serialize_source("def f():\\n    return 7\\n", "f"),
                           payload=serialize.serialize_args((), {}, None))
        ok = decode_result(execute.execute_task(encode_task(task))).ok
        q.put({"before": before, "after": state(), "ok": ok})

    def _run_server(q):
        q.put({"before": state()})

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        pool_children.die_with_pool(ctx)
        manager = ctx.Manager()  # Parsl's pool holds its task table in one
        out = {}
        for target in (worker, _run_server):
            q, tasks, results, table = ctx.Queue(), ctx.Queue(), ctx.Queue(), manager.dict()
            p = ctx.Process(target=target, args=(q, tasks, results, table) if target is worker else (q,))
            p.start()
            if target is worker:  # the pool's first task
                threads = threading.active_count()
                tasks.put("t1")
                out["pool_threads_started_by_task"] = threading.active_count() - threads
            out[target.__name__] = q.get(timeout=120)
            p.join(60)  # its feeder threads flush as it exits
            if target is worker:  # what the pool's result thread reads, in order
                out["results"] = []
                while not results.empty() or len(out["results"]) < 1:
                    out["results"].append(results.get(timeout=60))
        print(json.dumps(out))
''')


def _spawn(tmp_path: Path, **env: str) -> dict:
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_a_worker_has_its_task_runner_and_fd_helper_before_its_first_task_and_the_task_reuses_them(tmp_path):
    out = _spawn(tmp_path)
    w = out["worker"]
    assert w["before"]["imported"]  # (already by the hook: node_manager/__init__ imports it)
    assert w["before"]["helper_pid"], "the fd-capture helper runs before the first task"
    assert w["ok"] and w["after"]["helper_pid"] == w["before"]["helper_pid"], "the first task started no helper of its own"
    # The pool's first task is put by a feeder thread already running, the worker's write to the
    # task table reuses its connection to the Manager server, and its first result is sent by a
    # feeder already running; nothing but the result reaches the pool.
    assert w["before"]["sockets_opened_by_task_table"] == 0
    assert w["before"]["threads_started_by_result"] == 0
    assert out["results"] == ["result"]
    assert out["pool_threads_started_by_task"] == 0, "the pool's task queue already had its feeder"
    # The Manager server process runs no task: nothing is started in it.
    assert out["_run_server"]["before"]["helper_pid"] is None


def test_the_warm_up_can_be_turned_off_per_runtime_env(tmp_path):
    out = _spawn(tmp_path, FNSERVE_WORKER_PRELOAD="0")
    w = out["worker"]
    assert w["before"]["helper_pid"] is None
    # The first task opens the connection and starts the feeder itself (why the warm-up does).
    assert w["before"]["sockets_opened_by_task_table"] == 1 and w["before"]["threads_started_by_result"] == 1
    assert out["results"] == ["result"] and out["pool_threads_started_by_task"] == 1
    assert w["ok"] and w["after"]["helper_pid"]  # the first task does it, as before


def test_only_workers_are_warmed_up():
    def worker() -> None: ...
    def _run_server() -> None: ...
    assert warm_up.wanted(worker, {}) and not warm_up.wanted(_run_server, {}) and not warm_up.wanted(None, {})
    assert not warm_up.wanted(worker, {warm_up.ENV: "0"})
