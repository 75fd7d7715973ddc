"""The embedded stack as tests drive it: `fnserve up` in a temporary FNSERVE_HOME, real processes.

Used by the end-to-end tests and the Executor tests (a module-scoped fixture each).
"""

from __future__ import annotations

import os
import socket
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from fnserve.client import Client

REPO = Path(__file__).resolve().parents[2]
FNSERVE = [sys.executable, "-m", "fnserve.cli.main"]


def free_base_port() -> int:
    """The first of 3 consecutive free local ports (web, forwarder, Redis)."""
    for base in range(21000, 40000, 7):
        ok = True
        for p in range(base, base + 3):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free ports")


class Stack:
    def __init__(self, env: dict[str, str], port: int):
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        home = Path(env["FNSERVE_HOME"])
        self.home = home
        self.tmp = home.parent  # the test's own folder beside it (marker files, logs)
        self.endpoint_id = yaml.safe_load((home / "endpoints/local/config.yaml").read_text())["endpoint_id"]
        self.token = yaml.safe_load((home / "client.yaml").read_text())["token"]

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*FNSERVE, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"fnserve {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def client(self) -> Client:
        return Client(self.url, self.token)

    def up(self) -> None:
        """`fnserve up` again: starts what is not running (after a kill), leaves the rest."""
        self.cli("up", "--port", self.url.rsplit(":", 1)[1], timeout=180)

    def kill9(self, *pid_file: str) -> int:
        """kill -9 the ONE process whose pid file is ``home/pid_file`` (as the OOM killer does:
        its children are left to notice on their own) and wait until it is gone. Its pid."""
        pid = int(self.home.joinpath(*pid_file).read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"pid {pid} ({'/'.join(pid_file)}) still alive 10 s after kill -9")
            time.sleep(0.05)  # the test's own wait for a process it killed
        return pid

    def leftovers(self) -> list[int]:
        """Live processes fnserve started for this home (after `fnserve down`: none)."""
        from fnserve.cli.processes import tagged_processes

        return [p for p in tagged_processes(f"{self.home}{os.sep}", prefix=True) if alive(p)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] not in "ZX"
    except (OSError, IndexError):
        return False


@contextmanager
def running_stack(home: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`fnserve up` in ``home`` (registry on SQLite unless ``database_url``; ``extra_env`` for
    every process it starts); `fnserve down` after."""
    port = free_base_port()
    env = {**os.environ, "FNSERVE_HOME": str(home), **(extra_env or {})}
    env.pop("FNSERVE_TOKEN", None)
    env.pop("FNSERVE_SERVICE_URL", None)
    if database_url:
        env["FNSERVE_DATABASE_URL"] = database_url
    up = subprocess.run([*FNSERVE, "up", "--port", str(port)], env=env, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    assert up.returncode == 0, f"fnserve up failed:\n{up.stdout}\n{up.stderr}"
    assert "connected" in up.stdout
    try:
        yield Stack(env, port)
    finally:
        down = subprocess.run([*FNSERVE, "down"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
        assert down.returncode == 0, down.stderr


def peak_rss_split(stack: Stack) -> tuple[dict[str, float], dict[str, float]]:
    """Peak RSS (VmHWM, MiB) of the stack's processes, split into those that only move bytes
    (web, forwarder, Redis, triggers, site manager, interchange, worker pool) and the HTEX
    workers (a worker pool's children), which compute on whole objects. Keys: command lines."""
    from fnserve.cli.processes import (
        command_line,
        is_htex_worker,
        peak_rss_mib,
        process_tree,
        recorded_pid,
        tagged_processes,
    )

    # The pid files' trees, and the processes carrying the stack's tag (the worker pool is
    # started detached by Parsl's provider, so it is no child of the site manager).
    roots = [recorded_pid(f) for f in stack.home.rglob("*.pid")]
    tree = {p for root in roots if root is not None for p in process_tree(root)}
    tree |= set(tagged_processes(f"{stack.home}{os.sep}", prefix=True))
    movers: dict[str, float] = {}
    workers: dict[str, float] = {}
    for p in tree:
        mib = peak_rss_mib(p)
        if mib is not None:
            (workers if is_htex_worker(p) else movers)[f"{p} {command_line(p)[:70]}"] = mib
    return movers, workers
