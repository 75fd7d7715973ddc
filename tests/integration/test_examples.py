"""The examples a researcher starts from, executed for real against the embedded stack.

`fnserve up` (Redis, gunicorn, forwarder, a site manager on Parsl HTEX) in a temporary
FNSERVE_HOME; the notebooks run in a real Jupyter kernel (nbclient) exactly as a person would run
them after `fnserve up`, and the curl script runs in bash. Live outputs travel the real path:
worker -> site manager's PULL socket -> forwarder -> Redis stream -> long-poll.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from stack_support import REPO, peak_rss_split, running_stack

EXAMPLES = REPO / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fnserve-home")) as stack:
        yield stack


def run_notebook(name: str, stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute examples/NAME in ``workdir`` with a kernel that sees the test stack as `fnserve up` left it."""
    monkeypatch.setenv("FNSERVE_HOME", stack.env["FNSERVE_HOME"])
    monkeypatch.delenv("FNSERVE_TOKEN", raising=False)
    monkeypatch.delenv("FNSERVE_SERVICE_URL", raising=False)
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000


def primes_below(n: int) -> int:
    return sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k**0.5) + 1)))


def test_md_notebook_plots_temperature_while_the_task_runs(stack, tmp_path, monkeypatch):
    nb = run_notebook("md_equilibration.ipynb", stack, tmp_path, monkeypatch)
    assert_png(tmp_path / "md_equilibration.png")
    live = json.loads((tmp_path / "md_equilibration_live.json").read_text())

    # Outputs reached the notebook while the task was still running, by the service's own clock.
    task = stack.client().get_task(live["task_id"])
    assert task["state"] == "success"
    first = live["reads"][0]
    assert first["state"] == "running" and first["time"] < task["timestamps"]["finished"]
    assert sum(r["outputs"] for r in live["reads"]) == 31  # steps 0, 100, ..., 3000

    # The thermostat heats the box from rest: temperature rises from ~0 K towards 300 K.
    page = stack.client().get_outputs(live["task_id"])
    assert page["complete"] and not page["truncated"]
    values = [o["values"] for o in page["outputs"]]
    assert [v["step"] for v in values] == list(range(0, 3001, 100))
    temperatures = [v["temperature_k"] for v in values]
    assert temperatures[0] < 1.0 and 200 < sum(temperatures[-5:]) / 5 < 400

    pdb = (tmp_path / "md_final.pdb").read_text()
    assert pdb.startswith(("REMARK", "CRYST1"))
    assert pdb.count("HOH") > 100 and " NA " in pdb and " CL " in pdb
    assert "batches of outputs read" in stream_text(nb)


def test_image_notebook_maps_over_many_images_with_a_progress_bar(stack, tmp_path, monkeypatch):
    nb = run_notebook("image_analysis.ipynb", stack, tmp_path, monkeypatch)
    assert_png(tmp_path / "image_analysis.png")
    text = stream_text(nb)
    assert "48 images analysed" in text
    # The count comes from scikit-image run on the endpoint, compared with what was drawn.
    exact = int(text.split("the count is exact for ")[1].split()[0])
    assert exact >= 40


def test_curl_script_follows_live_outputs_and_prints_the_result(stack):
    fid = stack.cli("register", "examples/functions.py:count_primes").stdout.strip()
    out = subprocess.run(["bash", str(EXAMPLES / "curl_call.sh"), fid, stack.endpoint_id, "[5000]"], env=stack.env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    *pages, task = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    outputs = [o["values"] for page in pages for o in page["outputs"]]
    assert [o["checked"] for o in outputs] == [1000, 2000, 3000, 4000, 5000]
    assert [o["primes"] for o in outputs] == [primes_below(n) for n in (1000, 2000, 3000, 4000, 5000)]
    assert pages[-1]["complete"] is True
    assert task["state"] == "success" and task["result_json"] == primes_below(5000)


def test_watch_prints_outputs_until_the_task_finishes(stack):
    fid = stack.cli("register", "examples/functions.py:count_primes").stdout.strip()
    task_id = stack.cli("run", fid, "-e", stack.endpoint_id, "1000", "--no-wait").stdout.strip()
    watched = stack.cli("watch", task_id)
    assert watched.stdout.splitlines() == [f"[{i}] checked={n}  primes={primes_below(n)}" for i, n in enumerate(range(200, 1001, 200))]
    assert f"task {task_id}: success" in watched.stderr
    as_json = [json.loads(line) for line in stack.cli("watch", task_id, "--json").stdout.splitlines()]
    assert [o["seq"] for o in as_json] == [0, 1, 2, 3, 4] and as_json[-1]["values"] == {"checked": 1000, "primes": 168}


def test_executor_future_gives_a_live_view_of_its_outputs(stack):
    from fnserve.executor import Executor

    def progress(n):
        import fnserve

        for i in range(n):
            fnserve.report(done=i + 1, of=n)
        return "ok"

    with Executor(stack.endpoint_id, client=stack.client()) as ex:
        fut = ex.submit(progress, 4)
        seen = [o["values"] for o in fut.outputs(timeout=60)]
        assert fut.result(60) == "ok"
    assert seen == [{"done": i, "of": 4} for i in range(1, 5)]


def run_notebook_with_restarts(name: str, stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[nbformat.NotebookNode, list[int]]:
    """Execute examples/NAME cell by cell, restarting the kernel (as Kernel > Restart does: the
    kernel is asked to shut down, then started again) before each cell tagged ``restart-kernel``;
    returns the notebook and the kernel's pid per run."""
    from jupyter_core.utils import run_sync

    monkeypatch.setenv("FNSERVE_HOME", stack.env["FNSERVE_HOME"])
    monkeypatch.delenv("FNSERVE_TOKEN", raising=False)
    monkeypatch.delenv("FNSERVE_SERVICE_URL", raising=False)
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    pids = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if "restart-kernel" in cell.metadata.get("tags", []):
                pids.append(client.km.provisioner.pid)
                run_sync(client.km.restart_kernel)(now=False)
                run_sync(client.kc.wait_for_ready)(timeout=60)
            client.execute_cell(cell, index)
        pids.append(client.km.provisioner.pid)
    return nb, pids


def test_globus_compute_notebook_runs_and_gets_its_futures_back_after_a_kernel_restart(stack, tmp_path, monkeypatch):
    nb, pids = run_notebook_with_restarts("globus_compute_port.ipynb", stack, tmp_path, monkeypatch)
    assert len(set(pids)) == 2  # the second half ran in a new kernel process
    text = stream_text(nb)
    assert "Hello Globus Compute user, from" in text
    assert 2.9 < float(text.split("pi is about ")[1].split()[0]) < 3.4
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text
    reloaded = text.split("reloaded ")[1]
    assert reloaded.startswith("6 futures, ") and int(reloaded.split(", ")[1].split()[0]) >= 1  # some were still running
    assert "results: [0, 1, 4, 9, 16, 25]" in text
    # The only changes from Globus Compute are the marked import and endpoint id lines.
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "globus_compute_sdk" not in code.replace("# was: from globus_compute_sdk", "")


def test_large_data_notebook_round_trips_an_array_by_reference_and_gets_frames_while_they_are_drawn(
        stack, tmp_path, monkeypatch):
    # The 1 GiB in, 1 GiB out, executed in CI: about 57 s at load 7 on 2 cores
    # (FNSERVE_TEST_NOTEBOOK_MIB=256 for a quicker local run).
    mib = os.environ.get("FNSERVE_TEST_NOTEBOOK_MIB", "1024")
    monkeypatch.setenv("FNSERVE_EXAMPLE_MIB", mib)
    nb = run_notebook("large_data.ipynb", stack, tmp_path, monkeypatch)
    text = stream_text(nb)
    assert f"sent {mib} MiB, got {mib} MiB back" in text, text
    import re

    stats = re.search(r"mean (\S+), std (\S+)", text)
    assert stats and abs(float(stats[1])) < 1e-3 and abs(float(stats[2]) - 1) < 1e-3, text

    stored = re.search(r"result as stored by the service: (\d+) bytes", text)
    assert stored and int(stored[1]) < 1024, text  # a reference, not the array in base64
    live = json.loads((tmp_path / "large_data_live.json").read_text())
    raw = stack.client().get_task(live["task_id"])
    assert raw["state"] == "success"
    names = [a["file"] for a in live["arrivals"]]
    assert names == [f"frame-{i:02d}.png" for i in range(8)]
    for name in names:
        assert_png(tmp_path / "frames" / name)
    # Frames reached the notebook while the function was still drawing the next ones.
    assert live["arrivals"][0]["state"] == "running", live["arrivals"]

    # Every process that only moves the array (web, forwarder, Redis, site manager, interchange,
    # worker pool) stayed far below it; only HTEX workers compute on it.
    movers, workers = peak_rss_split(stack)
    for role in ("gunicorn", "web_service.forwarder", "site_manager", "redis-server"):
        assert any(role in m for m in movers), (role, movers)
    over = {m: v for m, v in movers.items() if v >= 200}
    assert not over, f"processes that only move the {mib} MiB array peaked over 200 MiB: {over}"
    assert workers, "no HTEX worker found among the stack's processes"
