"""Registrations waiting to be accepted, so that a burst of them cannot silence the forwarder.

Accepting a registration costs several Redis round trips (requeue what the site manager does not
hold, mark it connected, relay cancels, dispatch its queue): a few milliseconds each. When
thousands of site managers register at once (a forwarder restart at a facility), accepting them
all before reading anything else would leave the ones accepted first unanswered for longer than
their heartbeat threshold: they would reconnect and register again, behind the others, forever.

So the forwarder queues registrations here, handles every other message first (heartbeats are
answered at once) and accepts queued registrations for a bounded time per pass. A site manager
whose registration waits is sent a Heartbeat now and then (:meth:`RegistrationQueue.keepalive`):
its session counts it as hearing from the forwarder and keeps waiting instead of reconnecting.
One entry per endpoint, in order of first arrival: a site manager that reconnects meanwhile
replaces its entry (the newest connection is the one answered) and keeps its place.
Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from fnserve import messages as m


@dataclass
class Queued:
    identity: bytes
    register: m.Register
    key: str  # the CurveZMQ key the connection authenticated with ("" without CURVE)
    told_at: float = float("-inf")  # when it was last sent a keepalive Heartbeat


class RegistrationQueue:
    def __init__(self) -> None:
        self._by_endpoint: OrderedDict[str, Queued] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_endpoint)

    def add(self, identity: bytes, register: m.Register, key: str) -> None:
        """A Register arrived: queue it, or replace the endpoint's older one (same place in line)."""
        old = self._by_endpoint.get(register.endpoint_id)
        told_at = old.told_at if old is not None and old.identity == identity else float("-inf")
        self._by_endpoint[register.endpoint_id] = Queued(identity, register, key, told_at)

    def discard(self, identity: bytes) -> bool:
        """The connection said goodbye before it was accepted: forget its registration."""
        for endpoint_id, q in self._by_endpoint.items():
            if q.identity == identity:
                del self._by_endpoint[endpoint_id]
                return True
        return False

    def take(self) -> Queued:
        """The registration waiting longest."""
        return self._by_endpoint.popitem(last=False)[1]

    def keepalive(self, now: float, period: float) -> list[bytes]:
        """Identities to send a Heartbeat now: not told within ``period`` (a new one at once)."""
        due = [q for q in self._by_endpoint.values() if now - q.told_at >= period]
        for q in due:
            q.told_at = now
        return [q.identity for q in due]
