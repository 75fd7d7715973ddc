-- Moves an endpoint's in-flight tasks back to the front of its queue as waiting again, except
-- those the (re)connecting site manager says it still holds (ARGV[2..]); see requeue_inflight in
-- lib.lua. KEYS: queue, in-flight set. ARGV[1]: task key prefix. Returns how many were requeued.
local held = {}
for i = 2, #ARGV do held[ARGV[i]] = true end
return requeue_inflight(KEYS[1], KEYS[2], ARGV[1], held)
