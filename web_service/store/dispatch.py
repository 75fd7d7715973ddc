"""The forwarder's side of the task store: claiming tasks for dispatch, marking them running,
recording results (first wins), requeueing a lost endpoint's tasks, relaying cancels. Each is
one script run per batch (``scripts/*.lua``)."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import redis

from fnserve.messages import ResultMessage, TaskMessage
from fnserve.serialize import data_only
from fnserve.states import TaskState
from web_service.redis_replies import optional_blobs, popped_texts, text, texts
from web_service.store.keys import (
    COMPLETION_LOG_ENTRIES,     COMPLETED_PREFIX, DONE_PREFIX, OBJECT_META_PREFIX, OBJECT_OWNER_PREFIX, REJECTED_RESULTS, REVOKE_WAKE, TASK_PREFIX, WAKE_CHANNEL, cancels_key, function_key,
    QUEUE_PATTERN, USAGE_STREAM, inflight_key, queue_endpoint, queue_key, status_key, task_key,
)
from web_service.store.record import DISPATCH_FIELDS, RESULT_FIELDS, result_values, task_message

log = logging.getLogger(__name__)

_BODY_CACHE_SIZE = 1024
_WAITING = TaskState.WAITING.value.encode()


class DispatchSide:
    r: redis.Redis
    result_ttl: int
    scripts: dict[str, Any]
    _bodies: dict[str, bytes]
    data_url: str
    data_key: bytes

    def revoke_endpoint(self, endpoint_id: str) -> None:
        """Tell every forwarder to cut ``endpoint_id``'s live connection now (it was deleted)."""
        self.r.publish(WAKE_CHANNEL, REVOKE_WAKE + endpoint_id)

    def take_cancels(self, endpoint_id: str, max_ids: int = 10_000) -> list[str]:
        """Ids of the endpoint's dispatched tasks cancelled since the last call (each once)."""
        return popped_texts(self.r.lpop(cancels_key(endpoint_id), max_ids))

    def claim(self, endpoint_id: str, max_tasks: int, capacity: int = 0) -> list[TaskMessage]:
        """Take up to ``max_tasks`` waiting tasks of an endpoint, marking them dispatched.

        With ``capacity`` > 0, no more than leaves ``capacity`` tasks in flight for it, and none
        until at least a quarter of ``capacity`` is free (:func:`web_service.store.rules.claim_room`).
        """
        return [task for task, _ in self.claim_timed(endpoint_id, max_tasks, capacity)]

    def claim_timed(self, endpoint_id: str, max_tasks: int, capacity: int = 0) -> list[tuple[TaskMessage, float]]:
        """:meth:`claim`, each task with the unix time it was submitted (0.0 if unknown): the
        forwarder's dispatch-delay histogram (web_service.forwarder_metrics)."""
        return self.claim_many([(endpoint_id, max_tasks, capacity)])[0] or []

    def claim_many(self, wanted: list[tuple[str, int, int]]) -> list[list[tuple[TaskMessage, float]] | None]:
        """:meth:`claim_timed` for many endpoints, ``(endpoint id, max tasks, capacity)`` each, in
        one round trip (a forwarder's pass of dispatches): one claim script run per endpoint,
        pipelined, so each endpoint's claim is still atomic. Answers in the order asked; None
        where the script failed (it may have moved tasks in flight before failing: the forwarder
        has that site manager register again, which settles them)."""
        if not wanted:
            return []
        now = repr(time.time())
        # One endpoint's script failing must not strand the others' claims (made, so in flight).
        answers = self._run("claim", [(e, [queue_key(e), inflight_key(e), status_key(e)], [n, now, TASK_PREFIX, capacity, *DISPATCH_FIELDS])
                                      for e, n, capacity in wanted])
        fid_at = DISPATCH_FIELDS.index("function_id")
        bodies = self._function_bodies({values[fid_at].decode() for answer in answers if answer for _, values in answer[1]})
        return [None if answer is None else self._claimed(answer, bodies) if answer else [] for answer in answers]

    def _claimed(self, answer: Any, bodies: dict[str, bytes]) -> list[tuple[TaskMessage, float]]:
        restricted, rows = answer
        fid_at = DISPATCH_FIELDS.index("function_id")
        # A function-restricted endpoint's workers load no code-capable arguments, even for
        # tasks queued before the restriction.
        allowed = list(data_only(None)) if restricted == b"1" else None
        tasks = []
        for task_id, values in rows:
            task, submitted = task_message(task_id.decode(), values, bodies.get(values[fid_at].decode(), b""))
            task.allowed_serializers = allowed
            tasks.append((task, submitted))
        if self.data_url and self.data_key:
            from web_service.object_rules import mint_data_token

            for t, _ in tasks:
                t.data_url, t.data_token = self.data_url, mint_data_token(self.data_key, t.task_id)
        return tasks

    def _function_bodies(self, function_ids: set[str]) -> dict[str, bytes]:
        missing = sorted(f for f in function_ids if f not in self._bodies)
        if missing:
            if len(self._bodies) + len(missing) > _BODY_CACHE_SIZE:
                self._bodies.clear()
            for fid, body in zip(missing, optional_blobs(self.r.mget([function_key(f) for f in missing]))):
                if body is not None:
                    self._bodies[fid] = body
        return {fid: self._bodies[fid] for fid in function_ids if fid in self._bodies}

    def queue_length(self, endpoint_id: str) -> int:
        return int(self.r.llen(queue_key(endpoint_id)))

    def inflight(self, endpoint_id: str) -> set[str]:
        return {text(m) for m in self.r.smembers(inflight_key(endpoint_id))}

    def unfinished_ids(self, endpoint_id: str) -> list[str]:
        """Ids of the endpoint's queued tasks, then its in-flight ones (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(queue_key(endpoint_id), 0, -1)
        pipe.smembers(inflight_key(endpoint_id))
        queued, inflight = pipe.execute()
        return [i.decode() for i in queued] + [i.decode() for i in inflight]

    def queued_endpoints(self) -> Iterator[str]:
        """Ids of the endpoints that have tasks queued (SCAN: no blocking of Redis)."""
        for raw in self.r.scan_iter(match=QUEUE_PATTERN, count=1000):
            endpoint_id = queue_endpoint(text(raw))
            if endpoint_id is not None:
                yield endpoint_id

    def waiting_tasks(self, endpoint_id: str) -> dict[str, tuple[float, str]]:
        """The endpoint's queued tasks still waiting: id -> (submitted at, owner)."""
        ids = texts(self.r.lrange(queue_key(endpoint_id), 0, -1))
        if not ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(task_key(task_id), "state", "t_submitted", "owner")
        return {task_id: (float(submitted), owner.decode()) for task_id, (state, submitted, owner) in zip(ids, pipe.execute())
                if state == _WAITING and submitted and owner}

    def unqueue(self, endpoint_id: str, task_id: str) -> None:
        """Take a task that will not run off its endpoint's queue."""
        self.r.lrem(queue_key(endpoint_id), 1, task_id)

    def mark_running(self, task_ids: list[str], started_at: float | None = None) -> None:
        if task_ids:
            self.scripts["running"](keys=[TASK_PREFIX, COMPLETED_PREFIX],
                                    args=[repr(started_at or time.time()), self.result_ttl, COMPLETION_LOG_ENTRIES, *task_ids])

    def record_results(self, results: list[ResultMessage], endpoint_id: str) -> list[str]:
        """Record results (first wins); returns the ids recorded now. Safe to call twice."""
        return self.record_results_from(results, endpoint_id)[0]

    def record_results_from(self, results: list[ResultMessage], endpoint_id: str) -> tuple[list[str], list[str]]:
        """Record the results ``endpoint_id`` sent: ``(recorded now, rejected)``.

        Rejected: results for tasks that endpoint does not hold (another endpoint's task, one
        never dispatched, an unknown id; see :func:`web_service.result_origin.result_verdict`).
        They are not recorded and are counted per endpoint in ``fns:stats:rejected_results``.
        """
        if not results:
            return [], []
        recorded, rejected, _ = self._record(results, endpoint_id, None)
        return recorded, rejected

    def record_and_log_usage(self, results: list[ResultMessage], endpoint_id: str,
                             usage: list[bytes]) -> tuple[list[str], list[str], int]:
        """:meth:`record_results_from` for the forwarder, in the same script run (one round trip
        where there were three): the usage entries of the results recorded now are appended to
        the usage stream (``usage[i]``: ``results[i]``'s, encoded by
        :func:`web_service.usage.encode_entry`; empty: none), and the answer adds how many tasks
        wait in the endpoint's queue (none: no claim is worth making).
        Returns ``(recorded now, rejected, tasks queued)``."""
        if not results:
            return [], [], self.queue_length(endpoint_id)
        return self._record(results, endpoint_id, usage)

    def record_many(self, batches: list[tuple[str, list[ResultMessage], list[bytes]]]) -> list[tuple[list[str], list[str], int] | None]:
        """:meth:`record_and_log_usage` for many endpoints' batches, ``(endpoint id, results,
        usage)`` each, in one round trip (a forwarder's pass of result batches): one record script
        run per batch, pipelined. Answers in the order asked; None where the script failed
        (nothing to ack: the site manager sends those results again)."""
        if not batches:
            return []
        answers = self._run("record", [(e, *self._record_call(results, e, usage)) for e, results, usage in batches])
        return [None if a is None else ([r.decode() for r in a[0]], [r.decode() for r in a[1]], int(a[2])) for a in answers]

    def _record(self, results: list[ResultMessage], endpoint_id: str, usage: list[bytes] | None) -> tuple[list[str], list[str], int]:
        keys, args = self._record_call(results, endpoint_id, usage)
        recorded, rejected, queued = self.scripts["record"](keys=keys, args=args)
        return [r.decode() for r in recorded], [r.decode() for r in rejected], int(queued)

    def _record_call(self, results: list[ResultMessage], endpoint_id: str, usage: list[bytes] | None) -> tuple[list[Any], list[Any]]:
        args: list[Any] = [repr(time.time()), self.result_ttl, COMPLETION_LOG_ENTRIES, endpoint_id,
                           len(RESULT_FIELDS), *RESULT_FIELDS]
        keys = [inflight_key(endpoint_id), TASK_PREFIX, DONE_PREFIX, COMPLETED_PREFIX, REJECTED_RESULTS,
                OBJECT_META_PREFIX, OBJECT_OWNER_PREFIX]
        if usage is None:
            for res in results:
                args += [res.task_id, TaskState.SUCCESS.value if res.ok else TaskState.FAILED.value, *result_values(res)]
        else:
            keys += [queue_key(endpoint_id), USAGE_STREAM]
            for res, entry in zip(results, usage, strict=True):
                args += [res.task_id, TaskState.SUCCESS.value if res.ok else TaskState.FAILED.value, *result_values(res), entry]
        return keys, args

    def _run(self, script: str, calls: list[tuple[str, list[Any], list[Any]]]) -> list[Any]:
        """Run ``script`` once per ``(endpoint id, keys, args)``: one call alone (the warm path:
        redis-py's pipeline adds a ``SCRIPT EXISTS`` round trip to every execute), several
        pipelined in one round trip. Answers in the order asked, None for each that failed
        (logged with its endpoint)."""
        if len(calls) == 1:
            endpoint_id, keys, args = calls[0]
            try:
                answers = [self.scripts[script](keys=keys, args=args)]
            except redis.exceptions.ResponseError as exc:
                answers = [exc]
        else:
            pipe = self.r.pipeline(transaction=False)
            for _, keys, args in calls:
                self.scripts[script](keys=keys, args=args, client=pipe)
            answers = pipe.execute(raise_on_error=False)
        out = []
        for (endpoint_id, _, _), answer in zip(calls, answers, strict=True):
            if isinstance(answer, redis.exceptions.ResponseError):
                log.error("the %s script failed for endpoint %s: %s", script, endpoint_id, answer)
                answer = None
            out.append(answer)
        return out

    def rejected_results(self, endpoint_id: str) -> int:
        """How many results ``endpoint_id`` sent for tasks it did not hold (dropped)."""
        return int(self.r.hget(REJECTED_RESULTS, endpoint_id) or 0)

    def requeue_inflight(self, endpoint_id: str) -> int:
        """Put an endpoint's in-flight tasks back at the head of its queue (it was lost)."""
        return self.requeue_inflight_except(endpoint_id, set())

    def requeue_inflight_except(self, endpoint_id: str, held: set[str]) -> int:
        """Requeue in-flight tasks of an endpoint but those its site manager still ``held``."""
        return int(self.scripts["requeue"](keys=[queue_key(endpoint_id), inflight_key(endpoint_id)],
                                           args=[TASK_PREFIX, *held]))
