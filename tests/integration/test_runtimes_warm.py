"""Warm runtimes through the real stack: functions registered with a podman runtime and a venv
runtime run from the SDK on a local endpoint; warm calls reuse the same worker process; broken
runtimes fail fast with the runtime and the cause named, while the others keep working."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from runtime_support import (
    IMAGE,
    IMAGE_DIR,
    add_runtimes,
    build_image,
    have_podman,
    make_venv,
)
from stack_support import running_stack

from fnserve.errors import Conflict, TaskFailed

pytestmark = pytest.mark.integration
STANDIN = Path(__file__).with_name("apptainer_standin.py")

SOURCE = '''
def where():
    import os, sys
    return {"pid": os.getpid(), "prefix": sys.prefix, "container": os.path.exists("/run/.containerenv")}
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not have_podman():
        pytest.fail("podman is not installed: scripts/test.sh installs it (apt-get install podman runc)")
    image = build_image()
    tmp = tmp_path_factory.mktemp("runtimes")
    good = make_venv(tmp / "venv-ok", with_fnserve=True)
    bare = make_venv(tmp / "venv-bare", with_fnserve=False)
    # STAND-IN for Apptainer (not installable here): tests/integration/apptainer_standin.py.
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").symlink_to(STANDIN)
    sif = tmp / "worker.sif"
    sif.write_bytes(b"stand-in image")
    with running_stack(tmp / "home") as st:
        add_runtimes(
            tmp / "home/endpoints/local/config.yaml",
            {
                "apt": {"type": "apptainer", "image": str(sif), "command": str(bin_dir / "apptainer")},
                "apt-missing": {"type": "apptainer", "image": str(tmp / "gone.sif"), "command": str(bin_dir / "apptainer")},
                "pod": {"type": "podman", "image": image, "max_idletime": 600},
                "ch": {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs")},
                "py-venv": {"type": "venv", "python": good, "max_idletime": 600},
                "py-bare": {"type": "venv", "python": bare},
                "pod-missing": {"type": "podman", "image": "localhost/fnserve-no-such-image:1"},
            },
        )
        st.cli("endpoint", "restart", "local")
        st.venv = tmp / "venv-ok"
        st.workers = yaml.safe_load((tmp / "home/endpoints/local/config.yaml").read_text())["engine"]["max_workers_per_node"]
        assert st.workers < 6
        yield st
    # `fnserve down` stopped the podman pools too: no container of this endpoint is left.
    run_dir = str(tmp / "home/endpoints/local/run")
    deadline = time.monotonic() + 30
    while _containers_under(run_dir):
        assert time.monotonic() < deadline, f"containers left running after the endpoint stopped: {_containers_under(run_dir)}"
        time.sleep(0.5)


def _containers_under(run_dir: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "--format", "{{.ID}} {{.Mounts}}"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if run_dir in line]


def _register(fc, name: str, runtime: str, kind: str, image: str) -> str:
    fc.register_runtime(name=runtime, type=kind, image=image)
    return fc.register_source(SOURCE, "where", name=name, runtime=runtime)


def test_podman_and_venv_functions_run_from_the_sdk_and_warm_calls_reuse_the_worker(stack):
    fc = stack.client()
    pod_fn = _register(fc, "where-pod", "pod", "podman", IMAGE)
    venv_fn = _register(fc, "where-venv", "py-venv", "venv", str(stack.venv / "bin/python"))
    host_fn = fc.register_source(SOURCE, "where", name="where-host")

    pod = [fc.call(pod_fn, stack.endpoint_id) for _ in range(6)]
    venv = [fc.call(venv_fn, stack.endpoint_id) for _ in range(6)]
    host = fc.call(host_fn, stack.endpoint_id)

    assert all(r["container"] for r in pod) and not host["container"]  # really inside podman
    assert {r["prefix"] for r in pod} == {"/opt/python"}  # with the image's Python
    assert {r["prefix"] for r in venv} == {str(stack.venv)}  # really the venv's interpreter
    assert host["prefix"] != str(stack.venv)
    # Warm: the six calls of each runtime ran in its pool's few long-lived workers, never in a
    # fresh process (the pool has max_workers_per_node workers; the interchange picks one).
    assert len({r["pid"] for r in pod}) <= stack.workers and len({r["pid"] for r in venv}) <= stack.workers
    # The endpoint reports each runtime's warm workers (at heartbeat pace).
    deadline = time.monotonic() + 20
    while True:
        status = fc.get_endpoint_status(stack.endpoint_id)["site"]["runtimes"]
        if status["pod"]["workers"] >= 1 and status["py-venv"]["workers"] >= 1:
            break
        assert time.monotonic() < deadline, f"warm workers never reported: {status}"
        time.sleep(0.5)


def test_venv_without_fnserve_fails_naming_the_runtime_and_the_cause_and_is_not_retried_at_once(stack):
    fc = stack.client()
    fid = _register(fc, "where-bare", "py-bare", "venv", "/nowhere/python")
    with pytest.raises(TaskFailed) as first:
        fc.get_result(fc.run(fid, stack.endpoint_id), timeout=90)
    message = str(first.value)
    assert first.value.code == "runtime_unavailable"
    assert "'py-bare'" in message and "node_manager" in message and "install fnserve" in message
    # Within the backoff the runtime is not started again: the next task fails at once, same cause.
    with pytest.raises(TaskFailed) as again:
        fc.get_result(fc.run(fid, stack.endpoint_id), timeout=30)
    assert "retrying in" in str(again.value) and "node_manager" in str(again.value)


def test_missing_image_fails_naming_the_runtime_while_other_runtimes_keep_working(stack):
    fc = stack.client()
    fid = _register(fc, "where-missing", "pod-missing", "podman", "localhost/fnserve-no-such-image:1")
    ok_fn = fc.register_source(SOURCE, "where", name="where-venv-2", runtime="py-venv")
    bad = fc.run(fid, stack.endpoint_id)
    good = fc.run(ok_fn, stack.endpoint_id)
    assert fc.get_result(good, timeout=60)["prefix"] == str(stack.venv)
    with pytest.raises(TaskFailed) as failed:
        fc.get_result(bad, timeout=90)
    assert failed.value.code == "runtime_unavailable"
    assert "'pod-missing'" in str(failed.value) and "fnserve-no-such-image" in str(failed.value)
    assert fc.call(ok_fn, stack.endpoint_id)["prefix"] == str(stack.venv)


def test_runtime_the_endpoint_does_not_run_is_refused_at_submit(stack):
    fc = stack.client()
    fc.register_runtime(name="gpu", type="apptainer", image="/images/gpu.sif")
    fid = fc.register_source(SOURCE, "where", name="where-gpu")
    deadline = time.monotonic() + 30
    while "runtimes" not in (fc.get_endpoint_status(stack.endpoint_id).get("site") or {}):
        assert time.monotonic() < deadline, "the endpoint never reported its runtimes"
        time.sleep(0.2)
    with pytest.raises(Conflict) as refused:
        fc.submit(fid, stack.endpoint_id, runtime="gpu")
    assert refused.value.code == "runtime_not_supported" and "gpu" in str(refused.value)


def test_apptainer_runtime_launches_workers_through_the_apptainer_binary(stack):
    """Against the STAND-IN apptainer binary: fnserve's exec command line, and a missing image."""
    fc = stack.client()
    fid = _register(fc, "where-apt", "apt", "apptainer", "/images/worker.sif")
    pids = {fc.call(fid, stack.endpoint_id)["pid"] for _ in range(6)}
    assert len(pids) <= stack.workers  # warm in its own pool
    gone = _register(fc, "where-apt-missing", "apt-missing", "apptainer", "/images/gone.sif")
    with pytest.raises(TaskFailed) as failed:
        fc.get_result(fc.run(gone, stack.endpoint_id), timeout=90)
    assert failed.value.code == "runtime_unavailable"
    assert "'apt-missing'" in str(failed.value) and "gone.sif" in str(failed.value)


def test_charliecloud_runtime_runs_in_the_image_directory(stack):
    fc = stack.client()
    fid = _register(fc, "where-ch", "ch", "charliecloud", str(IMAGE_DIR / "rootfs"))
    runs = [fc.call(fid, stack.endpoint_id) for _ in range(3)]
    assert {r["prefix"] for r in runs} == {"/opt/python"}  # the image's Python, not the host's
    assert len({r["pid"] for r in runs}) <= stack.workers
