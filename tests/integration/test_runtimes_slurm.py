"""Container runtimes inside batch blocks: a Slurm endpoint whose runtimes are podman, Docker,
Charliecloud and Apptainer (the STAND-IN binary, tests/integration/apptainer_standin.py) starts
each worker pool inside its container inside the sbatch job, keeps a hot spare as a warm block,
and records on each task the block's batch job and the container. The same through Torque's
commands (slurm-wlm-torque's qsub/qstat/qdel over Slurm, a stand-in for a Torque server) and PBS
Pro's (tests/integration/pbspro_standin.py, a stand-in for a PBS Pro server). GPUs: made-up
accelerator ids, one per worker, passed into the container (--nv).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apptainer_support import install, make_sif
from runtime_support import IMAGE, IMAGE_DIR, build_image, require_docker

from tests.integration.slurm_support import REPO, Stack, batch_jobs, require_slurm
from tests.integration.stack_support import FNSERVE

pytestmark = pytest.mark.integration

FAKE_GPUS = ["fake-gpu-a", "fake-gpu-b"]
ENGINE = {"max_workers_per_node": 2, "heartbeat_period": 1, "heartbeat_threshold": 4, "available_accelerators": FAKE_GPUS}
PBS_STANDIN = Path(__file__).with_name("pbspro_standin.py")


def where_in_block(seconds: float = 0.0) -> dict:
    """Runs on a worker (serialized as source): what it sees of its container and GPU."""
    import os
    import sys
    import time

    time.sleep(seconds)
    with open("/proc/1/cmdline", "rb") as f:
        pid1 = f.read()
    return {"prefix": sys.prefix, "pid1_is_pool": b"node_manager.pool" in pid1, "apptainer": os.environ.get("APPTAINER_CONTAINER"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "rocr": os.environ.get("ROCR_VISIBLE_DEVICES")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_slurm()
    require_docker()
    image = build_image()
    tmp = tmp_path_factory.mktemp("fnserve-slurm-runtimes")
    standin = install(tmp)  # STAND-IN for Apptainer
    sif = make_sif(tmp / "worker.sif")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in standin.env(os.environ["PATH"]).items():
            mp.setenv(key, value)
        (tmp / "home").mkdir()
        s = Stack(tmp / "home")
        s.up()
        s.standin, s.sif, s.image = standin, str(sif), image
        idle = {"max_idletime": 5, "max_blocks": 1}
        runtimes = {
            "pod": {"type": "podman", "image": image, **idle},
            "dock": {"type": "docker", "image": image, **idle},
            "ch": {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs"), **idle},
            "apt": {"type": "apptainer", "image": str(sif), "python": sys.executable, "env": {"PYTHONPATH": str(REPO)},
                    "gpus": "nvidia", **idle},
            "spare": {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs"), "min_warm_workers": 1},
        }
        s.configure("ctr", "slurm", engine=ENGINE, provider={"walltime": "00:10:00"},
                    scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 5},
                    worker_init="", runtimes=runtimes)
        s.cli("endpoint", "start", "ctr")
        fc = s.client()
        for name, spec in {**runtimes, "tq-ch": runtimes["ch"], "pbs-pod": runtimes["pod"]}.items():
            fc.register_runtime(name, spec["type"], image=spec["image"])  # the name links registry and endpoint
        try:
            yield s
        finally:
            s.down()
    for name in ("ctr", "tq", "pbs"):
        assert batch_jobs(s.endpoint_dir(name) / "run") == [], f"batch jobs of {name} left after fnserve down"
    out = subprocess.run(["podman", "ps", "-q", "--filter", f"label=fnserve.endpoint={s.endpoint_id('ctr')}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", "containers left after fnserve down"


@pytest.mark.parametrize("runtime", ["pod", "dock", "ch", "apt"])
def test_each_container_runtime_runs_inside_the_sbatch_job_and_the_task_names_job_and_container(stack: Stack, runtime: str) -> None:
    fc = stack.client()
    endpoint_id = stack.endpoint_id("ctr")
    fid = fc.register_function(where_in_block, serializer="source")
    task = fc.wait([fc.submit(fid, endpoint_id, runtime=runtime)], 180)[0]
    assert task["state"] == "success", task
    inside = fc.get_result(task["task_id"])
    placement = task["placement"]
    # The task ran in this runtime's block: a batch job of its own engine, still in the queue.
    assert placement["job_id"] in batch_jobs(stack.endpoint_dir("ctr") / "run" / "runtimes" / runtime)
    assert placement["runtime"] == runtime
    assert placement["container"].startswith(f"fnserve-{endpoint_id[:8]}-{runtime}-b{placement['block']}-")
    if runtime == "apt":
        assert inside["apptainer"] == stack.sif  # inside the (stand-in) Apptainer container
    else:
        assert inside["prefix"] == "/opt/python"  # the image's Python
    if runtime in ("pod", "dock"):
        assert inside["pid1_is_pool"]  # its own PID namespace
        binary = "podman" if runtime == "pod" else "docker"
        labels = subprocess.run([binary, "inspect", "--format", "{{json .Config.Labels}}", placement["container"]],
                                capture_output=True, text=True, check=True).stdout
        assert f'"fnserve.job":"{placement["job_id"]}"' in labels and f'"fnserve.endpoint":"{endpoint_id}"' in labels
    # Each worker got its own accelerator id (engine.available_accelerators), inside the container too.
    assert inside["cuda"] in FAKE_GPUS and inside["rocr"] == inside["cuda"]


def test_made_up_gpus_one_per_worker_reach_the_apptainer_container_with_nv(stack: Stack) -> None:
    fc = stack.client()
    endpoint_id = stack.endpoint_id("ctr")
    fid = fc.register_function(where_in_block, serializer="source")
    tasks = [fc.submit(fid, endpoint_id, [3.0], runtime="apt") for _ in range(2)]  # both workers at once
    seen = {fc.get_result(t, timeout=120)["cuda"] for t in tasks}
    assert seen == set(FAKE_GPUS)
    execs = stack.standin.invocations(contains="FNSERVE_RUNTIME=apt")
    assert execs and all(line[:3] == ["apptainer", "exec", "--nv"] for line in execs)


def test_a_hot_spare_is_a_warm_block_that_serves_the_first_call(stack: Stack) -> None:
    fc = stack.client()
    endpoint_id = stack.endpoint_id("ctr")
    spare_run = stack.endpoint_dir("ctr") / "run" / "runtimes" / "spare"
    (job,) = batch_jobs(spare_run)  # started with the endpoint, before any task for it
    fid = fc.register_function(where_in_block, serializer="source")
    task = fc.wait([fc.submit(fid, endpoint_id, runtime="spare")], 60)[0]
    assert task["placement"]["job_id"] == job
    assert batch_jobs(spare_run) == [job]  # the same warm block, no new job


def _second_endpoint(stack: Stack, name: str, provider: dict, runtime: tuple[str, dict], env: dict[str, str]) -> str:
    stack.configure(name, "slurm", engine={**ENGINE, "available_accelerators": []}, provider=provider,
                    launcher={"type": "single_node"}, worker_init="",
                    scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 60},
                    runtimes={runtime[0]: {**runtime[1], "max_idletime": 60}})
    out = subprocess.run([*FNSERVE, "endpoint", "start", name],
                         env={**stack.env, **env}, capture_output=True, text=True, timeout=180, cwd=stack.home, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return stack.endpoint_id(name)


def test_torque_endpoint_runs_a_charliecloud_runtime_inside_its_qsub_job(stack: Stack) -> None:
    """Torque STAND-IN: slurm-wlm-torque's qsub/qstat/qdel over the real Slurm."""
    fc = stack.client()
    endpoint_id = _second_endpoint(stack, "tq", {"type": "torque", "walltime": "00:10:00"},
                                   ("tq-ch", {"type": "charliecloud", "image": str(IMAGE_DIR / "rootfs")}), {})
    fid = fc.register_function(where_in_block, serializer="source")
    task = fc.wait([fc.submit(fid, endpoint_id, runtime="tq-ch")], 180)[0]
    assert fc.get_result(task["task_id"])["prefix"] == "/opt/python"
    run = stack.endpoint_dir("tq") / "run" / "runtimes" / "tq-ch"
    assert batch_jobs(run) == [task["placement"]["job_id"]]
    script = next((run / "submit_scripts").glob("*.submit")).read_text()
    assert "#PBS -l walltime=00:10:00" in script and f"bash {run}/block.sh" in script
    stack.cli("endpoint", "stop", "tq", timeout=120)
    assert batch_jobs(run) == []


def test_pbspro_endpoint_runs_a_podman_runtime_inside_its_qsub_job(stack: Stack, tmp_path: Path) -> None:
    """PBS Pro STAND-IN: qsub/qstat/qdel (tests/integration/pbspro_standin.py) over the real Slurm."""
    bin_dir = tmp_path / "pbsbin"
    bin_dir.mkdir()
    for name in ("qsub", "qstat", "qdel"):
        (bin_dir / name).symlink_to(PBS_STANDIN)
    calls = tmp_path / "pbs-calls.jsonl"
    env = {"PATH": f"{bin_dir}:{stack.env['PATH']}", "PBS_STANDIN_LOG": str(calls)}
    fc = stack.client()
    endpoint_id = _second_endpoint(stack, "pbs", {"type": "pbspro", "queue": "workq", "cpus_per_node": 1, "walltime": "00:10:00"},
                                   ("pbs-pod", {"type": "podman", "image": stack.image}), env)
    fid = fc.register_function(where_in_block, serializer="source")
    task = fc.wait([fc.submit(fid, endpoint_id, runtime="pbs-pod")], 180)[0]
    inside = fc.get_result(task["task_id"])
    assert inside["prefix"] == "/opt/python" and inside["pid1_is_pool"]
    run = stack.endpoint_dir("pbs") / "run" / "runtimes" / "pbs-pod"
    assert batch_jobs(run) == [task["placement"]["job_id"]]
    script = next(p for p in (run / "submit_scripts").iterdir() if not p.name.endswith((".stdout", ".stderr"))).read_text()
    assert "#PBS -l select=1:ncpus=1" in script and f"bash {run}/block.sh" in script
    logged = calls.read_text()
    assert '["qsub", "-q", "workq"' in logged and '"qstat", "-x", "-f", "-F", "json"' in logged
    subprocess.run([*FNSERVE, "endpoint", "stop", "pbs"],
                   env={**stack.env, **env}, capture_output=True, text=True, timeout=120, cwd=stack.home, check=True)
    assert batch_jobs(run) == [] and '"qdel"' in calls.read_text()
