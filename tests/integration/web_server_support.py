"""The web service as operators run it: `python -m web_service.server` (gunicorn) on a free port.

Used by the tests that need the real HTTP server (long-polls, floods, the access log) and by
benchmarks/longpoll_health.py. The registry is SQLite in a temporary folder; Redis is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fnserve._redis_server import free_port
from web_service.admin import add_user
from web_service.settings import Settings


@dataclass
class WebServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    settings: Settings

    def add_user(self, name: str) -> str:
        """Create ``name`` and return a token for it."""
        return add_user(self.settings, name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def web_server(redis_url: str, home: Path, worker_class: str | None = None, pythonpath: str | None = None,
               **env: str) -> Iterator[WebServer]:
    """Start the service; ``env`` adds ``FNSERVE_*`` settings (``MAX_WAITS_PER_USER="5"``).
    ``pythonpath`` runs another checkout's server (the benchmark's "before")."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = Settings(database_url=f"sqlite:///{home / 'registry.db'}", redis_url=redis_url,
                        forwarder_key_file=str(home / "forwarder.key"))
    full_env = {
        **os.environ, "FNSERVE_HOME": str(home), "FNSERVE_DATABASE_URL": settings.database_url,
        "FNSERVE_REDIS_URL": redis_url, "FNSERVE_FORWARDER_KEY_FILE": settings.forwarder_key_file,
        **{f"FNSERVE_{k}": v for k, v in env.items()},
    }
    if pythonpath:
        full_env["PYTHONPATH"] = pythonpath
    args = [sys.executable, "-m", "web_service.server", "--bind", f"127.0.0.1:{port}"]
    if worker_class:
        args += ["--worker-class", worker_class]
    log_path = home / "web.log"
    with open(log_path, "wb") as log:
        # cwd: not a checkout, so PYTHONPATH alone says whose server runs (`-m` puts cwd first).
        proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    server = WebServer(f"http://127.0.0.1:{port}", proc, log_path, settings)
    try:
        _wait_healthy(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_healthy(server: WebServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"the web service exited {server.proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/v1/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # start-up only: nothing to wait on but the port
    raise AssertionError(f"the web service did not become healthy in {timeout} s:\n{server.log()}")
