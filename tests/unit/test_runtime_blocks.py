"""Block scripts: the exact command each runtime's worker pool starts with (pure; spython builds
Apptainer's), valid bash, names and labels, GPUs, and one-line start failures."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from site_manager.runtimes import BlockContext, RuntimeConfig, block_script, start_failure
from site_manager.runtimes.apptainer import exec_argv, instance_start_argv
from site_manager.runtimes.blocks import read_exit_notes

CTX = BlockContext("5f1c2a3b-0000-4000-8000-000000000000", Path("/tmp"), local=True)
PLACEMENT_ENV = ['"FNSERVE_RUNTIME=$FNSERVE_RUNTIME"', '"FNSERVE_BLOCK_ID=$FNSERVE_BLOCK_ID"',
                 '"FNSERVE_JOB_ID=$FNSERVE_JOB_ID"', '"FNSERVE_CONTAINER=$FNSERVE_CONTAINER"']


def _line(script: str, start: str) -> str:
    return next(ln for ln in script.splitlines() if ln.startswith(start))


def _bash_ok(script: str) -> None:
    out = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_podman_block_runs_a_named_labelled_container_from_local_images_and_removes_it_however_it_ends():
    rt = RuntimeConfig("sci", "podman", image="localhost/w:1", env={"OMP_NUM_THREADS": "1"}, binds=("/scratch:/data:ro",),
                       run_options=("--cpus=2",))
    script = block_script(rt, CTX)
    _bash_ok(script)
    run = _line(script, "podman run")
    assert run == (
        'podman run --rm --name "$name" --label fnserve.endpoint=5f1c2a3b-0000-4000-8000-000000000000 --label fnserve.runtime=sci '
        '--label "fnserve.block=$block" --label "fnserve.job=$FNSERVE_JOB_ID" --pull=never --network host -v /tmp:/tmp '
        '-v /scratch:/data:ro -e FNSERVE_RUNTIME -e FNSERVE_BLOCK_ID -e FNSERVE_JOB_ID -e FNSERVE_CONTAINER '
        '-e OMP_NUM_THREADS=1 --cpus=2 localhost/w:1 python3 -m node_manager.pool "$@" &')
    assert 'export FNSERVE_CONTAINER="fnserve-5f1c2a3b-sci-b$block-$(hostname -s)"' in script
    assert "trap 'rc=$?; mkdir -p /tmp/ended && echo \"$rc\" > /tmp/ended/\"$block\"; podman rm -f -t 0 \"$name\" >/dev/null 2>&1' EXIT" in script
    assert 'wait "$pid"' in script


def test_a_block_whose_container_dies_leaves_an_exit_note_with_its_status(tmp_path):
    """The block script really runs, with a `podman` on PATH whose container is killed (137)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "podman").write_text('#!/bin/sh\n[ "$1" = run ] && kill -9 $$\nexit 0\n')
    (fake / "podman").chmod(0o755)
    run_dir = tmp_path / "run"
    script = block_script(RuntimeConfig("sci", "podman", image="localhost/w:1"), BlockContext(CTX.endpoint_id, run_dir))
    out = subprocess.run(["bash", "-c", script, "block.sh", "7", "--arg"], env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 137, out.stderr
    assert read_exit_notes(run_dir) == {"7": "137"}


def test_docker_block_uses_dockers_own_remove_and_gpu_flags():
    script = block_script(RuntimeConfig("dk", "docker", image="w:1", gpus="nvidia", pull="missing"), CTX)
    _bash_ok(script)
    run = _line(script, "docker run")
    assert "--pull=missing" in run and "--gpus all" in run and " w:1 python3 -m node_manager.pool" in run
    assert "; docker rm -f \"$name\" >/dev/null 2>&1' EXIT" in script
    podman_gpu = _line(block_script(RuntimeConfig("p", "podman", image="w", gpus="nvidia"), CTX), "podman run")
    assert "--device nvidia.com/gpu=all" in podman_gpu  # CDI
    amd = _line(block_script(RuntimeConfig("p", "podman", image="w", gpus="amd"), CTX), "podman run")
    assert "--device /dev/kfd --device /dev/dri" in amd


def test_apptainer_exec_line_is_spythons_with_cleanenv_the_needed_environment_binds_and_nv():
    rt = RuntimeConfig("apt", "apptainer", image="/images/w.sif", gpus="nvidia", binds=("/tmp",), env={"PYTHONPATH": "/src"},
                       command="/opt/apptainer/bin/apptainer")
    argv = exec_argv(rt, CTX, rt.image)
    assert [str(a) for a in argv] == [
        "/opt/apptainer/bin/apptainer", "exec", "--nv", "--bind", "/tmp", "--bind", "/tmp", "--cleanenv",
        *[x for pair in zip(["--env"] * 4, PLACEMENT_ENV) for x in pair], "--env", "PYTHONPATH=/src",
        "/images/w.sif", "python3", "-m", "node_manager.pool"]
    script = block_script(rt, CTX)
    _bash_ok(script)
    assert _line(script, "exec ").endswith('/images/w.sif python3 -m node_manager.pool "$@"')


def test_apptainer_instance_mode_starts_execs_and_stops_a_named_instance():
    rt = RuntimeConfig("apt", "singularity", image="docker://ghcr.io/x/w:1", instance=True, gpus="amd")
    start = [str(a) for a in instance_start_argv(rt, CTX, "NAME")]
    assert start[:5] == ["singularity", "instance", "start", "--bind", "/tmp"]
    assert start[-2:] == ["docker://ghcr.io/x/w:1", "NAME"] and "--rocm" in start and "--cleanenv" in start
    script = block_script(rt, CTX)
    _bash_ok(script)
    assert "singularity instance start" in script and '"$name" || exit $?' in script
    assert _line(script, "singularity exec --cleanenv").endswith('"instance://$name" python3 -m node_manager.pool "$@" &')
    assert "trap 'singularity instance stop \"$name\" >/dev/null 2>&1' EXIT" in script


def test_charliecloud_and_venv_blocks():
    ch = block_script(RuntimeConfig("ch", "charliecloud", image="/img/dir", env={"A": "b c"}), CTX)
    _bash_ok(ch)
    assert shlex.split(_line(ch, "exec ").replace('"$@"', "")) == [
        "exec", "ch-run", "--unset-env=PYTHONPATH", "--bind=/tmp:/tmp", "--set-env=A=b c", "/img/dir", "--", "python3", "-m",
        "node_manager.pool"]
    venv = block_script(RuntimeConfig("v", "venv", python="/opt/my env/bin/python"), CTX)
    _bash_ok(venv)
    assert _line(venv, "exec ") == "exec '/opt/my env/bin/python' -I -m node_manager.pool \"$@\""


@pytest.mark.parametrize("rt, output, expected", [
    (RuntimeConfig("p", "podman", image="localhost/nope:1"),
     "Trying to pull...\nError: localhost/nope:1: image not known",
     "runtime 'p' (podman localhost/nope:1): image not found: localhost/nope:1 (podman has no such local image; build or "
     "pull it on the nodes, or set pull: missing)"),
    (RuntimeConfig("a", "apptainer", image="/i/gone.sif"),
     "FATAL:   could not open image /i/gone.sif: failed to retrieve path for /i/gone.sif: lstat /i/gone.sif: no such file",
     "runtime 'a' (apptainer /i/gone.sif): image not found: /i/gone.sif (no such image there; build it (fnserve runtime build) "
     "or fix `image`)"),
    (RuntimeConfig("v", "venv", python="/v/bin/python"),
     "fnserve worker pool: /v/bin/python (Python 3.11.2) cannot import node_manager: install fnserve[site] into this runtime",
     "runtime 'v' (venv /v/bin/python): its workers did not start: fnserve worker pool: /v/bin/python (Python 3.11.2) cannot "
     "import node_manager: install fnserve[site] into this runtime; install fnserve[site] (with Parsl) into that environment or image"),
])
def test_a_runtime_that_cannot_start_is_said_in_one_line(rt, output, expected):
    line = start_failure(rt, output)
    assert line == expected and "\n" not in line
