-- Ends a task that is FINISHABLE as ARGV[8] (cancelled or failed) with the error ARGV[3]; removes
-- it from the in-flight set; one already at its endpoint is listed for its forwarder to stop.
-- KEYS: task hash, in-flight set, done channel, completion log, the endpoint's cancel list.
-- ARGV: now, ttl, error, task id, log max entries, wake channel, wake message, end state.
-- Returns the state before (false: unknown task).
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return false end
if not FINISHABLE[st] then return st end
redis.call('HSET', KEYS[1], 'state', ARGV[8] or S_CANCELLED, 't_finished', ARGV[1], 'error', ARGV[3])
redis.call('HDEL', KEYS[1], 'payload')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[4])
log_completed(KEYS[4], KEYS[3], ARGV[5], ARGV[2], ARGV[4])
if st == S_DISPATCHED or st == S_RUNNING then
  -- At the endpoint already: tell its forwarder, which tells the site manager to stop it.
  redis.call('RPUSH', KEYS[5], ARGV[4])
  redis.call('EXPIRE', KEYS[5], ARGV[2])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return st
