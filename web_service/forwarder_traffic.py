"""What the forwarder does with each connected endpoint's traffic, once the session let it in.

Tasks go out (claimed from the endpoint's queue in batches, no more than its capacity in
flight), with the cancels made after dispatch and the file-trigger watch lists; what comes back
goes into the task store: results (size limits applied, first recorded wins, acked once on
enough Redis replicas, usage logged in the same script run), task status, live outputs, file events.
Tasks go out from a backlog of endpoints owed a dispatch (web_service/forwarder_backlog.py), in
chunks with one pipelined claim round trip each, within a time budget per loop pass. Messages of
one drain pass are gathered (:class:`~web_service.forwarder_session.Pending`) and recorded
together: heartbeats and status in one round trip, all the result batches in another. The loop that receives them and the
connection decisions are in web_service/forwarder.py and forwarder_session.py.
"""

from __future__ import annotations

from collections.abc import Callable

import logging
import time

import zmq

from fnserve import messages as m
from fnserve.outputs import task_output_limit
from web_service import forwarder_metrics as metrics
from web_service.forwarder_backlog import CHUNK, DispatchBacklog
from web_service.forwarder_session import Connection, Connections, Pending
from web_service.forwarder_watches import WatchLists
from web_service.redis_client import primary_changes, replicated
from web_service.result_limits import within_limits
from web_service.task_outputs import OutputWriter
from web_service.task_store import TaskStore
from web_service.usage import encode_entry

log = logging.getLogger("web_service.forwarder")


def send(router: zmq.Socket, identity: bytes, msg: m._Message) -> None:
    """Send one message to the site manager connected as ``identity`` (dropped if it is gone)."""
    try:
        router.send_multipart([identity, m.encode(msg)], zmq.NOBLOCK)
    except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY off drops silently anyway)
        log.debug("send to a site manager failed: %s", exc)


class EndpointTraffic:
    """Tasks out to the connected endpoints and what they send back into the task store."""

    def __init__(self, store: TaskStore, connections: Connections, watches: WatchLists, batch_size: int,
                 output_limit: int | None, max_result_bytes: int, replicas_ack: int, replicas_timeout: int) -> None:
        self.store = store
        self.connections = connections
        self.watches = watches
        self.batch_size = batch_size
        # Live outputs of running tasks (fnserve.report), bounded per task by output_limit bytes.
        self.outputs = OutputWriter(store.r, store.result_ttl, task_output_limit() if output_limit is None else output_limit)
        self.max_result_bytes = max_result_bytes  # the service's own bound (web_service.result_limits)
        # Replicas that must hold recorded results before they are acked (web_service/redis_client.py).
        self.replicas_ack = replicas_ack
        self.replicas_timeout = replicas_timeout
        # Results / live outputs dropped because the endpoint sending them did not hold the task.
        self.rejected_results = 0
        self.rejected_outputs = 0
        # Whether this forwarder still owns endpoints (set in a pool of forwarders; None: alone).
        self.owns_many: Callable[[list[str]], list[bool]] | None = None
        # Endpoints to dispatch to, served within a time budget per loop pass (web_service/forwarder_backlog.py).
        self.backlog = DispatchBacklog()

    def on_message(self, router: zmq.Socket, conn: Connection, msg: m.SiteMessage, now: float, pending: Pending | None) -> None:
        if isinstance(msg, (m.ResultBatch, m.TaskStatusBatch, m.FileEventBatch)) and pending is not None:
            pending.add(conn, msg)
            return
        if isinstance(msg, m.ResultBatch):
            self.record(router, conn, msg.results, now)
        elif isinstance(msg, m.TaskStatusBatch):
            self.store.mark_running(msg.running, msg.started_at or None)
        elif isinstance(msg, m.Heartbeat):
            send(router, conn.identity, m.Heartbeat(sent_at=now))
            if pending is not None:
                pending.touch(conn, None)  # recorded with the pass's others: one round trip
            else:
                self.store.touch(conn.endpoint_id)
        elif isinstance(msg, m.TaskOutputBatch):
            kept, dropped = self.outputs.append_checked(conn.endpoint_id, msg.outputs)
            if dropped:
                self.rejected_outputs += dropped
                log.warning("endpoint %s sent %d live output(s) for tasks not in flight there; dropped", conn.endpoint_id, dropped)
        elif isinstance(msg, m.EndpointStatus):
            if pending is not None:
                pending.touch(conn, msg)
            else:
                self.store.touch(conn.endpoint_id, msg)
        elif isinstance(msg, m.FileEventBatch):
            self.record_files(router, conn, msg.events)

    def flush(self, router: zmq.Socket, pending: Pending) -> None:
        """Record what a drain pass gathered: status first (a result must win over 'running')."""
        self.store.touch_many({e: report for e, (conn, report) in pending.touched.items()
                               if self.connections.by_identity.get(conn.identity) is conn})
        for started_at, task_ids in pending.running.items():
            self.store.mark_running(task_ids, started_at or None)
        self.record_many(router, [(conn, results) for conn, results in pending.results.values()
                                  if results and self.connections.by_identity.get(conn.identity) is conn], time.time())
        for conn, events in pending.files.values():
            if self.connections.by_identity.get(conn.identity) is conn:
                self.record_files(router, conn, events)
        pending.clear()

    def record(self, router: zmq.Socket, conn: Connection, results: list[m.ResultMessage], now: float) -> None:
        """Record results (first wins), ack them all, then send what their room lets through."""
        self.record_many(router, [(conn, results)], now)

    def record_many(self, router: zmq.Socket, batches: list[tuple[Connection, list[m.ResultMessage]]], now: float) -> None:
        """:meth:`record` for a pass's result batches from many endpoints: one pipelined Redis
        round trip for all (web_service/store/dispatch.py ``record_many``) and one replica check."""
        prepared = []
        for conn, results in batches:
            results = [within_limits(r, self.max_result_bytes) for r in results]
            # Usage of the results recorded now is logged by the same script run (web_service.usage).
            prepared.append((conn, results, [encode_entry(conn.endpoint_id, r, now) for r in results]))
        if not prepared:
            return
        since = primary_changes(self.store.r)
        answers = self.store.record_many([(conn.endpoint_id, results, usage) for conn, results, usage in prepared])
        # Not acked unless replicated: the site manager keeps them and sends them again after its
        # next registration (a failover makes it register again), and the first recorded wins.
        acked = replicated(self.store.r, self.replicas_ack, self.replicas_timeout, since)
        for (conn, results, _), answer in zip(prepared, answers):
            if answer is None:  # the script failed (logged): not acked
                self.register_again(router, conn, "recording its results failed")
                continue
            recorded, rejected, queued = answer
            metrics.count_recorded(results, recorded, len(rejected), now)
            if not acked:
                log.warning("endpoint %s: %d result(s) recorded but not yet on %d replica(s); not acked",
                            conn.endpoint_id, len(results), self.replicas_ack)
                continue
            # Rejected ones are acked too: a site manager must not resend them forever.
            send(router, conn.identity, m.Ack(task_ids=[r.task_id for r in results]))
            if conn.capacity and queued:
                self.backlog.add(conn.endpoint_id)  # results free room: send what waits
            if rejected:
                self.rejected_results += len(rejected)
                log.warning("endpoint %s sent %d result(s) for tasks it does not hold; dropped (not recorded, not billed): %s",
                            conn.endpoint_id, len(rejected), ", ".join(rejected[:10]) + (" ..." if len(rejected) > 10 else ""))
            duplicates = len(results) - len(recorded) - len(rejected)
            if duplicates:
                log.info("endpoint %s: %d duplicate result(s) ignored", conn.endpoint_id, duplicates)

    def record_files(self, router: zmq.Socket, conn: Connection, events: list[m.FileEvent]) -> None:
        """Record file events and ack them; unacked on failure (sent again after re-registering)."""
        keys = self.watches.record(conn.endpoint_id, events)
        if keys is None:
            return
        metrics.count_file_events(len(events))
        send(router, conn.identity, m.FileEventsAck(keys=keys))

    def refresh_watches(self, router: zmq.Socket, now: float) -> None:
        if self.watches.due(now):
            self.send_watches(router, list(self.connections.by_endpoint))

    def send_watches(self, router: zmq.Socket, endpoint_ids: list[str]) -> None:
        """Send each endpoint its file triggers' watch list if it changed since last sent."""
        for endpoint_id, watches in self.watches.changed(endpoint_ids).items():
            conn = self.connections.by_endpoint.get(endpoint_id)
            if conn is None:
                continue
            self.watches.mark_sent(endpoint_id, watches)
            send(router, conn.identity, m.WatchFolders(watches=watches))

    def relay_cancels(self, router: zmq.Socket, endpoint_id: str) -> None:
        """Tell the endpoint's site manager which of its tasks were cancelled after dispatch."""
        task_ids = self.store.take_cancels(endpoint_id)
        if task_ids:
            send(router, self.connections.by_endpoint[endpoint_id].identity, m.CancelTasks(task_ids=task_ids))

    def register_again(self, router: zmq.Socket, conn: Connection, what: str) -> None:
        """A task store script failed for this endpoint: forget its connection and have its site
        manager register again. Its registration settles what the failed script left (tasks moved
        in flight but never sent are requeued; ``requeue_inflight_except``) and it resends its
        unacked results, of which the first recorded wins: nothing is lost or run twice, and no
        task waits "dispatched" for a reconnect that would otherwise never come."""
        if self.connections.by_identity.get(conn.identity) is not conn:
            return
        self.connections.drop(conn.endpoint_id)
        self.watches.forget(conn.endpoint_id)
        log.warning("endpoint %s: %s in the task store; asking its site manager to register again", conn.endpoint_id, what)
        send(router, conn.identity, m.Disconnect(reason=f"the service: {what}; register again"))

    def dispatch(self, router: zmq.Socket, endpoint_id: str) -> None:
        """Queue the endpoint for a dispatch (:meth:`dispatch_queued` sends it its tasks)."""
        self.backlog.add(endpoint_id)

    def dispatch_queued(self, router: zmq.Socket, budget: float) -> None:
        """Send the queued endpoints their waiting tasks, oldest first, in chunks (one pipelined
        claim per chunk: web_service/store/dispatch.py ``claim_many``), until ``budget`` seconds
        are spent; a batch of ``batch_size`` goes back to the queue (there may be more), and
        never more than an endpoint's capacity in flight.

        In a pool of forwarders, only while this one still owns the endpoint (``owns_many``):
        another forwarder that accepted the endpoint's newer registration owns it and settled its
        in-flight tasks then; tasks sent here afterwards, on a connection the site manager has
        left, would stay "dispatched" for good. The connection is dropped instead: if the site
        manager is in fact still here, its next message is answered "register again"."""
        deadline = time.monotonic() + budget
        while self.backlog and time.monotonic() < deadline:
            ids = [e for e in self.backlog.take(CHUNK) if e in self.connections.by_endpoint]
            if self.owns_many is not None and ids:
                owned = self.owns_many(ids)
                for endpoint_id in (e for e, mine in zip(ids, owned) if not mine):
                    self.connections.drop(endpoint_id)
                    self.watches.forget(endpoint_id)
                    log.info("endpoint %s is owned by another forwarder now; not dispatching here", endpoint_id)
                ids = [e for e, mine in zip(ids, owned) if mine]
            conns = [self.connections.by_endpoint[e] for e in ids]
            claims = self.store.claim_many([(c.endpoint_id, self.batch_size, c.capacity) for c in conns])
            now = time.time()
            for conn, claimed in zip(conns, claims):
                if claimed is None:  # the script failed (logged)
                    self.register_again(router, conn, "claiming its tasks failed")
                    continue
                if not claimed:
                    continue
                tasks = [t for t, _ in claimed]
                for t in tasks:
                    t.timings["forwarder_dispatched"] = now
                send(router, conn.identity, m.TaskBatch(tasks=tasks))
                metrics.count_dispatched(claimed, now)
                if len(tasks) >= self.batch_size:
                    self.backlog.add(conn.endpoint_id)
