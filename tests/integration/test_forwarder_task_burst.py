"""A burst of tasks to many endpoints converges: every task runs and is recorded once, and no
endpoint is lost while the forwarder is busy.

A burst wakes every endpoint at once; dispatching to all of them, then recording all their result
batches, a Redis round trip or more each, used to keep the forwarder from reading its socket for
longer than the heartbeat threshold: it then judged the endpoints whose heartbeats sat unread in
the socket silent and lost them by the hundred (each loss requeueing and re-registering: a storm
that fed itself), and the site managers, unanswered, reconnected. Here 1,000 simulated site
managers (the site manager's own protocol Session each, tests/integration/sim_endpoints.py) and a
forwarder with a 1.5 s threshold get 6,000 tasks at once. The forwarder now dispatches within a
time budget per loop pass (web_service/forwarder_backlog.py), records a pass's result batches in
one pipelined round trip, and judges silence only up to when it last read its socket empty
(web_service/forwarder_session.py ``silence_clock``).
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from web_service.forwarder import Forwarder
from web_service.task_store import NewTask, TaskStore

N = 1000
TASKS = 6000
OWNER = "burst-user"


class _Losses(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if "disconnected" in line:
            self.lines.append(line)


def test_a_burst_of_6000_tasks_to_1000_endpoints_completes_once_and_loses_no_endpoint(redis_client: redis.Redis, tmp_path: Path):
    store = TaskStore(redis_client)
    store.cache_function("f-noop", b"fns1 source 3.11\nnoop\ndef noop():\n    return None\n")
    fwd = Forwarder(store, lambda e, s: s == "s-" + e, "tcp://127.0.0.1:0", heartbeat_period=0.5, heartbeat_threshold=1.5)
    losses = _Losses()
    logging.getLogger("web_service.forwarder").addHandler(losses)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    ids = [f"ep-{i:04d}" for i in range(N)]
    cfg = {"endpoints": [{"endpoint_id": e, "secret": "s-" + e, "forwarder": fwd.address} for e in ids],
           "effects": str(tmp_path / "effects"), "heartbeat_period": 0.5, "heartbeat_threshold": 1.5}
    log = tmp_path / "sims.log"
    with open(log, "w") as err:
        sims = subprocess.Popen([sys.executable, "-m", "tests.integration.sim_endpoints", json.dumps(cfg)], stderr=err)
    done: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while len(fwd.connections.by_endpoint) < N and time.monotonic() < deadline and sims.poll() is None:
            time.sleep(0.2)  # watching a count another thread moves; nothing to await
        assert len(fwd.connections.by_endpoint) == N, "the endpoints did not all register"
        time.sleep(2.0)  # registration settled (some reconnect while 1,000 register): what follows is the burst's doing
        lost_before, reconnects_before = len(losses.lines), sum("reconnect" in line for line in log.read_text().splitlines())
        cursor = store.completion_cursor(OWNER)
        for start in range(0, TASKS, 1000):
            store.submit([NewTask(task_id=f"t{i}", owner=OWNER, function_id="f-noop", endpoint_id=ids[i % N],
                                  payload=b"fns1 json-data 3\n{}") for i in range(start, start + 1000)])
        deadline = time.monotonic() + 40
        while len(done) < TASKS and time.monotonic() < deadline:
            page = store.completed_since(OWNER, cursor, 5.0, 100_000)
            done += page.task_ids
            cursor = page.cursor
        connected = len(fwd.connections.by_endpoint)
    finally:
        sims.terminate()
        sims.wait(30)
        fwd.stop()
        th.join(10)
        logging.getLogger("web_service.forwarder").removeHandler(losses)
    reconnects = [line for line in log.read_text().splitlines() if "reconnect" in line][reconnects_before:]
    lost = [line for line in losses.lines[lost_before:] if "forwarder stopped" not in line]
    ran = collections.Counter((tmp_path / "effects").read_text().split())
    assert (len(lost), len(reconnects)) == (0, 0), (
        f"during the burst: {len(lost)} endpoint(s) lost, e.g. {lost[:2]}; {len(reconnects)} reconnect(s), e.g. {reconnects[:2]}")
    assert sorted(done) == sorted(f"t{i}" for i in range(TASKS)), f"{len(done)} of {TASKS} recorded ({len(set(done))} distinct)"
    assert sorted(ran) == sorted(f"t{i}" for i in range(TASKS)) and set(ran.values()) == {1}, "each task ran once"
    assert connected == N
