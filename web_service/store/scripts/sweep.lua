-- A surviving forwarder sweeps endpoints a dead forwarder still owns (web_service/forwarder_sweep.py):
-- for each endpoint whose owner key still names the dead forwarder, requeue all its in-flight
-- tasks, mark it disconnected and release the owner key, all at once. One whose owner key names
-- another forwarder (a site manager registered there: its registration settles its tasks) is
-- left alone. Nothing at all is swept if the dead forwarder is alive again. Either way each
-- endpoint leaves the dead forwarder's index.
-- KEYS: 4 per endpoint: owner key, queue, in-flight set, status hash.
-- ARGV: [1] dead forwarder's address, [2] its liveness key, [3] its index (set of endpoint ids),
-- [4] task key prefix, [5] reason, [6] changed_at, [7] status channel prefix, [8] status channel
-- suffix, [9..] the endpoint ids (in KEYS order).
-- Returns {endpoint id, tasks requeued, ...} for the endpoints swept (false: the forwarder is alive).
-- The decision per endpoint: web_service.forwarder_sweep.to_sweep.
if redis.call('EXISTS', ARGV[2]) == 1 then return false end  -- alive again: nothing to sweep
local swept = {}
local none = {}
for j = 1, #KEYS / 4 do
  local owner = KEYS[4 * j - 3]
  local id = ARGV[8 + j]
  if redis.call('GET', owner) == ARGV[1] then
    local n = requeue_inflight(KEYS[4 * j - 2], KEYS[4 * j - 1], ARGV[4], none)
    local status = KEYS[4 * j]
    redis.call('HSET', status, 'connected', '0', 'changed_at', ARGV[6], 'reason', ARGV[5])
    redis.call('HDEL', status, 'report')
    redis.call('PUBLISH', ARGV[7] .. id .. ARGV[8], id)
    redis.call('DEL', owner)
    swept[#swept + 1] = id
    swept[#swept + 1] = n
  end
  redis.call('SREM', ARGV[3], id)
end
return swept
