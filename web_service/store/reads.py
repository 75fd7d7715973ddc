"""Reading tasks back, waiting for them (pushed, never polled), and ending unfinished ones."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgspec
import redis
from redis.client import Pipeline, PubSub

from fnserve.messages import RemoteError
from fnserve.states import TaskState
from web_service.redis_replies import StreamEntry, optional_blobs, stream_entries, stream_reads
from web_service.store.keys import (
    COMPLETION_LOG_ENTRIES,     CANCEL_WAKE, WAKE_CHANNEL, cancels_key, completed_key, done_channel, group_key, inflight_key, task_key,
)
from web_service.store.record import RECORD_FIELDS, TaskRecord, task_record
from web_service.task_outputs import OutputPage, outputs_key, read
from web_service.usage import UsageEntry, log_usage

# Log entries read at once; each is one recorded batch (up to a few hundred ids).
_READ_ENTRIES = 256
_DEFAULT_SOCKET_TIMEOUT = 5.0  # redis-py's own default when the client sets none
CANCELLED_ERROR = RemoteError(code="cancelled", type="TaskCancelled", message="cancelled by its owner")
_BLOCK_SLICE = 1.0  # seconds; well below the web service's Redis socket timeout (5 s)


@dataclass
class CompletedBatch:
    """A read of a completion log: the new cursor and the ids of tasks that finished."""

    cursor: str
    task_ids: list[str]
    gap: bool
    running: list[str] = field(default_factory=list)  # started running (readers that asked)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class ReadSide:
    r: redis.Redis
    result_ttl: int
    scripts: dict[str, Any]
    idle_subscribers: list[PubSub]  # see Completions

    def get(self, task_id: str) -> TaskRecord | None:
        return task_record(task_id, optional_blobs(self.r.hmget(task_key(task_id), RECORD_FIELDS)))

    def get_many(self, task_ids: Iterable[str], also: Callable[[Pipeline], None] | None = None) -> dict[str, TaskRecord | None]:
        """The tasks' records (None: unknown or expired); ``also`` adds the caller's own commands
        to the same round trip (their answers are not returned)."""
        ids = list(task_ids)
        pipe = self.r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(task_key(task_id), RECORD_FIELDS)
        if also is not None:
            also(pipe)
        return {tid: task_record(tid, vals) for tid, vals in zip(ids, pipe.execute())}

    def owners(self, task_ids: list[str]) -> dict[str, str | None]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(task_key(task_id), "owner")
        return {tid: None if v is None else v.decode() for tid, v in zip(task_ids, pipe.execute())}

    def wait(self, owner: str, task_ids: list[str], timeout: float, any_: bool = False) -> dict[str, TaskRecord | None]:
        """Block until all (or, with ``any_``, at least one) of ``task_ids`` finish, or timeout.

        Waits on the owner's completion channel: no polling interval.
        """
        records = self.get_many(task_ids)
        pending = [tid for tid, rec in records.items() if rec is not None and not rec.finished]
        if not pending or timeout <= 0 or (any_ and len(pending) < len(records)):
            return records
        with self.completions(owner) as completions:
            # Read again once subscribed: a result recorded in between is not missed.
            return completions.wait(task_ids, timeout, any_)


    def group_task_ids(self, owner: str, task_group_id: str, offset: int, limit: int) -> tuple[list[str], int]:
        """A page of the ids in one of ``owner``'s task groups (submission order), and how many
        ids the group holds."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(group_key(owner, task_group_id), offset, offset + limit - 1)
        pipe.llen(group_key(owner, task_group_id))
        ids, total = pipe.execute()
        return [i.decode() for i in ids], int(total)

    def completions(self, owner: str) -> "Completions":
        """Subscribe to ``owner``'s completions; use before submitting to wait without a race."""
        return Completions(self, owner)

    def completion_cursor(self, owner: str) -> str:
        """Where a new reader of ``owner``'s completion log starts: its last entry (or 0-0)."""
        last = stream_entries(self.r.xrevrange(completed_key(owner), count=1))
        return last[0][0].decode() if last else "0-0"

    def completed_since(self, owner: str, cursor: str, timeout: float, max_tasks: int,
                        min_tasks: int = 1, linger: float = 0.0, running: bool = False) -> "CompletedBatch":
        """Ids of ``owner``'s tasks that finished after ``cursor``, waiting up to ``timeout``.

        Blocks in Redis (``XREAD BLOCK``) until an entry arrives: no polling. Whole entries only,
        at least one, and no more than fit ``max_tasks`` ids after the first. With ``min_tasks``
        > 1, once the first entry is in, it keeps blocking for more for at most ``linger``
        seconds (a reader with many tasks outstanding then gets them in fewer, larger answers).
        ``gap`` is true when entries after ``cursor`` were trimmed from the log before being read.
        With ``running``, ids of tasks that started running come too (in ``running``, answered
        at once); without it those entries are passed over.
        """
        key = completed_key(owner)
        deadline = time.monotonic() + timeout
        entries = self._read_log(key, cursor, deadline)
        if not entries:
            return CompletedBatch(cursor, [], False)
        gap = _stream_id(entries[0][1][b"prev"].decode()) > _stream_id(cursor)
        ids: list[str] = []
        started: list[str] = []
        last = cursor
        linger_until: float | None = None
        while entries:
            for entry_id, fields in entries:
                batch = fields[b"ids"].decode().split(",")
                is_running = fields.get(b"kind") == b"running"
                if is_running and not running:
                    last = entry_id.decode()
                    continue
                if (ids or started) and len(ids) + len(started) + len(batch) > max_tasks:
                    return CompletedBatch(last, ids, gap, started)
                (started if is_running else ids).extend(batch)
                last = entry_id.decode()
            if not ids and not started:  # only entries this reader passes over: keep waiting
                entries = self._read_log(key, last, deadline)
                continue
            if linger_until is None:
                linger_until = time.monotonic() + linger
            if started or len(ids) >= min_tasks or time.monotonic() >= linger_until:
                break
            entries = self._read_log(key, last, linger_until)
        return CompletedBatch(last, ids, gap, started)

    def _read_log(self, key: str, cursor: str, deadline: float) -> list[StreamEntry]:
        """Entries after ``cursor``, blocking until one arrives or ``deadline`` (monotonic)."""
        while True:
            # In slices: redis-py's socket timeout (the connect timeout unless set) would
            # otherwise cut a long block short. An arriving entry ends a slice at once.
            left = deadline - time.monotonic()
            block = None if left <= 0 else max(1, int(min(left, _BLOCK_SLICE) * 1000))
            answer = stream_reads(self.r.xread({key: cursor}, count=_READ_ENTRIES, block=block))
            if answer or left <= _BLOCK_SLICE:
                return list(answer[0][1]) if answer else []

    def cancel(self, task_id: str, owner: str) -> str | None:
        """Cancel a task that has not finished. Returns its state before, or None if unknown."""
        return self.end_unfinished(task_id, owner, TaskState.CANCELLED, CANCELLED_ERROR)

    def end_unfinished(self, task_id: str, owner: str, state: TaskState, error: RemoteError) -> str | None:
        """End a task that has not finished as ``state`` (cancelled or failed) with ``error``; one
        dispatched already is stopped at its endpoint as a cancel is. Returns its state before."""
        rec = self.get(task_id)
        if rec is None:
            return None
        before = self.scripts["cancel"](
            keys=[task_key(task_id), inflight_key(rec.endpoint_id), done_channel(owner), completed_key(owner),
                  cancels_key(rec.endpoint_id)],
            args=[repr(time.time()), self.result_ttl, msgspec.json.encode(error), task_id, COMPLETION_LOG_ENTRIES, WAKE_CHANNEL,
                  CANCEL_WAKE + rec.endpoint_id, state.value],
        )
        return before.decode() if isinstance(before, bytes) else None

    # -- forwarder side ------------------------------------------------------------------------

    def log_usage(self, entries: list[UsageEntry]) -> None:
        """Account tasks this service ended itself (cancelled, or failed with their endpoint)."""
        log_usage(self.r, entries)

    def block_cap(self) -> float:
        """Longest single blocking read (s): under the Redis client's socket timeout, or the read
        fails as a timeout (redis-py 8 sets 5 s unless told otherwise); a longer wait blocks
        again, so it still wakes on the event, not on an interval."""
        timeout = self.r.connection_pool.connection_kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
        return max(0.1, float(timeout) - 1.0) if timeout else 3600.0

    def read_outputs(self, task_id: str, since: str, count: int) -> OutputPage:
        """A page of a task's live outputs after ``since`` (web_service.task_outputs)."""
        return read(self.r, task_id, since, count)

    def wait_outputs_or_finish(self, task_id: str, since: str, owner: str, finished_cursor: str,
                               seconds: float, count: int) -> str:
        """Block until the task's output stream has entries after ``since`` or ``owner``'s
        completion log after ``finished_cursor``, or ``seconds`` pass; returns the new
        completion cursor."""
        done_key = completed_key(owner)
        answer = self.r.xread({outputs_key(task_id): since, done_key: finished_cursor}, count=count,
                              block=max(1, int(seconds * 1000)))
        for key, entries in stream_reads(answer):
            if key.decode() == done_key and entries:
                finished_cursor = entries[-1][0].decode()
        return finished_cursor


# Idle pub/sub connections a process keeps for its next waits (each is one Redis connection).
IDLE_SUBSCRIBERS = 16


class Completions:
    """A subscription to one owner's task completions (a context manager).

    Its pub/sub connection is reused: closing one (redis-py disconnects it) cost every
    submit-and-wait a new connection to Redis and a ``HELLO``/``AUTH`` round trip on its hot
    path. On exit it sends ``UNSUBSCRIBE`` without waiting for the answer and goes back to the
    store's idle list; the next wait reads that answer (and any message of the old channel still
    in flight) before its own, and :meth:`wait` keeps only messages of its own channel.
    """

    def __init__(self, store: ReadSide, owner: str):
        self.store = store
        self.channel = done_channel(owner).encode()
        idle = store.idle_subscribers
        self.reused = bool(idle)
        self.pubsub = idle.pop() if idle else store.r.pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(self.channel)
        except redis.ConnectionError:
            if not self.reused:
                self.pubsub.close()
                raise
            self._resubscribe()  # a kept connection Redis dropped (a restart): a new one
        except BaseException:
            self.pubsub.close()
            raise

    def _resubscribe(self) -> None:
        """Replace a kept pub/sub connection that Redis closed (it restarted or failed over while
        the connection sat idle) by a new one; raises if Redis is still unavailable."""
        self.pubsub.close()
        self.reused = False
        self.pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(self.channel)
        except BaseException:
            self.pubsub.close()
            raise

    def __enter__(self) -> "Completions":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        idle = self.store.idle_subscribers
        if exc_type is None and len(idle) < IDLE_SUBSCRIBERS and self.pubsub.connection is not None:
            try:
                self.pubsub.unsubscribe(self.channel)
            except redis.RedisError:
                self.pubsub.close()
                return
            idle.append(self.pubsub)
        else:
            self.pubsub.close()  # an interrupted wait may have left a reply unread: not reused

    def wait(self, task_ids: list[str], timeout: float, any_: bool = False, fresh: bool = False,
             also: Callable[[Pipeline], None] | None = None) -> dict[str, TaskRecord | None]:
        """Wait for ``task_ids``; ``fresh`` means they were just submitted (none finished yet),
        which saves reading them before waiting. ``also``: commands sent with the final read
        (:meth:`ReadSide.get_many`)."""
        if fresh:
            pending = set(task_ids)
        else:
            records = self.store.get_many(task_ids)
            pending = {tid for tid, rec in records.items() if rec is not None and not rec.finished}
        finished_any = len(pending) < len(task_ids)
        deadline = time.monotonic() + timeout
        while pending and not (any_ and finished_any):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = self.pubsub.get_message(timeout=left)
            except redis.ConnectionError:
                if not self.reused:
                    raise
                # A kept connection is found dead only on its first read: subscribe on a new
                # one and read the records again, so a result recorded meanwhile is not missed.
                self._resubscribe()
                records = self.store.get_many(sorted(pending))
                done = {tid for tid, rec in records.items() if rec is None or rec.finished}
                finished_any = finished_any or bool(done)
                pending -= done
                continue
            if msg is None or msg.get("type") != "message" or msg.get("channel") != self.channel:
                continue
            # One message per recorded batch: the ids that finished, comma-separated.
            done = pending.intersection(msg["data"].decode().split(","))
            if done:
                pending -= done
                finished_any = True
        return self.store.get_many(task_ids, also)
