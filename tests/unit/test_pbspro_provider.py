"""PBS Pro: what can be checked without a PBS Pro server.

STAND-IN: no PBS Pro server can run here, so `qsub`, `qstat` and `qdel` are stand-in scripts
that record how they were called, and `qstat -f -F json` answers with
tests/data/pbspro_qstat_f_F_json.json, a sample written in the JSON layout PBS Pro 2022 prints
(a stand-in for a live server's answer). Everything else is real: the `pbs` template of
`fnserve endpoint configure`, our config loader, and Parsl's PBSProProvider and MpiExecLauncher
writing the job script, running the commands and parsing the answer.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from fnserve.cli.endpoint_templates import render
from site_manager.config import EndpointConfig
from site_manager.engine import make_provider

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pbspro_qstat_f_F_json.json"
CREDS = {"forwarder": "tcp://fnserve.example.org:55001", "endpoint_id": "ep-pbs", "secret": "s"}


@pytest.fixture
def pbs_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of stand-in PBS commands put first on PATH; each appends its argv to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    scripts = {
        # Job ids as PBS Pro prints them: number.server
        "qsub": f'n=$(wc -l < {log} 2>/dev/null || echo 0)\necho "qsub $*" >> {log}\necho "$((1234 + n)).pbs-server"\n',
        "qstat": f'echo "qstat $*" >> {log}\ncat {SAMPLE}\n',
        "qdel": f'echo "qdel $*" >> {log}\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return tmp_path


def _pbs_provider(tmp_path: Path):
    text = render("pbs", str(tmp_path / "run"), worker_init="source /opt/fnserve/bin/activate")
    config = EndpointConfig.from_dict({**yaml.safe_load(text), **CREDS})
    assert (config.provider.type, config.launcher.type) == ("pbspro", "mpiexec")
    script_dir = tmp_path / "scripts"
    script_dir.mkdir()
    return make_provider(config.provider, config.scaling, script_dir, config.launcher, config.worker_init), script_dir


def test_pbs_template_writes_a_job_script_with_select_walltime_queue_and_mpiexec(pbs_bin: Path) -> None:
    provider, script_dir = _pbs_provider(pbs_bin)
    job_id = provider.submit("process_worker_pool.py --block_id=0", 1, "parsl.fnserve.block-0")
    assert job_id == "1234.pbs-server"

    (script_path,) = script_dir.glob("parsl.fnserve.block-0.*")  # Parsl adds a timestamp
    script = script_path.read_text()
    assert "#PBS -l select=2:ncpus=64\n" in script  # nodes_per_block from scaling, cpus_per_node
    assert "#PBS -l walltime=01:00:00" in script
    assert "source /opt/fnserve/bin/activate" in script  # worker_init
    assert "mpiexec --bind-to none --depth=64 --ppn 1 -n $WORKERCOUNT" in script
    assert "WORKERCOUNT=2" in script  # one worker pool per node of the block
    assert "process_worker_pool.py --block_id=0" in script

    calls = (pbs_bin / "calls.log").read_text().splitlines()
    assert calls == [f"qsub -q workq {script_path}"]


def test_recorded_qstat_json_is_parsed_into_block_states(pbs_bin: Path) -> None:
    provider, _ = _pbs_provider(pbs_bin)
    ids = [provider.submit("true", 1, f"parsl.fnserve.block-{i}") for i in range(3)]
    assert ids == ["1234.pbs-server", "1235.pbs-server", "1236.pbs-server"]
    # The sample (qstat -x also lists finished jobs): 1234 running, 1235 queued, 1236 finished (F).
    states = [s.state.name for s in provider.status(ids)]
    assert states == ["RUNNING", "PENDING", "COMPLETED"]
    assert "qstat -x -f -F json 1234.pbs-server 1235.pbs-server 1236.pbs-server" in (pbs_bin / "calls.log").read_text()


def test_cancel_runs_qdel_on_the_block_jobs(pbs_bin: Path) -> None:
    provider, _ = _pbs_provider(pbs_bin)
    job_id = provider.submit("true", 1, "parsl.fnserve.block-0")
    assert provider.cancel([job_id]) == [True]
    assert (pbs_bin / "calls.log").read_text().splitlines()[-1] == f"qdel {job_id}"
