"""The forwarder: a ZMQ ROUTER that site managers connect to.

It moves queued tasks from Redis to the connected site manager of their endpoint (in batches),
records the results that come back (first wins) and acks them, and watches heartbeats: an
endpoint silent for longer than the threshold is marked disconnected and its in-flight tasks go
back to its queue, to be dispatched again when it reconnects.

The loop blocks on ``zmq.Poller``; new work is signalled by the task store's Redis ``wake``
channel, relayed by a thread into an inproc socket, so nothing on the hot path sleeps or polls on
an interval. The decisions (who is connected as which endpoint, who went silent, which endpoints
this forwarder serves among several) live in web_service/forwarder_session.py, pure and tested
without sockets; this module carries out the actions it returns, and
web_service/forwarder_traffic.py what connected endpoints send and are sent. ``python -m
web_service.forwarder`` starts one from the environment (web_service/forwarder_main.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, cast

import redis
import zmq

from fnserve import messages as m
from fnserve.errors import FnserveError
from web_service import forwarder_metrics as metrics
from web_service.forwarder_auth import EndpointKeys, KeyLookup, SecretVerifier, check_bind, start_curve
from web_service.forwarder_pool import ForwarderPool, heartbeat_ttl
from web_service.forwarder_sweep import SWEEP_BUDGET, Sweeper
from web_service.forwarder_watches import WatchLists
from web_service.forwarder_session import (  # noqa: F401 - Connections re-exported
    Accept, Action, Connection, Connections, ForwarderSession, Handle, Lose, Pending as _Pending, Reply, expiry_due,
)
from web_service.forwarder_registrations import RegistrationQueue
from web_service.forwarder_traffic import EndpointTraffic, send
from web_service.redis_client import primary_changes, wait_until_back
from web_service.forwarder_wake import read_wakeups, relay_wakeups, sort_wakeups
from web_service.task_store import TaskStore, tombstone_key
from web_service.stale_tasks import expire_waiting, sweep_interval

log = logging.getLogger(__name__)

# Messages handled per drain pass before what they carried is flushed to Redis.
DRAIN_MAX = 1000
# Seconds per loop pass spent accepting queued registrations (web_service/forwarder_registrations.py):
# a burst of thousands cannot keep the forwarder from answering registered site managers.
REGISTER_BUDGET = 0.2
# Seconds per loop pass spent dispatching to woken endpoints (web_service/forwarder_backlog.py):
# a burst of submits to thousands of endpoints cannot keep the forwarder from reading the others.
DISPATCH_BUDGET = 0.1
# Silence is judged up to the last empty read of the socket, but never more than this many
# heartbeat thresholds behind now (forwarder_session.silence_clock): a forwarder that stays
# saturated still loses an endpoint silent for (1 + this) thresholds.
MAX_LAG_THRESHOLDS = 3.0


class Forwarder:
    """Serve site managers on ``bind`` (e.g. ``tcp://0.0.0.0:55001``) until :meth:`stop`."""

    def __init__(
        self,
        store: TaskStore,
        verify_secret: SecretVerifier,
        bind: str,
        heartbeat_period: float = 2.0,
        heartbeat_threshold: float = 10.0,
        batch_size: int = 512,
        server_keys: tuple[bytes, bytes] | None = None,
        endpoint_for_key: KeyLookup | None = None,
        output_limit: int | None = None,
        max_result_bytes: int = 10 * 1024 * 1024,
        file_triggers: Any = None,
        waiting_expiry: float = 0.0,
        pool: ForwarderPool | None = None,
        replicas_ack: int = 0,
        replicas_timeout: int = 2000,
    ):
        """``server_keys`` (public, secret) turn on CurveZMQ: every connection is encrypted and
        authenticated through ZAP, the client's key must belong to a live endpoint
        (``endpoint_for_key``) and to the very endpoint it registers as. Without keys the
        forwarder only binds to loopback (or ipc/inproc)."""
        check_bind(bind, server_keys, endpoint_for_key)
        self.server_keys = server_keys
        self.endpoint_for_key = endpoint_for_key
        self.store = store
        self.verify_secret = verify_secret
        self.bind = bind
        self.heartbeat_period = heartbeat_period
        # The decisions (web_service/forwarder_session.py); this class does the I/O they ask for.
        self.session = ForwarderSession(heartbeat_threshold, pool.address if pool is not None else None)
        self.connections: Connections = self.session.connections
        self.registrations = RegistrationQueue()
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._wake_addr = f"inproc://fnserve-wake-{id(self)}"
        self.bound = threading.Event()
        self.address: str | None = None
        # File triggers (web_service.triggers.files.FileTriggerBridge): the watch list each
        # connected endpoint was last sent, and when the registry is next looked at.
        self.watches = WatchLists(file_triggers)
        # Tasks waiting this long for an endpoint that is not connected fail (0: never).
        self.waiting_expiry = waiting_expiry
        # Several forwarders (web_service/forwarder_pool.py): this one serves only the endpoints
        # the rule assigns it and sends the others where they belong. None: it serves all.
        self.pool = pool
        if pool is not None:
            pool.ttl = heartbeat_ttl(heartbeat_threshold)
        # A dead forwarder's endpoints that no site manager took elsewhere within the threshold
        # (web_service/forwarder_sweep.py): planned at each announce, swept within a budget per pass.
        self.sweeper = Sweeper(store, pool, heartbeat_threshold)
        # Tasks out, results, status, outputs and file events in (web_service/forwarder_traffic.py).
        self.traffic = EndpointTraffic(store, self.connections, self.watches, batch_size, output_limit,
                                       max_result_bytes, replicas_ack, replicas_timeout)
        if pool is not None:
            self.traffic.owns_many = pool.owns_many
        # When the ROUTER socket was last read empty: silence is judged up to then, not up to now
        # (a heartbeat waiting unread in the socket is not silence; forwarder_session.expiry_due).
        self.drained_at = time.time()
        self._max_lag = MAX_LAG_THRESHOLDS * heartbeat_threshold
        # Sentinel failovers seen so far (web_service/redis_client.py): one seen between loop
        # passes is handled like a lost store even when no command failed.
        self._primary_seen = primary_changes(store.r)

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        try:
            # Wake the poller so the loop sees the stop flag now.
            with self._ctx.socket(zmq.PAIR) as s:
                s.connect(self._wake_addr + "-stop")
                s.send(b"")
        except zmq.ZMQError:
            pass

    def run(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting site manager takes over its identity
        authenticator = (start_curve(self._ctx, router, self.server_keys, EndpointKeys(self.endpoint_for_key))  # type: ignore[arg-type]
                         if self.server_keys is not None else None)
        if self.bind.endswith(":0"):
            port = router.bind_to_random_port(self.bind.rsplit(":", 1)[0])
            self.address = f"{self.bind.rsplit(':', 1)[0]}:{port}"
        else:
            router.bind(self.bind)
            self.address = self.bind
        wake = self._ctx.socket(zmq.PAIR)
        wake.bind(self._wake_addr)
        stop_sock = self._ctx.socket(zmq.PAIR)
        stop_sock.bind(self._wake_addr + "-stop")
        relay = threading.Thread(target=relay_wakeups, args=(self._ctx, self._wake_addr, self.store.r, self._stop),
                                 name="forwarder-wake", daemon=True)
        relay.start()
        self.bound.set()
        log.info("forwarder listening on %s", self.address)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        poller.register(stop_sock, zmq.POLLIN)
        check_at = self.connections.next_deadline(time.time())
        announce_at = self._announce() if self.pool is not None else float("inf")
        sweep_at = time.time() + (sweep_interval(self.waiting_expiry) if self.waiting_expiry > 0 else float("inf"))
        try:
            while not self._stop.is_set():
                busy = bool(self.registrations or self.traffic.backlog or self.sweeper.pending)
                timeout_ms = 0 if busy else max(0, int((min(check_at, sweep_at, announce_at) - time.time()) * 1000))
                events = dict(poller.poll(timeout_ms))
                try:
                    if router in events:
                        self._drain_router(router)
                    else:
                        self.drained_at = time.time()  # nothing was waiting in it as the poll returned
                    if wake in events:
                        self._drain_wakeups(router, wake)
                    if self.registrations:
                        self._accept_queued(router)
                    if self.traffic.backlog:
                        self.traffic.dispatch_queued(router, DISPATCH_BUDGET)
                    if self.sweeper.pending:
                        self.sweeper.step(SWEEP_BUDGET)
                    now = time.time()
                    if expiry_due(check_at, now, self.drained_at, self._max_lag):
                        self._expire(router, now)
                        self.traffic.refresh_watches(router, now)
                        check_at = self.connections.next_deadline(now)
                    if now >= sweep_at:
                        expire_waiting(self.store, self.waiting_expiry, now)
                        sweep_at = now + sweep_interval(self.waiting_expiry)
                    if now >= announce_at:
                        announce_at = self._announce()
                    if primary_changes(self.store.r) != self._primary_seen:
                        self._store_lost(router, "the Redis primary changed (a failover)")
                        check_at = self.connections.next_deadline(time.time())
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    self._store_lost(router, f"Redis unavailable ({exc})")
                    check_at = self.connections.next_deadline(time.time())
        finally:
            if self.pool is not None:
                self._withdraw(router)
            for conn in list(self.connections.by_endpoint.values()):
                self._lose(conn.endpoint_id, "forwarder stopped")
            for s in (router, wake, stop_sock):
                s.close(0)
            relay.join(5)
            if authenticator is not None:
                authenticator.stop()
            self._ctx.term()

    # -- events ---------------------------------------------------------------------------------

    def _drain_router(self, router: zmq.Socket) -> None:
        """Handle every message that has arrived (at most ``DRAIN_MAX``), then flush the
        results and status updates they carried: pipelined, a round trip per kind for the whole
        pass instead of one per message. Nothing waits for more to arrive. Reading the socket
        empty moves ``drained_at`` on (silence is judged up to then).

        The cap stays: with thousands of endpoints the socket is never empty while a pass handles
        what it read (10,000 endpoints send 10,000 liveness messages a second), so an uncapped
        pass would never end, never flush its results and never read the wake socket."""
        curve = self.server_keys is not None
        pending = _Pending()
        try:
            for _ in range(DRAIN_MAX):
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK, copy=not curve)
                except zmq.Again:
                    self.drained_at = time.time()
                    return
                if len(frames) != 2:
                    continue  # wrong frame count: not a site manager
                key = ""
                if curve:
                    # ZAP put the client's authenticated public key on every message it sends.
                    head, body = cast("list[zmq.Frame]", frames)  # received with copy=False
                    # pyzmq types a string property as int | str; "User-Id" is text.
                    key = cast(str, body.get("User-Id"))
                    identity, payload = head.bytes, body.bytes
                else:
                    identity, payload = cast("list[bytes]", frames)  # received with copy=True
                try:
                    msg = m.decode_from_site(payload)
                except FnserveError as exc:
                    log.warning("dropping malformed message from a site manager: %s", exc)
                    continue
                self._handle(router, identity, msg, key, pending)
        finally:
            self.traffic.flush(router, pending)

    def _handle(self, router: zmq.Socket, identity: bytes, msg: m.SiteMessage, key: str = "",
                pending: _Pending | None = None) -> None:
        now = time.time()
        if isinstance(msg, m.Register):
            # Accepted after this pass (what the old connection sent is recorded first), within
            # a time budget per pass: see _accept_queued.
            self.registrations.add(identity, msg, key)
            return
        if isinstance(msg, m.Disconnect):
            if identity not in self.connections.by_identity and self.registrations.discard(identity):
                return  # gone before its registration was accepted
            if pending is not None:
                self.traffic.flush(router, pending)
        self._perform(router, self.session.received(identity, msg, key, now), now, pending)

    def _accept_queued(self, router: zmq.Socket) -> None:
        """Accept queued registrations, oldest first, for at most ``REGISTER_BUDGET`` seconds; the
        ones left waiting are sent a Heartbeat every heartbeat period, so their site managers
        keep waiting instead of reconnecting (and queueing again) after their threshold."""
        deadline = time.monotonic() + REGISTER_BUDGET
        while self.registrations and time.monotonic() < deadline:
            q = self.registrations.take()
            now = time.time()
            self._perform(router, self.session.register(q.identity, q.register, q.key, self._verify(q.register, q.key), now), now)
        now = time.time()
        for identity in self.registrations.keepalive(now, self.heartbeat_period):
            send(router, identity, m.Heartbeat(sent_at=now))

    def _verify(self, msg: m.Register, key: str) -> bool:
        """The endpoint's secret, and (CURVE) that the connection's key is that endpoint's own;
        with several forwarders, also re-read the live set if the last one sends it elsewhere."""
        try:
            ok = self.verify_secret(msg.endpoint_id, msg.secret)
            if ok and self.server_keys is not None:
                # Bind the key to the endpoint it claims: endpoint A's key cannot register as B.
                ok = self.endpoint_for_key(key) == msg.endpoint_id  # type: ignore[misc]
        except Exception:
            log.exception("could not verify endpoint %s", msg.endpoint_id)
            ok = False
        if not ok:
            log.warning("refused a site manager for endpoint %s: unknown endpoint or wrong secret", msg.endpoint_id)
        elif self.pool is not None and not self.session.serves(msg.endpoint_id):
            self.session.live = self.pool.live()  # a dead forwarder may still be in the last read
        return ok

    def _perform(self, router: zmq.Socket, actions: list[Action], now: float, pending: _Pending | None = None) -> None:
        for action in actions:
            if isinstance(action, Reply):
                if isinstance(action.message, m.Refused):
                    log.warning("refused a site manager: [%s] %s", action.message.code, action.message.reason)
                elif isinstance(action.message, m.Disconnect) and action.message.connect_to:
                    log.info("a site manager was sent to forwarder %s: %s", action.message.connect_to, action.message.reason)
                send(router, action.identity, action.message)
            elif isinstance(action, Accept):
                self._accept(router, action.conn, action.register)
            elif isinstance(action, Lose):
                self._lose(action.endpoint_id, action.why)
            elif isinstance(action, Handle):
                self.traffic.on_message(router, action.conn, action.message, now, pending)

    def _accept(self, router: zmq.Socket, conn: Connection, msg: m.Register) -> None:
        identity = conn.identity
        if self.pool is not None:
            self.pool.claim(msg.endpoint_id)
        # Whatever was in flight and is not held by the (re)connecting site manager is lost.
        requeued = self.store.requeue_inflight_except(msg.endpoint_id, set(msg.holding))
        metrics.count_requeued(requeued)
        # The serializers it loads: the web service refuses other argument strategies at submit.
        serializers = "*" if msg.allowed_serializers is None else ",".join(msg.allowed_serializers)
        self.store.set_connected(msg.endpoint_id, True, fnserve=msg.software.get("fnserve", ""), serializers=serializers,
                                 watch_folders=json.dumps(msg.watch_folders), mpi_nodes=msg.mpi_nodes,
                                 offers=json.dumps(msg.offers), user_config_schema=msg.user_config_schema)
        self.store.touch(msg.endpoint_id)
        log.info("endpoint %s connected (%d task(s) requeued)", msg.endpoint_id, requeued)
        send(router, identity, m.Registered(heartbeat_period=self.heartbeat_period, heartbeat_threshold=self.connections.threshold,
                                                  forwarders=list(self.session.live)))
        self.watches.forget(msg.endpoint_id)  # a new connection gets the list again
        self.traffic.send_watches(router, [msg.endpoint_id])
        self.traffic.relay_cancels(router, msg.endpoint_id)
        self.traffic.dispatch(router, msg.endpoint_id)

    def _drain_wakeups(self, router: zmq.Socket, wake: zmq.Socket) -> None:
        w = sort_wakeups(read_wakeups(wake))
        endpoints, cancels, revoked, watch_changed = w.endpoints, w.cancels, w.revoked, w.watch_changed
        if "*" in endpoints:  # Redis came back: anything may have happened meanwhile
            endpoints = cancels = set(self.connections.by_endpoint)
            revoked |= self._deleted_meanwhile()
        for endpoint_id in revoked:
            self._revoke(router, endpoint_id)
        watch_changed &= set(self.connections.by_endpoint)
        if watch_changed:
            self.traffic.send_watches(router, sorted(watch_changed))
        # The cancel list is read only when a cancel said so: no Redis call per dispatch wake.
        for endpoint_id in cancels:
            if endpoint_id in self.connections.by_endpoint:
                self.traffic.relay_cancels(router, endpoint_id)
        for endpoint_id in endpoints:
            if endpoint_id in self.connections.by_endpoint:
                self.traffic.dispatch(router, endpoint_id)

    def _revoke(self, router: zmq.Socket, endpoint_id: str) -> None:
        """The endpoint was deleted: refuse its site manager now and forget its connection, so
        nothing more it sends (heartbeats, results, outputs) is accepted."""
        conn = self.connections.by_endpoint.get(endpoint_id)
        if conn is None:
            return
        self.connections.drop(endpoint_id)
        if self.pool is not None:
            self.pool.release(endpoint_id)  # no survivor's sweep brings its status back later
        send(router, conn.identity, m.Refused(code="endpoint_deleted", reason="this endpoint was deleted"))
        self.store.set_connected(endpoint_id, False, reason="endpoint deleted")
        log.warning("endpoint %s was deleted: its connection is cut", endpoint_id)

    def _deleted_meanwhile(self) -> set[str]:
        """Connected endpoints deleted while the wake channel was down (their tombstones)."""
        ids = list(self.connections.by_endpoint)
        if not ids:
            return set()
        return {e for e, gone in zip(ids, self.store.r.mget([tombstone_key(e) for e in ids])) if gone}

    def _store_lost(self, router: zmq.Socket, why: str) -> None:
        """Redis went away (a restart, a failover): wait for it, then have every site manager
        register again.

        A failover is handled so even when no command failed: redis-py moves a connection the
        demoted primary closed while it was idle to the new primary without an error, and what
        was recorded on the old primary after the promotion (results, not acked: no replica
        confirmed them) is gone. Without the registration the site manager would never send
        those results again and their tasks would stay "dispatched" for good.

        What this process was doing when Redis failed may be half done (a result batch recorded
        but not acked, a registration not answered); nothing is lost by starting over: a site
        manager resends its unacked results after registering, says which tasks it still holds,
        and the first result recorded for a task wins. In-flight tasks are not requeued here:
        each endpoint's registration settles its own (``requeue_inflight_except``).
        """
        log.warning("%s; waiting for Redis", why)
        wait_until_back(self.store.r, self._stop)
        self._primary_seen = primary_changes(self.store.r)
        dropped = list(self.connections.by_endpoint.values())
        for conn in dropped:
            self.connections.drop(conn.endpoint_id)
            send(router, conn.identity, m.Disconnect(reason="the service's task store restarted; register again"))
        log.warning("Redis is back; asked %d site manager(s) to register again", len(dropped))

    # -- several forwarders (web_service/forwarder_pool.py) -------------------------------------

    def _announce(self) -> float:
        """Renew this forwarder's liveness and re-read the live set; returns when to do it next."""
        pool = self.pool
        assert pool is not None
        try:
            pool.announce()
            self.session.live = pool.live()
            self.sweeper.plan(self.session.live)
        except redis.RedisError as exc:  # the loop's own Redis calls notice and wait for it
            log.warning("could not renew this forwarder's liveness: %s", type(exc).__name__)
        return time.time() + pool.ttl / 3

    def _withdraw(self, router: zmq.Socket) -> None:
        """Stopping: leave the live set, and send each endpoint to its next forwarder now."""
        assert self.pool is not None
        try:
            self.pool.withdraw()
            others = [a for a in self.pool.live() if a != self.pool.address]
        except redis.RedisError:
            return
        self._perform(router, self.session.withdraw(others), time.time())

    def _expire(self, router: zmq.Socket, now: float) -> None:
        self._perform(router, self.session.expire(now, self.drained_at, self._max_lag), now)

    def _lose(self, endpoint_id: str, why: str) -> None:
        self.connections.drop(endpoint_id)
        self.watches.forget(endpoint_id)
        if self.pool is not None and not self.pool.release(endpoint_id):
            # It registered with another forwarder since: its tasks are that one's to settle.
            log.info("endpoint %s left (%s); now served by another forwarder", endpoint_id, why)
            return
        requeued = self.store.requeue_inflight(endpoint_id)
        metrics.count_requeued(requeued)
        self.store.set_connected(endpoint_id, False, reason=why)
        log.warning("endpoint %s disconnected (%s); %d in-flight task(s) requeued", endpoint_id, why, requeued)


def main() -> None:
    """``python -m web_service.forwarder``: see :func:`web_service.forwarder_main.main`."""
    from web_service.forwarder_main import main as run_main

    run_main()


if __name__ == "__main__":
    main()
