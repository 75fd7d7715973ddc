"""The fault-injection suite (benchmarks/chaos.py) at a small size, on the real stack: every
fault in turn (kill -9 of the site manager's process group and of the forwarder, SIGTERM restarts
of the web service, Redis, the site manager and the forwarder, kill -9 of a worker, `scancel` of a
Slurm block; then kill -9 of one process by pid: the site manager alone, the interchange, the
worker pool, the gunicorn master, a gunicorn worker, Redis, a Slurm block's pool) with 50 tasks each. What a user
relies on: every accepted task succeeds with its own value (none lost, none with two different
results, none hung, none failed: a fault of one process is recovered from, not reported), and a
task recorded as succeeded really ran. The 10,000-task run's figures are in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from slurm_support import require_slurm
from stack_support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from chaos import FAULTS  # noqa: E402


PER_FAULT = 50  # tasks per fault


@pytest.mark.timeout(1500)  # sixteen faults in turn (two on Slurm, whose new blocks wait for a CPU): minutes
def test_every_task_succeeds_through_every_fault(tmp_path):
    require_slurm()
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "chaos.py"), "--tasks", str(PER_FAULT * len(FAULTS)),
         "--hung-after", "180", "--out", str(out)],
        capture_output=True, text=True, timeout=1400, cwd=REPO, check=False,
    )
    assert run.returncode == 0, f"chaos run failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert [row["fault"] for row in report["faults"]] == list(FAULTS)
    for row in report["faults"]:
        assert row["accepted"] == PER_FAULT, row
        assert (row["lost"], row["duplicated"], row["hung"]) == (0, 0, 0), row
        assert row["completed"] == row["accepted"], row  # every task SUCCEEDED
        assert row["never_ran_but_succeeded"] == 0, row
