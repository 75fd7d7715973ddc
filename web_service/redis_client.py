"""How the service's processes reach Redis: a URL, or the primary that Sentinel names.

With ``FNSERVE_REDIS_SENTINELS`` set (``host:port,host:port``), every process (web workers,
forwarders, the triggers runner, admin commands) asks those sentinels for the current primary of
``FNSERVE_REDIS_SENTINEL_SERVICE`` and follows it through a failover: a connection to a primary
that was demoted fails (redis-py turns its READONLY answer into a ``ConnectionError``), the
caller's usual Redis-down handling runs (503 to clients, the forwarder asks its site managers to
register again) and the next command goes to the new primary. ``FNSERVE_REDIS_URL`` still gives
the password and database number.

Replication is asynchronous: a write the primary acknowledged can vanish in a failover. With
``FNSERVE_REDIS_REPLICAS_ACK=N`` the service answers "accepted" to a task submission, and the
forwarder acks a site manager's results, only after :func:`replicated` saw N replicas hold the
write (``WAIT``); otherwise the submission answers 503 ``service_unavailable`` naming the task
ids it wrote (not "accepted": they may be lost, or may run; the caller looks them up before
submitting again) and the results stay unacked (the site manager sends them again after it
registers anew). See docs/operations.md, "Redis failover".

A failover does not always show as an error. redis-py reconnects a pooled connection that the
server closed while it sat idle (the demoted primary closes every client) without raising, and
a Sentinel pool that learns of a new primary closes its other idle connections the same way: a
process idle at that moment simply goes on against the new primary. Writes it made on the old
one after the promotion (results recorded there, not acked) are gone, and nothing tells it to
have them sent again. So the pool counts the primary's changes (:func:`primary_changes`): the
forwarder compares the count between loop passes and handles a change like a lost store, and
:func:`replicated` refuses to confirm writes if the primary changed since they were made.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

# A write of its own before WAIT: WAIT covers the writes made on the connection it runs on,
# and a pooled client's earlier write may have gone out on another connection. Replication is
# ordered, so a replica holding this write holds everything written before it.
PROBE_KEY = "fns:replication-probe"


def sentinel_hosts(spec: str) -> list[tuple[str, int]]:
    """``"a:26379, b:26379"`` -> ``[("a", 26379), ("b", 26379)]``."""
    hosts = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"FNSERVE_REDIS_SENTINELS: {part!r} is not HOST:PORT")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


class PrimaryTrackingPool(SentinelConnectionPool):
    """A Sentinel pool that counts how often the primary it connects to changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections ask their pool for the primary's address when they connect; redis-py
        # hands them a proxy of the pool, so route them through this one (weakly: no cycle).
        self.connection_kwargs["connection_pool"] = weakref.proxy(self)
        self._primary: tuple[str, int] | None = None
        self._primary_lock = threading.Lock()
        self.primary_changes = 0

    def get_master_address(self) -> Any:
        address = super().get_master_address()  # asked on every new connection
        with self._primary_lock:
            if self._primary is not None and tuple(address) != self._primary:
                self.primary_changes += 1
            self._primary = tuple(address)
        return address


def primary_changes(r: redis.Redis) -> int:
    """How many times ``r``'s Redis primary changed (Sentinel failovers seen); 0 without Sentinel."""
    return int(getattr(r.connection_pool, "primary_changes", 0))


def redis_from_settings(settings: Any, **kwargs: Any) -> redis.Redis:
    """A client for the service's Redis: through Sentinel when ``settings.redis_sentinels`` is set."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    url_kwargs = redis.connection.parse_url(settings.redis_url)
    conn_kwargs = {k: v for k, v in url_kwargs.items() if k in ("password", "username", "db")}
    sentinel_kwargs = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    sentinel = Sentinel(sentinel_hosts(settings.redis_sentinels), sentinel_kwargs=sentinel_kwargs, **conn_kwargs)
    client: redis.Redis = sentinel.master_for(settings.redis_sentinel_service, connection_pool_class=PrimaryTrackingPool,
                                              **kwargs)
    return client


def replicated(r: redis.Redis, replicas: int, timeout_ms: int, since: int | None = None) -> bool:
    """Whether ``replicas`` replicas hold every write made so far (True at once if 0).

    ``since``: :func:`primary_changes` read before those writes. If the primary changed since,
    they may have gone to the old one and WAIT would speak for the new one: not confirmed."""
    if replicas <= 0:
        return True
    pipe = r.pipeline(transaction=False)
    pipe.incr(PROBE_KEY)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    _, acked = pipe.execute()
    return int(acked) >= replicas and (since is None or primary_changes(r) == since)


def wait_until_back(r: redis.Redis, stop: threading.Event) -> None:
    """Ping Redis until it answers (or ``stop`` is set), backing off from 0.1 s to 2 s."""
    delay = 0.1
    while not stop.is_set():
        try:
            r.ping()
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            stop.wait(delay)  # fault path only, not the task path
            delay = min(delay * 2, 2.0)
