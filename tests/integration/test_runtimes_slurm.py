"""Container runtimes inside batch blocks: a Slurm endpoint whose runtimes are podman, Docker,
Charliecloud and Apptainer (the STAND-IN binary, tests/integration/apptainer_standin.py) starts
each worker pool inside its container inside the sbatch job, records on each task the block's batch job and the container, and re-runs at once the task of a
container killed under it. The same through Torque's commands (slurm-wlm-torque's
qsub/qstat/qdel over Slurm, a stand-in for a Torque server) and PBS Pro's
(tests/integration/pbspro_standin.py, a stand-in for a PBS Pro server), whose runtime keeps a hot
spare as a warm block. GPUs: made-up
accelerator ids, one per worker, passed into the container (--nv).

Lean by design (the test node has 2 CPUs, so at most 2 batch jobs run at once): one stack and
one Slurm endpoint for the module; no block holds a CPU for the whole module (a hot spare that
did starved every other block whenever another job held the second CPU); every runtime's first
task is submitted at once and the blocks take turns (each gives its CPU back 1 s after going
idle); the Torque and PBS Pro endpoints start side by side; waits are conditions with deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from apptainer_support import install, make_sif
from runtime_support import IMAGE_DIR, build_image, require_docker

from fnserve.testing.stack import Stack
from tests.integration.slurm_support import batch_jobs, require_slurm, wait_for
from tests.integration.stack_support import REPO
from fnserve.testing.stack import FNSERVE

# 600 s: the first test also sets up the stack, and its blocks wait behind any other job on the 2-CPU node.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FAKE_GPUS = ["fake-gpu-a", "fake-gpu-b"]
# heartbeat_threshold as in production (120 s): a dead container's task must be re-run long
# before the interchange would give up on its workers.
# Half a core per worker: a block of two workers asks Slurm for 1 CPU (site_manager.block_size), so
# two blocks run side by side on the 2-CPU test node.
ENGINE = {"max_workers_per_node": 2, "cores_per_worker": 0.5, "heartbeat_period": 2, "heartbeat_threshold": 120, "available_accelerators": FAKE_GPUS}
PBS_STANDIN = Path(__file__).with_name("pbspro_standin.py")
CONTAINERS = ["pod", "dock", "ch", "apt"]
QUICK = {"max_idletime": 1, "max_blocks": 1}  # the CPU goes back to the queue 1 s after the last task


def ran_from(job_id: str, run_dir: Path) -> bool:
    """Whether Slurm ran batch job ``job_id`` from a submit script under ``run_dir`` (Slurm keeps
    ended jobs for MinJobAge, 60 s here)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=False)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return fields.get("Command", "").startswith(str(run_dir))


def where_in_block(barrier: str = "", parties: int = 0) -> dict:
    """Runs on a worker (serialized as source): what it sees of its container and GPU. With a
    barrier folder, it first waits (30 s at most) until ``parties`` tasks have reached it."""
    import os
    import sys
    import time

    if barrier:
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(barrier)) < parties and time.monotonic() < deadline:
            time.sleep(0.05)
    with open("/proc/1/cmdline", "rb") as f:
        pid1 = f.read()
    return {"prefix": sys.prefix, "pid1_is_pool": b"node_manager.pool" in pid1, "apptainer": os.environ.get("APPTAINER_CONTAINER"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "rocr": os.environ.get("ROCR_VISIBLE_DEVICES"),
            "together": len(os.listdir(barrier)) if barrier else 0}


def count_then_hang(path: str) -> int:
    """Runs on a worker: appends one line per execution to ``path``; the first execution hangs."""
    import time

    with open(path, "a") as f:
        f.write("ran\n")
    with open(path) as f:
        runs = len(f.readlines())
    if runs == 1:
        time.sleep(600)  # killed with its container
    return runs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_slurm()
    require_docker()
    image = build_image()
    tmp = tmp_path_factory.mktemp("fnserve-slurm-runtimes")
    standin = install(tmp)  # STAND-IN for Apptainer
    sif = make_sif(tmp / "worker.sif")
    shared = tmp / "shared"  # bound into the podman containers (side-effect files)
    shared.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in standin.env(os.environ["PATH"]).items():
            mp.setenv(key, value)
        (tmp / "home").mkdir()
        s = Stack(tmp / "home")
        s.up()
        s.standin, s.sif, s.image, s.shared = standin, str(sif), image, shared
        runtimes = {
            "pod": {"type": "podman", "image": image, "binds": [str(shared)], **QUICK},
            "dock": {"type": "docker", "image": image, **QUICK},
            "ch": {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs"), **QUICK},
            "apt": {"type": "apptainer", "image": str(sif), "python": sys.executable, "env": {"PYTHONPATH": str(REPO)},
                    "gpus": "nvidia", **QUICK},
        }
        s.configure("ctr", "slurm", engine=ENGINE, provider={"walltime": "00:10:00"},
                    scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 1},
                    worker_init="", runtimes=runtimes)
        s.cli("endpoint", "start", "ctr")
        fc = s.client()
        for name, spec in {**runtimes, "tq-ch": runtimes["ch"], "pbs-pod": runtimes["pod"]}.items():
            fc.register_runtime(name, spec["type"], image=spec["image"])  # the name links registry and endpoint
        s.fid = fc.register_function(where_in_block, serializer="source")
        try:
            yield s
        finally:
            s.down(check=False)
    for name in ("ctr", "tq", "pbs"):
        assert batch_jobs(s.endpoint_dir(name) / "run") == [], f"batch jobs of {name} left after fnserve down"
    out = subprocess.run(["podman", "ps", "-q", "--filter", f"label=fnserve.endpoint={s.id_of('ctr')}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", "containers left after fnserve down"


@pytest.fixture(scope="module")
def first_calls(stack: Stack) -> dict[str, tuple[dict, Any, list[str], bool]]:
    """One task per container runtime, all submitted at once: runtime -> (task, its result, the
    runtime's batch jobs in the queue when the task finished, whether its job ran from the
    runtime's run directory)."""
    fc = stack.client()
    endpoint_id = stack.id_of("ctr")
    ids = {fc.submit(stack.fid, endpoint_id, runtime=rt): rt for rt in CONTAINERS}
    out: dict[str, tuple[dict, Any, list[str], bool]] = {}
    deadline = time.monotonic() + 240
    while len(out) < len(ids):
        assert time.monotonic() < deadline, f"not every runtime answered within 240 s: {sorted(out)} did"
        for task in fc.wait([t for t in ids if ids[t] not in out], 60, return_when="FIRST_COMPLETED"):
            if task["state"] in ("success", "failed"):
                rt = ids[task["task_id"]]
                assert task["state"] == "success", task
                run_dir = stack.endpoint_dir("ctr") / "run" / "runtimes" / rt
                # Asked now: Slurm forgets an ended job after MinJobAge (60 s here).
                ran_here = ran_from(task["placement"]["job_id"], run_dir)
                out[rt] = (task, fc.get_result(task["task_id"]), batch_jobs(run_dir), ran_here)
    return out


@pytest.mark.parametrize("runtime", CONTAINERS)
def test_each_container_runtime_runs_inside_the_sbatch_job_and_the_task_names_job_and_container(
        stack: Stack, first_calls: dict, runtime: str) -> None:
    task, inside, _, ran_here = first_calls[runtime]
    endpoint_id = stack.id_of("ctr")
    placement = task["placement"]
    assert ran_here  # the task ran in this runtime's block: a batch job of its own engine
    assert placement["runtime"] == runtime
    assert placement["container"].startswith(f"fnserve-{endpoint_id[:8]}-{runtime}-b{placement['block']}-")
    if runtime == "apt":
        assert inside["apptainer"] == stack.sif  # inside the (stand-in) Apptainer container
    else:
        assert inside["prefix"] == "/opt/python"  # the image's Python
    if runtime in ("pod", "dock"):
        assert inside["pid1_is_pool"]  # its own PID namespace
        binary = "podman" if runtime == "pod" else "docker"
        shown = subprocess.run([binary, "inspect", "--format", "{{json .Config.Labels}}", placement["container"]],
                               capture_output=True, text=True, check=False)
        if shown.returncode == 0:  # while the block runs (it is reaped 1 s after going idle)
            labels = shown.stdout
            assert f'"fnserve.job":"{placement["job_id"]}"' in labels and f'"fnserve.endpoint":"{endpoint_id}"' in labels
    # Each worker got its own accelerator id (engine.available_accelerators), inside the container too.
    assert inside["cuda"] in FAKE_GPUS and inside["rocr"] == inside["cuda"]


def test_made_up_gpus_one_per_worker_reach_the_apptainer_container_with_nv(stack: Stack, tmp_path: Path) -> None:
    fc = stack.client()
    endpoint_id = stack.id_of("ctr")
    tasks = [fc.submit(stack.fid, endpoint_id, [str(tmp_path), 2], runtime="apt") for _ in range(2)]
    results = [fc.get_result(t, timeout=120) for t in tasks]
    assert [r["together"] for r in results] == [2, 2]  # both workers at once
    assert {r["cuda"] for r in results} == set(FAKE_GPUS)
    execs = stack.standin.invocations(contains="FNSERVE_RUNTIME=apt")
    assert execs and all(line[:3] == ["apptainer", "exec", "--nv"] for line in execs)


def test_a_task_whose_container_is_killed_is_rerun_at_once_on_a_new_block(stack: Stack) -> None:
    fc = stack.client()
    endpoint_id = stack.id_of("ctr")
    runs = stack.shared / "runs.txt"
    fid = fc.register_function(count_then_hang, serializer="source")
    task_id = fc.submit(fid, endpoint_id, [str(runs)], runtime="pod")
    wait_for(lambda: runs.exists(), 240, "the first execution to start")  # its block may queue behind other jobs
    (first_block_job,) = batch_jobs(stack.endpoint_dir("ctr") / "run" / "runtimes" / "pod")
    (container,) = subprocess.run(["podman", "ps", "--filter", f"label=fnserve.endpoint={endpoint_id}", "--filter",
                                   "label=fnserve.runtime=pod", "--format", "{{.Names}}"],
                                  capture_output=True, text=True, check=True).stdout.split()
    pid = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", container],
                             capture_output=True, text=True, check=True).stdout)
    os.kill(pid, signal.SIGKILL)  # the container's main process, as the OOM killer would
    # Failed and re-submitted at the next heartbeat after the block script's exit note: well before
    # the interchange's heartbeat_threshold (120 s) would say anything (the new block may then wait
    # in the queue like any job). The bound allows for podman's exit handling on a loaded CI host
    # (20 s was exceeded once when the note was written after the container's removal).
    wait_for(lambda: f"task {task_id}: block" in stack.log("ctr"), 45, "the site manager to notice the dead container")
    assert "its container exited with status 137 (killed); failing it now" in stack.log("ctr")
    assert fc.get_result(task_id, timeout=240) == 2
    assert runs.read_text().count("ran") == 2  # once killed, once re-run: never a third time
    assert fc.get_task(task_id)["placement"]["job_id"] != first_block_job


def _second_endpoint(stack: Stack, name: str, provider: dict, runtime: tuple[str, dict], env: dict[str, str]) -> subprocess.Popen:
    stack.configure(name, "slurm", engine={**ENGINE, "available_accelerators": []}, provider=provider,
                    launcher={"type": "single_node"}, worker_init="",
                    scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 1},
                    runtimes={runtime[0]: {**QUICK, **runtime[1]}})
    return subprocess.Popen([*FNSERVE, "endpoint", "start", name], env={**stack.env, **env}, cwd=stack.home,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _started(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out


def test_pbspro_with_a_hot_spare_and_torque_endpoints_run_runtimes_inside_their_qsub_jobs(stack: Stack, tmp_path: Path) -> None:
    """PBS Pro STAND-IN: qsub/qstat/qdel (tests/integration/pbspro_standin.py) over the real
    Slurm, its podman runtime a hot spare (a warm block from the start). Torque STAND-IN:
    slurm-wlm-torque's qsub/qstat/qdel over the real Slurm. Both endpoints start side by side;
    PBS Pro is stopped first, which gives its CPU to Torque's block."""
    bin_dir = tmp_path / "pbsbin"
    bin_dir.mkdir()
    for name in ("qsub", "qstat", "qdel"):
        (bin_dir / name).symlink_to(PBS_STANDIN)
    calls = tmp_path / "pbs-calls.jsonl"
    pbs_env = {"PATH": f"{bin_dir}:{stack.env['PATH']}", "PBS_STANDIN_LOG": str(calls)}
    pbs = _second_endpoint(stack, "pbs", {"type": "pbspro", "queue": "workq", "cpus_per_node": 1, "walltime": "00:10:00"},
                           ("pbs-pod", {"type": "podman", "image": stack.image, "min_warm_workers": 1}), pbs_env)
    tq = _second_endpoint(stack, "tq", {"type": "torque", "walltime": "00:10:00"},
                          ("tq-ch", {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs")}), {})
    _started(pbs)
    _started(tq)
    fc = stack.client()
    pbs_run = stack.endpoint_dir("pbs") / "run" / "runtimes" / "pbs-pod"
    tq_run = stack.endpoint_dir("tq") / "run" / "runtimes" / "tq-ch"

    # The hot spare: its block was submitted with the endpoint, before any task.
    (spare_job,) = wait_for(lambda: batch_jobs(pbs_run), 60, "the PBS Pro hot spare's batch job")
    tq_task = fc.submit(stack.fid, stack.id_of("tq"), runtime="tq-ch")
    (pbs_task,) = fc.wait([fc.submit(stack.fid, stack.id_of("pbs"), runtime="pbs-pod")], 180)
    assert pbs_task["state"] == "success", pbs_task
    assert pbs_task["placement"]["job_id"] == spare_job and batch_jobs(pbs_run) == [spare_job]  # served by the spare
    inside = fc.get_result(pbs_task["task_id"])
    assert inside["prefix"] == "/opt/python" and inside["pid1_is_pool"]
    script = next(p for p in (pbs_run / "submit_scripts").iterdir() if not p.name.endswith((".stdout", ".stderr"))).read_text()
    assert "#PBS -l select=1:ncpus=1" in script and f"bash {pbs_run}/block.sh" in script
    subprocess.run([*FNSERVE, "endpoint", "stop", "pbs"], env={**stack.env, **pbs_env}, capture_output=True, text=True,
                   timeout=120, cwd=stack.home, check=True)
    assert batch_jobs(pbs_run) == []
    logged = calls.read_text()
    assert '["qsub", "-q", "workq"' in logged and '"qstat", "-x", "-f", "-F", "json"' in logged and '"qdel"' in logged

    (tq_done,) = fc.wait([tq_task], 180)
    assert tq_done["state"] == "success", tq_done
    assert fc.get_result(tq_task)["prefix"] == "/opt/python"
    assert ran_from(tq_done["placement"]["job_id"], tq_run)
    script = next((tq_run / "submit_scripts").glob("*.submit")).read_text()
    assert "#PBS -l walltime=00:10:00" in script and f"bash {tq_run}/block.sh" in script
    stack.cli("endpoint", "stop", "tq", timeout=120)
    assert batch_jobs(tq_run) == []
