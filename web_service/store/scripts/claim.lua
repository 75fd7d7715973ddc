-- Claims up to ARGV[1] waiting tasks of an endpoint for dispatch.
-- KEYS: the endpoint's queue, in-flight set, status hash.
-- ARGV: n, now, task key prefix, capacity (0: no limit), then the task fields to return.
-- Pops ids (no more than claim_room allows), skips tasks that are not CLAIMABLE (cancelled
-- while queued), marks the rest dispatched, adds them to the in-flight set.
-- Returns {restricted flag of the endpoint, {{id, {field values}}, ...}}.
local n = tonumber(ARGV[1])
local capacity = tonumber(ARGV[4])
if capacity > 0 then
  n = claim_room(capacity, redis.call('SCARD', KEYS[2]), n)
  if n <= 0 then return {} end
end
local ids = redis.call('LPOP', KEYS[1], n)
if not ids then return {} end
local fields = {'state'}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
local claimed = {}
for _, id in ipairs(ids) do
  local k = ARGV[3] .. id
  local f = redis.call('HMGET', k, unpack(fields))
  if f[1] and CLAIMABLE[f[1]] then
    redis.call('HSET', k, 'state', S_DISPATCHED, 't_dispatched', ARGV[2])
    claimed[#claimed + 1] = id
    table.remove(f, 1)
    out[#out + 1] = {id, f}
  end
end
if #claimed == 0 then return {} end
call_many('SADD', KEYS[2], claimed)
return {redis.call('HGET', KEYS[3], 'restricted') or '0', out}
