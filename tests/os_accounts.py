"""Unprivileged OS accounts for attack tests: created with ``useradd``, used with ``runuser``,
removed after. Every security test attacks as such an account, the way another user of a shared
login node would, against the real ports, sockets and files.

The account runs the system's Python (``/usr/bin/python3`` with Debian's python3-zmq and
python3-redis, which scripts/test.sh installs) and ``redis-cli``: it cannot read root's
interpreter under /root, as on a real host where other users' environments are out of reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class OsAccount:
    name: str

    def run(self, *argv: str, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this account, in a clean environment (nothing of ours leaks in)."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
        return subprocess.run(["/usr/sbin/runuser", "-u", self.name, "--", *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, input=input, cwd="/", check=False)

    def python(self, code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with the system Python as this account; ``args`` become ``sys.argv[1:]``."""
        return self.run(SYSTEM_PYTHON, "-c", code, *args, timeout=timeout)

    def can_read(self, path: str | os.PathLike[str]) -> bool:
        return self.run("cat", str(path)).returncode == 0

    def can_list(self, path: str | os.PathLike[str]) -> bool:
        return self.run("ls", str(path)).returncode == 0


@contextmanager
def os_account(prefix: str = "fnsatk") -> Iterator[OsAccount]:
    """A fresh unprivileged account (no home, no groups of ours), deleted afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "--user-group", name], check=True,
                   capture_output=True, timeout=30)
    try:
        yield OsAccount(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)


@contextmanager
def shared_host_dir(prefix: str = "fnserve-attack-") -> Iterator[Path]:
    """A fresh 0755 folder under /tmp, removed afterwards: a home folder on a shared host, where
    other accounts may look inside. (pytest's own temp folders are 0700, which would hide every
    mistake these tests are meant to catch.)"""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
