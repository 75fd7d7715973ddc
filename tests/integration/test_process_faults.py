"""One process of the embedded stack killed at a time (kill -9 <pid>), on a real `fnserve up`.

Each task appends one line per execution to a file, so executions are counted independently of
what the service reports. What a user (and an operator) relies on:

- a dead interchange or worker pool is noticed and the engine restarted: every task succeeds,
  and only the tasks running on a worker at the fault run twice (at most the 2 workers);
- a site manager killed alone leaves no interchange, worker pool or worker behind, and
  `fnserve up` brings it back with every task succeeding;
- `fnserve up` removes what a dead gunicorn master left on the web port instead of refusing;
- a task cancelled before it starts never runs, and the endpoint serves the next call at once;
- `fnserve down` leaves no process of the stack (checked when the module's stack stops).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from stack_support import running_stack

from fnserve.cli.processes import tagged_processes

N = 40  # tasks per fault
WORKERS = 2  # the embedded endpoint's


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("procfaults") / "home"
    with running_stack(home) as s:
        yield s
    left = tagged_processes(f"{home}{os.sep}", prefix=True)
    assert left == [], f"`fnserve down` left processes of the stack: {left}"


def recorder():
    """A function (nested: dill ships it by value) that appends ``i`` to a file per execution."""

    def record(i: int, path: str, ms: float) -> int:
        import os
        import time

        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{i} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        time.sleep(ms / 1000)
        return i

    return record


def _executions(path: Path) -> Counter[int]:
    return Counter(int(ln.split()[0]) for ln in path.read_text().splitlines()) if path.exists() else Counter()


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # the test's own wait on processes it does not control
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] not in "ZX"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(Path(entry.path, "stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ours(stack, needle: str) -> list[int]:
    """The stack's live processes whose command line contains ``needle``."""
    return [p for p in tagged_processes(f"{stack.home}{os.sep}", prefix=True) if needle in _cmdline(p)]


def _site_manager(stack) -> int:
    return int((stack.home / "endpoints" / "local" / "site_manager.pid").read_text())


def _run_through(stack, tmp_path: Path, kill, ms: float = 100, seen: dict | None = None) -> tuple[Counter[int], list[str]]:
    """Submit N tasks, call ``kill()`` once a quarter ran, wait for all: (executions, states).

    ``seen`` (if given) gets the client, the task ids (index = the task's number) and the
    side-effect file before ``kill()`` runs, for a fault that reads what was in flight."""
    client = stack.client()
    fid = client.register_function(recorder())
    runs = tmp_path / "runs"
    batch = client.create_batch()
    for i in range(N):
        batch.add(fid, stack.endpoint_id, (i, str(runs), ms))
    ids = client.batch_run(batch)
    if seen is not None:
        seen.update(client=client, ids=ids, runs=runs)
    _wait(lambda: sum(_executions(runs).values()) >= N // 4, 120, "a quarter of the tasks to run")
    kill()
    states = {}
    deadline = time.monotonic() + 150
    while len(states) < N and time.monotonic() < deadline:
        for t in client.transport.post("/v1/tasks/results", {"task_ids": ids, "wait": 5})["tasks"]:
            if t["state"] in ("success", "failed", "cancelled"):
                states[t["task_id"]] = t
    assert len(states) == N, f"{N - len(states)} task(s) hung"
    for t in states.values():
        assert t["state"] == "success", t
    return _executions(runs), [t["state"] for t in states.values()]


def test_a_killed_interchange_is_replaced_and_only_running_tasks_run_twice(stack, tmp_path):
    sm = _site_manager(stack)

    def kill():
        [pid] = [p for p in _children(sm) if "interchange" in _cmdline(p) or _cmdline(p).startswith("parsl")]
        os.kill(pid, signal.SIGKILL)

    executions, _ = _run_through(stack, tmp_path, kill)
    assert set(executions) == set(range(N))
    assert sum(1 for c in executions.values() if c > 1) <= WORKERS, executions
    log = (stack.home / "endpoints" / "local" / "site_manager.log").read_text()
    assert "its interchange (pid" in log and "restarted" in log


def test_a_killed_worker_pool_is_replaced_and_its_workers_do_not_linger(stack, tmp_path):
    killed = []

    def kill():
        [pool] = _ours(stack, "node_manager.pool")
        killed.append((pool, _children(pool)))
        os.kill(pool, signal.SIGKILL)

    executions, _ = _run_through(stack, tmp_path, kill)
    assert set(executions) == set(range(N))
    assert sum(1 for c in executions.values() if c > 1) <= WORKERS, executions
    pool, workers = killed[0]
    assert workers and not any(_alive(w) for w in workers), "the dead pool's workers are still running"


def test_a_site_manager_killed_alone_leaves_no_process_and_comes_back(stack, tmp_path):
    seen: dict = {}
    in_flight: set[int] = set()

    def kill():
        sm = _site_manager(stack)
        children = [p for p in tagged_processes(str(stack.home / "endpoints" / "local" / "site_manager.pid")) if p != sm]
        assert children, "expected an interchange and a worker pool under the site manager"
        tasks = seen["client"].transport.post("/v1/tasks/results", {"task_ids": seen["ids"]})["tasks"]
        recorded = {seen["ids"].index(t["task_id"]) for t in tasks if t["state"] == "success"}
        os.kill(sm, signal.SIGKILL)
        _wait(lambda: not any(_alive(p) for p in children), 10, "the site manager's processes to end with it")
        # In flight at the fault: started by a worker that is now gone, result not recorded just
        # before the kill (on a worker, or finished with its result still on its way through the
        # dying interchange and site manager: no process holds it any more, it runs again).
        in_flight.update(set(_executions(seen["runs"])) - recorded)
        stack.cli("up", "--port", stack.url.rsplit(":", 1)[1], timeout=180)

    executions, _ = _run_through(stack, tmp_path, kill, seen=seen)
    assert set(executions) == set(range(N))
    twice = {i for i, c in executions.items() if c > 1}
    assert twice <= in_flight, (twice, in_flight, executions)  # only what was in flight ran again


def test_up_removes_what_a_killed_gunicorn_master_left_on_the_web_port(stack):
    master = int((stack.home / "service" / "run" / "web.pid").read_text())
    workers = _children(master)
    assert workers
    # Keep a worker busy in a long poll (on a task that sleeps), so it outlives its master a while.
    client = stack.client()
    fid = client.register_function(recorder())
    tid = client.submit(fid, stack.endpoint_id, (0, os.devnull, 20_000))

    def long_poll() -> None:
        try:
            client.transport.post("/v1/tasks/results", {"task_ids": [tid], "wait": 20}, timeout=30)
        except Exception:  # noqa: BLE001 - its server is killed under it: that is the test
            pass

    threading.Thread(target=long_poll, daemon=True).start()
    time.sleep(0.5)  # the request reaches the worker (nothing to wait on from outside)
    os.kill(master, signal.SIGKILL)
    _wait(lambda: not _alive(master), 10, "the gunicorn master to die")
    out = stack.cli("up", "--port", stack.url.rsplit(":", 1)[1], timeout=180)
    assert "already in use" not in out.stdout + out.stderr
    assert not any(_alive(w) for w in workers)
    assert stack.client().list_endpoints() is not None
    client.cancel(tid)


def test_a_result_wait_rides_out_a_redis_restart(stack, tmp_path):
    """A scientist's ``get_result`` across Redis killed and started again (what an operator's
    restart or a Sentinel failover looks like from the SDK): the service answers 503 meanwhile,
    the SDK asks again, and the result comes back; the task ran once."""
    client = stack.client()
    fid = client.register_function(recorder())
    log = tmp_path / "runs"
    tid = client.submit(fid, stack.endpoint_id, (7, str(log), 2000))
    got: dict[str, object] = {}

    def wait() -> None:
        try:
            got["result"] = client.get_result(tid, timeout=150)
        except Exception as exc:  # noqa: BLE001 - what the user would see
            got["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    _wait(log.exists, 60, "the task to start")
    stack.kill9("service", "run", "redis.pid")  # the long poll in flight loses its Redis
    stack.cli("up", "--port", stack.url.rsplit(":", 1)[1], timeout=180)
    waiter.join(170)
    assert got == {"result": 7}
    assert _executions(log) == Counter({7: 1})


def test_tasks_cancelled_before_they_start_never_run_and_the_endpoint_serves_at_once(stack, tmp_path):
    client = stack.client()
    fid = client.register_function(recorder())
    runs = tmp_path / "runs"
    # Two long tasks hold both workers; twenty more wait behind them (at the interchange).
    busy = [client.submit(fid, stack.endpoint_id, (i, str(runs), 60_000)) for i in range(WORKERS)]
    _wait(lambda: len(_executions(runs)) >= WORKERS, 60, "the first tasks to start")
    queued = [client.submit(fid, stack.endpoint_id, (100 + i, str(runs), 60_000)) for i in range(20)]
    # At the endpoint (not still at the service): the cancel has to stop them there.
    _wait(lambda: all(client.get_task(t)["state"] == "dispatched" for t in queued), 60, "the tasks to be dispatched")
    for tid in queued + busy:
        assert client.cancel(tid)["state"] == "cancelled"
    # The next call runs on a replaced worker, not behind the cancelled ones (20 x 60 s).
    assert client.get_result(client.submit(fid, stack.endpoint_id, (999, str(runs), 0)), timeout=60) == 999
    ran = _executions(runs)
    assert not [i for i in ran if 100 <= i < 120], f"cancelled queued tasks ran: {sorted(ran)}"


def test_workers_killed_while_idle_leave_no_task_hung(stack, tmp_path):
    # An idle worker waits in the pool's task queue holding its lock: killed (OOM killer, kill -9),
    # it used to leave every later task of the endpoint hung, Parsl seeing no task lost.
    client = stack.client()
    fid = client.register_function(recorder())
    runs = tmp_path / "runs"
    warm = [client.run(fid, stack.endpoint_id, i, str(runs), 200) for i in range(4 * WORKERS)]
    for tid in warm:
        client.get_result(tid, timeout=120)
    # The workers, by the pids the tasks wrote (the pool's other children, such as its
    # multiprocessing manager, are left alone).
    workers = {int(ln.split()[1]) for ln in runs.read_text().splitlines()}
    assert len(workers) == WORKERS, workers
    for pid in workers:  # both idle now: one of them holds the queue's lock
        os.kill(pid, signal.SIGKILL)
    fresh = tmp_path / "fresh"
    ids = [client.run(fid, stack.endpoint_id, i, str(fresh), 0) for i in range(N // 4)]
    assert [client.get_result(tid, timeout=90) for tid in ids] == list(range(N // 4))
    assert _executions(fresh) == Counter(range(N // 4))  # each ran once: none was started before
