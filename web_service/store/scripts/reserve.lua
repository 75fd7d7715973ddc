-- Reserves ARGV[1] tasks of a user's quota window counter (KEYS[1], expiring at ARGV[2]) unless
-- that passes ARGV[3] tasks (web_service.store.rules.quota_allows): then gives them back.
-- Returns {the counter after adding, 1 if reserved else 0}.
local n = tonumber(ARGV[1])
local count = redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIREAT', KEYS[1], ARGV[2])
if count > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], n)
  return {count, 0}
end
return {count, 1}
