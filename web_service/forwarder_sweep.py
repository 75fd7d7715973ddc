"""Sweeping a dead forwarder's endpoints whose site managers died with it.

When a forwarder dies, each of its endpoints whose site manager lives registers with another
forwarder within the heartbeat threshold, and that registration settles its in-flight tasks
(``requeue_inflight_except``). An endpoint whose site manager died too never registers: nobody
would mark it disconnected or requeue its in-flight tasks. A survivor does, as a live forwarder
does for a silent endpoint: a forwarder seen dead (``fns:forwarders-lapsed``, scored by Redis's
clock, web_service/forwarder_pool.py) for at least the endpoints' heartbeat threshold has its
leftover endpoints (``fns:forwarder-endpoints:<address>``) swept by one survivor (the one that
takes ``fns:forwarder-sweep:<address>``, SET NX with a lease), a batch per script run
(``web_service/store/scripts/sweep.lua``) and at most ``SWEEP_BUDGET`` seconds per loop pass.

The script checks each endpoint's owner key and acts in one step (:func:`to_sweep`): an
endpoint that registered anywhere meanwhile names its new forwarder there and is left alone, so
a registration racing the sweep never has its site manager's tasks requeued (run twice).

The decisions (:func:`sweeps_due`, :func:`to_sweep`) are pure; :class:`Sweeper` does the I/O for
the forwarder's loop (web_service/forwarder.py), planned at each announce (no timer of its own).
"""

from __future__ import annotations

import logging
import time
from typing import Collection, cast

from web_service import forwarder_metrics as metrics
from web_service.forwarder_pool import LAPSED, ForwarderPool, alive_key, endpoints_key, owner_key, sweep_lock_key
from web_service.redis_replies import text, texts
from web_service.store.keys import TASK_PREFIX, inflight_key, queue_key, status_channel, status_key
from web_service.task_store import TaskStore

log = logging.getLogger(__name__)

# Endpoints per script run, and seconds per loop pass spent sweeping: a dead forwarder with
# thousands of endpoints cannot keep the survivor from reading its socket.
SWEEP_BATCH = 200
SWEEP_BUDGET = 0.05
REASON = "its forwarder died and no site manager registered again within the heartbeat threshold"


def sweeps_due(lapsed: dict[str, float], now: float, grace: float, me: str, live: Collection[str]) -> list[str]:
    """The dead forwarders whose leftover endpoints are to be swept now: seen dead at least
    ``grace`` seconds before ``now`` (both by Redis's clock), not alive again, not this one.

    >>> sweeps_due({"tcp://a:1": 100.0, "tcp://b:1": 108.0}, 110.0, 10.0, "tcp://c:1", [])
    ['tcp://a:1']
    """
    return sorted(a for a, t in lapsed.items() if now - t >= grace and a != me and a not in live)


def to_sweep(owner: str | None, dead: str, dead_alive: bool) -> bool:
    """Whether to sweep an endpoint of forwarder ``dead`` whose owner key reads ``owner``: only
    if it still names the dead forwarder (no site manager registered anywhere since) and that
    forwarder is not alive again. Applied inside sweep.lua, atomically with the sweep."""
    return owner == dead and not dead_alive


class Sweeper:
    """A forwarder's share of the sweeping: the dead forwarders it holds the lock of (``pending``)."""

    def __init__(self, store: TaskStore, pool: ForwarderPool | None, grace: float):
        self.store = store
        self.pool = pool
        self.grace = grace
        self.pending: list[str] = []
        self.swept = 0  # endpoints swept by this forwarder (tests, logs)

    def plan(self, live: Collection[str]) -> None:
        """At each announce: take (or keep) the sweep lock of each dead forwarder that is due."""
        if self.pool is None:
            return
        r, me = self.store.r, self.pool.address
        pipe = r.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(LAPSED, 0, -1, withscores=True)
        (secs, usecs), entries = pipe.execute()
        lapsed = {text(a): float(t) for a, t in entries}
        due = sweeps_due(lapsed, secs + usecs / 1e6, self.grace, me, live)
        # Renewed at each announce (every TTL/3) while the sweep goes on; if the holder dies,
        # another survivor takes over once it lapses.
        lease = max(1, int(max(self.grace, 3 * self.pool.ttl) * 1000))
        self.pending = [a for a in self.pending if a in due]
        for dead in due:
            if dead in self.pending:
                r.set(sweep_lock_key(dead), me, px=lease)  # still at it: renew
            elif r.set(sweep_lock_key(dead), me, px=lease, nx=True):
                log.warning("forwarder %s is dead: sweeping the endpoints no site manager took elsewhere", dead)
                self.pending.append(dead)

    def step(self, budget: float = SWEEP_BUDGET) -> int:
        """Sweep a batch at a time for at most ``budget`` seconds; returns endpoints swept."""
        deadline = time.monotonic() + budget
        done = 0
        while self.pending and time.monotonic() < deadline:
            dead = self.pending[0]
            ids = texts(cast("list[bytes]", self.store.r.srandmember(endpoints_key(dead), SWEEP_BATCH)))
            swept = self._sweep(dead, ids) if ids else []
            if not ids or swept is None:  # all done, or alive again: nothing (more) to sweep
                self._finish(dead)
                continue
            for endpoint_id, requeued in swept:
                metrics.count_requeued(requeued)
                log.warning("endpoint %s disconnected (%s: %s); %d in-flight task(s) requeued",
                            endpoint_id, REASON, dead, requeued)
            done += len(swept)
        self.swept += done
        return done

    def _sweep(self, dead: str, ids: list[str]) -> list[tuple[str, int]] | None:
        keys = [k for e in ids for k in (owner_key(e), queue_key(e), inflight_key(e), status_key(e))]
        prefix, suffix = status_channel("\x00").split("\x00")
        reply = self.store.scripts["sweep"](keys=keys, args=[dead, alive_key(dead), endpoints_key(dead), TASK_PREFIX,
                                                             REASON, repr(time.time()), prefix, suffix, *ids])
        if reply is None:
            return None
        return [(text(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    def _finish(self, dead: str) -> None:
        self.pending.remove(dead)
        pipe = self.store.r.pipeline(transaction=False)
        pipe.zrem(LAPSED, dead)
        pipe.delete(sweep_lock_key(dead))
        pipe.execute()
        log.info("forwarder %s: sweep done", dead)
