"""deploy/compose.yaml brought up with podman-compose for a test module, on free ports.

The images are the offline stand-ins of scripts/build_compose_images.sh (Debian's PostgreSQL,
Redis and HAProxy copied into small images; the service image from deploy/Containerfile on a
stand-in Python base): no container registry is reachable where the tests run. The settings are
deploy/compose.env with each port replaced by a free one and each password by a random one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from fnserve._redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy/compose.yaml"


def build_images() -> dict[str, str]:
    """The stand-in images (cached by content key): {DEPLOY_*_IMAGE: name}."""
    out = subprocess.run([str(REPO / "scripts/build_compose_images.sh")], capture_output=True, text=True, timeout=1200,
                         cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split("=", 1) for line in out.stdout.split() if line.startswith("DEPLOY_"))


def settings_for_test(images: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """deploy/compose.env with free ports, random passwords, the stand-in images, ``overrides``."""
    settings: dict[str, str] = {}
    for line in (REPO / "deploy/compose.env").read_text().splitlines():
        m = re.fullmatch(r"([A-Z0-9_]+)=(.*)", line.strip())
        if not m:
            continue
        name, value = m.groups()
        if "PORT" in name:
            value = str(free_port())
        elif value == "CHANGE-ME":
            value = secrets.token_hex(16)
        settings[name] = value
    settings["DEPLOY_PROXY_BIND"] = f"127.0.0.1:{free_port()}"
    return {**settings, **images, **overrides}


class Deployment:
    """One podman-compose project; ``up()`` / ``down()``, its containers and endpoints."""

    def __init__(self, tmp: Path, settings: dict[str, str]):
        self.project = f"fnsct{uuid.uuid4().hex[:8]}"
        self.env_file = tmp / "compose.env"
        self.settings = {**settings, "DEPLOY_ENV_FILE": str(self.env_file)}
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        self.env_file.chmod(0o644)  # read by the containers' users through podman, not secret beyond this test
        self.url = f"http://{self.settings['DEPLOY_PROXY_BIND']}"

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FNSERVE_", "DEPLOY_"))}
        out = subprocess.run(["podman-compose", "-p", self.project, "--env-file", str(self.env_file), "-f", str(COMPOSE_FILE),
                              *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
        assert out.returncode == 0, f"podman-compose {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def keep_logs(self, *services: str) -> None:
        """Copy the services' container logs to $FNSERVE_TEST_KEEP_LOGS, if set (to read after a
        failure: the containers are removed at the end of the module)."""
        keep = os.environ.get("FNSERVE_TEST_KEEP_LOGS")
        for service in services if keep else ():
            with open(Path(keep) / f"{service}.log", "wb") as out:
                subprocess.run(["podman", "logs", self.container(service)], stdout=out, stderr=subprocess.STDOUT, timeout=60,
                               check=False)

    def restart_exited(self) -> str:
        """Run deploy/compose/restart-exited.sh for this project (what an operator without systemd
        runs from cron); returns what it printed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FNSERVE_", "DEPLOY_"))}
        out = subprocess.run([str(REPO / "deploy/compose/restart-exited.sh"), self.project, "--env-file", str(self.env_file),
                              "-f", str(COMPOSE_FILE)], capture_output=True, text=True, timeout=300, env=env, check=False)
        assert out.returncode == 0, f"restart-exited.sh:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def pid(self, service: str) -> int:
        """The host pid of the container's main process."""
        out = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", self.container(service)],
                             capture_output=True, text=True, timeout=60, check=True)
        return int(out.stdout.strip())

    def exec(self, service: str, *argv: str) -> str:
        out = subprocess.run(["podman", "exec", self.container(service), *argv], capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    def state(self, service: str) -> str:
        """The container's state and the end of its log (for failure messages)."""
        name = self.container(service)
        state = subprocess.run(["podman", "inspect", "--format", "{{.State.Status}} exit={{.State.ExitCode}} "
                                "restarts={{.RestartCount}}", name], capture_output=True, text=True, timeout=60, check=False)
        logs = subprocess.run(["podman", "logs", "--tail", "15", name], capture_output=True, text=True, timeout=60, check=False)
        return f"{name}: {state.stdout.strip()}{state.stderr.strip()}\n{logs.stdout}{logs.stderr}"

    def systemd_unit(self, service: str, folder: Path) -> Path:
        """The unit `podman generate systemd` writes for the service's container (what an operator
        installs for restarts podman 4.3 does not do without systemd: docs/operations.md)."""
        out = subprocess.run(["podman", "generate", "systemd", "--files", "--restart-policy=always", "--restart-sec=1",
                              "--name", self.container(service)], capture_output=True, text=True, timeout=60, cwd=folder,
                             check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return Path(out.stdout.strip().splitlines()[-1])

    def containers(self) -> list[str]:
        out = subprocess.run(["podman", "ps", "-a", "--filter", f"name={self.project}_", "--format", "{{.Names}}"],
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.split()

    def volumes(self) -> list[str]:
        out = subprocess.run(["podman", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                             timeout=60, check=True)
        return [v for v in out.stdout.split() if v.startswith(f"{self.project}_")]

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def metrics(self, address: str, token: bool = True) -> dict[tuple[str, str], float]:
        """One process's /metrics as {(name, labels): value}."""
        headers = {"Authorization": f"Bearer {self.settings['FNSERVE_METRICS_TOKEN']}"} if token else {}
        with urllib.request.urlopen(urllib.request.Request(f"http://{address}/metrics", headers=headers), timeout=10) as resp:
            text = resp.read().decode()
        values = {}
        for line in text.splitlines():
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)", line)
            if m and not line.startswith("#"):
                values[(m.group(1), m.group(2) or "")] = float(m.group(3))
        return values

    def web(self, n: int) -> str:
        return f"{self.settings['DEPLOY_BIND']}:{self.settings[f'DEPLOY_WEB_PORT_{n}']}"

    def forwarder_metrics(self, n: int) -> str:
        return f"{self.settings['DEPLOY_BIND']}:{self.settings[f'DEPLOY_FORWARDER_METRICS_PORT_{n}']}"


def wait_for(check: Any, timeout: float, what: str, period: float = 0.2, explain: Any = None) -> Any:
    """Poll ``check`` until truthy; on timeout fail with ``explain()`` (if given) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(period)


def exec_start(unit: str) -> list[str]:
    """The command of a unit's ``ExecStart=`` line (backslash continuations joined)."""
    text = unit.replace("\\\n", " ")
    [line] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.split("=", 1)[1])


def urlopen_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False
