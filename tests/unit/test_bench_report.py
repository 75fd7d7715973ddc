"""benchmarks/report.py: every table says what it was measured with, and never mixes commits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import report  # noqa: E402
from common import run_metadata  # noqa: E402


def test_run_metadata_records_commit_date_host_and_versions():
    meta = run_metadata()
    assert meta["commit"] and len(meta["commit"]) == 40
    assert meta["date"].startswith("20") and meta["host"] and meta["cores"] >= 1
    assert meta["versions"]["parsl"] and meta["python"].count(".") == 2


def test_a_table_names_its_commit_host_and_versions():
    meta = {"commit": "0123456789abcdef", "tree_changed": False, "date": "2026-12-01T10:00:00+00:00", "host": "vm",
            "cpu": "Xeon", "cores": 2, "load_average": [0.4, 0.3, 0.2], "python": "3.11.7",
            "versions": {"parsl": "2026.10.26", "pyzmq": "27.3.0"}}
    line = report.measured_with({"meta": meta})
    assert "`0123456789`" in line and "2026-12-01" in line and "`vm`" in line and "parsl 2026.10.26" in line
    assert "uncommitted" in report.measured_with({"meta": {**meta, "tree_changed": True}})
    assert "re-run" in report.measured_with({})


def test_a_result_file_mixing_commits_is_refused():
    report.check_one_commit("x", {"meta": {"commit": "a"}, "part": {"meta": {"commit": "a"}}})
    with pytest.raises(SystemExit, match="mixes runs"):
        report.check_one_commit("x", {"meta": {"commit": "a"}, "part": {"meta": {"commit": "b"}}})


def test_warm_latency_targets_are_judged_against_peers_of_the_same_run():
    def s(p50):
        return {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50}

    r = {"calls": 100, "rounds": 10, "interleaved": True, "workers_per_node": 1, "process_pool": s(0.3),
         "bare_htex": s(1.0), "parsl_dfk": s(1.5), "dask": s(10.0),
         "fnserve": {"executor": s(2.1), "call": s(2.0), "run_get_result": s(2.5)}}
    text = report.warm_latency(r)
    assert "2.00x, **met**" in text and "+0.50 ms, **met**" in text and "1.05x, **met**" in text
    r["fnserve"]["call"] = s(2.6)
    assert "2.60x, **not met**" in report.warm_latency(r)
