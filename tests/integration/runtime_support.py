"""Runtimes as the runtime tests and benchmarks set them up: real venvs and a real podman image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# FNSERVE_WORKER_IMAGE / _DIR: another image and cache, e.g. for work on node_manager beside a shared one.
IMAGE = os.environ.get("FNSERVE_WORKER_IMAGE", "localhost/fnserve-worker:test")
IMAGE_DIR = Path(os.environ.get("FNSERVE_WORKER_IMAGE_DIR", "/var/cache/fnserve/worker-image"))


def have_podman() -> bool:
    return shutil.which("podman") is not None


def require_docker() -> None:
    """Fail (not skip) when the Docker daemon does not answer: scripts/start_dockerd.sh starts it."""
    out = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False) if shutil.which("docker") else None
    if out is None or out.returncode != 0:
        pytest.fail(f"the Docker daemon does not answer ({out.stderr.strip()[-300:] if out else 'no docker'}): "
                    "run scripts/start_dockerd.sh (scripts/test.sh does)")


def build_image() -> str:
    """The worker image (scripts/build_worker_image.sh; cached between runs)."""
    out = subprocess.run([str(REPO / "scripts/build_worker_image.sh"), str(IMAGE_DIR)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"building the worker image failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip().splitlines()[-1]


def make_venv(path: Path, with_fnserve: bool) -> str:
    """A real venv; with fnserve means it sees this Python's packages (fnserve is installed there)."""
    args = [sys.executable, "-m", "venv", "--without-pip"]
    if with_fnserve:
        args.append("--system-site-packages")
    subprocess.run([*args, str(path)], check=True, timeout=120)
    return str(path / "bin" / "python")


def add_runtimes(config_path: Path, runtimes: dict[str, Any], **scaling: Any) -> None:
    """Write a ``runtimes:`` section into an endpoint config (restart the endpoint after)."""
    data = yaml.safe_load(config_path.read_text())
    data["runtimes"] = runtimes
    if scaling:
        data.setdefault("scaling", {}).update(scaling)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(config_path, 0o600)


def where() -> dict[str, Any]:
    """What a task reports about the worker it ran in (the functions the tests register)."""
    import os
    import sys

    with open("/proc/1/cmdline", "rb") as f:  # in a podman/Docker container the pool is PID 1
        return {"pid": os.getpid(), "prefix": sys.prefix, "container": b"node_manager.pool" in f.read()}


def assert_interchange_encrypted(engine_run_dir: Path) -> None:
    """The engine under ``engine_run_dir`` ran CurveZMQ: its worker pools were launched with the
    certificates folder Parsl made (0700), not ``--cert_dir None``."""
    import stat

    certs = sorted(engine_run_dir.glob("*/certificates"))
    assert certs, f"no CurveZMQ certificates under {engine_run_dir}"
    assert stat.S_IMODE(certs[0].stat().st_mode) == 0o700
    scripts = [p.read_text(errors="replace") for p in (engine_run_dir / "submit_scripts").iterdir() if p.is_file()]
    assert scripts and all("--cert_dir None" not in s for s in scripts), scripts[:1]
    assert any(f"--cert_dir {certs[0]}" in s for s in scripts), scripts[:1]
