"""The service image (deploy/Containerfile), built with podman on the stand-in base of
scripts/build_service_image.sh (cached), runs the web service as an unprivileged user against
the test session's real Redis and answers /v1/health; its HEALTHCHECK passes; the forwarder and
the admin CLI are in it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from stack_support import REPO

MAX_IMAGE_MB = 250


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def image() -> str:
    out = subprocess.run([str(REPO / "scripts/build_service_image.sh")], capture_output=True, text=True, timeout=900,
                         cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _tcp_url(redis_url: str, redis_client) -> str:
    """The test Redis over TCP (its unix socket is private to this account, not the image's user)."""
    password = urllib.parse.unquote(urllib.parse.urlsplit(redis_url).password or "")
    port = redis_client.config_get("port")["port"]
    return f"redis://default:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_image_is_small_unprivileged_and_has_a_healthcheck(image):
    info = json.loads(_podman("image", "inspect", image).stdout)[0]
    assert info["Config"]["User"] == "10001:10001"
    assert info["Healthcheck"]["Test"] == ["CMD", "python3", "-m", "web_service.healthcheck"]
    assert info["Size"] < MAX_IMAGE_MB * 1024 * 1024, info["Size"]


def test_web_service_from_the_image_answers_health_and_its_healthcheck_passes(image, redis_url, redis_client):
    """The image's own command (gunicorn, 2 workers) on a free port of this host's network."""
    port = _free_port()
    name = f"fnserve-web-test-{uuid.uuid4().hex[:8]}"
    _podman("run", "-d", "--name", name, "--network", "host", "-e", f"FNSERVE_WEB_BIND=127.0.0.1:{port}",
            "-e", f"FNSERVE_REDIS_URL={_tcp_url(redis_url, redis_client)}",
            "-e", "FNSERVE_DATABASE_URL=sqlite:////var/lib/fnserve/registry.db", image)
    try:
        deadline = time.monotonic() + 90
        body = None
        while body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as resp:
                    body = json.loads(resp.read())
            except OSError:
                state = json.loads(_podman("inspect", name).stdout)[0]["State"]
                assert state["Running"], _podman("logs", name, check=False).stderr[-3000:]
                assert time.monotonic() < deadline, "no health answer from the container"
                time.sleep(0.3)
        assert body["status"] == "ok" and body["redis"] is True, body
        # Every process in it runs as the unprivileged user (gunicorn's master and workers).
        users = _podman("top", name, "user").stdout.split()[1:]
        assert len(users) >= 3 and set(users) <= {"10001", "fnserve"}, users
        # The image's HEALTHCHECK, run by podman (no systemd timer runs it on its own here).
        check = _podman("healthcheck", "run", name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        # /metrics from inside the container (loopback): allowed; from this host too (host network).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b'fnserve_web_http_requests_total{code="200",method="GET",route="/v1/health"}' in resp.read()
        # The other two commands it carries: the admin CLI and the forwarder (its imports: pyzmq's
        # bundled libzmq, CurveZMQ's authenticator).
        _podman("exec", name, "python3", "-m", "web_service.admin", "--help")
        _podman("exec", name, "python3", "-c", "import web_service.forwarder, zmq.auth.thread, web_service.forwarder_metrics")
    finally:
        _podman("rm", "-f", "-t", "5", name, check=False)
