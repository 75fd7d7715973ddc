-- Marks tasks running if STARTABLE (never moves one that moved on), and notes them in their
-- owners' completion logs as one ``running`` entry per owner (not published: nothing waits on it
-- but readers of the log). KEYS: task key prefix, completion log prefix. ARGV: now, ttl, log max
-- entries, then the task ids.
local by_owner, owners = {}, {}
for i = 4, #ARGV do
  local k = KEYS[1] .. ARGV[i]
  local f = redis.call('HMGET', k, 'state', 'owner')
  if f[1] and STARTABLE[f[1]] then
    redis.call('HSET', k, 'state', S_RUNNING, 't_running', ARGV[1])
    local owner = f[2]
    if not by_owner[owner] then by_owner[owner] = {}; owners[#owners + 1] = owner end
    table.insert(by_owner[owner], ARGV[i])
  end
end
for _, owner in ipairs(owners) do
  log_completed(KEYS[2] .. owner, nil, ARGV[3], ARGV[2], table.concat(by_owner[owner], ','), 'running')
end
return 0
