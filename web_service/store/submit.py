"""The submit side of the task store: function bodies, the checks a submit makes, and writing
accepted tasks (one script run per batch: ``scripts/accept.lua``)."""

from __future__ import annotations

import time
from typing import Any

import redis

from fnserve.data_refs import read_ref
from web_service.store.keys import (
    WAKE_CHANNEL, function_key, group_key, queue_key, status_key, submit_log_key, submitted_channel, task_key, tombstone_key,
)
from web_service.redis_replies import optional_blobs
from web_service.store.record import NewTask, hash_fields

_REF_PREFIX = b"fns1 ref "
# Entries (submitted batches) kept in a user's submission log, trimmed approximately by XADD.
SUBMIT_LOG_ENTRIES = 50_000
# The log's TTL is renewed at most this often per user and process.
LOG_UPKEEP_SECONDS = 60.0


def log_upkeep_due(last: float | None, now: float) -> bool:
    """Whether a submit should renew the TTL of a user's submission log (monotonic seconds)."""
    return last is None or now - last >= LOG_UPKEEP_SECONDS


class SubmitSide:
    r: redis.Redis
    result_ttl: int
    _log_upkeep: dict[str, float]
    scripts: dict[str, Any]

    def cache_function(self, function_id: str, body: bytes) -> None:
        self.r.set(function_key(function_id), body)

    def has_function(self, function_id: str) -> bool:
        return bool(self.r.exists(function_key(function_id)))

    def drop_function(self, function_id: str) -> None:
        self.r.delete(function_key(function_id))

    def function_bodies(self, function_ids: list[str]) -> dict[str, bytes]:
        """The cached bodies of these functions (those cached), in one round trip."""
        bodies = optional_blobs(self.r.mget([function_key(f) for f in function_ids])) if function_ids else []
        return {fid: body for fid, body in zip(function_ids, bodies) if body is not None}

    def mark_endpoint_deleted(self, endpoint_id: str, ttl: int) -> None:
        """Note for ``ttl`` seconds that the endpoint was deleted (submits check it)."""
        self.r.set(tombstone_key(endpoint_id), 1, ex=ttl)

    def submit_checks(self, function_ids: list[str], endpoint_ids: list[str], head: int,
                      status_fields: tuple[str, ...]) -> tuple[dict[str, bytes], set[str], dict[str, list[bytes | None]]]:
        """What a submit checks, in one round trip: the first ``head`` bytes of each cached
        function body (absent: not cached), the endpoints deleted meanwhile, and ``status_fields``
        of each endpoint's status hash."""
        pipe = self.r.pipeline(transaction=False)
        for fid in function_ids:
            pipe.getrange(function_key(fid), 0, head - 1)
        for eid in endpoint_ids:
            pipe.exists(tombstone_key(eid))
        for eid in endpoint_ids:
            pipe.hmget(status_key(eid), *status_fields)
        answers = pipe.execute()
        n, m = len(function_ids), len(endpoint_ids)
        heads = {fid: head_ for fid, head_ in zip(function_ids, answers[:n]) if head_}
        deleted = {eid for eid, found in zip(endpoint_ids, answers[n:n + m]) if found}
        return heads, deleted, dict(zip(endpoint_ids, answers[n + m:]))

    def submit(self, tasks: list[NewTask]) -> None:
        """Write tasks durably and queue them; returns once Redis has them all (one script run)."""
        self._accept(tasks, only_new=False)

    def submit_new(self, tasks: list[NewTask]) -> list[str]:
        """Like :meth:`submit`, for tasks whose ids were fixed in advance (trigger firings):
        writes only those no task of that id exists for yet, checked in the same script run, so
        two processes submitting the same firing make one task. Returns the ids written now."""
        return self._accept(tasks, only_new=True)

    def _accept(self, tasks: list[NewTask], only_new: bool) -> list[str]:
        if not tasks:
            return []
        now = time.time()
        mono = time.monotonic()
        args: list[Any] = [int(only_new), self.result_ttl, SUBMIT_LOG_ENTRIES, self.result_ttl + 86400, WAKE_CHANNEL, len(tasks)]
        due: dict[str, int] = {}
        for t in tasks:
            if t.owner not in due:
                due[t.owner] = int(log_upkeep_due(self._log_upkeep.get(t.owner), mono))
            ref = read_ref(t.payload) if t.payload.startswith(_REF_PREFIX) else None
            fields = hash_fields(t, now, ref.object_id if ref is not None else None)
            args += [t.task_id, task_key(t.task_id), queue_key(t.endpoint_id), t.endpoint_id,
                     group_key(t.owner, t.task_group_id) if t.task_group_id else "", submit_log_key(t.owner),
                     submitted_channel(t.owner), due[t.owner],
                     2 * len(fields)]
            for item in fields.items():
                args += item
        written = [i.decode() for i in self.scripts["accept"](args=args)]
        if len(self._log_upkeep) >= 100_000:
            self._log_upkeep.clear()
        self._log_upkeep.update({owner: mono for owner, d in due.items() if d})
        return written
