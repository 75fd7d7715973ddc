"""Task state, per-endpoint queues, in-flight tracking and results, in Redis.

Keys (all prefixed by ``fns:``)::

    task:{id}            hash: owner, function_id, endpoint_id, state, payload, arg_ref (the
                         object holding the arguments, when passed by reference), arg_bytes (its
                         size, kept after the payload is dropped), t_* timestamps, result fields
                         once finished (expires ``result_ttl`` after finishing)
    submitted:{user}     stream: the user's submission log, one entry per submitted batch with
                         its task ids in order (``ids``, comma-separated); about
                         SUBMIT_LOG_ENTRIES entries, expiring a day after the result TTL (renewed
                         at most once a minute per process). The dashboard lists a user's tasks
                         from it, skipping ids whose task expired. One O(1) XADD per batch.
    fn:{id}              the serialized function body, cached for dispatch
    ep:{id}:queue        list of task ids waiting for the endpoint (oldest at the left)
    ep:{id}:inflight     set of task ids sent to the endpoint and not yet finished
    ep:{id}:status       hash: connected, timestamps, what the site manager last reported, the
                         serializers it accepts (``serializers``) and ``restricted`` (allowlist)
    channel ep:{id}:changed  published with the endpoint id whenever its status hash changes
                         (connect, disconnect, heartbeat, report): the dashboard's live view
    stats:rejected_results  hash: endpoint id -> results it sent for tasks it did not hold
    channel wake         published with an endpoint id whenever its queue grows ("cancel:" +
                         id: dispatched tasks were cancelled; "revoke:" + id: it was deleted)
    channel done:{user}  published with the ids (comma-separated) of the user's tasks that just
                         finished, once per recorded batch
    channel submitted:{user}  published with the number of tasks the user just submitted (a
                         channel and a stream may share a name: they are different namespaces)
    completed:{user}     stream: the user's completion log, one entry per recorded batch with the
                         ``ids`` that finished and ``prev``, the id of the entry before it (so a
                         reader can tell entries were trimmed past its cursor); capped, expiring.
                         Entries with ``kind`` = ``running`` list tasks that started running
                         (read only by readers that ask for them; never published on done:{user})
    group:{user}:{group} list of the task ids of one of the user's task groups, in submission
                         order (expires with the tasks, ``result_ttl`` after the last submission)

Every multi-key change is one pipeline or one Lua script, so a task is never half-moved:
accepted tasks are written before the REST call answers, a dispatched task is always in the
in-flight set until its result is recorded, and the first result recorded wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec
import redis

from fnserve.data_refs import read_ref
from fnserve.messages import EndpointStatus, ResultMessage, TaskMessage
from fnserve.serialize import data_only
from fnserve.states import TERMINAL, TaskState

P = "fns:"
_REF_PREFIX = b"fns1 ref "
WAKE_CHANNEL = P + "wake"
# A wake message is an endpoint id (tasks to dispatch) or CANCEL_WAKE + an endpoint id (dispatched
# tasks were cancelled: the forwarder reads the endpoint's cancel list only then).
CANCEL_WAKE = "cancel:"
# REVOKE_WAKE + an endpoint id: the endpoint was deleted or disabled; the forwarder serving it
# cuts its connection at once.
REVOKE_WAKE = "revoke:"
# WATCH_WAKE + an endpoint id: its file triggers changed; the forwarder sends the new watch list.
WATCH_WAKE = "watch:"
DEFAULT_RESULT_TTL = 7 * 24 * 3600
# Hash: endpoint id -> results it sent for tasks it did not hold (dropped; see result_origin).
REJECTED_RESULTS = P + "stats:rejected_results"
_BODY_CACHE_SIZE = 1024


def task_key(task_id: str) -> str:
    return f"{P}task:{task_id}"


def queue_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:queue"


def inflight_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:inflight"


def cancels_key(endpoint_id: str) -> str:
    """Ids of tasks cancelled after dispatch, for the forwarder to relay to the endpoint."""
    return f"{P}cancels:{endpoint_id}"


def tombstone_key(endpoint_id: str) -> str:
    """Set (with a TTL) when an endpoint is deleted: submit and the forwarder check it."""
    return f"{P}ep:{endpoint_id}:deleted"


def status_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:status"


def status_channel(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:changed"


def submit_log_key(owner: str) -> str:
    return f"{P}submitted:{owner}"


def submitted_channel(owner: str) -> str:
    return f"{P}submitted:{owner}"


def function_key(function_id: str) -> str:
    return f"{P}fn:{function_id}"


def done_channel(owner: str) -> str:
    return f"{P}done:{owner}"


def completed_key(owner: str) -> str:
    return f"{P}completed:{owner}"


def group_key(owner: str, task_group_id: str) -> str:
    return f"{P}group:{owner}:{task_group_id}"


# Entries (submitted batches) kept in a user's submission log, trimmed approximately by XADD.
SUBMIT_LOG_ENTRIES = 50_000
# The log's TTL is renewed at most this often per user and process.
LOG_UPKEEP_SECONDS = 60.0


def log_upkeep_due(last: float | None, now: float) -> bool:
    """Whether a submit should renew the TTL of a user's submission log (monotonic seconds)."""
    return last is None or now - last >= LOG_UPKEEP_SECONDS


# Entries kept in a user's completion log (each holds one recorded batch of task ids). A reader
# that falls further behind is told there is a gap and reads its tasks directly instead.
COMPLETION_LOG_ENTRIES = 10_000


@dataclass
class NewTask:
    """A task accepted at submit, before it is written."""

    task_id: str
    owner: str
    function_id: str
    endpoint_id: str
    payload: bytes
    runtime: str | None = None
    walltime: float | None = None
    result_strategy: str | None = None
    max_retries: int | None = None
    task_group_id: str | None = None
    resource_specification: bytes | None = None  # JSON object text, forwarded as is


@dataclass
class TaskRecord:
    """What the store knows of one task."""

    task_id: str
    owner: str
    function_id: str
    endpoint_id: str
    state: TaskState
    runtime: str | None = None
    timestamps: dict[str, float] = field(default_factory=dict)
    result: bytes | None = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    # Where it ran (block, job_id, node, runtime, container); kept in the hash's resources field
    # under PLACEMENT_KEY, so recording a result stays one field per value.
    placement: dict[str, str] = field(default_factory=dict)
    max_retries: int | None = None
    task_group_id: str | None = None
    resource_specification: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass
class CompletedBatch:
    """A read of a completion log: the new cursor and the ids of tasks that finished."""

    cursor: str
    task_ids: list[str]
    gap: bool
    running: list[str] = field(default_factory=list)  # started running (readers that asked)


# Log entries read at once; each is one recorded batch (up to a few hundred ids).
_READ_ENTRIES = 256
_BLOCK_SLICE = 1.0  # seconds; well below the web service's Redis socket timeout (5 s)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


_TS_FIELDS = ("submitted", "dispatched", "running", "finished")
_RECORD_FIELDS = (
    "owner", "function_id", "endpoint_id", "state", "runtime", "result", "error", "stdout", "stderr",
    "timings", "resources", *(f"t_{n}" for n in _TS_FIELDS), "max_retries", "task_group", "resource_spec",
)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


PLACEMENT_KEY = "placement"


def _record(task_id: str, values: list[bytes | None]) -> TaskRecord | None:
    row = dict(zip(_RECORD_FIELDS, values))
    if row["state"] is None:
        return None
    resources = json.loads(row["resources"]) if row["resources"] else {}
    return TaskRecord(
        task_id=task_id,
        owner=_text(row["owner"]) or "",
        function_id=_text(row["function_id"]) or "",
        endpoint_id=_text(row["endpoint_id"]) or "",
        state=TaskState(row["state"].decode()),
        runtime=_text(row["runtime"]) or None,
        timestamps={n: float(row[f"t_{n}"]) for n in _TS_FIELDS if row[f"t_{n}"]},
        result=row["result"],
        error=json.loads(row["error"]) if row["error"] else None,
        stdout=_text(row["stdout"]) or "",
        stderr=_text(row["stderr"]) or "",
        timings=json.loads(row["timings"]) if row["timings"] else {},
        placement=resources.pop(PLACEMENT_KEY, None) or {},
        resources=resources,
        max_retries=int(row["max_retries"]) if row["max_retries"] else None,
        task_group_id=_text(row["task_group"]) or None,
        resource_specification=json.loads(row["resource_spec"]) if row["resource_spec"] else None,
    )


# Pops up to ARGV[1] ids from the queue (and, when ARGV[4] > 0, no more than leaves ARGV[4]
# tasks in the in-flight set: the endpoint's capacity; nothing until a quarter of it is free, so
# a busy endpoint gets a few large batches rather than one per finished task), skips tasks that are no longer waiting
# (cancelled), marks the rest dispatched, adds them to the in-flight set and returns their
# dispatch fields, with the endpoint's `restricted` flag (KEYS[3], its status hash).
_CLAIM = """
local n = tonumber(ARGV[1])
local capacity = tonumber(ARGV[4])
if capacity > 0 then
  local room = capacity - redis.call('SCARD', KEYS[2])
  if room < math.max(1, math.floor(capacity / 4)) then return {} end
  n = math.min(n, room)
end
local ids = redis.call('LPOP', KEYS[1], n)
if not ids then return {} end
local restricted = redis.call('HGET', KEYS[3], 'restricted') or '0'
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[3] .. id
  if redis.call('HGET', k, 'state') == 'waiting-for-endpoint' then
    redis.call('HSET', k, 'state', 'dispatched', 't_dispatched', ARGV[2])
    redis.call('SADD', KEYS[2], id)
    local f = redis.call('HMGET', k, 'function_id', 'payload', 'runtime', 'walltime', 'result_strategy', 'max_retries',
                         'resource_spec', 't_submitted')
    table.insert(out, {id, f[1], f[2], f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[7] or '', restricted,
                       f[8] or ''})
  end
end
return out
"""

# Appends ids (ARGV[3], comma-separated) to a user's completion log (KEYS[1]) and publishes
# them on the user's channel (KEYS[2]). ARGV: max entries, ttl, ids. One entry per batch.
_LOG_COMPLETED = """
local function log_completed(log, channel, maxlen, ttl, ids)
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if last[1] then prev = last[1][1] end
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'ids', ids, 'prev', prev)
  redis.call('EXPIRE', log, ttl)
  redis.call('PUBLISH', channel, ids)
end
"""

# Records results; the first one for a task wins, and only the endpoint that holds the task may
# record it (web_service.result_origin.result_verdict, applied here). KEYS: the reporting
# endpoint's in-flight set, task prefix, done prefix, completed prefix, the rejected-results
# counter hash. ARGV: now, ttl, log max entries, the reporting endpoint id, then 8 values per
# result. Completions are logged and published once per owner, not once per task. Returns
# {recorded ids, rejected ids}.
_RECORD = _LOG_COMPLETED + """
local recorded = {}
local rejected = {}
local by_owner = {}
local endpoint = ARGV[4]
for i = 5, #ARGV, 8 do
  local id = ARGV[i]
  local k = KEYS[2] .. id
  local f = redis.call('HMGET', k, 'state', 'endpoint_id', 't_dispatched')
  local st, ep = f[1], f[2]
  local held = redis.call('SISMEMBER', KEYS[1], id) == 1
  local verdict = 'reject'
  if st and ep == endpoint then
    if st == 'success' or st == 'failed' or st == 'cancelled' then
      verdict = 'duplicate'
    elseif held or (st == 'waiting-for-endpoint' and f[3]) then
      verdict = 'record'
    end
  end
  if verdict == 'record' then
    redis.call('HSET', k, 'state', ARGV[i + 1], 'result', ARGV[i + 2], 'error', ARGV[i + 3],
               'stdout', ARGV[i + 4], 'stderr', ARGV[i + 5], 'timings', ARGV[i + 6],
               'resources', ARGV[i + 7], 't_finished', ARGV[1])
    redis.call('HDEL', k, 'payload')
    redis.call('EXPIRE', k, ARGV[2])
    redis.call('SREM', KEYS[1], id)
    local owner = redis.call('HGET', k, 'owner')
    local ids = by_owner[owner]
    if not ids then ids = {}; by_owner[owner] = ids end
    table.insert(ids, id)
    table.insert(recorded, id)
  elseif verdict == 'duplicate' then
    redis.call('SREM', KEYS[1], id)
  else
    table.insert(rejected, id)
  end
end
if #rejected > 0 then
  redis.call('HINCRBY', KEYS[5], endpoint, #rejected)
end
for owner, ids in pairs(by_owner) do
  log_completed(KEYS[4] .. owner, KEYS[3] .. owner, ARGV[3], ARGV[2], table.concat(ids, ','))
end
return {recorded, rejected}
"""

# Moves an endpoint's in-flight tasks back to the front of its queue as waiting again, except
# those the (re)connecting site manager says it still holds (ARGV[2..]).
_REQUEUE = """
local held = {}
for i = 2, #ARGV do held[ARGV[i]] = true end
local ids = redis.call('SMEMBERS', KEYS[2])
local moved = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  if not held[id] then
    local k = ARGV[1] .. id
    local st = redis.call('HGET', k, 'state')
    if st == 'dispatched' or st == 'running' then
      redis.call('HSET', k, 'state', 'waiting-for-endpoint')
      redis.call('LPUSH', KEYS[1], id)
      moved = moved + 1
    end
    redis.call('SREM', KEYS[2], id)
  end
end
return moved
"""

# Marks tasks running unless they already moved on, and notes them in their owners' completion
# logs as a ``running`` entry (one per owner; not published: nothing waits on it but readers of
# the log). ARGV: now, ttl, log max entries, then the task ids.
_RUNNING = """
local by_owner = {}
for i = 4, #ARGV do
  local k = KEYS[1] .. ARGV[i]
  local st = redis.call('HGET', k, 'state')
  if st == 'dispatched' then
    redis.call('HSET', k, 'state', 'running', 't_running', ARGV[1])
    local owner = redis.call('HGET', k, 'owner')
    local ids = by_owner[owner]
    if not ids then ids = {}; by_owner[owner] = ids end
    table.insert(ids, ARGV[i])
  end
end
for owner, ids in pairs(by_owner) do
  local log = KEYS[2] .. owner
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if last[1] then prev = last[1][1] end
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[3], '*', 'ids', table.concat(ids, ','), 'prev', prev, 'kind', 'running')
  redis.call('EXPIRE', log, ARGV[2])
end
return 0
"""

# Cancels a task that has not finished; removes it from the in-flight set.
_CANCEL = _LOG_COMPLETED + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return false end
if st == 'success' or st == 'failed' or st == 'cancelled' then return st end
redis.call('HSET', KEYS[1], 'state', ARGV[8] or 'cancelled', 't_finished', ARGV[1],
           'error', ARGV[3])
redis.call('HDEL', KEYS[1], 'payload')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[4])
log_completed(KEYS[4], KEYS[3], ARGV[5], ARGV[2], ARGV[4])
if st == 'dispatched' or st == 'running' then
  -- At the endpoint already: tell its forwarder, which tells the site manager to stop it.
  redis.call('RPUSH', KEYS[5], ARGV[4])
  redis.call('EXPIRE', KEYS[5], ARGV[2])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return st
"""


class TaskStore:
    """All task-related Redis I/O, for the REST service and the forwarder."""

    def __init__(self, client: redis.Redis, result_ttl: int = DEFAULT_RESULT_TTL):
        self.r = client
        self.result_ttl = result_ttl
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._requeue = client.register_script(_REQUEUE)
        self._running = client.register_script(_RUNNING)
        self._cancel = client.register_script(_CANCEL)
        # Function bodies never change under an id: the forwarder keeps the ones it dispatched.
        self._bodies: dict[str, bytes] = {}
        self._log_upkeep: dict[str, float] = {}  # owner -> last TTL renewal of their submission log
        # The data plane (set by the forwarder): each dispatched task carries the service's URL
        # and a data token for it (web_service.object_rules), so that its worker moves large
        # arguments and results through the object store.
        self.data_url: str = ""
        self.data_key: bytes = b""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "TaskStore":
        return cls(redis.Redis.from_url(url), **kwargs)

    # -- submit side (web service) ---------------------------------------------------------

    def cache_function(self, function_id: str, body: bytes) -> None:
        self.r.set(function_key(function_id), body)

    def has_function(self, function_id: str) -> bool:
        return bool(self.r.exists(function_key(function_id)))

    def drop_function(self, function_id: str) -> None:
        self.r.delete(function_key(function_id))

    def submit(self, tasks: list[NewTask]) -> None:
        """Write tasks durably and queue them; returns once Redis has them all."""
        pipe = self.r.pipeline(transaction=True)
        self._write(pipe, tasks)
        pipe.execute()

    def submit_new(self, tasks: list[NewTask]) -> list[str]:
        """Like :meth:`submit`, for tasks whose ids were fixed in advance (trigger firings):
        writes only those no task of that id exists for yet, in one transaction that checks it
        (WATCH), so two processes submitting the same firing make one task. Returns the ids
        written now."""
        keys = [task_key(t.task_id) for t in tasks]
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    # Read on another connection in one round trip: the WATCH above still
                    # voids the transaction if any of them is written after it.
                    checks = self.r.pipeline(transaction=False)
                    for k in keys:
                        checks.exists(k)
                    found = checks.execute()
                    fresh = [t for t, f in zip(tasks, found) if not f]
                    if not fresh:
                        pipe.reset()
                        return []
                    pipe.multi()
                    self._write(pipe, fresh)
                    pipe.execute()
                    return [t.task_id for t in fresh]
                except redis.WatchError:
                    continue  # one of them was written meanwhile: look again

    def _write(self, pipe: Any, tasks: list[NewTask]) -> None:
        now = repr(time.time())
        endpoints: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {}
        owners: dict[str, list[str]] = {}
        for t in tasks:
            fields: dict[str, Any] = {
                "owner": t.owner, "function_id": t.function_id, "endpoint_id": t.endpoint_id,
                "state": TaskState.WAITING.value, "payload": t.payload, "t_submitted": now,
                "arg_bytes": len(t.payload),
            }
            if t.payload.startswith(_REF_PREFIX):
                # Arguments by reference: the one object the task's data token may read besides
                # those its worker makes (web_service.object_rules.check_access).
                ref = read_ref(t.payload)
                if ref is not None:
                    fields["arg_ref"] = ref.object_id
            if t.runtime:
                fields["runtime"] = t.runtime
            if t.walltime is not None:
                fields["walltime"] = repr(float(t.walltime))
            if t.result_strategy:
                fields["result_strategy"] = t.result_strategy
            if t.max_retries is not None:
                fields["max_retries"] = str(int(t.max_retries))
            if t.resource_specification:
                fields["resource_spec"] = t.resource_specification
            if t.task_group_id:
                fields["task_group"] = t.task_group_id
                groups.setdefault(group_key(t.owner, t.task_group_id), []).append(t.task_id)
            pipe.hset(task_key(t.task_id), mapping=fields)
            endpoints.setdefault(t.endpoint_id, []).append(t.task_id)
            owners.setdefault(t.owner, []).append(t.task_id)
        for key, ids in groups.items():
            pipe.rpush(key, *ids)
            pipe.expire(key, self.result_ttl)
        for endpoint_id, ids in endpoints.items():
            pipe.rpush(queue_key(endpoint_id), *ids)
        for endpoint_id in endpoints:
            pipe.publish(WAKE_CHANNEL, endpoint_id)
        mono = time.monotonic()
        for owner, ids in owners.items():
            log = submit_log_key(owner)
            pipe.xadd(log, {"ids": ",".join(ids)}, maxlen=SUBMIT_LOG_ENTRIES, approximate=True)
            pipe.publish(submitted_channel(owner), len(ids))
            if log_upkeep_due(self._log_upkeep.get(owner), mono):
                if len(self._log_upkeep) >= 100_000:
                    self._log_upkeep.clear()
                self._log_upkeep[owner] = mono
                pipe.expire(log, self.result_ttl + 86400)

    def get(self, task_id: str) -> TaskRecord | None:
        return _record(task_id, self.r.hmget(task_key(task_id), _RECORD_FIELDS))

    def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskRecord | None]:
        ids = list(task_ids)
        pipe = self.r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(task_key(task_id), _RECORD_FIELDS)
        return {tid: _record(tid, vals) for tid, vals in zip(ids, pipe.execute())}

    def owners(self, task_ids: list[str]) -> dict[str, str | None]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(task_key(task_id), "owner")
        return {tid: _text(v) for tid, v in zip(task_ids, pipe.execute())}

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
        last = self.r.xrevrange(completed_key(owner), count=1)
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

    def _read_log(self, key: str, cursor: str, deadline: float) -> list[Any]:
        """Entries after ``cursor``, blocking until one arrives or ``deadline`` (monotonic)."""
        while True:
            # In slices: redis-py's socket timeout (the connect timeout unless set) would
            # otherwise cut a long block short. An arriving entry ends a slice at once.
            left = deadline - time.monotonic()
            block = None if left <= 0 else max(1, int(min(left, _BLOCK_SLICE) * 1000))
            answer = self.r.xread({key: cursor}, count=_READ_ENTRIES, block=block)
            if answer or left <= _BLOCK_SLICE:
                return list(answer[0][1]) if answer else []

    def cancel(self, task_id: str, owner: str) -> str | None:
        """Cancel a task that has not finished. Returns its state before, or None if unknown."""
        return self.end_unfinished(task_id, owner, TaskState.CANCELLED,
                                   {"code": "cancelled", "type": "TaskCancelled", "message": "cancelled by its owner"})

    def end_unfinished(self, task_id: str, owner: str, state: TaskState, error: dict[str, str]) -> str | None:
        """End a task that has not finished as ``state`` (cancelled or failed) with ``error``; one
        dispatched already is stopped at its endpoint as a cancel is. Returns its state before."""
        rec = self.get(task_id)
        if rec is None:
            return None
        before = self._cancel(
            keys=[task_key(task_id), inflight_key(rec.endpoint_id), done_channel(owner), completed_key(owner),
                  cancels_key(rec.endpoint_id)],
            args=[repr(time.time()), self.result_ttl, json.dumps(error), task_id, COMPLETION_LOG_ENTRIES, WAKE_CHANNEL,
                  CANCEL_WAKE + rec.endpoint_id, state.value],
        )
        return before.decode() if isinstance(before, bytes) else None

    # -- forwarder side ------------------------------------------------------------------------

    def revoke_endpoint(self, endpoint_id: str) -> None:
        """Tell every forwarder to cut ``endpoint_id``'s live connection now (it was deleted)."""
        self.r.publish(WAKE_CHANNEL, REVOKE_WAKE + endpoint_id)

    def take_cancels(self, endpoint_id: str, max_ids: int = 10_000) -> list[str]:
        """Ids of the endpoint's dispatched tasks cancelled since the last call (each once)."""
        ids = self.r.lpop(cancels_key(endpoint_id), max_ids)
        return [i.decode() for i in ids] if ids else []

    def claim(self, endpoint_id: str, max_tasks: int, capacity: int = 0) -> list[TaskMessage]:
        """Take up to ``max_tasks`` waiting tasks of an endpoint, marking them dispatched.

        With ``capacity`` > 0, no more than leaves ``capacity`` tasks in flight for it, and none
        until at least a quarter of ``capacity`` is free.
        """
        return [task for task, _ in self.claim_timed(endpoint_id, max_tasks, capacity)]

    def claim_timed(self, endpoint_id: str, max_tasks: int, capacity: int = 0) -> list[tuple[TaskMessage, float]]:
        """:meth:`claim`, each task with the unix time it was submitted (0.0 if unknown): the
        forwarder's dispatch-delay histogram (web_service.forwarder_metrics)."""
        rows = self._claim(keys=[queue_key(endpoint_id), inflight_key(endpoint_id), status_key(endpoint_id)],
                           args=[max_tasks, repr(time.time()), P + "task:", capacity])
        if not rows:
            return []
        bodies = self._function_bodies({row[1].decode() for row in rows})
        tasks = []
        for task_id, function_id, payload, runtime, walltime, strategy, retries, spec, restricted, submitted in rows:
            fid = function_id.decode()
            tasks.append((TaskMessage(
                task_id=task_id.decode(), function_id=fid, function=bodies.get(fid, b""), payload=payload,
                runtime=runtime.decode() or None, walltime=float(walltime) if walltime else None,
                result_strategy=strategy.decode() or None, max_retries=int(retries) if retries else None,
                # A function-restricted endpoint's workers load no code-capable arguments, even
                # for tasks queued before the restriction.
                allowed_serializers=list(data_only(None)) if restricted == b"1" else None,
                resource_specification=json.loads(spec) if spec else None,
            ), float(submitted) if submitted else 0.0))
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
            for fid, body in zip(missing, self.r.mget([function_key(f) for f in missing])):
                if body is not None:
                    self._bodies[fid] = body
        return {fid: self._bodies[fid] for fid in function_ids if fid in self._bodies}

    def queue_length(self, endpoint_id: str) -> int:
        return int(self.r.llen(queue_key(endpoint_id)))

    def inflight(self, endpoint_id: str) -> set[str]:
        return {m.decode() for m in self.r.smembers(inflight_key(endpoint_id))}

    def mark_running(self, task_ids: list[str], started_at: float | None = None) -> None:
        if task_ids:
            self._running(keys=[P + "task:", P + "completed:"],
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
        args: list[Any] = [repr(time.time()), self.result_ttl, COMPLETION_LOG_ENTRIES, endpoint_id]
        for res in results:
            args += [
                res.task_id,
                TaskState.SUCCESS.value if res.ok else TaskState.FAILED.value,
                res.data,
                msgspec.json.encode(res.error) if res.error else b"",
                res.stdout,
                res.stderr,
                json.dumps(res.timings),
                json.dumps({**res.resources, PLACEMENT_KEY: res.placement} if res.placement else res.resources),
            ]
        recorded, rejected = self._record(
            keys=[inflight_key(endpoint_id), P + "task:", P + "done:", P + "completed:", REJECTED_RESULTS], args=args)
        return [r.decode() for r in recorded], [r.decode() for r in rejected]

    def rejected_results(self, endpoint_id: str) -> int:
        """How many results ``endpoint_id`` sent for tasks it did not hold (dropped)."""
        return int(self.r.hget(REJECTED_RESULTS, endpoint_id) or 0)

    def requeue_inflight(self, endpoint_id: str) -> int:
        """Put an endpoint's in-flight tasks back at the head of its queue (it was lost)."""
        return self.requeue_inflight_except(endpoint_id, set())

    def requeue_inflight_except(self, endpoint_id: str, held: set[str]) -> int:
        """Requeue in-flight tasks of an endpoint but those its site manager still ``held``."""
        args = [P + "task:", *held]
        return int(self._requeue(keys=[queue_key(endpoint_id), inflight_key(endpoint_id)], args=args))

    # -- endpoint status ---------------------------------------------------------------------

    def set_connected(self, endpoint_id: str, connected: bool, **info: Any) -> None:
        fields = {"connected": int(connected), "changed_at": repr(time.time()), **{k: str(v) for k, v in info.items()}}
        # A disconnected endpoint reports no blocks or workers: its last report described a site
        # manager that is gone (stopped, or lost and to be replaced by a new one that reports anew).
        self._set_status(endpoint_id, fields, drop=() if connected else ("report",))

    def touch(self, endpoint_id: str, report: EndpointStatus | None = None) -> None:
        fields: dict[str, Any] = {"last_heartbeat": repr(time.time())}
        if report is not None:
            fields["report"] = msgspec.json.encode(report)
        self._set_status(endpoint_id, fields)

    def _set_status(self, endpoint_id: str, fields: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
        # One round trip; the publish lets live views follow the endpoint without polling.
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(status_key(endpoint_id), mapping=fields)
        if drop:
            pipe.hdel(status_key(endpoint_id), *drop)
        pipe.publish(status_channel(endpoint_id), endpoint_id)
        pipe.execute()

    def set_restricted(self, endpoint_id: str, restricted: bool) -> None:
        """Note that the endpoint runs only allowed functions (dispatch then stamps its tasks
        data-only; see ``claim``)."""
        self.r.hset(status_key(endpoint_id), "restricted", int(restricted))

    def endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        raw = {k.decode(): v for k, v in self.r.hgetall(status_key(endpoint_id)).items()}
        pipe = self.r.pipeline(transaction=False)
        pipe.llen(queue_key(endpoint_id))
        pipe.scard(inflight_key(endpoint_id))
        queued, inflight = pipe.execute()
        status: dict[str, Any] = {
            "connected": raw.get("connected") == b"1",
            "last_heartbeat": float(raw["last_heartbeat"]) if "last_heartbeat" in raw else None,
            "connected_since" if raw.get("connected") == b"1" else "disconnected_since":
                float(raw["changed_at"]) if "changed_at" in raw else None,
            "tasks_waiting": int(queued),
            "tasks_in_flight": int(inflight),
        }
        if "report" in raw:
            # Every field, zeros included: the wire form leaves out fields at their defaults.
            report = msgspec.structs.asdict(msgspec.json.decode(raw["report"], type=EndpointStatus))
            report.pop("v", None)
            status["site"] = report
        return status


class Completions:
    """A subscription to one owner's task completions (a context manager)."""

    def __init__(self, store: TaskStore, owner: str):
        self.store = store
        self.pubsub = store.r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(done_channel(owner))

    def __enter__(self) -> "Completions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pubsub.close()

    def wait(self, task_ids: list[str], timeout: float, any_: bool = False, fresh: bool = False) -> dict[str, TaskRecord | None]:
        """Wait for ``task_ids``; ``fresh`` means they were just submitted (none finished yet),
        which saves reading them before waiting."""
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
            msg = self.pubsub.get_message(timeout=left)
            if msg is None or msg.get("type") != "message":
                continue
            # One message per recorded batch: the ids that finished, comma-separated.
            done = pending.intersection(msg["data"].decode().split(","))
            if done:
                pending -= done
                finished_any = True
        return self.store.get_many(task_ids)
