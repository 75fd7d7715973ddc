"""Endpoints the forwarder owes a dispatch, served oldest first in chunks within a time budget.

Dispatching to an endpoint is a claim script run in Redis and a TaskBatch sent. A burst of
submits wakes thousands of endpoints at once (20,000 tasks over 10,000 endpoints); dispatching
to all of them before reading the ROUTER socket again left the heartbeats of the others unread
for longer than their threshold (and the site managers unanswered: they reconnected). So a wake,
a result that frees room and a registration only put the endpoint here; each loop pass takes
chunks of them (one pipelined Redis round trip per chunk, web_service/store/dispatch.py
``claim_many``) until its budget is spent, and reads the socket again.
One entry per endpoint, in order of first arrival: an endpoint woken again while it waits keeps
its place. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections import OrderedDict

# Endpoints claimed for in one pipelined Redis round trip.
CHUNK = 200


class DispatchBacklog:
    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, endpoint_id: object) -> bool:
        return endpoint_id in self._ids

    def add(self, endpoint_id: str) -> None:
        """The endpoint may have tasks to send: queue it (an endpoint already waiting keeps its place)."""
        self._ids.setdefault(endpoint_id, None)

    def discard(self, endpoint_id: str) -> None:
        self._ids.pop(endpoint_id, None)

    def take(self, n: int = CHUNK) -> list[str]:
        """Up to ``n`` endpoints, those waiting longest first."""
        out: list[str] = []
        while self._ids and len(out) < n:
            out.append(self._ids.popitem(last=False)[0])
        return out
