"""A result the forwarder never acked survives a kill -9 of the site manager (a real `fnserve up`
stack): it is on disk (site_manager.ledger_store), replayed after the restart, recorded once,
and the task is not run a second time.

The sequence: a task runs; the forwarder is killed with SIGKILL, so the result that follows
cannot be delivered; the task finishes and its result waits, unacked, in the site manager's
ledger file; the site manager's whole process group is then killed with SIGKILL; `fnserve up`
starts the forwarder and the endpoint again. Without the on-disk ledger the restarted site
manager would not hold the task, the forwarder would requeue it and it would run twice.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from stack_support import running_stack
from test_faults import _wait_for_pids


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("replay")) as s:
        yield s


def run_counter():
    """A function (nested: dill ships it by value) that notes each run's pid, waits for a
    release file, then returns how many runs there have been."""

    def count_runs_after_release(path: str, release: str) -> int:
        import os
        import time
        from pathlib import Path

        p = Path(path)
        runs = p.read_text().split() if p.exists() else []
        p.write_text(" ".join([*runs, str(os.getpid())]))
        while not Path(release).exists():
            time.sleep(0.05)
        return len(runs) + 1

    return count_runs_after_release


def _pid(pid_file: Path) -> int:
    return int(pid_file.read_text().strip())


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the test's own wait on processes it does not control
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _unacked(ledger: Path) -> list[str]:
    if not ledger.exists():
        return []
    with sqlite3.connect(ledger) as db:
        return [t for (t,) in db.execute("SELECT task_id FROM unacked")]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_unacked_result_is_replayed_after_a_site_manager_kill_and_recorded_once(stack, tmp_path):
    home = Path(stack.env["FNSERVE_HOME"])
    service_run = home / "service" / "run"
    endpoint_run = home / "endpoints" / "local"
    config = yaml.safe_load((endpoint_run / "config.yaml").read_text())
    ledger = Path(os.path.expandvars(config["run_dir"])).expanduser() / "unacked_results.sqlite"
    client = stack.client()
    fid = client.register_function(run_counter())
    marker, release = tmp_path / "runs", tmp_path / "release"
    task_id = client.submit(fid, stack.endpoint_id, (str(marker), str(release)))
    _wait_for_pids(marker, 1)

    forwarder = _pid(service_run / "forwarder.pid")
    os.kill(forwarder, signal.SIGKILL)
    _wait(lambda: _gone(forwarder), 10, "the forwarder to die")
    release.touch()
    _wait(lambda: task_id in _unacked(ledger), 30, "the result to reach the ledger file")

    site_manager = _pid(endpoint_run / "site_manager.pid")
    os.killpg(site_manager, signal.SIGKILL)  # the site manager, its interchange and workers
    _wait(lambda: _gone(site_manager), 10, "the site manager to die")

    port = stack.url.rsplit(":", 1)[1]
    stack.cli("up", "--port", port, timeout=180)

    assert client.get_result(task_id, timeout=60) == 1  # the first run's result, replayed
    assert len(marker.read_text().split()) == 1, "the task ran again instead of being replayed"
    _wait(lambda: task_id not in _unacked(ledger), 30, "the replayed result to be acked")
    info = client.get_task(task_id)
    assert info["state"] == "success"
