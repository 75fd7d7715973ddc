-- Moves an endpoint's in-flight tasks back to the front of its queue as waiting again, except
-- those the (re)connecting site manager says it still holds (ARGV[2..]); only REQUEUEABLE ones
-- (one that finished meanwhile just leaves the set). KEYS: queue, in-flight set. ARGV[1]: task
-- key prefix. Returns how many were requeued.
local held = {}
for i = 2, #ARGV do held[ARGV[i]] = true end
local ids = redis.call('SMEMBERS', KEYS[2])
local moved, gone = {}, {}
for i = #ids, 1, -1 do
  local id = ids[i]
  if not held[id] then
    local k = ARGV[1] .. id
    if REQUEUEABLE[redis.call('HGET', k, 'state') or ''] then
      redis.call('HSET', k, 'state', S_WAITING)
      moved[#moved + 1] = id
    end
    gone[#gone + 1] = id
  end
end
if #moved > 0 then call_many('LPUSH', KEYS[1], moved) end
if #gone > 0 then call_many('SREM', KEYS[2], gone) end
return #moved
