"""One worker process runs many tasks, of many users: each task's output and peak memory are its own.

A real worker process (the loop Parsl's worker runs: ``execute_task`` on each task message in
turn) with its own stdout and stderr files, so what a task writes to file descriptors 1 and 2
(``os.write``, C code, child processes) is seen where it lands (issue 12, item 9).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec

from fnserve import serialize
from fnserve.messages import TaskMessage, decode_result, encode_task

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import sys
    from node_manager.execute import execute_task
    tasks = open(sys.argv[1], "rb").read().split(b"\\n--task--\\n")
    with open(sys.argv[2], "wb") as out:
        out.write(b"\\n--result--\\n".join(execute_task(t) for t in tasks))
""")


def _task(source: str, name: str, task_id: str) -> TaskMessage:
    return TaskMessage(task_id=task_id, function_id=name, function=serialize.serialize_source(source, name),
                       payload=serialize.serialize_args((), {}))


def run_in_one_worker(tmp_path: Path, *tasks: TaskMessage) -> tuple[list, str, str]:
    """Run ``tasks`` in order in one fresh worker process; its results and its own stdout/stderr."""
    (tmp_path / "tasks").write_bytes(b"\n--task--\n".join(encode_task(t) for t in tasks))
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "tasks"), str(tmp_path / "results")],
                       stdout=out, stderr=err, cwd=REPO, check=True, timeout=120)
    results = [decode_result(r) for r in (tmp_path / "results").read_bytes().split(b"\n--result--\n")]
    return results, (tmp_path / "stdout").read_text(errors="replace"), (tmp_path / "stderr").read_text(errors="replace")


CHATTY = '''
def chatty():
    import os, subprocess
    print("from print")
    subprocess.run(["sh", "-c", "echo from a child process"], check=True)
    os.write(2, b"to fd 2\\n")
    os.write(1, b"from os.write " + b"x" * 2_000_000 + b"\\n")
    return 1
'''

HOLDS_THE_GIL = '''
def holds_the_gil():
    import ctypes
    # PyDLL keeps the GIL during the call: 4 MB into fd 1 at once, more than any pipe holds.
    data = b"g" * 4_000_000
    ctypes.PyDLL(None).write(1, data, len(data))
    return 2
'''

LEAVES_A_CHILD = '''
def leaves_a_child():
    import subprocess
    subprocess.Popen(["sh", "-c", "sleep 0.5; echo LEAKED-INTO-THE-NEXT-TASK"])
    return 3
'''

NEXT_TASK = '''
def next_task():
    import time
    time.sleep(1.0)
    return 4
'''


def test_writes_to_fds_1_and_2_are_captured_bounded_and_stay_out_of_the_workers_log(tmp_path):
    results, worker_out, worker_err = run_in_one_worker(
        tmp_path, _task(CHATTY, "chatty", "a"), _task(HOLDS_THE_GIL, "holds_the_gil", "b"),
        _task(LEAVES_A_CHILD, "leaves_a_child", "c"), _task(NEXT_TASK, "next_task", "d"))
    chatty, gil, child, nxt = results
    assert chatty.ok and "from print" in chatty.stdout and "from os.write xxx" in chatty.stdout
    assert "from a child process" in chatty.stdout and "to fd 2" in chatty.stderr
    assert len(chatty.stdout) < 100_000 and "cut at 65536 bytes" in chatty.stdout  # bounded, the cut stated
    assert gil.ok and serialize.deserialize_data(gil.data) == 2 and "cut at 65536 bytes" in gil.stdout
    assert child.ok and nxt.ok
    assert "LEAKED" not in nxt.stdout  # another task's leftover child never writes into this one
    # Nothing of the tasks' output reached the worker's own stdout / stderr (the block logs).
    assert "xxxx" not in worker_out and "ggggg" not in worker_out and "from a child" not in worker_out
    assert "to fd 2" not in worker_err


BIG = '''
def big():
    block = bytearray(400 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)
'''

SMALL = '''
def small():
    return sum(range(1000))
'''


def test_a_small_task_after_a_big_one_is_billed_its_own_peak_memory(tmp_path):
    # Think of "big" as one user's task and "small" as the next user's, in the same worker.
    (big, small), _, _ = run_in_one_worker(tmp_path, _task(BIG, "big", "big"), _task(SMALL, "small", "small"))
    assert big.ok and small.ok
    big_kb, small_kb = big.resources["max_rss_kb"], small.resources["max_rss_kb"]
    assert big_kb > 400 * 1024, big_kb
    assert small_kb < 150 * 1024, f"the small task was billed {small_kb:.0f} KiB: the worker's earlier peak"
    assert msgspec.json.encode(small.resources)  # still plain numbers on the wire
