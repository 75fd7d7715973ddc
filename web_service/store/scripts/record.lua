-- Records results: the first one for a task wins, and only the endpoint that holds the task may
-- record it (result_verdict). KEYS: the reporting endpoint's in-flight set, task key prefix, done
-- channel prefix, completion log prefix, the rejected-results counter hash, the object store's
-- metadata key prefix and its owners' set prefix. ARGV: now, ttl, log
-- max entries, the reporting endpoint id, the number n of result fields, their n names
-- (record.RESULT_FIELDS), then per result: id, state, the n values. Completions are logged and
-- published once per owner. A recorded task's argument object (arguments passed by reference)
-- expires now: nothing reads it once its task is finished, and the owner's next upload sweeps it
-- (web_service.object_store), so that its disk and page cache are reused. Returns {recorded ids,
-- rejected ids, queue length (0 without KEYS[8])}.
-- The forwarder's form adds KEYS[8], the endpoint's queue, and KEYS[9], the usage stream: each
-- result then carries one more value, its usage entry (one msgpack-encoded web_service.usage
-- UsageEntry; empty: none), and the entries of the results recorded now are appended to the
-- stream as one list (one XADD, as usage.log_usage writes it); the answer's queue length lets
-- the forwarder claim more only when tasks wait.
-- A task recorded without t_running (it ended before its start was reported: the site manager
-- holds a start marker a moment, site_manager/start_reports.py) takes it from its result's
-- worker_started timing, so every task that ran keeps when it started.
local function release_arguments(object_id, now)
  local meta = KEYS[6] .. object_id
  local o = redis.call('HMGET', meta, 'size', 'owner', 'gone')
  if not o[1] or o[3] == '1' then return end
  redis.call('HSET', meta, 'expires', now, 'released', '1')
  redis.call('ZADD', KEYS[7] .. o[2], 'XX', now, object_id .. ':' .. o[1])
end
local endpoint = ARGV[4]
local n = tonumber(ARGV[5])
local names = {unpack(ARGV, 6, 5 + n)}
local timings_at
for f = 1, n do if names[f] == 'timings' then timings_at = f end end
local usage_stream = KEYS[9]
local first, step = 6 + n, 2 + n
if usage_stream then step = step + 1 end
local ids = {}
for i = first, #ARGV, step do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return {{}, {}, 0} end
local usage = {}
local held = redis.call('SMISMEMBER', KEYS[1], unpack(ids))
local recorded, rejected, leave = {}, {}, {}
local by_owner, owners = {}, {}
for j, id in ipairs(ids) do
  local i = first + (j - 1) * step
  local k = KEYS[2] .. id
  local f = redis.call('HMGET', k, 'state', 'endpoint_id', 't_dispatched', 'owner', 'arg_ref', 't_running')
  local verdict = result_verdict(f[1], f[2], endpoint, held[j] == 1, f[3])
  if verdict == 'record' then
    local values = {'state', ARGV[i + 1], 't_finished', ARGV[1]}
    for f = 1, n do
      values[#values + 1] = names[f]
      values[#values + 1] = ARGV[i + 1 + f]
    end
    if not f[6] and timings_at then
      local ok, t = pcall(cjson.decode, ARGV[i + 1 + timings_at])
      if ok and type(t) == 'table' and type(t.worker_started) == 'number' then
        values[#values + 1] = 't_running'
        values[#values + 1] = string.format('%.6f', t.worker_started)
      end
    end
    redis.call('HSET', k, unpack(values))
    redis.call('HDEL', k, 'payload')
    redis.call('EXPIRE', k, ARGV[2])
    if f[5] then release_arguments(f[5], ARGV[1]) end
    leave[#leave + 1] = id
    local owner = f[4]
    if not by_owner[owner] then by_owner[owner] = {}; owners[#owners + 1] = owner end
    table.insert(by_owner[owner], id)
    recorded[#recorded + 1] = id
    if usage_stream and ARGV[i + 2 + n] ~= '' then usage[#usage + 1] = ARGV[i + 2 + n] end
  elseif verdict == 'duplicate' then
    leave[#leave + 1] = id
  else
    rejected[#rejected + 1] = id
  end
end
if #leave > 0 then call_many('SREM', KEYS[1], leave) end
if #rejected > 0 then redis.call('HINCRBY', KEYS[5], endpoint, #rejected) end
for _, owner in ipairs(owners) do
  log_completed(KEYS[4] .. owner, KEYS[3] .. owner, ARGV[3], ARGV[2], table.concat(by_owner[owner], ','))
end
if #usage > 0 then
  redis.call('XADD', usage_stream, '*', 'e', msgpack_array_header(#usage) .. table.concat(usage))
end
local queued = 0
if KEYS[8] then queued = redis.call('LLEN', KEYS[8]) end
return {recorded, rejected, queued}
