"""File triggers on the real stack: the local endpoint's admin allows one folder; files written
there (one slowly, in chunks) each run the rule's function once, with the file's final size; a
folder outside the allowed one is refused. While files arrive, kill -9 of one process (the site
manager with 1,000 files; the forwarder, and Redis, with 300 each), then `fnserve up`: no file
lost, none recorded twice, each task made once (and, when no worker died, run once). A burst of
10,000 files is recorded in batches (the forwarder's /metrics count the transactions). `fnserve
down` leaves no process."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
import yaml
from stack_support import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    env = {"FNSERVE_FORWARDER_METRICS": f"127.0.0.1:{metrics_port}"}
    with running_stack(tmp_path_factory.mktemp("file-triggers"), extra_env=env) as s:
        s.forwarder_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        watched = s.home.parent / f"watched-{os.getpid()}"
        watched.mkdir()
        cfg_path = s.home / "endpoints" / "local" / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["triggers"] = {"allowed_folders": [str(watched)]}  # the site admin's say
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        s.cli("endpoint", "restart", "local")
        s.watched = watched
        yield s
    assert s.leftovers() == [], "fnserve down left processes running"


def size_recorder():
    def record(log: str, path: str, size: int) -> int:
        import json
        import os

        with open(log, "a") as f:
            f.write(json.dumps([path, size, os.path.getsize(path)]) + "\n")
        return size

    return record


def _history(client, trigger_id: str, want: int, timeout: float) -> list[dict[str, Any]]:
    """The trigger's history once it holds ``want`` events whose tasks all exist (a firing can
    be pending a moment: recorded, its task not yet in the task store)."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.trigger_history(trigger_id, limit=1000)
        if len(events) >= want and all(f["state"] != "pending" for e in events for f in e["firings"]):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(events)} of {want} events after {timeout} s")
        time.sleep(0.25)


def _file_trigger(stack, folder, fid: str, log, **cfg: Any) -> dict[str, Any]:
    client = stack.client()
    return client.create_trigger(f"files-{folder.name}", "file", {"endpoint_id": stack.endpoint_id, "folder": str(folder), **cfg},
                                 rules=[client.rule(fid, stack.endpoint_id, args=[str(log), "$data.path", "$data.size"])])


def test_a_folder_the_admin_did_not_allow_is_refused(stack):
    from fnserve.errors import FnserveError

    client = stack.client()
    fid = client.register_function(size_recorder())
    with pytest.raises(FnserveError) as exc:
        client.create_trigger("etc", "file", {"endpoint_id": stack.endpoint_id, "folder": "/etc"},
                              rules=[client.rule(fid, stack.endpoint_id)])
    assert exc.value.code == "folder_not_allowed" and str(stack.watched) in exc.value.message


def test_each_file_written_runs_the_function_once_with_its_final_size(stack):
    client = stack.client()
    fid = client.register_function(size_recorder())
    folder = stack.watched / "scans"
    folder.mkdir()
    log = stack.tmp / f"file-runs-{os.getpid()}"
    trig = _file_trigger(stack, folder, fid, log, pattern="*.dat", settle=0.5)
    time.sleep(0.5)  # the watch list reaches the endpoint (a wake, then one message)
    for i in range(5):
        (folder / f"quick{i}.dat").write_bytes(b"x" * (100 + i))
    (folder / "ignored.tif").write_bytes(b"not matched")
    with open(folder / "slow.dat", "wb") as f:  # a detector writing in chunks
        for _ in range(5):
            f.write(b"y" * 1000)
            f.flush()
            time.sleep(0.3)
    events = _history(client, trig["trigger_id"], 6, 60)
    task_ids = [f["task_id"] for e in events for f in e["firings"]]
    results = client.wait(task_ids, timeout=60)
    assert all(r["state"] == "success" for r in results), results
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    by_path = {p: (size, seen) for p, size, seen in runs}
    assert len(runs) == 6 == len(by_path)  # each file once, the .tif never
    assert by_path[str(folder / "slow.dat")] == (5000, 5000)  # taken whole, not half-written
    assert {p.rsplit("/", 1)[1] for p in by_path} == {f"quick{i}.dat" for i in range(5)} | {"slow.dat"}
    time.sleep(1.0)
    assert len(client.trigger_history(trig["trigger_id"])) == 6  # nothing fired again


def _files_through_a_fault(stack, name: str, n: int, pid_file: tuple[str, ...]) -> tuple[list[dict[str, Any]], Any]:
    """Write ``n`` files (each as ``.part`` then renamed: the usual hand-over) into a watched
    folder; a quarter in, kill -9 of the one process whose pid file is ``home/pid_file``, then
    `fnserve up` (which starts it again) while files keep coming.
    Returns the trigger's history once every file's event is there and its task made, after
    checking none was recorded twice and every task succeeded; and the side-effect log."""
    client = stack.client()
    fid = client.register_function(size_recorder())
    folder = stack.watched / name
    folder.mkdir()
    log = stack.tmp / f"{name}-runs-{os.getpid()}"
    trig = _file_trigger(stack, folder, fid, log, settle=0.2)
    time.sleep(0.5)  # the watch list reaches the endpoint (a wake, then one message)
    faulted = threading.Event()
    killed: list[int] = []

    def write_files() -> None:
        for i in range(n):
            if i == n // 4:
                killed.append(stack.kill9(*pid_file))
                faulted.set()
            tmp = folder / f".f{i:04d}.part"
            tmp.write_bytes(str(i).encode())
            tmp.rename(folder / f"f{i:04d}.raw")
            if i % 50 == 0:
                time.sleep(0.05)

    writer = threading.Thread(target=write_files)
    writer.start()
    assert faulted.wait(60)
    stack.up()  # what was killed starts again, while files keep coming
    assert int(stack.home.joinpath(*pid_file).read_text()) not in killed  # a new process
    writer.join(120)
    events = _history(client, trig["trigger_id"], n, 180)
    paths = [e["data"]["path"] for e in events]
    assert len(paths) == n == len(set(paths)), "a file was recorded twice"
    assert set(paths) == {str(folder / f"f{i:04d}.raw") for i in range(n)}
    task_ids = [f["task_id"] for e in events for f in e["firings"]]
    assert len(task_ids) == n == len(set(task_ids))
    results = client.wait(task_ids, timeout=240)
    assert all(r["state"] == "success" for r in results), [r for r in results if r["state"] != "success"][:3]
    ran = Counter(json.loads(line)[0] for line in log.read_text().splitlines())
    assert set(ran) == set(paths)
    return events, ran


def test_kill9_of_the_site_manager_while_1000_files_arrive_loses_and_repeats_none(stack):
    # The site manager's one process, as the OOM killer would: its interchange and worker pool
    # end on their own, so a task running then may run again (at-least-once dispatch,
    # docs/reliability.md); each file is still one event and one task.
    _files_through_a_fault(stack, "burst", 1000, ("endpoints", "local", "site_manager.pid"))


def test_kill9_of_the_forwarder_while_files_arrive_loses_and_repeats_none(stack):
    _, ran = _files_through_a_fault(stack, "forwarder", 300, ("service", "run", "forwarder.pid"))
    assert max(ran.values()) == 1, [p for p, c in ran.items() if c > 1][:3]  # no worker died: each ran once


def test_a_redis_restart_while_files_arrive_loses_and_repeats_none(stack):
    # kill -9: Redis keeps what it acknowledged (append-only file, tests/integration/test_redis_restart.py);
    # events recorded meanwhile wait as pending firings and are submitted when it is back.
    _, ran = _files_through_a_fault(stack, "redis", 300, ("service", "run", "redis.pid"))
    assert max(ran.values()) == 1, [p for p, c in ran.items() if c > 1][:3]


def test_the_beamline_example_analyses_each_image_and_updates_its_plot(stack, tmp_path):
    """examples/beamline_triggers.py as a user runs it after `fnserve up` (the endpoint allows
    the folder, as the example's docstring asks the admin to)."""
    import subprocess
    import sys

    from stack_support import REPO

    plot = tmp_path / "live.png"
    out = subprocess.run([sys.executable, str(REPO / "examples" / "beamline_triggers.py"), "--folder",
                          str(stack.watched / "scan42"), "--images", "8", "--plot", str(plot)],
                         env=stack.env, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    progress = [line for line in out.stdout.splitlines() if " analysed; latest " in line]
    assert progress and progress[-1].startswith("8/8 analysed")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The analysis is right: the beam drifts from x = 20 to x = 108 across the 8 frames.
    xs = [float(line.split("beam at (")[1].split(",")[0]) for line in progress]
    assert abs(xs[-1] - 108) < 2


def _metric(stack, name: str) -> float:
    for line in requests.get(stack.forwarder_metrics, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


BURST = 10_000


def test_a_burst_of_10000_files_is_recorded_in_batches_each_once(stack):
    client = stack.client()
    fid = client.register_function(size_recorder())
    folder = stack.watched / "burst10k"
    folder.mkdir()
    log = stack.tmp / f"burst10k-runs-{os.getpid()}"
    trig = _file_trigger(stack, folder, fid, log, settle=0)
    time.sleep(0.5)
    batches0, events0 = _metric(stack, "fnserve_forwarder_file_event_batches_total"), _metric(stack, "fnserve_forwarder_file_events_total")
    t0 = time.monotonic()
    for i in range(BURST):
        (folder / f"b{i:05d}.raw").write_bytes(b"x")
    written = time.monotonic() - t0
    paths, firings = _recorded(stack, trig["trigger_id"], BURST, 300)
    recorded = time.monotonic() - t0
    batches = _metric(stack, "fnserve_forwarder_file_event_batches_total") - batches0
    received = _metric(stack, "fnserve_forwarder_file_events_total") - events0
    print(f"\n{BURST} files: written in {written:.1f} s, all recorded and submitted {recorded:.1f} s after the first; "
          f"{received:.0f} events in {batches:.0f} record transactions; load {open('/proc/loadavg').read().split()[:3]}")
    assert len(paths) == BURST == len(set(paths)), "a file was recorded twice"
    task_ids = [t for _, t, _ in firings]
    assert len(task_ids) == BURST == len(set(task_ids)) and {state for _, _, state in firings} == {"submitted"}
    assert received >= BURST and batches <= BURST / 20, (batches, received)  # batches of 20 and more, not one per file
    # A sample runs, the first files' tasks (all 10,000 would take minutes on 2 workers; the
    # rest are dropped by `fnserve down`, this being the module's last test).
    first = sorted(firings)[:50]
    assert all(r["state"] == "success" for r in client.wait([t for _, t, _ in first], timeout=300))
    ran = Counter(json.loads(line)[0] for line in log.read_text().splitlines())
    assert all(ran[p] == 1 for p, _, _ in first), ran


def _recorded(stack, trigger_id: str, want: int, timeout: float) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The paths of a trigger's events and the (path, task id, state) of their firings, once there
    are ``want`` events and no firing is pending; read from the stack's registry (SQLite) itself:
    the REST history answers at most 1,000 events."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(f"file:{stack.home / 'service' / 'registry.db'}?mode=ro", uri=True, timeout=30)
        try:
            paths = [json.loads(d)["data"]["path"] for (d,) in db.execute(
                "SELECT data FROM trigger_events WHERE trigger_id = ?", (trigger_id,))]
            firings = [(json.loads(d)["data"]["path"], t, state) for d, t, state in db.execute(
                "SELECT e.data, f.task_id, f.state FROM trigger_firings f JOIN trigger_events e ON e.id = f.event_id "
                "WHERE e.trigger_id = ?", (trigger_id,))]
        finally:
            db.close()
        if len(paths) >= want and all(state != "pending" for _, _, state in firings):
            return paths, firings
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(paths)} of {want} events after {timeout} s")
        time.sleep(1.0)
