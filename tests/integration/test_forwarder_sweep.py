"""A forwarder killed together with some of its endpoints' site managers: a survivor marks those
endpoints disconnected and requeues their in-flight tasks after the heartbeat threshold, and
leaves alone an endpoint whose site manager registered elsewhere meanwhile.

Real: Redis (with a password), two forwarder processes, one real site manager process per
endpoint (tests/integration/pool_procs.py: a task appends its id to a file after ``seconds``, the
side effect counted here). The last two tests drive the sweep itself against real Redis with no
processes, to pin the race and the lock.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import pytest

from fnserve.states import TaskState
from tests.integration.pool_procs import THRESHOLD, Pool, running_pool, wait
from web_service.forwarder_pool import ForwarderPool, assign, endpoints_key, heartbeat_ttl, owner_key
from web_service.forwarder_sweep import Sweeper
from web_service.store.keys import status_key
from web_service.task_store import NewTask, TaskStore

TTL = heartbeat_ttl(THRESHOLD)


@pytest.fixture
def pool(tmp_path) -> Iterator[Pool]:
    with running_pool(tmp_path, 100) as p:
        yield p


def _submit(store: TaskStore, endpoint_id: str, n: int, tag: str) -> list[str]:
    store.cache_function("f", b"FN")
    ids = [f"{tag}-{endpoint_id}-{i}" for i in range(n)]
    store.submit([NewTask(task_id=t, owner="u", function_id="f", endpoint_id=endpoint_id, payload=b"x") for t in ids])
    return ids


def _succeeded(store: TaskStore, ids: list[str]) -> bool:
    return all(r is not None and r.state == TaskState.SUCCESS for r in store.get_many(ids).values())


def test_a_dead_forwarders_endpoints_whose_site_managers_died_too_are_swept_and_their_tasks_run_once(pool: Pool):
    f1, f2 = pool.start_forwarder(), pool.start_forwarder()
    on_f1 = [e for e in (f"ep-{i}" for i in range(100)) if assign(e, [f1, f2]) == f1]
    dead, racer = on_f1[:2], on_f1[2]
    # The dead ones' tasks never finish (their site managers are killed mid-task); the racer's
    # are still held when the sweep comes, since its site manager moves to f2 first.
    for e in dead:
        pool.start_site(e, f1, seconds=600)
    pool.start_site(racer, f1, seconds=THRESHOLD + TTL + 4)
    wait(lambda: all(pool.owner(e) == f1 and pool.connected(e) for e in [*dead, racer]), 30, "f1's endpoints to register")
    tasks = {e: _submit(pool.store, e, 3, "t") for e in [*dead, racer]}
    wait(lambda: all(pool.store.endpoint_status(e)["tasks_in_flight"] == 3 for e in tasks), 30, "every task in flight")

    for e in dead:
        os.kill(pool.sites[e].pid, signal.SIGKILL)
    os.kill(pool.forwarders[f1].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for proc in [pool.forwarders[f1], *(pool.sites[e] for e in dead)]:
        proc.wait(10)

    wait(lambda: not any(pool.connected(e) for e in dead), THRESHOLD + 15, "the dead endpoints to be shown disconnected")
    swept_after = time.monotonic() - killed_at
    # Seen dead within the TTL (plus an announce), swept a threshold later (plus an announce).
    assert swept_after < TTL + THRESHOLD + 3, swept_after
    for e in dead:
        status = pool.store.endpoint_status(e)
        assert (status["tasks_in_flight"], status["tasks_waiting"]) == (0, 3), status
        assert b"forwarder died" in (pool.r.hget(status_key(e), "reason") or b"")
        assert pool.owner(e) is None
    assert pool.owner(racer) == f2 and pool.connected(racer)  # registered with f2 before the sweep: left alone
    log = next(pool.tmp.glob(f"forwarder-{f2.rsplit(':', 1)[1]}.log")).read_text()
    assert f"endpoint {racer} disconnected" not in log
    assert not set(pool.effects()) & {t for e in dead for t in tasks[e]}, "a killed site manager's task counted as run"

    for e in dead:  # the site managers come back (to f2's address: f1's is gone)
        pool.start_site(e, f2)
    every = [t for ids in tasks.values() for t in ids]
    wait(lambda: _succeeded(pool.store, every), 60, "every task to succeed")
    runs = pool.effects()
    assert {t: runs[t] for t in every if runs[t] != 1} == {}, "a task ran twice or never"


def _dead_forwarder_with(store: TaskStore, endpoint_id: str, tasks: int) -> tuple[ForwarderPool, list[str]]:
    """Forwarder A owned ``endpoint_id`` with ``tasks`` in flight, then died (its key expired)."""
    a = ForwarderPool(store.r, "tcp://a:1", ttl=0.2)
    a.announce()
    a.claim(endpoint_id)
    ids = _submit(store, endpoint_id, tasks, "s")
    assert len(store.claim(endpoint_id, tasks)) == tasks
    store.set_connected(endpoint_id, True)
    wait(lambda: a.address not in ForwarderPool(store.r).live(), 5, "A's liveness to lapse")
    return a, ids


def test_an_endpoint_that_registered_with_a_survivor_is_not_swept(pool: Pool):
    """The race: the site manager registered with B (B claimed it and settled its tasks) before
    the sweep ran: its held tasks stay in flight, nothing is requeued to run twice."""
    a, ids = _dead_forwarder_with(pool.store, "ep-1", 3)
    b = ForwarderPool(pool.r, "tcp://b:1", ttl=5)
    b.announce()
    b.claim("ep-1")  # what B's registration does first, then requeue_inflight_except(held: all 3)
    sweeper = Sweeper(pool.store, b, grace=0.0)
    sweeper.plan(b.live())
    assert sweeper.pending == [a.address]
    assert sweeper.step(1.0) == 0
    status = pool.store.endpoint_status("ep-1")
    assert (status["connected"], status["tasks_in_flight"], status["tasks_waiting"]) == (True, 3, 0)
    assert pool.owner("ep-1") == b.address
    assert sweeper.pending == [] and pool.r.scard(endpoints_key(a.address)) == 0


def test_exactly_one_survivor_sweeps_a_dead_forwarder(pool: Pool):
    a, ids = _dead_forwarder_with(pool.store, "ep-2", 2)
    survivors = [ForwarderPool(pool.r, f"tcp://s{i}:1", ttl=5) for i in range(3)]
    sweepers = [Sweeper(pool.store, s, grace=0.0) for s in survivors]
    for s in survivors:
        s.announce()
    for s, sw in zip(survivors, sweepers):
        sw.plan(s.live())
    assert sorted(len(sw.pending) for sw in sweepers) == [0, 0, 1]
    assert sum(sw.step(1.0) for sw in sweepers) == 1
    status = pool.store.endpoint_status("ep-2")
    assert (status["connected"], status["tasks_in_flight"], status["tasks_waiting"]) == (False, 0, 2)
    assert pool.r.get(owner_key("ep-2")) is None
