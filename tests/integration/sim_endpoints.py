"""Many simulated endpoints in one process: one ZMQ context, one poller, one loop.

Each simulated endpoint is the site manager's own protocol state machine
(:class:`site_manager.session.Session`: registration, heartbeats, the result ledger that resends
unacked results and answers a re-dispatched finished task without running it again, moving to
the forwarder it is sent to or to the next one when its forwarder goes silent) on its own DEALER
socket, CurveZMQ when the endpoint has keys. Only the engine is a stand-in: a task "runs" at
once by appending its id to ``effects`` (one line per run: the side effect the tests count) and
returns an empty success. Hundreds of these fit in one process where hundreds of real site
managers (a Python process each) would not fit a 2-core machine.

Used by the compose deployment test (``python -m tests.integration.sim_endpoints CONFIG_JSON``,
one process per share of the endpoints) and by benchmarks/forwarder_scale.py (``run`` in a
multiprocessing child).
"""

from __future__ import annotations

import heapq
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import zmq

from fnserve import messages as m
from site_manager.actions import Exit, Reconnect, Send, Submit
from site_manager.session import Backoff, Session
from site_manager.status import EngineStatus

RESULT = b"fns1 json-data 4\nnull"
IDLE = EngineStatus()
# Connections opened per loop pass: a process that opened thousands before reading any would
# leave the first ones unread past their heartbeat threshold (a real site manager is a process
# of its own, reading as soon as it connected).
OPEN_PER_PASS = 100
CAPACITY = 4096  # tasks held at once, what a real site manager says by default (config.task_capacity)


def log(line: str) -> None:
    print(f"{time.time():.3f} {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SimEndpoint:
    """What a simulated endpoint connects with (its credentials, as registration answers them)."""

    endpoint_id: str
    secret: str
    forwarder: str
    forwarder_public_key: str = ""
    curve_public_key: str = ""
    curve_secret_key: str = ""


class _Conn:
    def __init__(self, index: int, ep: SimEndpoint, heartbeat_period: float, heartbeat_threshold: float,
                 reconnect_delay: float):
        self.index, self.ep = index, ep
        self.session = Session(ep.endpoint_id, ep.secret, {"fnserve": "simulated"}, heartbeat_period, heartbeat_threshold,
                               backoff=Backoff(reconnect_delay, max(reconnect_delay, 1.0)), forwarder=ep.forwarder,
                               capacity=CAPACITY)
        self.sock: zmq.Socket[bytes] | None = None
        self.exited = ""


class SimulatedEndpoints:
    """Runs ``endpoints`` until ``stop()`` is true. ``effects``: the file each run appends its
    task id to; ``received``: (task id, unix time) of every task delivered (the benchmark's
    dispatch delay)."""

    def __init__(self, endpoints: list[SimEndpoint], effects: Path | None = None, heartbeat_period: float = 2.0,
                 heartbeat_threshold: float = 10.0, reconnect_delay: float = 0.2):
        self.ctx = zmq.Context()
        self.ctx.max_sockets = max(1024, 2 * len(endpoints) + 64)
        self.poller = zmq.Poller()
        self.conns = [_Conn(i, ep, heartbeat_period, heartbeat_threshold, reconnect_delay) for i, ep in enumerate(endpoints)]
        self.by_sock: dict[zmq.Socket[bytes], _Conn] = {}
        self.reopen: list[tuple[float, int, str]] = []  # (when, index in conns, address)
        self.effects = open(effects, "a", buffering=1) if effects else None  # noqa: SIM115 - kept open for the run
        self.received: list[tuple[str, float]] = []
        self.record_received = False
        self.reconnected_at: list[float] = []  # unix time of each reconnect (the benchmark counts the burst's)

    def registered(self) -> bool:
        return all(c.session.state.value == "ready" for c in self.conns)

    def _open(self, i: int, address: str) -> None:
        c = self.conns[i]
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if c.ep.curve_secret_key:
            s.curve_serverkey = c.ep.forwarder_public_key.encode()
            s.curve_publickey = c.ep.curve_public_key.encode()
            s.curve_secretkey = c.ep.curve_secret_key.encode()
        s.connect(address)
        c.sock = s
        self.by_sock[s] = c
        self.poller.register(s, zmq.POLLIN)
        self._do(c, c.session.connected(time.monotonic()))

    def _close(self, c: _Conn) -> None:
        if c.sock is not None:
            self.poller.unregister(c.sock)
            del self.by_sock[c.sock]
            c.sock.close(0)
            c.sock = None

    def _do(self, c: _Conn, actions: list[Any]) -> None:
        """Carry out a session's actions; the stand-in engine runs submitted tasks at once."""
        while actions:
            submits = [a.task for a in actions if isinstance(a, Submit)]
            more: list[Any] = []
            for a in actions:
                if isinstance(a, Send) and c.sock is not None:
                    try:
                        c.sock.send(m.encode(a.message), zmq.NOBLOCK)
                    except zmq.Again:  # as the site manager does: the forwarder is not reading
                        more += c.session.connection_lost("send queue to the forwarder is full")
                elif isinstance(a, Reconnect):
                    self.reconnected_at.append(time.time())
                    log(f"{c.ep.endpoint_id}: reconnect to {a.address or c.session.forwarder} in {a.delay:g} s: {a.reason}")
                    self._close(c)
                    heapq.heappush(self.reopen, (time.monotonic() + a.delay, c.index, a.address or c.session.forwarder))
                elif isinstance(a, Exit):
                    self._close(c)
                    c.exited = a.reason
                    log(f"{c.ep.endpoint_id}: exit: {a.reason}")
            actions = more
            if submits:
                if self.effects is not None:
                    self.effects.write("".join(f"{t.task_id}\n" for t in submits))
                results = [m.ResultMessage(task_id=t.task_id, ok=True, data=RESULT) for t in submits]
                actions += c.session.results_ready(results, time.time())

    def run(self, stop: Callable[[], bool]) -> None:
        start = time.monotonic()
        self.reopen = [(start, i, c.ep.forwarder) for i, c in enumerate(self.conns)]  # a heap already: in order
        next_tick = start
        while not stop():
            due = bool(self.reopen) and self.reopen[0][0] <= time.monotonic()
            for s, _ in self.poller.poll(0 if due else 100):
                c = self.by_sock.get(s)
                while c is not None and c.sock is s:
                    try:
                        frame = s.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = m.decode_from_forwarder(frame)
                    if self.record_received and isinstance(msg, m.TaskBatch):
                        now = time.time()
                        self.received += [(t.task_id, now) for t in msg.tasks]
                    self._do(c, c.session.received(msg, time.monotonic(), time.time()))
            now = time.monotonic()
            for _ in range(OPEN_PER_PASS):
                if not self.reopen or self.reopen[0][0] > now:
                    break
                _, i, address = heapq.heappop(self.reopen)
                if self.conns[i].sock is None and not self.conns[i].exited:
                    self._open(i, address)
            if now >= next_tick:
                next_tick = now + 0.1
                for c in self.conns:
                    if c.sock is not None:
                        self._do(c, c.session.tick(now, time.time(), lambda: IDLE))

    def summary(self) -> str:
        """Each endpoint's protocol state (a failing test's message)."""
        waiting = {i for _, i, _ in self.reopen}
        return "\n".join(f"{c.ep.endpoint_id}: {c.session.state.value} at {c.session.forwarder}, socket {c.sock is not None}, "
                         f"reopen {c.index in waiting}, running {len(c.session.running)}, unacked {len(c.session.ledger)}"
                         f"{', exited' if c.exited else ''}" for c in self.conns)

    def close(self) -> None:
        for c in self.conns:
            self._close(c)
        if self.effects is not None:
            self.effects.close()
        self.ctx.term()


def main(cfg: dict[str, Any]) -> None:
    """``{"endpoints": [SimEndpoint fields...], "effects": path, "heartbeat_period": s,
    "heartbeat_threshold": s}``: run until SIGTERM."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    sims = SimulatedEndpoints([SimEndpoint(**e) for e in cfg["endpoints"]], Path(cfg["effects"]),
                              cfg.get("heartbeat_period", 2.0), cfg.get("heartbeat_threshold", 10.0))
    try:
        sims.run(lambda: bool(stopping))
    finally:
        log("at exit:\n" + sims.summary())
        sims.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
