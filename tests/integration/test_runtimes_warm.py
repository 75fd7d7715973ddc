"""Warm runtimes through the real stack on a local endpoint: podman, Docker (a real daemon),
Charliecloud and venv runtimes, and Apptainer through spython against the STAND-IN binary
(tests/integration/apptainer_standin.py: Apptainer cannot be installed here). Warm calls reuse
the same worker processes; each task records where it ran; broken runtimes fail fast in one
line while the others keep working; containers are named, labelled and never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from apptainer_support import install, make_sif
from runtime_support import (
    IMAGE,
    IMAGE_DIR,
    add_runtimes,
    assert_interchange_encrypted,
    build_image,
    have_podman,
    make_venv,
    require_docker,
)
from stack_support import REPO, running_stack

from fnserve.errors import Conflict, TaskFailed

pytestmark = pytest.mark.integration

SOURCE = '''
def where():
    import os, sys
    # In a podman/Docker container the worker pool is PID 1 of its own PID namespace.
    with open("/proc/1/cmdline", "rb") as f:
        pid1 = f.read()
    return {"pid": os.getpid(), "prefix": sys.prefix, "container": b"node_manager.pool" in pid1,
            "apptainer": os.environ.get("APPTAINER_CONTAINER"), "canary": os.environ.get("FNSERVE_TEST_CANARY")}
'''
LATE_IMAGE = "localhost/fnserve-late-image:1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not have_podman():
        pytest.fail("podman is not installed: scripts/test.sh installs it (apt-get install podman runc)")
    require_docker()
    image = build_image()
    subprocess.run(["podman", "rmi", "-f", LATE_IMAGE], capture_output=True, check=False)
    tmp = tmp_path_factory.mktemp("runtimes")
    good = make_venv(tmp / "venv-ok", with_fnserve=True)
    bare = make_venv(tmp / "venv-bare", with_fnserve=False)
    standin = install(tmp)  # STAND-IN for Apptainer, first on PATH for the whole stack
    sif = make_sif(tmp / "worker.sif")
    # The stand-in runs the pool on the host: this Python, and this checkout for fnserve.
    apt = {"type": "apptainer", "image": str(sif), "python": sys.executable, "env": {"PYTHONPATH": str(REPO)}}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**standin.env(os.environ["PATH"]), "FNSERVE_TEST_CANARY": "host-only"}.items():
            mp.setenv(key, value)
        with running_stack(tmp / "home") as st:
            config_path = tmp / "home/endpoints/local/config.yaml"
            add_runtimes(config_path, {
                "pod-late": {"type": "podman", "image": LATE_IMAGE, "min_warm_workers": 1},
                "apt": apt,
                "apt-inst": {**apt, "instance": True, "max_idletime": 600},
                "apt-missing": {**apt, "image": str(tmp / "gone.sif")},
                "pod": {"type": "podman", "image": image, "max_idletime": 600},
                "dock": {"type": "docker", "image": image, "max_idletime": 600},
                "ch": {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs")},
                "py-venv": {"type": "venv", "python": good, "max_idletime": 600},
                "py-bare": {"type": "venv", "python": bare},
                "pod-missing": {"type": "podman", "image": "localhost/fnserve-no-such-image:1"},
            })
            data = yaml.safe_load(config_path.read_text())
            # A dead block's workers are noticed within 4 s (not the template's 30).
            data["engine"].update({"heartbeat_period": 1, "heartbeat_threshold": 4})
            config_path.write_text(yaml.safe_dump(data, sort_keys=False))
            st.cli("endpoint", "restart", "local")
            st.venv = tmp / "venv-ok"
            st.run_dir = tmp / "home/endpoints/local/run"
            st.standin = standin
            st.sif = str(sif)
            st.workers = data["engine"]["max_workers_per_node"]
            assert st.workers < 6
            yield st
    # `fnserve down` stopped the pools: no container and no Apptainer instance of this endpoint is left.
    assert _containers(st.endpoint_id) == [] and _containers(st.endpoint_id, "docker") == []
    assert not list(standin.state.glob("*.json")), "apptainer instances left after the endpoint stopped"
    subprocess.run(["podman", "rmi", "-f", LATE_IMAGE], capture_output=True, check=False)


def _containers(endpoint_id: str, binary: str = "podman", runtime: str = "") -> list[str]:
    """Running containers labelled with this endpoint (and runtime)."""
    args = [binary, "ps", "--filter", f"label=fnserve.endpoint={endpoint_id}", "--format", "{{.Names}}"]
    if runtime:
        args += ["--filter", f"label=fnserve.runtime={runtime}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def _register(fc, name: str, runtime: str, kind: str, image: str) -> str:
    fc.register_runtime(name=runtime, type=kind, image=image)
    return fc.register_source(SOURCE, "where", name=name, runtime=runtime)


def _site_runtime(fc, endpoint_id: str, name: str) -> dict:
    return ((fc.get_endpoint_status(endpoint_id).get("site") or {}).get("runtimes") or {}).get(name, {})


def test_a_hot_spare_whose_image_was_missing_comes_up_on_its_own_once_the_image_is_there(stack):
    fc = stack.client()
    log = (stack.run_dir.parent / "site_manager.log").read_text()
    assert f"image not found: {LATE_IMAGE}" in log  # its first start failed, said in one line
    subprocess.run(["podman", "tag", IMAGE, LATE_IMAGE], check=True)
    # No task is sent: the spare retries with backoff (2, 4, 8 s...) and its workers come up.
    deadline = time.monotonic() + 60
    while _site_runtime(fc, stack.endpoint_id, "pod-late").get("workers", 0) < 1:
        assert time.monotonic() < deadline, f"the hot spare never came back: {_site_runtime(fc, stack.endpoint_id, 'pod-late')}"
        time.sleep(0.5)
    assert len(_containers(stack.endpoint_id, runtime="pod-late")) == 1


def test_podman_docker_and_venv_functions_run_from_the_sdk_warm_and_each_task_says_where_it_ran(stack):
    fc = stack.client()
    pod_fn = _register(fc, "where-pod", "pod", "podman", IMAGE)
    dock_fn = _register(fc, "where-dock", "dock", "docker", IMAGE)
    venv_fn = _register(fc, "where-venv", "py-venv", "venv", str(stack.venv / "bin/python"))
    host_fn = fc.register_source(SOURCE, "where", name="where-host")

    pod = [fc.call(pod_fn, stack.endpoint_id) for _ in range(6)]
    dock = [fc.call(dock_fn, stack.endpoint_id) for _ in range(6)]
    venv = [fc.call(venv_fn, stack.endpoint_id) for _ in range(6)]
    host = fc.call(host_fn, stack.endpoint_id)

    assert all(r["container"] for r in pod + dock) and not host["container"]  # really inside podman / Docker
    assert {r["prefix"] for r in pod + dock} == {"/opt/python"}  # with the image's Python
    assert {r["prefix"] for r in venv} == {str(stack.venv)}  # really the venv's interpreter
    assert host["prefix"] != str(stack.venv)
    # Inside the container too, workers reached the interchange over CurveZMQ (keys bind-mounted).
    assert_interchange_encrypted(stack.run_dir / "runtimes/pod")
    assert_interchange_encrypted(stack.run_dir / "engine")
    # The CLI names a runtime per run too, and waits for the result.
    out = stack.cli("run", host_fn, "--endpoint", stack.endpoint_id, "--runtime", "py-venv")
    assert f'"prefix": "{stack.venv}"' in out.stdout
    # Warm: the calls of each runtime ran in its pool's few long-lived workers, never in a fresh process.
    for runs in (pod, dock, venv):
        assert len({r["pid"] for r in runs}) <= stack.workers

    # Each task's record names its runtime, block and container; the container is the one running,
    # labelled with the endpoint, the runtime and the block.
    task = fc.get_task(fc.run(dock_fn, stack.endpoint_id))
    task = fc.wait([task["task_id"]], 60)[0]
    placement = task["placement"]
    assert placement["runtime"] == "dock" and placement["container"].startswith(f"fnserve-{stack.endpoint_id[:8]}-dock-b")
    assert _containers(stack.endpoint_id, "docker", runtime="dock") == [placement["container"]]
    labels = subprocess.run(["docker", "inspect", "--format", '{{index .Config.Labels "fnserve.block"}}', placement["container"]],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert labels == placement["block"]
    deadline = time.monotonic() + 20
    while _site_runtime(fc, stack.endpoint_id, "pod").get("workers", 0) < 1:
        assert time.monotonic() < deadline, "warm workers never reported"
        time.sleep(0.5)


def test_killing_the_podman_run_client_removes_its_container_and_never_lets_two_run(stack):
    fc = stack.client()
    fid = fc.register_source(SOURCE, "where", name="where-pod-2", runtime="pod")
    fc.call(fid, stack.endpoint_id)
    (before,) = _containers(stack.endpoint_id, runtime="pod")
    client = subprocess.run(["pgrep", "-f", f"podman run --rm --name {before} "], capture_output=True, text=True, check=True)
    os.kill(int(client.stdout.split()[0]), signal.SIGKILL)  # one process, as the OOM killer would
    # The block script removes the container at once; max_blocks 1 holds: never two at a time.
    deadline = time.monotonic() + 30
    while before in _containers(stack.endpoint_id, runtime="pod"):
        assert len(_containers(stack.endpoint_id, runtime="pod")) <= 1
        assert time.monotonic() < deadline, f"container {before} still running after its podman run client was killed"
        time.sleep(0.2)
    assert fc.call(fid, stack.endpoint_id)["container"]  # a new block serves the next call
    running = _containers(stack.endpoint_id, runtime="pod")
    assert len(running) == 1 and running != [before]


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


def test_missing_image_is_one_line_before_any_block_starts_while_other_runtimes_keep_working(stack):
    fc = stack.client()
    fid = _register(fc, "where-missing", "pod-missing", "podman", "localhost/fnserve-no-such-image:1")
    ok_fn = fc.register_source(SOURCE, "where", name="where-venv-2", runtime="py-venv")
    bad = fc.run(fid, stack.endpoint_id)
    good = fc.run(ok_fn, stack.endpoint_id)
    assert fc.get_result(good, timeout=60)["prefix"] == str(stack.venv)
    with pytest.raises(TaskFailed) as failed:
        fc.get_result(bad, timeout=30)
    assert failed.value.code == "runtime_unavailable"
    assert (": runtime 'pod-missing' (podman localhost/fnserve-no-such-image:1): image not found: localhost/fnserve-no-such-image:1 "
            "(podman has no such local image") in failed.value.message
    assert "\n" not in failed.value.message
    assert not (stack.run_dir / "runtimes" / "pod-missing").exists()  # found before any block: nothing was started
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


def test_apptainer_runs_the_pool_with_the_exec_line_spython_builds_and_a_clean_environment(stack):
    """Against the STAND-IN apptainer binary, which logs the command lines it is given."""
    fc = stack.client()
    fid = _register(fc, "where-apt", "apt", "apptainer", "/images/worker.sif")
    runs = [fc.call(fid, stack.endpoint_id) for _ in range(4)]
    assert len({r["pid"] for r in runs}) <= stack.workers  # warm in its own pool
    sif = stack.sif
    assert {r["apptainer"] for r in runs} == {sif}  # inside the (stand-in) container
    assert {r["canary"] for r in runs} == {None}  # --cleanenv: the endpoint's environment did not leak in
    assert fc.call(fc.register_source(SOURCE, "where", name="where-host-2"), stack.endpoint_id)["canary"] == "host-only"

    task = fc.wait([fc.run(fid, stack.endpoint_id)], 60)[0]
    where = task["placement"]
    (line,) = stack.standin.invocations(contains=f"FNSERVE_RUNTIME=apt")
    run_dir = str(stack.run_dir / "runtimes" / "apt")
    pool_args = line[line.index("node_manager.pool") + 1:]
    assert line[:line.index("node_manager.pool") + 1] == [
        "apptainer", "exec", "--bind", run_dir, "--cleanenv",
        "--env", "FNSERVE_RUNTIME=apt", "--env", f"FNSERVE_BLOCK_ID={where['block']}", "--env", "FNSERVE_JOB_ID=",
        "--env", f"FNSERVE_CONTAINER={where['container']}", "--env", f"PYTHONPATH={REPO}",
        sif, sys.executable, "-m", "node_manager.pool"]
    assert f"--block_id={where['block']}" in pool_args and "--cert_dir" in pool_args
    assert where["container"] == f"fnserve-{stack.endpoint_id[:8]}-apt-b{where['block']}-{os.uname().nodename.split('.')[0]}"


def test_apptainer_instance_mode_starts_a_named_instance_per_block_and_execs_the_pool_into_it(stack):
    fc = stack.client()
    fid = _register(fc, "where-apt-inst", "apt-inst", "apptainer", "/images/worker.sif")
    task = fc.wait([fc.run(fid, stack.endpoint_id)], 90)[0]
    name = task["placement"]["container"]
    starts = stack.standin.invocations(contains="start")
    execs = stack.standin.invocations(contains=f"instance://{name}")
    assert [s[:3] for s in starts if name in s] == [["apptainer", "instance", "start"]]
    (start,) = [s for s in starts if name in s]
    assert start[-2:] == [stack.sif, name] and "--cleanenv" in start
    assert execs and execs[0][:3] == ["apptainer", "exec", "--cleanenv"]
    listed = subprocess.run(["apptainer", "instance", "list", "--json"], capture_output=True, text=True, check=True,
                            env={**os.environ, **stack.standin.env(os.environ["PATH"])})
    assert name in listed.stdout


def test_apptainer_missing_image_is_one_line_at_once(stack):
    fc = stack.client()
    gone = _register(fc, "where-apt-missing", "apt-missing", "apptainer", "/images/gone.sif")
    with pytest.raises(TaskFailed) as failed:
        fc.get_result(fc.run(gone, stack.endpoint_id), timeout=30)
    assert failed.value.code == "runtime_unavailable"
    assert "runtime 'apt-missing'" in failed.value.message and "image not found" in failed.value.message
    assert "gone.sif" in failed.value.message and "\n" not in failed.value.message


def test_charliecloud_runtime_runs_in_the_image_directory(stack):
    fc = stack.client()
    fid = _register(fc, "where-ch", "ch", "charliecloud", str(IMAGE_DIR / "rootfs"))
    runs = [fc.call(fid, stack.endpoint_id) for _ in range(3)]
    assert {r["prefix"] for r in runs} == {"/opt/python"}  # the image's Python, not the host's
    assert len({r["pid"] for r in runs}) <= stack.workers


def test_containers_an_earlier_run_left_are_removed_when_the_endpoint_starts(stack):
    # A container labelled as this endpoint's (as a SIGKILLed site manager would leave one).
    orphan = f"fnserve-{stack.endpoint_id[:8]}-pod-b99-orphan"
    subprocess.run(["podman", "run", "-d", "--rm", "--name", orphan, "--label", f"fnserve.endpoint={stack.endpoint_id}",
                    "--label", "fnserve.runtime=pod", "--label", "fnserve.block=99", IMAGE, "python3", "-c",
                    "import time; time.sleep(600)"], check=True, capture_output=True)
    assert orphan in _containers(stack.endpoint_id, runtime="pod")
    stack.cli("endpoint", "restart", "local")
    assert orphan not in _containers(stack.endpoint_id, runtime="pod")
    # Removed, and said so: by the new site manager's start, or already by the old one's stop (it
    # carries this endpoint's label), whichever came first; the line may name other containers too.
    removed = [line for line in (stack.run_dir.parent / "site_manager.log").read_text().splitlines()
               if "removed podman container(s)" in line]
    assert any(orphan in line for line in removed), removed
    # The restart also ended the Apptainer instance of the instance-mode runtime (its block's script stopped it).
    assert not list(stack.standin.state.glob("*.json"))
