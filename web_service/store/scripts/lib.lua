-- Shared by every task store script (after the generated preamble: S_* state names and the
-- rule sets TERMINAL, CLAIMABLE, STARTABLE, REQUEUEABLE, FINISHABLE; web_service.store.rules).

-- web_service.store.rules.claim_room
local function claim_room(capacity, inflight, want)
  if capacity <= 0 then return want end
  local room = capacity - inflight
  if room < math.max(1, math.floor(capacity / 4)) then return 0 end
  return math.min(want, room)
end

-- web_service.result_origin.result_verdict
local function result_verdict(state, task_endpoint, reporter, held, dispatched_before)
  if not state or task_endpoint ~= reporter then return 'reject' end
  if TERMINAL[state] then return 'duplicate' end
  if held then return 'record' end
  if state == S_WAITING and dispatched_before then return 'record' end
  return 'reject'
end

-- Runs a variadic command over many arguments in slices (Lua's unpack has a stack limit).
local function call_many(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Moves an endpoint's in-flight tasks (set inflight) back to the front of its queue as waiting
-- again, except those in held (a table id -> true); only REQUEUEABLE ones (one that finished
-- meanwhile just leaves the set). prefix: the task key prefix. Returns how many were requeued.
local function requeue_inflight(queue, inflight, prefix, held)
  local ids = redis.call('SMEMBERS', inflight)
  local moved, gone = {}, {}
  for i = #ids, 1, -1 do
    local id = ids[i]
    if not held[id] then
      local k = prefix .. id
      if REQUEUEABLE[redis.call('HGET', k, 'state') or ''] then
        redis.call('HSET', k, 'state', S_WAITING)
        moved[#moved + 1] = id
      end
      gone[#gone + 1] = id
    end
  end
  if #moved > 0 then call_many('LPUSH', queue, moved) end
  if #gone > 0 then call_many('SREM', inflight, gone) end
  return #moved
end

-- Appends a batch of ids to a user's completion log and, unless kind is given, publishes them on
-- the user's done channel. One entry per batch; prev names the entry before it.
local function log_completed(log, channel, maxlen, ttl, ids, kind)
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if last[1] then prev = last[1][1] end
  if kind then
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'ids', ids, 'prev', prev, 'kind', kind)
  else
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'ids', ids, 'prev', prev)
  end
  redis.call('EXPIRE', log, ttl)
  if not kind then redis.call('PUBLISH', channel, ids) end
end

-- The msgpack header of an array of n elements (what msgspec writes before them).
local function msgpack_array_header(n)
  if n < 16 then return string.char(0x90 + n) end
  if n < 65536 then return string.char(0xdc, math.floor(n / 256), n % 256) end
  return string.char(0xdd, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
