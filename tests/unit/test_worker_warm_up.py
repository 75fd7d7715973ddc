"""A worker does its first task's one-time work as it starts (node_manager.warm_up): a hot
spare's first call finds the fd-capture helper running (and the task runner imported)."""

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
    import json, multiprocessing, sys
    from node_manager import pool_children

    def state():
        from node_manager import fd_capture
        h = getattr(fd_capture, "_helper", None) if "node_manager.fd_capture" in sys.modules else None
        return {"imported": "node_manager.execute" in sys.modules,
                "helper_pid": h.proc.pid if h is not None and h.proc.poll() is None else None}

    def worker(q):
        before = state()
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
        out = {}
        for target in (worker, _run_server):
            q = ctx.Queue()
            p = ctx.Process(target=target, args=(q,))
            p.start()
            out[target.__name__] = q.get(timeout=120)
            p.join(60)
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
    # The Manager server process runs no task: nothing is started in it.
    assert out["_run_server"]["before"]["helper_pid"] is None


def test_the_warm_up_can_be_turned_off_per_runtime_env(tmp_path):
    w = _spawn(tmp_path, FNSERVE_WORKER_PRELOAD="0")["worker"]
    assert w["before"]["helper_pid"] is None
    assert w["ok"] and w["after"]["helper_pid"]  # the first task does it, as before


def test_only_workers_are_warmed_up():
    def worker() -> None: ...
    def _run_server() -> None: ...
    assert warm_up.wanted(worker, {}) and not warm_up.wanted(_run_server, {}) and not warm_up.wanted(None, {})
    assert not warm_up.wanted(worker, {warm_up.ENV: "0"})
