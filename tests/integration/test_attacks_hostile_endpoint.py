"""A hostile endpoint owner attacks other users through the forwarder: a second, real endpoint
(registered by another user, connecting with its own real CurveZMQ keys over a real ZMQ socket)
forges a result (a dill buffer that runs a shell command when loaded) and live outputs for
another user's task, and keeps talking after its endpoint is deleted. Against the embedded
stack (`fnserve up`): gunicorn web service, forwarder, Redis, a real local site manager.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import zmq
from stack_support import running_stack
from zmq_site import Site

from fnserve import messages as m
from fnserve import serialize
from fnserve.client import Client

pytestmark = pytest.mark.integration

SLOW = "def slow(s):\n    import time\n    time.sleep(s)\n    return 'the real result'\n"


class _Payload:
    """Unpickling this runs a shell command: what a forged dill result would do to its reader."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("hostile") / "home") as st:
        yield st


@pytest.fixture(scope="module")
def mallory(stack):
    """Another user of the same service, with an endpoint of her own: (client, registration)."""
    out = subprocess.run([sys.executable, "-m", "web_service.admin", "add-user", "mallory"], env=stack.env,
                         capture_output=True, text=True, timeout=60, check=True)
    fc = Client(stack.url, out.stdout.strip().splitlines()[-1])
    return fc, fc.register_endpoint("forge")


def _connect(stack, reg) -> Site:
    site = Site(reg["forwarder_address"], reg["forwarder_public_key"], reg["curve_public_key"], reg["curve_secret_key"])
    assert site.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert isinstance(site.register(reg["endpoint_id"], reg["secret"]), m.Registered)
    return site


def _service_redis(stack) -> redis.Redis:
    pid = int((stack.home / "service/run/forwarder.pid").read_text())
    env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
    return redis.Redis.from_url(env[b"FNSERVE_REDIS_URL"].decode())


def _wait_state(fc: Client, task_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while fc.get_task(task_id)["state"] != state:
        assert time.monotonic() < deadline, f"task {task_id} never reached {state}"
        time.sleep(0.05)


def _until_ack(site: Site) -> m.Ack:
    for _ in range(10):
        msg = site.receive(5)
        if isinstance(msg, m.Ack):
            return msg
    raise AssertionError("the forwarder never acked")


def test_forged_result_and_outputs_for_another_users_task_are_dropped_counted_and_not_billed(stack, mallory):
    victim = stack.client()
    fid = victim.register_source(SLOW, "slow")
    task_id = victim.run(fid, stack.endpoint_id, 3)
    _wait_state(victim, task_id, "running")
    marker = stack.tmp / "forged-result-ran"
    forged = serialize.serialize_data(None).split(b"\n", 1)[0] + b"\n" + pickle.dumps(_Payload(f"echo forged >> {marker}"))
    assert serialize.parse_header(forged).strategy == "dill-data"

    _, reg = mallory
    site = _connect(stack, reg)
    try:
        site.send(m.TaskOutputBatch(outputs=[m.TaskOutput(task_id=task_id, seq=0, time=time.time(), values={"forged": True})]))
        site.send(m.ResultBatch(results=[m.ResultMessage(task_id=task_id, ok=True, data=forged,
                                                         resources={"wall_time": 9999.0, "cpu_time": 9999.0})]))
        assert task_id in _until_ack(site).task_ids  # acked (so it is not resent), not recorded
    finally:
        site.close()

    # The victim gets the real result from the endpoint that holds the task; nothing ran.
    assert victim.get_result(task_id, timeout=60) == "the real result"
    assert not marker.exists()
    outputs = victim.get_outputs(task_id)["outputs"]
    assert not any(o.get("values", {}).get("forged") for o in outputs), outputs
    # Counted and logged, naming the endpoint that sent it.
    r = _service_redis(stack)
    assert int(r.hget("fns:stats:rejected_results", reg["endpoint_id"]) or 0) == 1
    log = (stack.home / "service/run/forwarder.log").read_text()
    assert f"endpoint {reg['endpoint_id']} sent 1 result(s) for tasks it does not hold" in log
    assert f"endpoint {reg['endpoint_id']} sent 1 live output(s) for tasks not in flight there" in log
    # Billed to the endpoint that ran it, never to the forger (the usage writer lags ~0.5 s).
    fc, _ = mallory
    deadline = time.monotonic() + 10
    while victim.usage()["user"]["tasks"] < 1:
        assert time.monotonic() < deadline, victim.usage()
        time.sleep(0.2)
    forge = [e for e in fc.usage()["endpoints"] if e["endpoint_id"] == reg["endpoint_id"]]
    assert forge and forge[0]["tasks"] == 0, forge


def test_deleting_an_endpoint_cuts_its_live_connection_and_refuses_its_key(stack, mallory):
    fc, _ = mallory
    reg = fc.register_endpoint("doomed")
    site = _connect(stack, reg)
    r = _service_redis(stack)
    try:
        site.send(m.Heartbeat(sent_at=time.time()))
        assert isinstance(site.receive(), m.Heartbeat)
        fc.delete_endpoint(reg["endpoint_id"])
        # Told at once (no heartbeat threshold to wait for), with a stable code.
        msg = site.receive(3)
        assert isinstance(msg, m.Refused) and msg.code == "endpoint_deleted", msg
        assert r.hget(f"fns:ep:{reg['endpoint_id']}:status", "connected") == b"0"
        # Whatever it sends on that connection is no longer accepted: no heartbeat answered,
        # no registration, no result.
        site.send(m.Heartbeat(sent_at=time.time()))
        assert not isinstance(site.receive(2), m.Heartbeat)
        assert isinstance(site.register(reg["endpoint_id"], reg["secret"]), (m.Refused, type(None)))
        assert r.hget(f"fns:ep:{reg['endpoint_id']}:status", "connected") == b"0"
    finally:
        site.close()
    # A new connection with its key is refused by ZAP before any message.
    again = Site(reg["forwarder_address"], reg["forwarder_public_key"], reg["curve_public_key"], reg["curve_secret_key"])
    try:
        assert again.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        again.close()
