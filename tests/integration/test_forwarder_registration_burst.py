"""A burst of registrations (a forwarder restart at a facility) converges: every site manager ends
up registered once, none of them gives up and reconnects.

The forwarder accepts each registration with several Redis round trips. Here 600 simulated site
managers (the site manager's own protocol Session each, tests/integration/sim_endpoints.py)
register at once with a forwarder whose heartbeat threshold is 2 s: accepting them all in one go
takes longer than that, so without the registration queue (web_service/forwarder_registrations.py)
the ones accepted first hear nothing for 2 s, reconnect and register again, behind the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from web_service.forwarder import Forwarder
from web_service.task_store import TaskStore

N = 600


def test_600_site_managers_registering_at_once_all_stay_registered(redis_client: redis.Redis, tmp_path: Path):
    store = TaskStore(redis_client)
    fwd = Forwarder(store, lambda e, s: s == "s-" + e, "tcp://127.0.0.1:0", heartbeat_period=0.5, heartbeat_threshold=2.0)
    th = threading.Thread(target=fwd.run, daemon=True)
    th.start()
    assert fwd.bound.wait(5)
    cfg = {"endpoints": [{"endpoint_id": f"ep-{i:04d}", "secret": f"s-ep-{i:04d}", "forwarder": fwd.address} for i in range(N)],
           "effects": str(tmp_path / "effects"), "heartbeat_period": 0.5, "heartbeat_threshold": 2.0}
    log = tmp_path / "sims.log"
    with open(log, "w") as err:
        sims = subprocess.Popen([sys.executable, "-m", "tests.integration.sim_endpoints", json.dumps(cfg)], stderr=err)
    try:
        deadline = time.monotonic() + 60
        while len(fwd.connections.by_endpoint) < N and time.monotonic() < deadline and sims.poll() is None:
            time.sleep(0.2)  # watching a count another thread moves; nothing to await
        all_at = len(fwd.connections.by_endpoint)
        time.sleep(4.0)  # two thresholds more: registered ones must stay so
        still = len(fwd.connections.by_endpoint)
    finally:
        sims.terminate()
        sims.wait(30)
        fwd.stop()
        th.join(10)
    reconnects = [line for line in log.read_text().splitlines() if "reconnect" in line]
    assert (all_at, still) == (N, N), f"{all_at} then {still} of {N} registered; {len(reconnects)} reconnects, e.g. {reconnects[:3]}"
    assert reconnects == [], f"{len(reconnects)}: {reconnects[:3]} {reconnects[-2:]}"
