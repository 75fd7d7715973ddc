"""Redis failover through Sentinel during a task stream: no accepted task lost, none run twice.

Real: a Redis primary and a replica (Debian's redis-server, with passwords), one sentinel
(``redis-server --sentinel``, quorum 1: lean; production runs three), the web service's Flask app
and its real submit route (FNSERVE_REDIS_SENTINELS, FNSERVE_REDIS_REPLICAS_ACK=2: every replica),
a forwarder process and a real site manager process reaching Redis through the sentinel.
Stand-in: the site manager's engine (tests/integration/pool_procs.py: appends the task id to a
file, counted here).

With REPLICAS_ACK=1 of two replicas this test fails (thousands of accepted tasks lost): clients
keep writing to the old primary after the promotion, and the replica not promoted acknowledges
those writes until the sentinel moves it. Only a write on every replica is on whichever one is
promoted (docs/operations.md, "Redis failover").
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import redis

from fnserve import serialize
from fnserve._redis_server import free_port, wait_for_port
from fnserve.private_files import private_dir
from fnserve.states import TaskState
from tests.integration.pool_procs import Pool, wait
from web_service.admin import add_user
from web_service.app import create_app
from web_service.settings import Settings

SERVICE = "fnserve"


def _server(path: Path, conf: str, sentinel: bool = False) -> subprocess.Popen[bytes]:
    (path / "redis.conf").write_text(conf)
    args = ["redis-server", str(path / "redis.conf"), *(["--sentinel"] if sentinel else [])]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o077)


class Replicated:
    """A primary, two replicas and a sentinel on loopback, all with passwords (two replicas: one
    is left to acknowledge writes while the old primary rejoins as a replica)."""

    def __init__(self, tmp: Path):
        self.password, self.sentinel_password = secrets.token_hex(16), secrets.token_hex(16)
        self.ports = {"a": free_port(), "b": free_port(), "c": free_port(), "s": free_port()}
        self.procs: list[subprocess.Popen[bytes]] = []
        common = f"bind 127.0.0.1\nrequirepass {self.password}\nmasterauth {self.password}\nsave \"\"\nappendonly no\n"
        for name, replica_of in (("a", None), ("b", self.ports["a"]), ("c", self.ports["a"])):
            d = private_dir(tmp / name)
            conf = f"port {self.ports[name]}\ndir {d}\nlogfile {d}/redis.log\n{common}"
            if replica_of:
                conf += f"replicaof 127.0.0.1 {replica_of}\n"
            self.procs.append(_server(d, conf))
        d = private_dir(tmp / "sentinel")
        self.procs.append(_server(d, (
            f"port {self.ports['s']}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/sentinel.log\nrequirepass {self.sentinel_password}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports['a']} 1\nsentinel auth-pass {SERVICE} {self.password}\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\nsentinel failover-timeout {SERVICE} 10000\n"), sentinel=True))
        for port in self.ports.values():
            wait_for_port("127.0.0.1", port, 10.0, None)
        self.sentinel = redis.Redis(port=self.ports["s"], password=self.sentinel_password, decode_responses=True)

    def primary_port(self) -> int:
        return int(self.sentinel.sentinel_get_master_addr_by_name(SERVICE)[1])

    def replicas_known(self) -> bool:
        replicas = self.sentinel.sentinel_slaves(SERVICE)
        return sum("s_down" not in r["flags"] and r.get("master-link-status") == "ok" for r in replicas) == 2

    def env(self) -> dict[str, str]:
        return {"FNSERVE_REDIS_SENTINELS": f"127.0.0.1:{self.ports['s']}", "FNSERVE_REDIS_SENTINEL_SERVICE": SERVICE,
                "FNSERVE_REDIS_SENTINEL_PASSWORD": self.sentinel_password, "FNSERVE_REDIS_REPLICAS_ACK": "2",
                "FNSERVE_REDIS_WAIT_MS": "1000"}

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    r = Replicated(tmp_path_factory.mktemp("sentinel"))
    try:
        wait(r.replicas_known, 60, "the sentinel to see both replicas in sync")
        yield r
    finally:
        r.stop()


def test_a_forced_failover_during_a_task_stream_loses_no_accepted_task(replicated: Replicated, tmp_path: Path):
    url = f"redis://:{replicated.password}@127.0.0.1:{replicated.ports['a']}/0"  # the password and db; Sentinel names the host
    env = replicated.env()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'registry.db'}", redis_url=url, forwarder_curve=False,
                        forwarder_key_file=str(tmp_path / "forwarder.key"), redis_sentinels=env["FNSERVE_REDIS_SENTINELS"],
                        redis_sentinel_service=SERVICE, redis_sentinel_password=replicated.sentinel_password,
                        redis_replicas_ack=2, redis_wait_ms=1000, anon_rate_limit=0.0)
    app = create_app(settings)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {add_user(settings, 'alice')}"}
    function = serialize.serialize_source("def f(x):\n    return x\n", "f")
    function_id = client.post("/v1/functions", json={"name": "f", "function": base64.b64encode(function).decode()},
                              headers=headers).json["function_id"]
    ep = client.post("/v1/endpoints", json={"name": "site"}, headers=headers).json
    store = app.extensions["fnserve"].store
    pool = Pool(tmp_path, url, env=env, r=store.r)
    pool.secrets[ep["endpoint_id"]] = ep["secret"]
    payload = base64.b64encode(serialize.serialize_args([1], strategy="dill-data")).decode()
    try:
        forwarder = pool.start_forwarder()
        pool.start_site(ep["endpoint_id"], forwarder)
        wait(lambda: pool.connected(ep["endpoint_id"]), 60, "the endpoint to connect")

        accepted: list[str] = []
        refused: list[str] = []  # 503 naming ids: written, not confirmed on a replica
        after = 0  # accepted once the sentinel named the new primary
        failed_over = False
        first = replicated.primary_port()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and after < 40:
            switched = failed_over and replicated.primary_port() != first
            resp = client.post("/v1/tasks", headers=headers, json={
                "tasks": [{"function_id": function_id, "endpoint_id": ep["endpoint_id"], "payload": payload}] * 5})
            if resp.status_code == 202:
                accepted += resp.json["task_ids"]
                after += 5 if switched else 0
            else:
                assert resp.status_code == 503, resp.get_data(as_text=True)
                refused += resp.json["error"].get("details", {}).get("task_ids", [])
            if not failed_over and len(accepted) >= 40:
                replicated.sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
                failed_over = True
        assert failed_over and replicated.primary_port() != first, "the failover did not happen"
        assert after >= 40, "the service did not accept tasks again after the failover"

        def states() -> Counter[str]:
            try:
                return Counter(r.state.value if r else "missing" for r in store.get_many(accepted).values())
            except redis.ConnectionError:  # a connection to the old primary, closed by the failover
                return Counter()

        try:
            wait(lambda: states()[TaskState.SUCCESS.value] == len(accepted), 90, "every accepted task to succeed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {dict(states())} of {len(accepted)}") from None
        runs = pool.effects()
        assert [t for t in accepted if runs[t] != 1] == [], "an accepted task was lost or ran twice"
        assert [t for t in refused if runs[t] > 1] == [], "a task ran twice"
        assert Counter(runs.values()).keys() == {1}
    finally:
        pool.stop()
        app.extensions["fnserve"].engine.dispose()
