"""The Torque path: Parsl's TorqueProvider through `qsub`/`qstat`/`qdel`.

STAND-IN: no Torque server can be installed here. slurm-wlm-torque's qsub/qstat/qdel wrappers,
which translate Torque commands onto the real local Slurm, stand in for one. The code under test
is the real one (our config -> parsl.providers.TorqueProvider -> the batch commands); only the
server behind the commands differs from a Torque site.
"""

from __future__ import annotations

import shutil

import pytest

from fnserve.testing.stack import Stack
from tests.integration.slurm_support import assert_no_jobs, batch_jobs, require_slurm, where_am_i


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_slurm()
    if shutil.which("qsub") is None or shutil.which("qstat") is None:
        pytest.fail("qsub/qstat missing: scripts/start_slurm.sh installs slurm-wlm-torque")
    s = Stack(tmp_path_factory.mktemp("fnserve-torque"))
    s.up()
    try:
        yield s
    finally:
        s.down(check=False)


def test_torque_endpoint_submits_blocks_with_qsub_runs_tasks_and_qdels_them_on_stop(stack: Stack) -> None:
    fc = stack.client()
    run_dir = stack.endpoint_dir("torque") / "run"
    stack.configure(
        "torque", "slurm",
        engine={"max_workers_per_node": 1, "heartbeat_period": 1, "heartbeat_threshold": 4},
        provider={"type": "torque", "walltime": "00:10:00"},
        launcher={"type": "single_node"},
        scaling={"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 300},
        worker_init="",
    )
    stack.cli("endpoint", "start", "torque")
    endpoint_id = stack.id_of("torque")
    try:
        fid = fc.register_function(where_am_i, serializer="source")
        where = fc.get_result(fc.run(fid, endpoint_id), timeout=120)
        # qsub's block became a batch job (a Slurm job behind the stand-in) and the task ran in it.
        assert where["job"] is not None
        assert batch_jobs(run_dir) == [where["job"]]
        script = next((run_dir / "engine" / "submit_scripts").glob("*fnserve.block-0.*.submit"))
        assert "#PBS -l walltime=00:10:00" in script.read_text()
    finally:
        stopped = stack.cli("endpoint", "stop", "torque", timeout=120)
    assert "stopped, no batch job left" in stopped.stdout  # qdel'd, and qstat says it left the queue
    assert_no_jobs(run_dir, "endpoint stop")
