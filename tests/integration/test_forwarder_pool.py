"""Several forwarders serving one service: endpoints assigned by the rule, a forwarder killed
with SIGKILL mid-stream, a new forwarder taking endpoints at once.

Real: Redis (with a password), two or three forwarder processes, one real site manager process
per endpoint (session, loop, on-disk result ledger, reconnection). Stand-in: the site managers'
engine (tests/integration/pool_procs.py: a task appends its id to a file, the side effect this
test counts), because Parsl is not under test here and an HTEX per endpoint does not fit CI.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Iterator

import pytest

from fnserve.states import TaskState
from tests.integration.pool_procs import THRESHOLD, Pool, running_pool, wait as _wait
from web_service.forwarder_pool import ForwarderPool, assign, owner_key
from web_service.task_store import NewTask, TaskStore

TASKS_PER_ENDPOINT = 30


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with running_pool(tmp_path_factory.mktemp("pool"), 200) as p:
        yield p


def _endpoints_for(forwarders: list[str], each: int, taken: set[str]) -> list[str]:
    """Endpoint ids the rule spreads ``each`` to every forwarder (ids chosen, the rule unchanged)."""
    chosen: dict[str, list[str]] = {f: [] for f in forwarders}
    for i in range(200):
        e = f"ep-{i}"
        owner = assign(e, forwarders)
        if e not in taken and owner is not None and len(chosen[owner]) < each:
            chosen[owner].append(e)
    return [e for ids in chosen.values() for e in ids]


def _endpoint_of(task_id: str) -> str:
    return task_id.split("-", 1)[1].rsplit("-", 1)[0]  # "<tag>-<endpoint>-<n>"


def _submit(store: TaskStore, endpoints: list[str], n: int, tag: str) -> list[str]:
    store.cache_function("f", b"FN")
    ids = [f"{tag}-{e}-{i}" for e in endpoints for i in range(n)]
    store.submit([NewTask(task_id=t, owner="u", function_id="f", endpoint_id=_endpoint_of(t), payload=b"x") for t in ids])
    return ids


def _states(store: TaskStore, ids: list[str]) -> Counter[str]:
    return Counter(str(r.state.value) if r else "missing" for r in store.get_many(ids).values())


def test_a_killed_forwarders_endpoints_move_to_the_survivor_and_every_task_runs_once(pool: Pool):
    f1, f2 = pool.start_forwarder(), pool.start_forwarder()
    endpoints = _endpoints_for([f1, f2], 2, set())
    for e in endpoints:  # all told to connect to f1: f2's are sent on to it
        pool.start_site(e, f1)
    _wait(lambda: all(pool.owner(e) == assign(e, [f1, f2]) and pool.connected(e) for e in endpoints), 60,
          "every endpoint to register with the forwarder the rule assigns it")
    on_f1 = [e for e in endpoints if assign(e, [f1, f2]) == f1]

    ids = _submit(pool.store, endpoints, TASKS_PER_ENDPOINT, "a")
    # Mid-stream: some of f1's endpoints' tasks done, most not.
    _wait(lambda: sum(n for t, n in pool.effects().items() if _endpoint_of(t) in on_f1) >= 6, 60, "tasks to run on f1's endpoints")
    os.kill(pool.forwarders[f1].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    pool.forwarders[f1].wait(10)

    _wait(lambda: all(pool.owner(e) == f2 for e in on_f1), THRESHOLD + 15, "f1's endpoints to register with f2")
    moved_after = time.monotonic() - killed_at
    _wait(lambda: _states(pool.store, ids)[TaskState.SUCCESS.value] == len(ids), 120, "every task to succeed")
    runs = pool.effects()
    assert {t: n for t, n in runs.items() if t in set(ids) and n != 1} == {}, "a task ran more than once"
    assert set(ids) <= set(runs), "a task never ran"
    # Silence for the endpoints' threshold, then the next forwarder they know: within one
    # threshold plus reconnect delays (generous bound for a loaded CI machine).
    assert moved_after < THRESHOLD + 10, moved_after
    assert ForwarderPool(pool.r).live() == [f2]


def test_a_new_forwarder_takes_new_endpoints_at_once_and_the_ones_the_rule_now_gives_it(pool: Pool):
    before = [a for a in ForwarderPool(pool.r).live()]
    existing = [e for e in pool.sites]
    f3 = pool.start_forwarder()
    live = sorted([*before, f3])
    # The web service's answer to a new endpoint names f3 for the ones the rule gives it ...
    fresh = [e for e in _endpoints_for(live, 1, set(existing)) if assign(e, live) == f3]
    assert ForwarderPool(pool.r).owner(fresh[0], "tcp://fallback:1") == f3
    pool.start_site(fresh[0], f3)
    # ... and endpoints already connected elsewhere that the rule now gives f3 move at their next heartbeat.
    moving = [e for e in existing if assign(e, live) == f3]
    _wait(lambda: pool.owner(fresh[0]) == f3 and all(pool.owner(e) == f3 for e in moving) and pool.connected(fresh[0]),
          30, "f3 to serve its endpoints")
    ids = _submit(pool.store, [fresh[0], *existing], 3, "b")
    _wait(lambda: _states(pool.store, ids)[TaskState.SUCCESS.value] == len(ids), 60, "every task to succeed")
    assert all(pool.effects()[t] == 1 for t in ids)


def test_a_forwarder_stopped_for_an_upgrade_hands_its_endpoints_over_at_once(pool: Pool):
    live = ForwarderPool(pool.r).live()
    leaving = max(live, key=lambda a: sum(pool.owner(e) == a for e in pool.sites))
    theirs = [e for e in pool.sites if pool.owner(e) == leaving]
    assert theirs, "the forwarder to stop serves no endpoint"
    pool.forwarders[leaving].terminate()  # SIGTERM: what a rolling upgrade sends
    stopped_at = time.monotonic()
    rest = [a for a in live if a != leaving]
    _wait(lambda: all(pool.owner(e) == assign(e, rest) and pool.connected(e) for e in theirs), 30,
          "the stopped forwarder's endpoints to register elsewhere")
    # Sent on by the stopping forwarder itself: well before the endpoints' silence threshold.
    assert time.monotonic() - stopped_at < THRESHOLD, time.monotonic() - stopped_at
    assert pool.forwarders[leaving].wait(20) == 0
    ids = _submit(pool.store, theirs, 3, "c")
    _wait(lambda: _states(pool.store, ids)[TaskState.SUCCESS.value] == len(ids), 60, "every task to succeed")
    assert all(pool.effects()[t] == 1 for t in ids)


def test_a_forwarder_whose_endpoint_another_claimed_sends_it_nothing_until_it_registers_again(pool: Pool):
    """Another forwarder accepted a newer registration of the endpoint (here: its claim written
    as that forwarder would, which then died): this one must not dispatch on its old connection
    (the site manager may have left it: tasks sent there stayed "dispatched" for good in the
    full-scale compose test). It drops the connection; the site manager, still here, is told to
    register again, this forwarder claims the endpoint back and its tasks run once each."""
    e = next(e for e in pool.sites if pool.connected(e) and pool.owner(e) in ForwarderPool(pool.r).live())
    mine = pool.owner(e)
    assert mine is not None
    pool.r.set(owner_key(e), "tcp://127.0.0.1:1")  # another forwarder's claim
    ids = _submit(pool.store, [e], 3, "d")
    _wait(lambda: _states(pool.store, ids)[TaskState.SUCCESS.value] == len(ids), 60, "every task to succeed")
    assert all(pool.effects()[t] == 1 for t in ids)
    assert pool.owner(e) == mine  # registered again here, so claimed back
    log = (pool.tmp / f"forwarder-{mine.rsplit(':', 1)[1]}.log").read_text()
    assert f"endpoint {e} is owned by another forwarder now; not dispatching here" in log
