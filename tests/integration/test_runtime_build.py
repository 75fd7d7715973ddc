"""`fnserve runtime build NAME RECIPE` drives spython's build against the Apptainer STAND-IN
(tests/integration/apptainer_standin.py: Apptainer cannot be installed here), and says clearly
when no apptainer/singularity binary exists."""

from __future__ import annotations

import os
import subprocess

import pytest
from apptainer_support import install
from fnserve.testing.stack import FNSERVE
from stack_support import REPO

pytestmark = pytest.mark.integration


def _fnserve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FNSERVE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def test_runtime_build_runs_spythons_build_command_with_the_repository_recipe(tmp_path):
    standin = install(tmp_path)
    env = {**os.environ, **standin.env(os.environ["PATH"])}
    out = _fnserve("runtime", "build", "sci", "containers/fnserve-worker.def", "-o", str(tmp_path / "sci.sif"), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "sci.sif")
    builds = standin.invocations(contains="build")
    assert builds == [["singularity", "build", "--fakeroot", str(tmp_path / "sci.sif"), "containers/fnserve-worker.def"]]
    # A second build is refused as Apptainer refuses it, and the CLI says so.
    again = _fnserve("runtime", "build", "sci", "containers/fnserve-worker.def", "-o", str(tmp_path / "sci.sif"), env=env)
    assert again.returncode == 1 and "already exists" in again.stderr and "exited with status 255" in again.stderr


def test_runtime_build_without_apptainer_says_so_and_what_to_do_instead(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(os.path.realpath(FNSERVE[0]))}
    out = _fnserve("runtime", "build", "sci", "containers/fnserve-worker.def", env=env)
    assert out.returncode == 1
    assert "no apptainer or singularity binary on PATH" in out.stderr and "containers/Dockerfile" in out.stderr
