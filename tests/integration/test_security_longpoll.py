"""Long-polls cannot starve the service, against the real gunicorn server (issue 12, item 8).

Another OS account (useradd, runuser, the system Python) holds as many long-polls as its users
may open, and more: the service keeps answering `GET /v1/health` at once, refuses the extra
long-polls with 429 `too_many_waits` and `Retry-After`, and long-polls of other users still
return their tasks' results as soon as they finish. Run for both worker classes the server
offers (gevent, the default, and gthread). The latency itself is measured in
benchmarks/longpoll_health.py. Also here, because they need the real HTTP server: the access
log (escaped, no token) and chunked request bodies over the size limit (413).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import redis
import requests
from os_accounts import as_account, readable_copy, unprivileged_account
from web_server_support import web_server

from fnserve import serialize
from fnserve.messages import ResultMessage
from web_service.task_store import TaskStore

ATTACKS = Path(__file__).parent / "attacks"
CAP = 5  # long-polls per user
ATTACKERS = 8  # users of the attacking account: 8 x 5 = 40 long-polls, the number
WAIT = 20


@pytest.fixture(scope="module", params=["default", "gthread"])
def server(request, redis_url, tmp_path_factory):
    worker = None if request.param == "default" else request.param
    with web_server(redis_url, tmp_path_factory.mktemp(f"web-{request.param}"), worker_class=worker,
                    MAX_WAITS_PER_USER=str(CAP), MAX_WAIT=str(WAIT), MAX_PAYLOAD_BYTES="1024",
                    MAX_REQUEST_BYTES="1") as s:
        yield s


@pytest.fixture(scope="module")
def attacker():
    with unprivileged_account() as name:
        yield name


@pytest.fixture(scope="module")
def scripts():
    folder = Path(tempfile.mkdtemp(prefix="fnserve-attacks-"))
    folder.chmod(0o755)
    yield {p.stem: readable_copy(p, folder) for p in ATTACKS.glob("*.py")}
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


def _users(server, prefix: str, n: int) -> list[str]:
    return [server.add_user(f"{prefix}{i}-{os.getpid()}-{time.monotonic_ns()}") for i in range(n)]


def _user_id(server, token: str) -> str:
    return requests.get(server.url + "/v1/whoami", headers=_auth(token), timeout=10).json()["user_id"]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _open_waits(server, user_ids: list[str]) -> int:
    r = redis.Redis.from_url(server.settings.redis_url)
    try:
        return sum(int(r.zcard(f"fns:waits:{u}")) for u in user_ids)  # web_service.waits' key layout
    finally:
        r.close()


def test_health_answers_and_extra_long_polls_get_429_while_another_account_floods(server, attacker, scripts):
    tokens = _users(server, "flood", ATTACKERS)
    user_ids = [_user_id(server, t) for t in tokens]
    path = f"/v1/tasks/completions?cursor=0-0&wait={WAIT}"
    flood = subprocess.Popen(as_account(attacker, str(scripts["longpoll_flood"]), server.url, path, str(CAP + 1), *tokens),
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        refused = []  # answers can come before the script says it started them all
        while (line := flood.stdout.readline().strip()) != "started":
            refused.append(json.loads(line))
        # Setup: until the service holds the flood's long-polls (3 s at most: on a server without
        # the count, go on and let health show what the flood does).
        deadline = time.monotonic() + 3
        while _open_waits(server, user_ids) < CAP * ATTACKERS and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(10):
            health = requests.get(server.url + "/v1/health", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        # One long-poll over the cap per user: refused at once, saying when to retry.
        refused += [json.loads(flood.stdout.readline()) for _ in range(ATTACKERS - len(refused))]
        assert all(r["status"] == 429 and r["code"] == "too_many_waits" for r in refused), refused
        assert all(1 <= int(r["retry_after"]) <= WAIT + 1 for r in refused), refused
        assert _open_waits(server, user_ids) == CAP * ATTACKERS
    finally:
        os.killpg(flood.pid, signal.SIGTERM)
        flood.wait(10)


def test_long_polls_return_results_as_soon_as_tasks_finish_and_free_their_places(server):
    (token,) = _users(server, "waiter", 1)
    user_id = _user_id(server, token)
    fid = requests.post(server.url + "/v1/functions", headers=_auth(token), timeout=10, json={
        "name": "double", "function": base64.b64encode(serialize.serialize_source("def double(x):\n    return 2 * x\n", "double")).decode(),
    }).json()["function_id"]
    eid = requests.post(server.url + "/v1/endpoints", headers=_auth(token), json={"name": "ep"}, timeout=10).json()["endpoint_id"]
    task_ids = requests.post(server.url + "/v1/tasks", headers=_auth(token), timeout=10, json={
        "tasks": [{"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(CAP)]}).json()["task_ids"]
    with requests.Session() as http_session:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(CAP) as pool:
            waits = [pool.submit(http_session.get, f"{server.url}/v1/tasks/{tid}?wait={WAIT}", headers=_auth(token), timeout=WAIT + 10)
                     for tid in task_ids]
            deadline = time.monotonic() + 5
            while _open_waits(server, [user_id]) < CAP and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _open_waits(server, [user_id]) == CAP
            # The forwarder's part: take the tasks and record their results.
            store = TaskStore.from_url(server.settings.redis_url)
            claimed = store.claim(eid, 100)
            finished_at = time.monotonic()
            store.record_results([ResultMessage(task_id=t.task_id, ok=True, data=serialize.serialize_data(2, serialize.JSON_DATA))
                                  for t in claimed], eid)
            answers = [w.result() for w in waits]
            took = time.monotonic() - finished_at
    assert sorted(t.task_id for t in claimed) == sorted(task_ids)
    assert all(a.status_code == 200 and a.json()["state"] == "success" for a in answers)
    assert took < WAIT / 2, f"long-polls answered {took:.1f} s after the results, not when they came"
    assert _open_waits(server, [user_id]) == 0  # every place given back


def test_access_log_names_request_status_and_user_escapes_control_characters_and_never_the_token(server):
    (token,) = _users(server, "logged", 1)
    user_id = _user_id(server, token)
    evil = "/v1/tasks/" + urllib.parse.quote("\x1b[31mEVIL\nFORGED 200 line")
    assert requests.get(server.url + evil, headers=_auth(token), timeout=10).status_code == 404
    assert requests.get(server.url + "/v1/functions?secret=hunter2", headers=_auth(token), timeout=10).status_code == 200
    deadline = time.monotonic() + 5
    while "GET /v1/functions 200" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker writes its log lines on its own schedule
    log = server.log()
    lines = [line for line in log.splitlines() if "fnserve.access" in line]
    assert any(f"GET /v1/tasks/\\x1b[31mEVIL\\x0aFORGED 200 line 404" in line and f"user={user_id}" in line for line in lines), lines[-5:]
    assert any("GET /v1/functions 200" in line and f"user={user_id}" in line for line in lines), lines[-5:]
    assert "\x1b" not in log and "\nFORGED" not in log and "hunter2" not in log and token not in log


def test_a_chunked_body_over_the_limit_is_refused_not_cut(server):
    (token,) = _users(server, "chunky", 1)
    fid = requests.post(server.url + "/v1/functions", headers=_auth(token), timeout=10, json={
        "name": "f", "function": base64.b64encode(serialize.serialize_source("def f(x):\n    return x\n", "f")).decode(),
    }).json()["function_id"]
    eid = requests.post(server.url + "/v1/endpoints", headers=_auth(token), json={"name": "ep"}, timeout=10).json()["endpoint_id"]
    body = json.dumps({"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}]}).encode() + b" " * (3 << 20)

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("POST", "/v1/tasks", body=chunks(), encode_chunked=True,
                 headers={**_auth(token), "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 413 and answer["error"]["code"] == "payload_too_large", answer
    status = requests.get(f"{server.url}/v1/endpoints/{eid}/status", headers=_auth(token), timeout=10).json()
    assert status["tasks_waiting"] == 0  # nothing was submitted from the cut body
