"""Issue 5's "done when", in both identity modes, with real processes and sockets.

Alice logs in, registers a function and an endpoint, shares both with Bob; Bob runs the
function on that endpoint and gets results; Carol is refused at every step; the usage figures
match the tasks run. The web service (Werkzeug, in a thread of this process so that the Globus
stand-in can answer its introspection calls), the forwarder with CurveZMQ + ZAP and its usage
writer run here; the site manager is a real process on Parsl's HTEX; Redis and SQLite are real.
In ``globus`` mode only Globus Auth's servers are a stand-in (tests/integration/globus_standin.py).
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import responses
import yaml
from werkzeug.serving import make_server

from fnserve.client import Client
from fnserve.config import ClientConfig
from fnserve.errors import FnserveError
from fnserve.login import login
from fnserve.messages import Register  # noqa: F401 - the wire protocol the site manager speaks
from tests.integration import globus_standin as standin
from web_service.admin import add_user
from web_service.app import create_app
from web_service.curve_keys import server_keys
from web_service.forwarder import Forwarder
from web_service.registry.db import session_factory
from web_service.services.endpoints import endpoint_for_key, verify_endpoint_secret
from web_service.settings import Settings
from web_service.task_store import TaskStore
from web_service.usage import UsageWriter

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """Web service + forwarder + usage writer, in threads of this process."""

    def __init__(self, settings: Settings, forwarder_port: int):
        self.settings = settings
        self.app = create_app(settings)
        self.http = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.sessions = session_factory(settings.database_url)
        store = TaskStore.from_url(settings.redis_url)

        def verify(eid: str, secret: str) -> bool:
            with self.sessions() as s:
                return verify_endpoint_secret(s, eid, secret)

        def owner(key: str) -> str | None:
            with self.sessions() as s:
                return endpoint_for_key(s, key)

        self.forwarder = Forwarder(store, verify, f"tcp://127.0.0.1:{forwarder_port}", heartbeat_period=0.5,
                                   heartbeat_threshold=5, server_keys=server_keys(settings.forwarder_key_file), endpoint_for_key=owner)
        self.writer = UsageWriter(store.r, self.sessions)
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self.http.serve_forever, self.forwarder.run)]

    def start(self) -> "Service":
        for t in self.threads:
            t.start()
        self.writer.start()
        assert self.forwarder.bound.wait(10)
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.forwarder.stop()
        self.writer.stop()
        for t in self.threads:
            t.join(10)
        self.sessions.kw["bind"].dispose()


def _start_site_manager(reg: dict, run_dir: Path) -> subprocess.Popen:
    config = {
        "forwarder": reg["forwarder_address"], "endpoint_id": reg["endpoint_id"], "secret": reg["secret"],
        "forwarder_public_key": reg["forwarder_public_key"], "curve_public_key": reg["curve_public_key"],
        "curve_secret_key": reg["curve_secret_key"], "run_dir": str(run_dir), "heartbeat_period": 0.5, "heartbeat_threshold": 5,
    }
    path = run_dir.parent / "endpoint.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.Popen([sys.executable, "-m", "site_manager", "--config", str(path)], cwd=REPO, env=env,
                            stdout=open(run_dir.parent / "site.log", "w"), stderr=subprocess.STDOUT)


@pytest.fixture(params=["local", "globus"])
def deployment(request, tmp_path, redis_url, redis_client, monkeypatch):
    mode = request.param
    fport = _free_port()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", redis_url=redis_url,
        forwarder_address=f"tcp://127.0.0.1:{fport}", forwarder_key_file=str(tmp_path / "forwarder.key"), max_wait=10,
        auth_mode=mode, globus_client_id=standin.SERVICE_CLIENT_ID if mode == "globus" else "",
        globus_client_secret="service-secret" if mode == "globus" else "", globus_scope=standin.SCOPE if mode == "globus" else "",
        globus_native_client_id=standin.NATIVE_CLIENT_ID if mode == "globus" else "",
    )
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    service = Service(settings, fport).start()
    try:
        yield mode, service, mock, tmp_path
    finally:
        service.stop()
        mock.stop()
        mock.reset()


def _log_in(mode: str, name: str, service: Service, mock: responses.RequestsMock, home: Path, monkeypatch) -> Client:
    """``fnserve login`` as ``name`` in their own FNSERVE_HOME; returns their SDK client."""
    monkeypatch.setenv("FNSERVE_HOME", str(home / name))
    if mode == "local":
        login(service.url, token=add_user(service.settings, name))
    else:
        token = f"globus-access-{name}"
        standin.token_grant(token, refresh_token=f"globus-refresh-{name}").add(requests_mock=mock)
        standin.introspection(token, f"{name}@uni.example.org").add(requests_mock=mock)
        prompts: list[str] = []
        monkeypatch.setattr(builtins, "input", lambda prompt="": prompts.append(prompt) or f"auth-code-{name}")
        login(service.url)
        assert prompts, "the native-app flow asked for the code"
        # The code exchange went to Globus Auth's token endpoint with the code the user pasted.
        exchange = [c for c in mock.calls if c.request.url.endswith("/v2/oauth2/token")][-1]
        assert f"auth-code-{name}" in exchange.request.body
    return Client(service.url, config=ClientConfig.load())


def _refused(call, status: int) -> str:
    with pytest.raises(FnserveError) as info:
        call()
    assert info.value.http_status == status, info.value
    return info.value.code


def test_share_run_refuse_and_account_in_both_identity_modes(deployment, monkeypatch, caplog):
    caplog.set_level("DEBUG")
    mode, service, mock, home = deployment
    alice, bob, carol = (_log_in(mode, n, service, mock, home, monkeypatch) for n in ("alice", "bob", "carol"))
    assert alice.whoami()["auth_mode"] == mode
    assert bob.whoami()["username"] == ("bob" if mode == "local" else "bob@uni.example.org")

    def simulate(n, label=""):
        import math

        return sum(math.sin(i) ** 2 for i in range(n))

    fid = alice.register_function(simulate)
    reg = alice.register_endpoint("cluster")
    eid = reg["endpoint_id"]
    run_dir = home / "endpoint" / "run"
    run_dir.mkdir(parents=True)
    site = _start_site_manager(reg, run_dir)
    try:
        deadline = time.monotonic() + 90
        while not alice.get_endpoint_status(eid)["connected"]:
            assert site.poll() is None, (home / "endpoint" / "site.log").read_text()
            assert time.monotonic() < deadline, "endpoint did not connect"
            time.sleep(0.2)
        bob_name = bob.whoami()["username"]
        alice.share_function(fid, users=[bob_name])
        alice.create_group("lab")
        alice.add_group_members("lab", bob_name)
        alice.share_endpoint(eid, groups=["lab"])
        alice.allow_functions(eid, fid)  # the endpoint runs only this function

        # Bob runs it on the shared endpoint.
        sizes = [1000, 20000, 300000]
        # (JSON arguments: a function-restricted endpoint takes no code-capable ones.)
        task_ids = [bob.submit(fid, eid, (n,), {"label": "PAYLOAD-MARKER-7f3a"}, serializer="json-data") for n in sizes]
        results = bob.get_batch_result(task_ids, timeout=60)
        import math

        assert [results[t]["result"] for t in task_ids] == [pytest.approx(sum(math.sin(i) ** 2 for i in range(n))) for n in sizes]

        # Carol: refused at every step.
        assert _refused(lambda: carol.get_function(fid), 403) == "forbidden"
        assert _refused(lambda: carol.get_endpoint(eid), 403) == "forbidden"
        assert _refused(lambda: carol.submit(fid, eid, (10,)), 403) == "forbidden"
        assert _refused(lambda: carol.get_task(task_ids[0]), 403) == "forbidden"
        assert _refused(lambda: carol.share_function(fid, users=["carol"]), 403) == "forbidden"
        assert _refused(lambda: carol.allow_functions(eid, fid), 403) == "forbidden"
        assert carol.list_functions(shared=True) == [] and carol.list_endpoints(shared=True) == []
        # Bob may run, not manage; and a function off the allowlist is refused with a clear error.
        assert _refused(lambda: bob.delete_endpoint(eid), 403) == "owner_only"
        other = bob.register_function(simulate)
        with pytest.raises(FnserveError) as info:
            bob.submit(other, eid, (1,))
        assert info.value.code == "function_not_allowed" and "allowlist" in info.value.message

        # Usage matches the tasks run, as the workers measured them.
        tasks = [bob.get_task(t) for t in task_ids]
        cpu = sum(t["resources"]["cpu_time"] for t in tasks)
        deadline = time.monotonic() + 15
        while (usage := bob.usage())["user"]["tasks"] < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {k: usage["user"][k] for k in ("tasks", "succeeded", "failed")} == {"tasks": 3, "succeeded": 3, "failed": 0}
        assert usage["user"]["cpu_time_s"] == pytest.approx(cpu)
        assert usage["user"]["wall_time_s"] == pytest.approx(sum(t["resources"]["wall_time"] for t in tasks))
        owner_view = alice.usage()["endpoints"]
        assert [e["endpoint_id"] for e in owner_view] == [eid] and owner_view[0]["by_user"][bob_name]["tasks"] == 3
        assert carol.usage()["user"]["tasks"] == 0 and carol.usage()["endpoints"] == []
    finally:
        site.terminate()
        site.wait(60)
    # Nothing secret reached the logs: not this process's (web service, forwarder, ZAP, usage
    # writer, at DEBUG) nor the site manager's.
    tokens = [c.transport.token for c in (alice, bob, carol)]
    secrets = [*tokens, reg["secret"], reg["curve_secret_key"], "PAYLOAD-MARKER-7f3a", "globus-refresh", "service-secret"]
    logs = caplog.text + (home / "endpoint" / "site.log").read_text()
    assert "connected" in logs and all(t for t in tokens)
    assert [s for s in secrets if s in logs] == []
