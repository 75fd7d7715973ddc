"""Live outputs of tasks, in Redis: one stream per task, appended by the forwarder.

Keys (next to the task's own ``fns:task:{id}`` hash)::

    task:{id}:out        stream: one entry per output, in arrival order. Fields: ``k`` kind
                         ("output" | "truncated" | "end"), ``s`` seq, ``t`` time, ``v`` the values
                         as JSON text (outputs only). Expires with the task.
    task:{id}:outinfo    hash: ``bytes`` of values kept so far, ``truncated`` and ``ended`` flags

A task's outputs are bounded by ``limit`` bytes of JSON: the output that would pass it is
replaced by one ``truncated`` entry, and later ones are dropped. Readers long-poll with
``XREAD BLOCK`` (no polling interval). The service never deserializes anything here: values
arrive as MessagePack primitives from the wire and are stored and served as JSON text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from fnserve.messages import TaskOutput
from fnserve.outputs import DEFAULT_TASK_OUTPUT_BYTES
from web_service.store.keys import DEFAULT_RESULT_TTL, TASK_PREFIX, inflight_key, outputs_info_key as info_key, outputs_key

# Entries one read returns at most.
MAX_READ = 1000
# Seconds after its task finished that an output of it still counts (the worker's `end` marker
# travels beside the result, on another channel, and can come second).
LATE_OUTPUT_GRACE = 2.0


# KEYS: the endpoint's in-flight set. ARGV: key prefix, endpoint id, default ttl, byte limit,
# now, grace, then 5 values per output (task id, kind, seq, time, values JSON). An output counts
# only for a task of that endpoint in flight there, or finished there less than ``grace``
# seconds ago (web_service.result_origin.output_accepted), so a site manager cannot write into
# other endpoints' tasks, nor into long-finished ones. Returns {kept,
# dropped}. Streams expire with their task: the task hash has a TTL once finished; until then,
# the result TTL (plus a minute, as the result follows its last outputs) from now.
_APPEND = """
local prefix, endpoint, ttl, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local kept, dropped = 0, 0
for i = 7, #ARGV, 5 do
  local id, kind, seq, t, values = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local task = prefix .. id
  local f = redis.call('HMGET', task, 'endpoint_id', 't_finished')
  local late = f[2] and now - tonumber(f[2]) <= grace
  if f[1] ~= endpoint or not (late or redis.call('SISMEMBER', KEYS[1], id) == 1) then
    dropped = dropped + 1
  else
    local out, info = task .. ':out', task .. ':outinfo'
    local truncated = redis.call('HGET', info, 'truncated')
    if kind == 'output' then
      local used = tonumber(redis.call('HGET', info, 'bytes') or '0')
      if truncated then
        kind = nil
      elseif used + #values > limit then
        kind = 'truncated'
      else
        redis.call('XADD', out, '*', 'k', 'output', 's', seq, 't', t, 'v', values)
        redis.call('HINCRBY', info, 'bytes', #values)
        kind = nil
        kept = kept + 1
      end
    end
    if kind == 'truncated' and not truncated then
      redis.call('XADD', out, '*', 'k', 'truncated', 's', seq, 't', t, 'v', limit)
      redis.call('HSET', info, 'truncated', '1')
    elseif kind == 'end' then
      redis.call('XADD', out, '*', 'k', 'end', 's', seq, 't', t)
      redis.call('HSET', info, 'ended', '1')
    end
    local left = redis.call('TTL', task)
    if left < 0 then left = ttl + 60 end
    redis.call('EXPIRE', out, left)
    redis.call('EXPIRE', info, left)
  end
end
return {kept, dropped}
"""


class OutputWriter:
    """Appends relayed outputs (the forwarder's side)."""

    def __init__(self, client: redis.Redis, result_ttl: int = DEFAULT_RESULT_TTL, limit: int = DEFAULT_TASK_OUTPUT_BYTES):
        self.r = client
        self.result_ttl = result_ttl
        self.limit = limit
        self._append = client.register_script(_APPEND)

    def append(self, endpoint_id: str, outputs: Iterable[TaskOutput]) -> int:
        """Append outputs of ``endpoint_id``'s tasks in order; returns how many were kept."""
        return self.append_checked(endpoint_id, outputs)[0]

    def append_checked(self, endpoint_id: str, outputs: Iterable[TaskOutput]) -> tuple[int, int]:
        """Like :meth:`append`; returns ``(kept, dropped for tasks not in flight on endpoint_id)``."""
        args: list[Any] = [TASK_PREFIX, endpoint_id, self.result_ttl, self.limit, repr(time.time()), LATE_OUTPUT_GRACE]
        for out in outputs:
            values = msgspec.json.encode(out.values) if out.kind == "output" else b""
            args += [out.task_id, out.kind, out.seq, repr(out.time), values]
        if len(args) == 6:
            return 0, 0
        kept, dropped = self._append(keys=[inflight_key(endpoint_id)], args=args)
        return int(kept), int(dropped)


@dataclass
class OutputPage:
    """One read of a task's outputs: entries after the cursor, and whether more can come."""

    cursor: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    ended: bool = False
    full: bool = False  # the read hit its count limit: more entries may be waiting


def read(client: redis.Redis, task_id: str, since: str, count: int = MAX_READ) -> OutputPage:
    """The entries of ``task_id``'s stream after cursor ``since`` (at most ``count``)."""
    key = outputs_key(task_id)
    pipe = client.pipeline(transaction=False)
    pipe.xrange(key, min=f"({since}" if since != "0-0" else "-", count=count)
    pipe.hmget(info_key(task_id), "truncated", "ended")
    entries, (truncated, ended) = pipe.execute()
    page = OutputPage(since, truncated=bool(truncated), ended=bool(ended), full=len(entries) >= count)
    for entry_id, fields in entries:
        page.cursor = entry_id.decode()
        kind = fields.get(b"k", b"output").decode()
        if kind == "end":
            continue  # a marker for readers' completeness, not an output to show
        item: dict[str, Any] = {"seq": int(fields[b"s"]), "time": float(fields[b"t"])}
        if kind == "truncated":
            item["truncated"] = True
            item["message"] = (
                f"this task's outputs passed the limit of {int(fields[b'v'])} bytes; later outputs were dropped "
                "(the operator sets FNSERVE_TASK_OUTPUT_BYTES)"
            )
        else:
            # Already JSON text: embedded as is, never parsed into objects by the service.
            item["values"] = msgspec.Raw(fields[b"v"])
        page.outputs.append(item)
    return page


__all__ = ["MAX_READ", "OutputPage", "OutputWriter", "info_key", "outputs_key", "read"]
