"""An external Redis with an ACL user and TLS, named by FNSERVE_REDIS_URL (``rediss://user:pass@``):
the web service, the forwarder and the admin commands use it as given, and a task runs end to end
through it on a real endpoint. Without the password the service reports Redis down (it really is
authenticated). The Redis is a real redis-server with a self-signed certificate made by openssl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fnserve.testing.stack import FNSERVE, free_base_port
from stack_support import REPO

from fnserve._redis_server import RedisAuth, free_port, redis_server_binary, wait_for_port
from fnserve.client import Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """A redis-server listening only on TLS, default user off, one ACL user: (url, process)."""
    tmp = tmp_path_factory.mktemp("redis-tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    auth = RedisAuth(password="s3cret/with+chars", socket=tmp / "unused.sock")
    conf = tmp / "redis.conf"
    conf.write_text(f"user default off\nuser {auth.username} on >{auth.password} ~fns:* &fns:* +@all\n")
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), str(conf), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--dir", str(tmp), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 10, proc)
        url = auth.tcp_url(port).replace("redis://", "rediss://", 1) + f"?ssl_ca_certs={cert}"
        yield url, tmp
    finally:
        proc.terminate()
        proc.wait(10)


def _health(url: str) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*FNSERVE, *args], env=env, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    assert out.returncode == 0, f"fnserve {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def _service(tmp: Path, redis_url: str):
    port = free_base_port()
    env = {**os.environ, "FNSERVE_HOME": str(tmp / f"home-{port}"), "FNSERVE_REDIS_URL": redis_url}
    env.pop("FNSERVE_TOKEN", None)
    env.pop("FNSERVE_SERVICE_URL", None)
    return port, env


def test_the_service_runs_a_task_through_an_external_redis_with_acl_and_tls(tls_redis):
    redis_url, tmp = tls_redis
    port, env = _service(tmp, redis_url)
    url = f"http://127.0.0.1:{port}"
    _cli(env, "service", "start", "--external-redis", "--port", str(port))
    try:
        assert _health(url)["redis"] is True
        token = subprocess.run([sys.executable, "-m", "web_service.admin", "add-user", "ann"], env=env, capture_output=True,
                               text=True, timeout=60, check=True).stdout.strip().splitlines()[-1]
        env.update(FNSERVE_SERVICE_URL=url, FNSERVE_TOKEN=token)
        _cli(env, "endpoint", "configure", "ext", "--template", "local")
        _cli(env, "endpoint", "start", "ext")
        fc = Client(url, token)
        [ep] = fc.list_endpoints()
        fid = fc.register_source("def add(a, b):\n    return a + b\n", "add")
        assert fc.call(fid, ep["endpoint_id"], 2, 3) == 5
        # The password never reached a log.
        for log in Path(env["FNSERVE_HOME"]).rglob("*.log"):
            assert "s3cret" not in log.read_text(errors="replace"), log
    finally:
        subprocess.run([*FNSERVE, "down"], env=env, capture_output=True, timeout=120, check=False)


def test_without_the_password_the_service_reports_redis_down(tls_redis, tmp_path):
    from web_service.app import create_app
    from web_service.settings import Settings

    redis_url, _ = tls_redis
    no_password = redis_url.replace("fnserve:s3cret%2Fwith%2Bchars@", "")
    assert no_password != redis_url
    for url, up in ((no_password, False), (redis_url, True)):
        app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'registry.db'}", redis_url=url))
        answer = app.test_client().get("/v1/health")
        assert answer.json["redis"] is up and answer.status_code == (200 if up else 503), answer.json
