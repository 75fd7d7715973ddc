-- Accepts a batch of tasks in one step: writes each task's hash, queues it for its endpoint, adds
-- it to its task group, logs the batch in each owner's submission log, and wakes the forwarders.
-- With only_new, a task whose hash exists already is left as it is (a trigger firing submitted
-- twice makes one task).
-- ARGV: only_new (1/0), group ttl, submission log max entries, submission log ttl, wake channel,
-- number of tasks, then per task: id, task key, queue key, endpoint id, group key ('' none),
-- owner's submission log key, the owner's submitted channel, whether that log's ttl is due (1/0),
-- number of hash values, then field, value pairs. Returns the ids written.
local only_new = ARGV[1] == '1'
local pos = 7
local written = {}
local queues, queue_order, endpoints = {}, {}, {}
local groups, group_order = {}, {}
local logs, log_order, log_due, channels = {}, {}, {}, {}
local function add(map, order, key, id)
  if not map[key] then map[key] = {}; order[#order + 1] = key end
  table.insert(map[key], id)
end
for _ = 1, tonumber(ARGV[6]) do
  local id, key, queue, endpoint, group, log, channel, due = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2],
    ARGV[pos + 3], ARGV[pos + 4], ARGV[pos + 5], ARGV[pos + 6], ARGV[pos + 7]
  local n = tonumber(ARGV[pos + 8])
  local first = pos + 9
  pos = first + n
  if not (only_new and redis.call('EXISTS', key) == 1) then
    redis.call('HSET', key, unpack(ARGV, first, pos - 1))
    written[#written + 1] = id
    if not queues[queue] then endpoints[queue] = endpoint end
    add(queues, queue_order, queue, id)
    if group ~= '' then add(groups, group_order, group, id) end
    add(logs, log_order, log, id)
    channels[log] = channel
    if due == '1' then log_due[log] = true end
  end
end
for _, group in ipairs(group_order) do
  call_many('RPUSH', group, groups[group])
  redis.call('EXPIRE', group, ARGV[2])
end
for _, queue in ipairs(queue_order) do call_many('RPUSH', queue, queues[queue]) end
for _, queue in ipairs(queue_order) do redis.call('PUBLISH', ARGV[5], endpoints[queue]) end
for _, log in ipairs(log_order) do
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[3], '*', 'ids', table.concat(logs[log], ','))
  redis.call('PUBLISH', channels[log], #logs[log])
  if log_due[log] then redis.call('EXPIRE', log, ARGV[4]) end
end
return written
