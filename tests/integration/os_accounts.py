"""Unprivileged OS accounts for attack tests: created with useradd, removed after."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def unprivileged_account(prefix: str = "fnsatk") -> Iterator[str]:
    """A fresh system account with no home and no login shell; yields its name."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def readable_copy(src: Path, folder: Path) -> Path:
    """``src`` copied into ``folder`` (made world-readable), so another account can run it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    dest = folder / src.name
    shutil.copy(src, dest)
    dest.chmod(0o644)
    return dest


def as_account(name: str, *args: str) -> list[str]:
    """The command line that runs ``args`` as ``name`` with the system Python."""
    return ["runuser", "-u", name, "--", "/usr/bin/python3", *args]
