"""The Apptainer STAND-IN (tests/integration/apptainer_standin.py) as tests install and read it.

Apptainer cannot be installed on the test machines; the stand-in parses its command line,
refuses what it refuses, gives the command Apptainer's environment and runs it on the host, and
logs every invocation, which the tests read back with :func:`invocations`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

STANDIN = Path(__file__).with_name("apptainer_standin.py")
SIF_HEADER = b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0") + b"SIF_MAGIC\0"


@dataclass
class Standin:
    bin_dir: Path
    log: Path
    state: Path

    def env(self, path: str) -> dict[str, str]:
        """Environment entries that put it first on PATH and tell it where to log and keep instances."""
        return {"PATH": f"{self.bin_dir}:{path}", "APPTAINER_STANDIN_LOG": str(self.log), "APPTAINER_STANDIN_STATE": str(self.state)}

    def invocations(self, *, contains: str = "") -> list[list[str]]:
        """Every command line it was given (argv, binary name first), oldest first."""
        if not self.log.exists():
            return []
        rows = [json.loads(line)["argv"] for line in self.log.read_text().splitlines() if line.strip()]
        return [r for r in rows if not contains or any(contains in a for a in r)]


def install(where: Path) -> Standin:
    """`apptainer` and `singularity` (both the stand-in) in ``where/bin``."""
    bin_dir = where / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("apptainer", "singularity"):
        (bin_dir / name).symlink_to(STANDIN)
    return Standin(bin_dir, where / "apptainer-calls.jsonl", where / "apptainer-instances")


def make_sif(path: Path) -> Path:
    """A file the stand-in (like Apptainer) recognises as a SIF image: the SIF magic at offset 32."""
    path.write_bytes(SIF_HEADER + b"stand-in image: the stand-in runs commands on the host\n")
    return path
