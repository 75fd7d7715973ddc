"""An fnserve stack for tests and benchmarks: ``fnserve up`` in its own FNSERVE_HOME, real processes.

    with running_stack(tmp / "home") as stack:   # Redis, web service, forwarder, endpoint "local"
        fid = stack.client().register_function(f)
        stack.client().run(..., endpoint_id=stack.endpoint_id, function_id=fid)

    stack = Stack(home)                          # or step by step, with more endpoints
    stack.up()
    stack.configure("hpc", "slurm", engine={"max_workers_per_node": 2})
    stack.cli("endpoint", "start", "hpc")
    ...
    stack.down()

Everything goes through the CLI as a user would drive it (``fnserve up``, ``fnserve endpoint ...``,
``fnserve down``), each command a subprocess with this stack's FNSERVE_HOME: one process can drive
several stacks, and nothing here changes ``os.environ``. ``up(engine=...)`` starts the endpoint
with that engine section through ``python -m fnserve.testing.stack up`` (the same
``fnserve.cli.stack.up`` as ``fnserve up``, which has no option for it). The processes import
fnserve from the same tree as the caller (:data:`SOURCE` first on their PYTHONPATH), so a
benchmark run from an old commit's worktree measures that commit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import fnserve
from fnserve.client import Client

# The CLI, run by the Python running this.
FNSERVE = [sys.executable, "-m", "fnserve.cli.main"]
# The tree fnserve is imported from (a clone's root, with `pip install -e .` or PYTHONPATH).
SOURCE = Path(fnserve.__file__).resolve().parents[1]


class StackCommandFailed(AssertionError):
    """A command driving the stack failed (a test fails with it, a benchmark stops); the message
    holds the command's output."""


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


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] not in "ZX"
    except (OSError, IndexError):
        return False


class Stack:
    """The stack in ``home``: web on ``port`` (free ones chosen if None), forwarder and Redis on
    the next two. ``extra_env`` reaches every process it starts; ``database_url`` puts the
    registry on that database (SQLite in ``home`` otherwise); commands run in ``cwd`` (``home``
    if None: relative paths in :meth:`cli` arguments are read from there)."""

    def __init__(self, home: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
                 database_url: str | None = None, cwd: Path | None = None) -> None:
        self.home = home
        self.tmp = home.parent  # the caller's own folder beside it (marker files, logs)
        self.port = port or free_base_port()
        self._port_chosen = port is None
        self.cwd = cwd or home
        env = {**os.environ, "FNSERVE_HOME": str(home), **(extra_env or {})}
        env.pop("FNSERVE_TOKEN", None)
        env.pop("FNSERVE_SERVICE_URL", None)
        if database_url:
            env["FNSERVE_DATABASE_URL"] = database_url
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH", "")) if p)
        self.env = env
        self.token = ""  # the local user's, once up
        self.endpoint_id = ""  # the endpoint `up` started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- commands ------------------------------------------------------------------------------

    def run(self, argv: list[str], check: bool = True, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` with this stack's environment (plus ``env``) in ``cwd``."""
        out = subprocess.run(argv, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                             cwd=self.cwd, check=False)
        if check and out.returncode != 0:
            shown = " ".join(argv[3:] if argv[:3] == FNSERVE else argv)
            raise StackCommandFailed(f"fnserve {shown} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def cli(self, *args: str, check: bool = True, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``fnserve ARGS...`` against this stack; raises :class:`StackCommandFailed` if it fails
        and ``check``."""
        return self.run([*FNSERVE, *args], check=check, timeout=timeout, env=env)

    def up(self, endpoint: str = "local", engine: dict[str, Any] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``fnserve up``: start what is not running (all of it the first time), the service and
        the local endpoint ``endpoint`` (``engine``: its engine section). Sets :attr:`token` and
        :attr:`endpoint_id`."""
        argv = [*FNSERVE, "up", "--port", str(self.port), "--endpoint-name", endpoint]
        if engine is not None:
            argv = [sys.executable, "-m", __name__, *argv[3:], "--engine", json.dumps(engine)]
        for _ in range(3):  # other runs on this host may take the free ports chosen meanwhile
            out = self.run(argv, check=False, timeout=timeout)
            if out.returncode == 0 or "already in use" not in out.stderr or not self._port_chosen or self.token:
                break
            self.down(check=False)
            self.port = free_base_port()
            argv[argv.index("--port") + 1] = str(self.port)
        if out.returncode != 0:
            raise StackCommandFailed(f"fnserve up failed:\n{out.stdout}\n{out.stderr}")
        self.token = yaml.safe_load((self.home / "client.yaml").read_text())["token"]
        self.endpoint_id = yaml.safe_load((self.endpoint_dir(endpoint) / "config.yaml").read_text())["endpoint_id"]
        return out

    def down(self, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``fnserve down``: every endpoint and the service stopped, no process of this home left."""
        return self.cli("down", check=check, timeout=timeout)

    def client(self) -> Client:
        return Client(self.url, self.token)

    # -- endpoints -----------------------------------------------------------------------------

    def endpoint_dir(self, name: str) -> Path:
        return self.home / "endpoints" / name

    def id_of(self, name: str) -> str:
        """Endpoint ``name``'s id: from what ``fnserve endpoint start`` kept, or from its config."""
        d = self.endpoint_dir(name)
        f = d / "credentials.yaml" if (d / "credentials.yaml").exists() else d / "config.yaml"
        return str(yaml.safe_load(f.read_text())["endpoint_id"])

    def configure(self, name: str, template: str, **sections: Any) -> dict[str, Any]:
        """``fnserve endpoint configure NAME --template T``, then these settings per section: a
        dict without ``type`` updates the section, anything else replaces it."""
        self.cli("endpoint", "configure", name, "--template", template)
        path = self.endpoint_dir(name) / "config.yaml"
        config: dict[str, Any] = yaml.safe_load(path.read_text())
        for section, values in sections.items():
            if isinstance(values, dict) and "type" not in values:
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return config

    def log(self, name: str) -> str:
        """Endpoint ``name``'s site manager log so far."""
        path = self.endpoint_dir(name) / "site_manager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- processes -----------------------------------------------------------------------------

    def pid(self, *pid_file: str) -> int:
        """The pid recorded in ``home/pid_file`` (e.g. ``"service", "forwarder.pid"``)."""
        return int(self.home.joinpath(*pid_file).read_text().strip())

    def kill9(self, *pid_file: str) -> int:
        """kill -9 the ONE process whose pid file is ``home/pid_file`` (as the OOM killer does:
        its children are left to notice on their own) and wait until it is gone. Its pid."""
        pid = self.pid(*pid_file)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid):
            if time.monotonic() > deadline:
                raise StackCommandFailed(f"pid {pid} ({'/'.join(pid_file)}) still alive 10 s after kill -9")
            time.sleep(0.05)  # the caller's own wait for a process it killed
        return pid

    def leftovers(self) -> list[int]:
        """Live processes fnserve started for this home (after :meth:`down`: none)."""
        from fnserve.cli.processes import tagged_processes

        return [p for p in tagged_processes(f"{self.home}{os.sep}", prefix=True) if alive(p)]


@contextmanager
def running_stack(home: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None,
                  cwd: Path | None = None, port: int | None = None, endpoint: str = "local",
                  engine: dict[str, Any] | None = None) -> Iterator[Stack]:
    """A :class:`Stack` up (its endpoint connected) for the ``with`` block, down after (which
    must succeed). A failed start stops what it started before raising."""
    stack = Stack(home, port=port, extra_env=extra_env, database_url=database_url, cwd=cwd)
    try:
        out = stack.up(endpoint, engine)
    except BaseException:
        stack.down(check=False)
        raise
    if "connected" not in out.stdout:
        stack.down(check=False)
        raise StackCommandFailed(f"fnserve up did not say the endpoint connected:\n{out.stdout}")
    try:
        yield stack
    finally:
        stack.down()


def main(argv: list[str] | None = None) -> None:
    """``python -m fnserve.testing.stack up --port P --endpoint-name N --engine JSON``: what
    ``fnserve up`` does, with that engine section for the endpoint (FNSERVE_HOME from the
    environment)."""
    ap = argparse.ArgumentParser(prog="python -m fnserve.testing.stack", description=(main.__doc__ or "").split("\n")[0])
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoint-name", default="local")
    ap.add_argument("--engine", type=json.loads, help="the endpoint's engine section, as JSON")
    args = ap.parse_args(argv)
    from fnserve.cli.stack import StackPorts, up

    try:
        ep = up(StackPorts(web=args.port, forwarder=args.port + 1, redis=args.port + 2), args.endpoint_name,
                engine=args.engine)
    except Exception as exc:  # noqa: BLE001 - said on stderr (Stack.up reads "already in use" there)
        print(f"fnserve up failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"  endpoint   {args.endpoint_name} = {ep['endpoint_id']} (connected)")


if __name__ == "__main__":
    main()
