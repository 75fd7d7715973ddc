"""Start, find and stop the background processes of an fnserve stack (pid and log files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fnserve.private_files import PRIVATE_UMASK, open_private, private_dir, write_private


@dataclass
class Managed:
    """A background process known by its pid file and log file in ``run_dir``."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``argv`` in its own session, output to the log file; returns the pid."""
        private_dir(self.run_dir)
        existing = self.pid()
        if existing:
            return existing
        log = open_private(self.log_file)
        try:
            # umask: whatever the process and its children create is private (0600 / 0700).
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, start_new_session=True, umask=PRIVATE_UMASK,
            )
        finally:
            os.close(log)
        write_private(self.pid_file, str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 20.0, leader_first: bool = False) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group. True if it was running.

        ``leader_first``: send SIGTERM to the process alone and let it stop its own children
        (a site manager drains its tasks through its interchange), then SIGKILL what is left.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        if leader_first:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid) or leader_first:
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
