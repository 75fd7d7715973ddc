"""Stale work expires: real Redis and a real forwarder; the test plays the site manager.

Tasks for an endpoint that does not connect fail after ``waiting_expiry`` with code
``endpoint_not_connected``; a connected endpoint's tasks never do.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from fnserve import messages as m
from web_service.forwarder import Forwarder
from web_service.task_store import NewTask, TaskStore
from tests.integration.test_forwarder import Site

EXPIRY = 1.0


@pytest.fixture
def forwarder(redis_client):
    store = TaskStore(redis_client)
    fwd = Forwarder(store, lambda e, s: s == "s3cret", "tcp://127.0.0.1:0", heartbeat_period=0.2,
                    heartbeat_threshold=0.6, waiting_expiry=EXPIRY)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    yield fwd, store
    fwd.stop()
    th.join(10)


def _submit(store: TaskStore, endpoint_id: str, ids: list[str]) -> None:
    store.cache_function("f", b"FN")
    store.submit([NewTask(task_id=i, owner="u", function_id="f", endpoint_id=endpoint_id, payload=b"x") for i in ids])


def _wait_finished(store: TaskStore, ids: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    with store.completions("u") as done:
        while True:
            recs = store.get_many(ids)
            if all(r is not None and r.state.value in ("success", "failed", "cancelled") for r in recs.values()):
                return recs
            if time.monotonic() > deadline:
                return recs
            done.wait(ids, timeout=0.5, any_=True)


def test_tasks_for_an_endpoint_that_never_connects_fail_with_a_clear_code(forwarder):
    fwd, store = forwarder
    ids = ["lonely-1", "lonely-2"]
    submitted = time.monotonic()
    _submit(store, "never-here", ids)
    recs = _wait_finished(store, ids, timeout=EXPIRY + 10)
    for rec in recs.values():
        assert rec.state.value == "failed", rec
        error = json.loads(rec.error) if isinstance(rec.error, (str, bytes)) else rec.error
        assert error["code"] == "endpoint_not_connected" and "never-here" in error["message"], error
    # Not before the expiry, and about at it (the sweep runs every second at this expiry).
    elapsed = time.monotonic() - submitted
    assert EXPIRY <= elapsed < EXPIRY + 5, elapsed
    assert store.queue_length("never-here") == 0


def test_a_connected_endpoints_waiting_tasks_never_expire(forwarder):
    fwd, store = forwarder
    site = Site(fwd.address)
    # Room for one task: the other two wait in the queue while the endpoint is connected.
    site.send(m.Register(endpoint_id="ep-live", secret="s3cret", capacity=1))
    assert isinstance(site.recv(), m.Registered)
    try:
        _submit(store, "ep-live", ["held", "queued-1", "queued-2"])
        batch = site.recv_type(m.TaskBatch)
        assert [t.task_id for t in batch.tasks] == ["held"]
        deadline = time.monotonic() + EXPIRY + 2.5  # past the expiry and at least two sweeps
        while time.monotonic() < deadline:
            site.send(m.Heartbeat(sent_at=time.time()))
            time.sleep(0.2)
        states = {t: r.state.value for t, r in store.get_many(["held", "queued-1", "queued-2"]).items()}
        assert states == {"held": "dispatched", "queued-1": "waiting-for-endpoint", "queued-2": "waiting-for-endpoint"}
    finally:
        site.close()
