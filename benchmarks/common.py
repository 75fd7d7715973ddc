"""Helpers shared by the benchmarks: percentiles, a throwaway embedded stack, report writing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1e3 for x in samples_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]

    return {"n": len(ms), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@contextmanager
def embedded_stack(port: int = 18780, engine: dict[str, Any] | None = None) -> Iterator[tuple[Any, str]]:
    """An fnserve stack in a temporary FNSERVE_HOME (fnserve/testing/stack.py) with one local
    endpoint "bench" (``engine``: its engine section); yields (client, endpoint_id).

    FNSERVE_HOME is also set in this process while it runs, for benchmarks that read the stack's
    processes (``fnserve.cli.stack.processes()``)."""
    from fnserve.testing.stack import running_stack

    home = Path(tempfile.mkdtemp(prefix="fnserve-bench-"))
    old = os.environ.get("FNSERVE_HOME")
    os.environ["FNSERVE_HOME"] = str(home)
    try:
        with running_stack(home, port=port, endpoint="bench", engine=engine) as stack:
            yield stack.client(), stack.endpoint_id
    finally:
        if old is None:
            os.environ.pop("FNSERVE_HOME", None)
        else:
            os.environ["FNSERVE_HOME"] = old
        # Its object store holds every large object a data benchmark moved (about 9 GB after 1 GiB runs).
        shutil.rmtree(home, ignore_errors=True)


# The packages whose versions a result depends on (missing ones are recorded as null).
_PACKAGES = ("fnserve", "parsl", "pyzmq", "redis", "flask", "gunicorn", "gevent", "msgspec", "dill", "dask", "prometheus_client",
             "distributed", "sqlalchemy", "psycopg")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata() -> dict[str, Any]:
    """What a result was measured with: commit (and whether the tree had changes), date, host,
    CPU, cores, load at the time, Python and the versions of the packages on the path."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "tree_changed": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "versions": {name: ver(name) for name in _PACKAGES},
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json``, with :func:`run_metadata` under ``meta``."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({**results, "meta": run_metadata()}, indent=2))
    return path
