"""Secrets and payloads never reach the logs: the web service at DEBUG, through the paths that
handle them (registration, submit, failed authentication, errors), and the forwarder refusing
a wrong endpoint secret. (The end-to-end test in test_security_done_when.py also checks the
logs of a real site manager process.)"""

from __future__ import annotations

import base64
import threading

import zmq

from fnserve import messages as m
from fnserve import serialize
from tests.integration.rest_support import bearer
from web_service.forwarder import Forwarder

MARK = "S3CRET-MARKER-91c2"


def test_web_service_logs_no_token_secret_or_payload(app, client, alice, caplog):
    caplog.set_level("DEBUG")
    token = alice["Authorization"].split()[1]
    body = serialize.serialize_source(f"def f(x):\n    return '{MARK}-body' + x\n", "f")
    fid = client.post("/v1/functions", json={"name": "f", "function": base64.b64encode(body).decode()}, headers=alice).json["function_id"]
    reg = client.post("/v1/endpoints", json={"name": "ep"}, headers=alice).json
    tid = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": reg["endpoint_id"], "args": [f"{MARK}-arg"]}]},
                      headers=alice).json["task_ids"][0]
    assert client.get(f"/v1/tasks/{tid}", headers=alice).status_code == 200
    client.get("/v1/functions", headers=bearer(f"fns_{MARK}-guess"))  # a failed authentication
    client.post("/v1/tasks", data=f'{{"tasks": [{{"payload": "{MARK}"', headers=alice)  # malformed JSON around a payload
    text = caplog.text
    assert "registered" in text  # the service does log what happened...
    for secret in (token, reg["secret"], reg["curve_secret_key"], MARK):
        assert secret not in text  # ...but never a token, an endpoint secret or a payload


def test_forwarder_refusing_a_wrong_secret_does_not_log_it(redis_client, caplog):
    from web_service.task_store import TaskStore

    caplog.set_level("DEBUG")
    fwd = Forwarder(TaskStore(redis_client), lambda e, s: False, "tcp://127.0.0.1:0")
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fwd.address)
    try:
        sock.send(m.encode(m.Register(endpoint_id="ep-1", secret=f"{MARK}-endpoint-secret")))
        assert sock.poll(5000)
        assert isinstance(m.decode_from_forwarder(sock.recv()), m.Refused)
    finally:
        sock.close(0)
        fwd.stop()
        th.join(10)
    assert "refused a site manager for endpoint ep-1" in caplog.text and MARK not in caplog.text
