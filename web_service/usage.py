"""Accounting: one usage row per finished task, written to SQL off the hot path.

Why this design: results are recorded in Redis by the forwarder (the hot path); the same script
run that records a batch (``scripts/record.lua``) appends one compact entry listing the results
recorded now to the Redis stream ``fns:usage`` (no extra round trip; exactly the results recorded,
once). A :class:`UsageWriter` thread in each forwarder reads the stream
through a consumer group (blocking read, batches of up to 500 entries), inserts the rows into
the ``usage`` table ignoring task ids already there, then acknowledges. So:

- the client never waits on SQL; SQL sees one multi-row INSERT per batch, not one per task;
- the forwarder's loop writes only what it holds (task id, state, resources); the writer reads
  owner, function and runtime from the task record (kept for the result TTL) when it inserts;
- rows survive a forwarder crash (entries stay pending in Redis and are claimed again);
- several forwarders share the work (consumer group) and an entry written twice is one row.

Cancelled tasks are logged by the web service the same way (state ``cancelled``, no resources).
Core-hours are CPU seconds / 3600: CPU time summed over the cores a task used is exactly the
core-seconds it consumed, whatever the node's size.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timezone
from typing import Any, Iterable

import msgspec
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from web_service.registry.models import Usage
from web_service.redis_replies import stream_reads
from web_service.store.keys import USAGE_STREAM, task_key

log = logging.getLogger("fnserve.usage")

STREAM = USAGE_STREAM
GROUP = "usage-writers"
BATCH = 500
# Entries pending this long on a consumer that went away are claimed by another.
CLAIM_IDLE_MS = 60_000
# Seconds the writer waits after a partial batch before reading again (usage lags by this much).
LINGER = 0.5


class UsageEntry(msgspec.Struct, array_like=True):
    """One finished task as the stream carries it (compact: msgpack arrays)."""

    task_id: str
    user_id: str
    function_id: str
    endpoint_id: str
    runtime: str
    state: str
    wall_time: float
    cpu_time: float
    max_rss_kb: float
    submitted_at: float
    finished_at: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[UsageEntry])


def log_usage(r: "redis.Redis | redis.client.Pipeline", entries: list[UsageEntry]) -> None:
    """Append finished tasks to the usage stream (one XADD for the whole list)."""
    if entries:
        r.xadd(STREAM, {"e": _encoder.encode(entries)})


def encode_entry(endpoint_id: str, result: Any, now: float) -> bytes:
    """One result's usage entry as the record script appends it to the stream (msgpack; the
    script writes the recorded ones as one list, the bytes :func:`log_usage` would write).
    Empty when its resources cannot be read: accounting must never cost a result."""
    try:
        return _encoder.encode(result_entries(endpoint_id, [result], [result.task_id], now)[0])
    except (TypeError, ValueError, AttributeError) as exc:
        log.error("could not log usage of task %s of endpoint %s: %s", result.task_id, endpoint_id, type(exc).__name__)
        return b""


def result_entries(endpoint_id: str, results: Iterable[Any], recorded: list[str], now: float) -> list[UsageEntry]:
    """Usage entries of the ``recorded`` results (ResultMessages) of ``endpoint_id``, from what
    the forwarder holds; the writer fills in owner, function and runtime from the task later,
    so the forwarder's loop spends one XADD on accounting and no read."""
    if not recorded:
        return []
    done = set(recorded)
    out = []
    for res in results:
        if res.task_id in done:
            rs = res.resources or {}
            out.append(UsageEntry(
                task_id=res.task_id, user_id="", function_id="", endpoint_id=endpoint_id, runtime="",
                state="success" if res.ok else "failed", wall_time=float(rs.get("wall_time", 0.0)),
                cpu_time=float(rs.get("cpu_time", 0.0)), max_rss_kb=float(rs.get("max_rss_kb", 0.0)),
                submitted_at=0.0, finished_at=now,
            ))
            done.discard(res.task_id)
    return out


def _enrich(r: redis.Redis, entries: list[UsageEntry]) -> list[UsageEntry]:
    """Fill owner, function, runtime and submit time from the task records (one round trip)."""
    todo = [e for e in entries if not e.user_id]
    if todo:
        pipe = r.pipeline(transaction=False)
        for e in todo:
            pipe.hmget(task_key(e.task_id), ("owner", "function_id", "runtime", "t_submitted"))
        for e, (owner, fid, runtime, submitted) in zip(todo, pipe.execute()):
            if owner is None:
                log.warning("usage: task %s expired before it was accounted; skipped", e.task_id)
                continue
            e.user_id = owner.decode()
            e.function_id = (fid or b"").decode()
            e.runtime = (runtime or b"").decode()
            e.submitted_at = float(submitted or 0.0)
    return [e for e in entries if e.user_id]


def _ts(value: float) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value else None


def insert_entries(session: Session, entries: list[UsageEntry]) -> None:
    """Insert usage rows, skipping task ids already recorded (entries may be delivered twice)."""
    if not entries:
        return
    rows = [{
        "task_id": e.task_id, "user_id": e.user_id, "function_id": e.function_id, "endpoint_id": e.endpoint_id,
        "runtime": e.runtime or None, "state": e.state, "wall_time": e.wall_time, "cpu_time": e.cpu_time,
        "max_rss_kb": e.max_rss_kb, "submitted_at": _ts(e.submitted_at), "finished_at": _ts(e.finished_at),
    } for e in {e.task_id: e for e in entries}.values()]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    session.execute(insert(Usage).on_conflict_do_nothing(index_elements=["task_id"]), rows)
    session.commit()


class UsageWriter:
    """Moves the usage stream into SQL in batches, in a thread (see the module docstring)."""

    def __init__(self, r: redis.Redis, sessions: sessionmaker[Session], consumer: str | None = None):
        self.r = r
        self.sessions = sessions
        self.consumer = consumer or f"{socket.gethostname()}-{id(self)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group_ready = False  # created once; again after a failed pass (Redis may have restarted)

    def start(self) -> "UsageWriter":
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def drain_once(self, block_ms: int = 1000) -> int:
        """Read one batch (claiming abandoned entries first), write it, ack it. Returns rows."""
        self._ensure_group()
        _, claimed, *_ = self.r.xautoclaim(STREAM, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=BATCH)
        messages = list(claimed)
        if not messages:
            # Own pending entries first (a failed insert), then new ones, blocking for them.
            for start in ("0", ">"):
                got = stream_reads(self.r.xreadgroup(GROUP, self.consumer, {STREAM: start}, count=BATCH,
                                                     block=block_ms if start == ">" else None))
                messages = got[0][1] if got and got[0][1] else []
                if messages:
                    break
        if not messages:
            return 0
        entries: list[UsageEntry] = []
        for _, fields in messages:
            if fields and b"e" in fields:
                entries += _decoder.decode(fields[b"e"])
        entries = _enrich(self.r, entries)
        with self.sessions() as session:
            insert_entries(session, entries)
        ids = [mid for mid, _ in messages]
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()
        return len(entries)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.drain_once() < BATCH:
                    # Off the task path: under load, gather ~LINGER s of entries per SQL commit
                    # instead of one commit per result batch (which cost the forwarder's loop
                    # CPU and the GIL: 44% of its samples in a throughput run, py-spy).
                    self._stop.wait(LINGER)
            except Exception as exc:  # noqa: BLE001 - DB or Redis down: entries stay pending; retry shortly
                log.warning("usage writer: %s; retrying", type(exc).__name__)
                self._group_ready = False
                self._stop.wait(1.0)


# -- reading usage -------------------------------------------------------------------------------


_TOTALS = (
    sa.func.count().label("tasks"),
    sa.func.sum(sa.case((Usage.state == "success", 1), else_=0)).label("succeeded"),
    sa.func.sum(sa.case((Usage.state == "failed", 1), else_=0)).label("failed"),
    sa.func.sum(sa.case((Usage.state == "cancelled", 1), else_=0)).label("cancelled"),
    sa.func.coalesce(sa.func.sum(Usage.wall_time), 0.0).label("wall_time"),
    sa.func.coalesce(sa.func.sum(Usage.cpu_time), 0.0).label("cpu_time"),
    sa.func.coalesce(sa.func.max(Usage.max_rss_kb), 0.0).label("max_rss_kb"),
)


def _totals(row: Any) -> dict[str, Any]:
    cpu = float(row.cpu_time or 0.0)
    return {
        "tasks": int(row.tasks or 0), "succeeded": int(row.succeeded or 0), "failed": int(row.failed or 0),
        "cancelled": int(row.cancelled or 0), "wall_time_s": float(row.wall_time or 0.0), "cpu_time_s": cpu,
        "core_hours": cpu / 3600.0, "peak_memory_kb": float(row.max_rss_kb or 0.0),
    }


def user_totals(session: Session, user_id: str, since: datetime, until: datetime) -> dict[str, Any]:
    row = session.execute(
        sa.select(*_TOTALS).where(Usage.user_id == user_id, Usage.finished_at >= since, Usage.finished_at < until)
    ).one()
    return _totals(row)


def endpoint_totals(session: Session, endpoint_ids: list[str], since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    """Per endpoint: totals and a per-user breakdown (user ids), for the endpoints' owner."""
    if not endpoint_ids:
        return {}
    out: dict[str, dict[str, Any]] = {e: {"totals": _totals(_ZERO), "by_user": {}} for e in endpoint_ids}
    where = (Usage.endpoint_id.in_(endpoint_ids), Usage.finished_at >= since, Usage.finished_at < until)
    for row in session.execute(sa.select(Usage.endpoint_id, Usage.user_id, *_TOTALS).where(*where).group_by(Usage.endpoint_id, Usage.user_id)):
        entry = out[row.endpoint_id]
        entry["by_user"][row.user_id] = _totals(row)
        t = entry["totals"]
        for k, v in _totals(row).items():
            t[k] = max(t[k], v) if k == "peak_memory_kb" else t[k] + v
    return out


class _Zero:
    tasks = succeeded = failed = cancelled = 0
    wall_time = cpu_time = max_rss_kb = 0.0


_ZERO = _Zero()


def core_hours_since(session: Session, user_id: str, since: datetime) -> float:
    cpu = session.scalar(sa.select(sa.func.coalesce(sa.func.sum(Usage.cpu_time), 0.0)).where(Usage.user_id == user_id, Usage.finished_at >= since))
    return float(cpu or 0.0) / 3600.0
