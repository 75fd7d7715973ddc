"""The forwarder's side of the site-manager protocol as a state machine with no sockets.

:class:`ForwarderSession` is fed what happened (a message from a routing identity, a secret
checked, time passed) and answers with :data:`Action` instructions; the loop in
``web_service/forwarder.py`` carries them out with ZMQ and Redis. Every decision is here:
who is connected as which endpoint, whose key may speak for it, who has gone silent, and (with
several forwarders, web_service/forwarder_pool.py) which endpoints this forwarder serves and
where the others go. Tested by feeding events (tests/unit/test_forwarder_session.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Union

from fnserve import messages as m
from web_service.forwarder_pool import assign


@dataclass
class Connection:
    endpoint_id: str
    identity: bytes
    last_seen: float
    connected_at: float = field(default_factory=time.time)
    key: str = ""  # the CurveZMQ public key it authenticated with ("" without CURVE)
    capacity: int = 0  # most tasks it wants in flight at once (0: no limit)


class Connections:
    """Which site manager (ZMQ identity) serves which endpoint, and who has gone silent."""

    def __init__(self, heartbeat_threshold: float):
        self.threshold = heartbeat_threshold
        self.by_endpoint: dict[str, Connection] = {}
        self.by_identity: dict[bytes, Connection] = {}

    def register(self, endpoint_id: str, identity: bytes, now: float, key: str = "", capacity: int = 0) -> Connection | None:
        """Bind ``identity`` to ``endpoint_id``; returns the connection it replaces, if any."""
        old = self.by_endpoint.get(endpoint_id)
        if old is not None:
            self.by_identity.pop(old.identity, None)
        stale = self.by_identity.pop(identity, None)
        if stale is not None and stale.endpoint_id != endpoint_id:
            self.by_endpoint.pop(stale.endpoint_id, None)
        conn = Connection(endpoint_id, identity, now, key=key, capacity=capacity)
        self.by_endpoint[endpoint_id] = conn
        self.by_identity[identity] = conn
        return old

    def seen(self, identity: bytes, now: float) -> Connection | None:
        conn = self.by_identity.get(identity)
        if conn is not None:
            conn.last_seen = now
        return conn

    def drop(self, endpoint_id: str) -> None:
        conn = self.by_endpoint.pop(endpoint_id, None)
        if conn is not None:
            self.by_identity.pop(conn.identity, None)

    def expired(self, now: float) -> list[str]:
        return [c.endpoint_id for c in self.by_endpoint.values() if now - c.last_seen > self.threshold]

    def next_deadline(self, now: float) -> float:
        """Unix time at which the earliest connection could expire.

        Connections only ever get later deadlines (each message moves ``last_seen`` on), so
        the loop checks expiry at this time and not on every event: with 1,000 endpoints that
        is one scan per expiry deadline instead of two per message.
        """
        if not self.by_endpoint:
            return now + self.threshold
        return min(c.last_seen for c in self.by_endpoint.values()) + self.threshold + 0.01


class Pending:
    """Results and 'running' updates gathered during one drain pass, per connection."""

    def __init__(self) -> None:
        self.results: dict[bytes, tuple[Connection, list[m.ResultMessage]]] = {}
        self.running: dict[float, list[str]] = {}
        # File events: all of a pass's batches from one endpoint are recorded in one transaction
        # (while one pass records, the next burst queues up: batches grow with the load).
        self.files: dict[bytes, tuple[Connection, list[m.FileEvent]]] = {}
        # Heartbeats and status reports: each endpoint's last report, recorded in one round trip.
        self.touched: dict[str, tuple[Connection, m.EndpointStatus | None]] = {}

    def touch(self, conn: Connection, report: m.EndpointStatus | None) -> None:
        """A heartbeat (``report`` None) or a status report from ``conn``: the latest report wins."""
        prior = self.touched.get(conn.endpoint_id)
        self.touched[conn.endpoint_id] = (conn, report or (prior[1] if prior is not None and prior[0] is conn else None))

    def add(self, conn: Connection, msg: m.ResultBatch | m.TaskStatusBatch | m.FileEventBatch) -> None:
        if isinstance(msg, m.ResultBatch):
            self.results.setdefault(conn.identity, (conn, []))[1].extend(msg.results)
        elif isinstance(msg, m.FileEventBatch):
            self.files.setdefault(conn.identity, (conn, []))[1].extend(msg.events)
        else:
            self.running.setdefault(msg.started_at, []).extend(msg.running)

    def clear(self) -> None:
        self.results.clear()
        self.running.clear()
        self.files.clear()
        self.touched.clear()


def silence_clock(now: float, drained_at: float, max_lag: float = float("inf")) -> float:
    """The time up to which the forwarder has read everything sent to it: the lesser of ``now``
    and ``drained_at``, when its ROUTER socket was last read empty; but never more than
    ``max_lag`` behind ``now``, so a forwarder that stays saturated still loses endpoints that
    really died (silent for the threshold plus ``max_lag``), instead of sending them tasks for good.

    An endpoint's heartbeat sitting unread in the socket while the forwarder is behind (a burst
    of dispatches, result batches, registrations) is not silence: judged by wall time, a
    forwarder that fell more than the threshold behind would lose every endpoint at once, each
    loss costing more work (requeue, mark disconnected) and a re-registration, a storm that
    feeds itself. Judged by this clock, an endpoint is lost only if nothing it sent arrived in
    the threshold before a moment the forwarder had read everything: really silent.

    >>> silence_clock(100.0, 95.0), silence_clock(100.0, 50.0, max_lag=30.0), silence_clock(100.0, 120.0)
    (95.0, 70.0, 100.0)
    """
    return max(min(now, drained_at), now - max_lag)


def expiry_due(check_at: float, now: float, drained_at: float, max_lag: float = float("inf")) -> bool:
    """Whether to look for silent endpoints now: the earliest could have expired (``check_at``,
    :meth:`Connections.next_deadline`) by the silence clock. While the forwarder is behind the
    check waits for the socket to be read empty, a comparison per loop pass and no scan."""
    return silence_clock(now, drained_at, max_lag) >= check_at


# -- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Send ``message`` to the site manager at ``identity``."""

    identity: bytes
    message: m._Message


@dataclass(frozen=True)
class Accept:
    """A site manager registered as ``conn.endpoint_id``: requeue what it does not hold, mark the
    endpoint connected, answer Registered, then send its watch list, cancels and tasks."""

    conn: Connection
    register: m.Register


@dataclass(frozen=True)
class Lose:
    """The endpoint's connection ended: requeue its in-flight tasks (if this forwarder still
    owns it) and mark it disconnected."""

    endpoint_id: str
    why: str


@dataclass(frozen=True)
class Handle:
    """A message from a registered site manager, for the store: results, status, outputs,
    file events, or a heartbeat to answer and note."""

    conn: Connection
    message: m.SiteMessage


Action = Union[Reply, Accept, Lose, Handle]


class ForwarderSession:
    """Protocol state of one forwarder across all its site managers.

    ``me``: this forwarder's address in a pool of several (None: it serves every endpoint).
    ``live``: the pool's live forwarders as last read from Redis (the loop keeps it fresh).
    """

    def __init__(self, heartbeat_threshold: float, me: str | None = None):
        self.connections = Connections(heartbeat_threshold)
        self.me = me
        self.live: list[str] = []

    def owner(self, endpoint_id: str) -> str | None:
        """The forwarder that serves ``endpoint_id``; this one counts as alive whatever the last
        read said (its own key may lapse while the loop is busy)."""
        if self.me is None:
            return None
        return assign(endpoint_id, {*self.live, self.me})

    def serves(self, endpoint_id: str) -> bool:
        return self.me is None or self.owner(endpoint_id) == self.me

    def register(self, identity: bytes, msg: m.Register, key: str, verified: bool, now: float) -> list[Action]:
        """A Register arrived and its secret (and CURVE key) were checked: ``verified``."""
        if not verified:
            return [Reply(identity, m.Refused(code="invalid_credentials", reason="unknown endpoint id or wrong secret"))]
        if not self.serves(msg.endpoint_id):
            return [Reply(identity, m.Disconnect(reason="served by another forwarder", connect_to=self.owner(msg.endpoint_id) or ""))]
        old = self.connections.register(msg.endpoint_id, identity, now, key, capacity=max(0, msg.capacity))
        actions: list[Action] = []
        if old is not None and old.identity != identity:
            actions.append(Reply(old.identity, m.Disconnect(reason="another site manager registered for this endpoint")))
        return actions + [Accept(self.connections.by_endpoint[msg.endpoint_id], msg)]

    def received(self, identity: bytes, msg: m.SiteMessage, key: str, now: float) -> list[Action]:
        """Any message but Register from ``identity`` (authenticated with ``key``)."""
        conn = self.connections.by_identity.get(identity)
        if conn is not None and conn.key != key:
            # Another endpoint's site manager took this routing id (ROUTER_HANDOVER): its key
            # does not match the one that registered, so it may not speak for that endpoint.
            return [Reply(identity, m.Refused(code="invalid_credentials", reason="this connection's key does not match the registered endpoint"))]
        conn = self.connections.seen(identity, now)
        if conn is None:
            # Not registered here (e.g. this forwarder restarted): ask it to register again.
            return [Reply(identity, m.Disconnect(reason="not registered with this forwarder; register again"))]
        if isinstance(msg, m.Disconnect):
            self.connections.drop(conn.endpoint_id)
            return [Lose(conn.endpoint_id, msg.reason or "site manager disconnected")]
        if isinstance(msg, m.Heartbeat) and not self.serves(conn.endpoint_id):
            # The rule now gives it another forwarder (one joined): sent there at its heartbeat,
            # with no requeue here: it registers there saying what it holds.
            self.connections.drop(conn.endpoint_id)
            return [Reply(identity, m.Disconnect(reason="served by another forwarder now", connect_to=self.owner(conn.endpoint_id) or ""))]
        return [Handle(conn, msg)]

    def expire(self, now: float, drained_at: float = float("inf"), max_lag: float = float("inf")) -> list[Action]:
        """Time passed: the endpoints silent for longer than the threshold are lost, silence
        judged up to when the ROUTER socket was last read empty (:func:`silence_clock`)."""
        gone = self.connections.expired(silence_clock(now, drained_at, max_lag))
        for endpoint_id in gone:
            self.connections.drop(endpoint_id)
        return [Lose(e, "no heartbeat within the threshold") for e in gone]

    def withdraw(self, others: list[str]) -> list[Action]:
        """This forwarder stops: send each endpoint to its forwarder among ``others``."""
        actions: list[Action] = []
        for conn in list(self.connections.by_endpoint.values()):
            owner = assign(conn.endpoint_id, others)
            if owner is not None:
                self.connections.drop(conn.endpoint_id)
                actions.append(Reply(conn.identity, m.Disconnect(reason="this forwarder is stopping", connect_to=owner)))
        return actions
