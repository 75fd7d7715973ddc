"""File triggers on the real stack: the local endpoint's admin allows one folder; files written
there (one slowly, in chunks) each run the rule's function once, with the file's final size; a
folder outside the allowed one is refused; kill -9 of the site manager (its whole process group)
while 1,000 files arrive loses none and repeats none."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import pytest
import yaml
from stack_support import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("file-triggers")) as s:
        watched = s.home.parent / f"watched-{os.getpid()}"
        watched.mkdir()
        cfg_path = s.home / "endpoints" / "local" / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["triggers"] = {"allowed_folders": [str(watched)]}  # the site admin's say
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        s.cli("endpoint", "restart", "local")
        s.watched = watched
        yield s


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


def test_kill9_of_the_site_manager_while_1000_files_arrive_loses_and_repeats_none(stack):
    client = stack.client()
    fid = client.register_function(size_recorder())
    folder = stack.watched / "burst"
    folder.mkdir()
    log = stack.tmp / f"burst-runs-{os.getpid()}"
    n = 1000
    trig = _file_trigger(stack, folder, fid, log, settle=0.2)
    time.sleep(0.5)
    killed = threading.Event()

    def write_files() -> None:
        for i in range(n):
            if i == n // 4:
                os.killpg(int((stack.home / "endpoints/local/site_manager.pid").read_text()), signal.SIGKILL)
                killed.set()
            tmp = folder / f".f{i:04d}.part"
            tmp.write_bytes(str(i).encode())
            tmp.rename(folder / f"f{i:04d}.raw")  # the usual atomic hand-over: write, then rename
            if i % 50 == 0:
                time.sleep(0.05)

    writer = threading.Thread(target=write_files)
    writer.start()
    assert killed.wait(60)
    stack.cli("up", "--port", stack.url.rsplit(":", 1)[1])  # the site manager again, while files keep coming
    writer.join(120)
    events = _history(client, trig["trigger_id"], n, 180)
    paths = [e["data"]["path"] for e in events]
    assert len(paths) == n == len(set(paths)), "a file was recorded twice"
    task_ids = [f["task_id"] for e in events for f in e["firings"]]
    assert len(task_ids) == n == len(set(task_ids))
    results = client.wait(task_ids, timeout=240)
    assert all(r["state"] == "success" for r in results), [r for r in results if r["state"] != "success"][:3]
    ran = {json.loads(line)[0] for line in log.read_text().splitlines()}
    assert ran == {str(folder / f"f{i:04d}.raw") for i in range(n)}


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
