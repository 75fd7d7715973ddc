"""Triggers on the real stack (`fnserve up`: gunicorn, Redis, forwarder, trigger runner, a local
endpoint): a signed webhook's event runs its function; a wrong signature is refused; a schedule
every 2 s fires every time exactly once across a kill -9 of the trigger runner and of the web
service; events sent while the site manager is killed (kill -9 of its one process) and restarted
each make one task that runs, none lost or repeated; a trigger shared with a second user runs
their rule as them; `fnserve down` leaves no process. The CLI drives it as a user would."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
import requests
from fnserve.testing.stack import FNSERVE
from stack_support import running_stack

from fnserve import webhooks
from fnserve.client import Client


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("triggers")) as s:
        yield s
    assert s.leftovers() == [], "fnserve down left processes running"


def recorder():
    """A function (nested: dill ships it by value) that appends one line per run to a file and
    returns what it was given: the test counts runs by lines."""

    def record(path: str, what: Any) -> Any:
        import json

        with open(path, "a") as f:
            f.write(json.dumps(what, sort_keys=True) + "\n")
        return what

    return record


def _wait_history(client, trigger_id: str, done: Any, timeout: float) -> list[dict[str, Any]]:
    """Read the trigger's history until ``done(events)`` holds (each read is one REST call)."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.trigger_history(trigger_id, limit=1000)
        if done(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"history did not get there in {timeout} s: {json.dumps(events)[:2000]}")
        time.sleep(0.2)


def test_a_signed_webhook_runs_its_function_and_a_forged_one_is_refused(stack):
    client = stack.client()
    fid = client.register_function(recorder())
    runs = stack.tmp / "webhook-runs"
    out = stack.cli("trigger", "create", "scan-done", "--webhook", "--function", fid, "--endpoint", stack.endpoint_id,
                    "--arg", json.dumps(str(runs)), "--arg", "$data.path", "--filter", "data.path glob *.h5")
    trig = json.loads(out.stdout)
    url = stack.url + trig["webhook_path"]
    body = json.dumps({"path": "/beamline/scan7.h5"}).encode()
    resp = requests.post(url, data=body, headers=webhooks.sign(trig["secret"], body, event_id="scan-7"), timeout=10)
    assert resp.status_code == 202, resp.text
    (firing,) = resp.json()["firings"]
    assert client.get_result(firing["task_id"], timeout=60) == "/beamline/scan7.h5"
    # Filtered out: no task. Forged: refused, nothing recorded.
    tif = json.dumps({"path": "/beamline/scan7.tif"}).encode()
    assert requests.post(url, data=tif, headers=webhooks.sign(trig["secret"], tif), timeout=10).json()["firings"] == []
    forged = requests.post(url, data=body, headers=webhooks.sign("guessed", body, event_id="scan-8"), timeout=10)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "bad_signature"
    # The sender retries the first delivery: nothing runs again.
    again = requests.post(url, data=body, headers=webhooks.sign(trig["secret"], body, event_id="scan-7"), timeout=10)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    history = stack.cli("trigger", "history", trig["trigger_id"]).stdout
    assert firing["task_id"] in history and history.count(" event ") == 2
    assert runs.read_text().splitlines() == ['"/beamline/scan7.h5"']


def test_a_schedule_fires_every_time_once_across_kill9_of_the_runner_and_the_web_service(stack):
    client = stack.client()
    fid = client.register_function(recorder())
    runs = stack.tmp / "schedule-runs"
    trig = client.create_trigger("every-2s", "schedule", {"every": 2}, rules=[
        client.rule(fid, stack.endpoint_id, args=[str(runs), "$data.scheduled_at"])])
    tid = trig["trigger_id"]
    _wait_history(client, tid, lambda evs: len(evs) >= 2, 30)
    stack.kill9("service", "run", "triggers.pid")
    stack.kill9("service", "run", "web.pid")
    time.sleep(4.5)  # down for at least two schedule times: they must be caught up, not lost
    stack.up()
    events = _wait_history(client, tid, lambda evs: len(evs) >= 7 and all(
        f["state"] != "pending" for e in evs for f in e["firings"]), 60)
    client.delete_trigger(tid)
    times = sorted(datetime.fromisoformat(e["data"]["scheduled_at"]) for e in events)
    assert len(times) == len(set(times)), "a schedule time fired twice"
    assert all((b - a).total_seconds() == 2 for a, b in zip(times, times[1:])), f"a schedule time was lost: {times}"
    task_ids = [f["task_id"] for e in events for f in e["firings"]]
    assert len(task_ids) == len(events) == len(set(task_ids))
    results = client.wait(task_ids, timeout=60)
    assert all(r["state"] == "success" for r in results), results
    ran = Counter(json.loads(line) for line in runs.read_text().splitlines())
    assert set(ran) == {e["data"]["scheduled_at"] for e in events} and max(ran.values()) == 1


def test_events_during_a_site_manager_kill9_each_make_one_task_that_runs(stack):
    client = stack.client()
    fid = client.register_function(recorder())
    runs = stack.tmp / "burst-runs"
    trig = client.create_trigger("burst", "webhook", rules=[client.rule(fid, stack.endpoint_id, args=[str(runs), "$data.n"])])
    url = stack.url + trig["webhook_path"]
    n = 100
    session = requests.Session()
    task_ids = []
    for i in range(n):
        if i == n // 4:
            stack.kill9("endpoints", "local", "site_manager.pid")  # it alone: its interchange and pool end on their own
        if i == n // 2:
            stack.up()  # the site manager again, while events keep coming
        body = json.dumps({"n": i}).encode()
        headers = webhooks.sign(trig["secret"], body, event_id=f"e{i}")
        resp = session.post(url, data=body, headers=headers, timeout=10)
        if i % 10 == 0:  # some senders retry: it changes nothing
            assert session.post(url, data=body, headers=headers, timeout=10).json()["duplicate"] is True
        assert resp.status_code == 202, resp.text
        task_ids += [f["task_id"] for f in resp.json()["firings"]]
    assert len(task_ids) == n == len(set(task_ids))
    _wait_history(client, trig["trigger_id"], lambda evs: len(evs) == n and all(
        f["state"] != "pending" for e in evs for f in e["firings"]), 60)  # every task made
    results = client.wait(task_ids, timeout=120)
    assert all(r["state"] == "success" for r in results), [r for r in results if r["state"] != "success"][:3]
    assert sorted(r["result_json"] for r in results) == list(range(n))  # each event's own value
    ran = Counter(int(line) for line in runs.read_text().splitlines())
    assert set(ran) == set(range(n))  # every event's task ran (a task running at the kill may run again:
    # dispatch is at-least-once, docs/reliability.md; each event still made exactly one task)


def test_a_trigger_shared_with_a_second_user_runs_their_rule_as_them(stack):
    """Two users, by the CLI: alice shares her webhook trigger (and her endpoint) with bob; bob
    binds his own function to it; one event runs alice's task and bob's, each as its owner."""
    import subprocess
    import sys

    from stack_support import REPO

    made = subprocess.run([sys.executable, "-m", "web_service.admin", "add-user", "bob"], env=stack.env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    bob_env = {**stack.env, "FNSERVE_TOKEN": made.stdout.strip().splitlines()[-1], "FNSERVE_SERVICE_URL": stack.url}

    def as_bob(*args: str) -> str:
        out = subprocess.run([*FNSERVE, *args], env=bob_env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    alice = stack.client()
    bob = Client(stack.url, bob_env["FNSERVE_TOKEN"])
    runs = stack.tmp / "shared-runs"
    trig = alice.create_trigger("shared", "webhook", rules=[alice.rule(alice.register_function(recorder()), stack.endpoint_id,
                                                                       args=[str(runs), "alice"])])
    tid = trig["trigger_id"]
    bobs_fn = bob.register_function(recorder())
    refused = subprocess.run([*FNSERVE, "trigger", "rule", "add", tid, "--function", bobs_fn, "--endpoint", stack.endpoint_id],
                             env=bob_env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stdout + refused.stderr  # not shared yet
    assert json.loads(stack.cli("trigger", "share", tid, "--user", "bob").stdout)["users"] == ["bob"]
    stack.cli("share", "endpoint", stack.endpoint_id, "--user", "bob")
    rule_id = as_bob("trigger", "rule", "add", tid, "--function", bobs_fn, "--endpoint", stack.endpoint_id,
                     "--arg", json.dumps(str(runs)), "--arg", '"bob"').strip()
    assert tid in as_bob("trigger", "list", "--shared")

    body = b'{"scan": 1}'
    resp = requests.post(stack.url + trig["webhook_path"], data=body, headers=webhooks.sign(trig["secret"], body), timeout=10)
    assert resp.status_code == 202, resp.text
    task_of = {f["rule_id"]: f["task_id"] for f in resp.json()["firings"]}
    assert bob.get_result(task_of[rule_id], timeout=60) == "bob"  # bob's task, his to read
    assert alice.get_result(task_of[trig["rules"][0]["rule_id"]], timeout=60) == "alice"
    assert sorted(json.loads(line) for line in runs.read_text().splitlines()) == ["alice", "bob"]
    (seen,) = bob.trigger_history(tid)
    assert [f["rule_id"] for f in seen["firings"]] == [rule_id]  # his firing only
    stack.cli("unshare", "endpoint", stack.endpoint_id, "--user", "bob")
    alice.delete_trigger(tid)
