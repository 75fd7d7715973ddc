"""Admission of long-polls, so that one user's waits cannot starve the service.

A long-poll (``wait`` on ``GET /v1/tasks/{id}``, ``POST /v1/tasks``, ``POST /v1/tasks/results``,
``GET /v1/tasks/completions``, ``GET /v1/tasks/{id}/outputs``) holds a socket, a Redis
connection and, on a threaded server, a request thread for up to ``FNSERVE_MAX_WAIT`` seconds.
Two caps bound them:

- per user, across every web worker and replica: ``FNSERVE_MAX_WAITS_PER_USER`` open at once.
  Each open wait is a member of the Redis sorted set ``fns:waits:{user}`` scored by its deadline
  (so a worker that dies mid-wait leaks nothing past that deadline). Past the cap: 429
  ``too_many_waits`` with ``Retry-After`` = seconds until the user's soonest wait ends.
- per web worker process: ``FNSERVE_MAX_OPEN_WAITS``. Past it: 503 ``service_busy``. On the
  threaded server (gthread) the worker has that many threads *more* than its request threads,
  so waits never take a thread that a quick request (health, submit) needs; on the default
  gevent worker a wait is a parked greenlet and the cap bounds sockets and Redis connections.

Waits themselves block on Redis events (pub/sub, ``XREAD BLOCK``), never on an interval.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from fnserve.errors import ServiceUnavailable, TooManyRequests
from web_service.metrics import WAITS, WAITS_OPEN

# Kept past a wait's own deadline before a crashed worker's entry stops counting: covers the
# linger of completions and the answer being written.
_SLACK = 5.0

# KEYS[1]: the user's open waits (zset member -> deadline). ARGV: now, deadline, member, cap.
# Returns {1} when admitted, else {0, the soonest deadline}.
_ENTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, first[2]}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local ttl = math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[1])) + 1
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return {1}
"""


def waits_key(user_id: str) -> str:
    return f"fns:waits:{user_id}"


def retry_after(soonest_deadline: float, now: float) -> int:
    """Whole seconds until the user's soonest open wait ends (at least 1)."""
    return max(1, math.ceil(soonest_deadline - _SLACK - now))


def too_many_waits(cap: int, soonest_deadline: float, now: float) -> TooManyRequests:
    retry = retry_after(soonest_deadline, now)
    return TooManyRequests(
        f"you already have {cap} long-polls open, the most one user may hold at once; wait for one to "
        f"answer (about {retry} s) or use one GET /v1/tasks/completions long-poll for all your tasks",
        code="too_many_waits", details={"limit": cap, "retry_after": retry},
    )


class Admission:
    """The place one long-poll holds. :meth:`release_in` gives it back in a pipeline the caller
    sends anyway (the submit-and-wait's final read of its tasks: one round trip less per call);
    otherwise the gate gives it back on its own when the wait ends."""

    def __init__(self, key: str = "", member: str = "") -> None:
        self.key = key
        self.member = member
        self.handed = False  # the release rides in a caller's pipeline

    def release_in(self, pipe: "redis.client.Pipeline") -> None:
        if self.key:
            pipe.zrem(self.key, self.member)
            self.handed = True


class WaitGate:
    """Counts open long-polls per user (Redis) and per process; one per app."""

    def __init__(self, r: redis.Redis, per_user: int, per_process: int):
        self.per_user = per_user
        self.per_process = per_process
        self.r = r
        self._enter = r.register_script(_ENTER)
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open(self) -> int:
        """Waits open in this process now."""
        return self._open

    @contextmanager
    def admit(self, user_id: str, wait: float) -> Iterator[Admission]:
        """Hold a place for a long-poll of up to ``wait`` s, or raise 429 / 503. A ``wait`` of 0
        answers at once and needs no place."""
        if wait <= 0:
            yield Admission()
            return
        with self._lock:
            if self._open >= self.per_process:
                WAITS.labels("service_busy").inc()
                raise ServiceUnavailable(
                    f"this web worker holds {self.per_process} long-polls already; retry shortly",
                    code="service_busy", details={"retry_after": 1},
                )
            self._open += 1
        key = waits_key(user_id)
        member = uuid.uuid4().hex
        try:
            now = time.time()
            answer = self._enter(keys=[key], args=[repr(now), repr(now + wait + _SLACK), member, self.per_user])
            if not int(answer[0]):
                WAITS.labels("too_many_waits").inc()
                raise too_many_waits(self.per_user, float(answer[1]), now)
            WAITS.labels("admitted").inc()
            WAITS_OPEN.inc()
            admission = Admission(key, member)
            try:
                yield admission
            except BaseException:
                admission.handed = False  # the pipeline that carried the release may not have run
                raise
            finally:
                WAITS_OPEN.dec()
                if not admission.handed:
                    try:
                        self.r.zrem(key, member)
                    except redis.RedisError:
                        pass  # the entry stops counting at its deadline anyway
        finally:
            with self._lock:
                self._open -= 1


__all__ = ["Admission", "WaitGate", "retry_after", "too_many_waits", "waits_key"]
