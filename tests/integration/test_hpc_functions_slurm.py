"""Shell and MPI functions on one real Slurm endpoint, through the SDK, the CLI and curl.

One stack (`fnserve up`) and one endpoint on the single-node Slurm (scripts/start_slurm.sh) with
an ``mpi`` section: plain tasks run on its host engine (an sbatch block with a worker pool), MPI
tasks in Parsl's MPI mode (MPIExecutor, another sbatch block) where each gets its node and
``$PARSL_MPI_PREFIX`` (OpenMPI's mpiexec from Debian; mpi4py from PyPI). Everything runs as root
here, which OpenMPI allows only with OMPI_ALLOW_RUN_AS_ROOT*; 2 ranks on a 1-CPU block need
--oversubscribe (the endpoint's launcher_options).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fnserve import Executor, MPIFunction, ShellFunction
from fnserve.errors import FnserveError
from fnserve.shell import ShellArgumentError
from fnserve.testing.stack import Stack
from tests.integration.slurm_support import batch_jobs, block_pool, job_processes, queued, require_slurm, wait_for
from tests.integration.stack_support import REPO

RESULT_WAIT = 300  # s: the single Slurm node is shared with other tests' blocks
# A block may wait in the Slurm queue behind other tests' blocks before the first task runs.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_slurm()
    for tool in ("mpicc", "mpiexec", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/test.sh installs openmpi-bin, libopenmpi-dev and curl")
    s = Stack(tmp_path_factory.mktemp("fnserve-hpc"))
    s.up()
    try:  # everything after `fnserve up` inside: a failed start still takes the stack down
        s.configure(
            "hpc", "slurm",
            engine={"max_workers_per_node": 1, "heartbeat_period": 2, "heartbeat_threshold": 10},
            provider={"walltime": "00:15:00"},
            scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 20},
            worker_init="export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
            mpi={"launcher": "openmpi", "nodes_per_block": 1, "max_workers_per_block": 1, "max_blocks": 1,
                 "max_idletime": 20, "launcher_options": "--oversubscribe"},
        )
        s.cli("endpoint", "start", "hpc")
        yield s
    finally:
        s.cli("endpoint", "stop", "hpc", check=False, timeout=180)
        s.down(check=False)


@pytest.fixture(scope="module")
def endpoint_id(stack: Stack) -> str:
    return stack.id_of("hpc")


def rank_lines(stdout: str) -> list[tuple[int, int, str]]:
    return [(int(m[1]), int(m[2]), m[3]) for m in re.finditer(r"rank (\d+) of (\d+) job (\S+)", stdout)]


# -- MPI -----------------------------------------------------------------------------------------


def test_compiled_c_mpi_hello_runs_two_ranks_in_one_slurm_block(stack: Stack, endpoint_id: str, tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text(textwrap.dedent("""\
        #include <mpi.h>
        #include <stdio.h>
        #include <stdlib.h>
        int main(int argc, char **argv) {
            int rank, size;
            MPI_Init(&argc, &argv);
            MPI_Comm_rank(MPI_COMM_WORLD, &rank);
            MPI_Comm_size(MPI_COMM_WORLD, &size);
            const char *job = getenv("SLURM_JOB_ID");
            printf("rank %d of %d job %s says %s\\n", rank, size, job ? job : "none", argv[1]);
            MPI_Finalize();
            return 0;
        }
    """))
    exe = tmp_path / "hello"
    subprocess.run(["mpicc", "-o", str(exe), str(source)], check=True, capture_output=True, timeout=120)
    fc = stack.client()
    with Executor(endpoint_id, client=fc, resource_specification={"num_ranks": 2}) as ex:
        done = ex.submit(MPIFunction(f"{exe} {{word}}"), word="hello world").result(timeout=RESULT_WAIT)
    assert done["returncode"] == 0, done
    ranks = rank_lines(done["stdout"])
    assert sorted(r for r, _, _ in ranks) == [0, 1] and {size for _, size, _ in ranks} == {2}
    jobs = {job for _, _, job in ranks}
    assert len(jobs) == 1 and jobs != {"none"}
    assert done["stdout"].count("says hello world") == 2
    # The ranks ran in the MPI engine's own block (its sbatch job, idle for a while yet).
    assert done["command"].startswith("$PARSL_MPI_PREFIX ")
    assert jobs <= set(batch_jobs(stack.endpoint_dir("hpc") / "run" / "mpi"))


def test_mpi4py_program_with_two_ranks_reports_rank_and_job(stack: Stack, endpoint_id: str, tmp_path: Path) -> None:
    program = tmp_path / "ranks.py"
    program.write_text(textwrap.dedent("""\
        import os
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
        print(f"rank {comm.Get_rank()} of {comm.Get_size()} job {os.environ.get('SLURM_JOB_ID')} sum {total}", flush=True)
    """))
    fc = stack.client()
    fid = fc.register_function(MPIFunction(f"{sys.executable} {{script}}", walltime=120))
    task_id = fc.submit(fid, endpoint_id, kwargs={"script": str(program)},
                        resource_specification={"num_nodes": 1, "ranks_per_node": 2})
    done = fc.get_result(task_id, timeout=RESULT_WAIT)
    assert done["returncode"] == 0, done
    ranks = rank_lines(done["stdout"])
    assert sorted(r for r, _, _ in ranks) == [0, 1] and len({job for _, _, job in ranks}) == 1
    assert done["stdout"].count("sum 3") == 2  # 1 + 2: the ranks really talked to each other
    assert fc.get_task(task_id)["resource_specification"] == {"num_nodes": 1, "ranks_per_node": 2}


def test_mpi_request_no_block_can_hold_is_refused_at_submit(stack: Stack, endpoint_id: str) -> None:
    # The endpoint told the service its MPI blocks' size when it connected.
    fc = stack.client()
    fid = fc.register_function(MPIFunction("true"))
    with pytest.raises(FnserveError) as info:
        fc.submit(fid, endpoint_id, resource_specification={"num_nodes": 4})
    assert info.value.code == "resources_never_fit" and info.value.http_status == 400 and "4 nodes" in str(info.value)


def test_mpi_example_computes_pi_on_two_ranks(stack: Stack, endpoint_id: str) -> None:
    out = subprocess.run([sys.executable, str(REPO / "examples" / "mpi_pi.py"), endpoint_id, "2"], env=stack.env,
                         capture_output=True, text=True, timeout=2 * RESULT_WAIT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert abs(report["pi"] - 3.141592653589793) < 1e-9 and report["ranks"] == 2
    assert sorted(w["rank"] for w in report["where"]) == [0, 1] and len({w["job"] for w in report["where"]}) == 1
    assert "from 2 MPI ranks" in out.stdout


def test_an_mpi_block_pool_killed_alone_leaves_none_of_its_processes_and_its_job_leaves_the_queue(
        stack: Stack, endpoint_id: str, tmp_path: Path) -> None:
    """kill -9 of the MPI block's worker pool by pid (the OOM killer, an admin): its workers,
    Parsl's Manager server and the running task's mpiexec and rank die with it, the batch job leaves
    the queue, and the task reruns on a new block and succeeds."""
    run_dir = stack.endpoint_dir("hpc") / "run" / "mpi"
    runs = tmp_path / "runs"
    script = tmp_path / "note_then_nap.sh"
    script.write_text(f'echo "$$" >> {runs}\nsleep 4\n')  # one line per execution of the rank
    fc = stack.client()
    fid = fc.register_function(MPIFunction(f"sh {script}"))
    task = fc.submit(fid, endpoint_id, resource_specification={"num_ranks": 1})
    wait_for(runs.exists, RESULT_WAIT, "the MPI task running in its block")
    [job] = batch_jobs(run_dir)
    procs = job_processes(job)
    pool, below = block_pool(procs)
    rank = int(runs.read_text().split()[0])
    assert rank in below, f"the rank {rank} is not below the pool {pool}: {procs}"
    os.kill(pool, 9)
    killed_at = time.monotonic()

    def left() -> dict[int, tuple[int, str]]:
        return {p: v for p, v in job_processes(job).items() if p in below}

    try:
        wait_for(lambda: not left(), 5, "the killed pool's processes gone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {left()}; job {job}: {queued(run_dir)}") from None
    wait_for(lambda: job not in queued(run_dir), 30, f"job {job} out of the queue ({queued(run_dir)})")
    done = fc.get_result(task, timeout=RESULT_WAIT)
    assert done["returncode"] == 0, done
    assert len(runs.read_text().split()) == 2, runs.read_text()  # ran once, killed, reran once
    print(f"MPI pool killed to task done: {time.monotonic() - killed_at:.1f} s")


# -- shell functions -----------------------------------------------------------------------------


def test_shell_function_from_the_sdk_gives_return_code_streams_and_sandbox(stack: Stack, endpoint_id: str, tmp_path: Path) -> None:
    data = tmp_path / "lines with spaces.txt"
    data.write_text("one\ntwo\nthree\n")
    fc = stack.client()
    count = ShellFunction("wc -l < {path} && pwd && echo {note} > note.txt && echo warn >&2 && exit {code}", sandbox=True)
    with Executor(endpoint_id, client=fc) as ex:
        ok = ex.submit(count, path=str(data), note="kept", code=0)
        failing = ex.submit(count, path=str(data), note="x", code=7)
        with pytest.raises(ShellArgumentError):  # checked before anything is sent
            ex.submit(count, path=str(data)).result(timeout=10)
        slow = ex.submit(ShellFunction("sleep 60", walltime=1))
        ok, failing, slow = ok.result(RESULT_WAIT), failing.result(RESULT_WAIT), slow.result(RESULT_WAIT)
    assert ok["returncode"] == 0 and ok["stderr"] == "warn\n"
    lines, box = ok["stdout"].splitlines(), ok["sandbox"]
    assert lines == ["3", box] and Path(box, "note.txt").read_text() == "kept\n"
    assert failing["returncode"] == 7 and failing["sandbox"] != box
    assert slow["returncode"] == 124 and slow["timed_out"] is True


def test_shell_function_from_the_cli(stack: Stack, endpoint_id: str) -> None:
    fid = stack.cli("register-shell", "printf '%s\\n' {words} | sort", "--walltime", "60").stdout.strip()
    out = stack.cli("run", fid, "-e", endpoint_id, "--kwargs", json.dumps({"words": ["pear", "apple"]}),
                    "--timeout", str(RESULT_WAIT))
    result = json.loads(out.stdout)
    assert result["returncode"] == 0 and result["stdout"] == "apple\npear\n"
    missing = stack.cli("run", fid, "-e", endpoint_id, "--kwargs", "{}", check=False)
    assert missing.returncode != 0 and "missing_placeholder" in missing.stderr + missing.stdout
    assert "{words}" in missing.stderr + missing.stdout


def test_shell_function_with_curl_only(stack: Stack, endpoint_id: str) -> None:
    auth = ["-H", f"Authorization: Bearer {stack.token}", "-H", "Content-Type: application/json"]

    def curl(path: str, body: dict | None = None) -> dict:
        cmd = ["curl", "-sS", *auth, f"{stack.url}{path}"] + (["-d", json.dumps(body)] if body is not None else [])
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=RESULT_WAIT + 60).stdout)

    fid = curl("/v1/functions", {"name": "greet", "shell": {"command": "echo hello {name}; exit 3", "walltime": 30}})["function_id"]
    refused = curl("/v1/tasks", {"tasks": [{"function_id": fid, "endpoint_id": endpoint_id, "kwargs": {}}]})
    assert refused["error"]["code"] == "missing_placeholder" and refused["error"]["details"]["placeholder"] == "name"
    task_id = curl("/v1/tasks", {"tasks": [{"function_id": fid, "endpoint_id": endpoint_id,
                                            "kwargs": {"name": "world; rm -rf /"}}]})["task_ids"][0]
    deadline = time.monotonic() + RESULT_WAIT
    task = curl(f"/v1/tasks/{task_id}?wait=30")
    while task["state"] not in ("success", "failed") and time.monotonic() < deadline:
        task = curl(f"/v1/tasks/{task_id}?wait=30")
    assert task["state"] == "success", task
    assert task["result_json"]["returncode"] == 3 and task["result_json"]["stdout"] == "hello world; rm -rf /\n"
    assert os.path.isdir("/usr")  # (the argument was one quoted word, never a command)
