"""Several forwarders: which one serves which endpoint, and who is alive.

The rule is rendezvous (highest random weight) hashing of the endpoint id over the live
forwarders' addresses (:func:`assign`): every process that reads the same live set computes the
same owner with no table to keep in step, an endpoint moves only when its own owner leaves or a
new forwarder outranks it (about 1/N of them when the N-th joins), and a dead forwarder's
endpoints spread over all the others.

Redis layout (kept by :class:`ForwarderPool`)::

    fns:forwarders                 set of forwarder addresses ever announced (pruned when dead)
    fns:forwarder:<address>        "1" with a TTL: the forwarder is alive while the key exists
    fns:endpoint-forwarder:<id>    address of the forwarder an endpoint last registered with
    fns:forwarder-endpoints:<address>  ids of the endpoints whose owner key names the forwarder
    fns:forwarders-lapsed          zset: forwarders seen dead, scored by Redis's time then
    fns:forwarder-sweep:<address>  lock (with a TTL) of the survivor sweeping a dead forwarder

A forwarder's id is the address endpoints connect to, so a restarted forwarder takes back its
own place at once. Liveness is Redis's own key expiry (one clock: no skew between hosts). The
TTL is half the endpoints' heartbeat threshold: a killed forwarder is gone from the live set
before any of its endpoints gives up on it, so the survivor it tries next accepts it.

A dead forwarder's endpoints whose site managers died too are swept by a survivor
(web_service/forwarder_sweep.py): the index and the lapsed set are kept here for it.
"""

from __future__ import annotations

import hashlib

import redis

P = "fns:"
MEMBERS = P + "forwarders"
LAPSED = P + "forwarders-lapsed"


def alive_key(address: str) -> str:
    return f"{P}forwarder:{address}"


def owner_key(endpoint_id: str) -> str:
    return f"{P}endpoint-forwarder:{endpoint_id}"


def endpoints_key(address: str) -> str:
    return f"{P}forwarder-endpoints:{address}"


def sweep_lock_key(address: str) -> str:
    return f"{P}forwarder-sweep:{address}"


def _weight(endpoint_id: str, address: str) -> bytes:
    return hashlib.blake2b(f"{endpoint_id}\x00{address}".encode(), digest_size=8).digest()


def assign(endpoint_id: str, forwarders: list[str] | set[str] | frozenset[str]) -> str | None:
    """The forwarder (address) that serves ``endpoint_id`` among ``forwarders``; None if none.

    >>> assign("ep1", ["tcp://a:1"])
    'tcp://a:1'
    """
    if not forwarders:
        return None
    return max(forwarders, key=lambda a: (_weight(endpoint_id, a), a))


def heartbeat_ttl(endpoint_threshold: float) -> float:
    """Seconds a forwarder's liveness key lives: half the endpoints' threshold (see above)."""
    return max(0.2, endpoint_threshold / 2)


# Delete the owner key only if it still names this forwarder: a stale forwarder that expires an
# endpoint which has since registered elsewhere must not requeue the new owner's tasks.
# KEYS: owner key, this forwarder's index. ARGV: this forwarder's address, the endpoint id.
_RELEASE = """
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return redis.call('EXISTS', KEYS[1]) == 0 and 1 or 0
"""

# This forwarder owns the endpoint now; the index moves it from the last owner's set to this one's.
# KEYS: owner key, this forwarder's index. ARGV: this forwarder's address, the endpoint id, the
# index key prefix.
_CLAIM = """
local old = redis.call('GET', KEYS[1])
if old and old ~= ARGV[1] then redis.call('SREM', ARGV[3] .. old, ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
"""

# The live forwarders (sorted); a dead one leaves the member set for the lapsed set, scored by
# Redis's own time (ZADD NX: the first process to see it dead sets the time). KEYS: members,
# lapsed. ARGV: the liveness key prefix.
_LIVE = """
local members = redis.call('SMEMBERS', KEYS[1])
table.sort(members)
local live, dead = {}, {}
for _, a in ipairs(members) do
  if redis.call('EXISTS', ARGV[1] .. a) == 1 then live[#live + 1] = a else dead[#dead + 1] = a end
end
if #dead > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  for _, a in ipairs(dead) do
    redis.call('SREM', KEYS[1], a)
    redis.call('ZADD', KEYS[2], 'NX', tostring(now), a)
  end
end
return live
"""


class ForwarderPool:
    """The live set in Redis, as one forwarder (``address``) or the web service sees it."""

    def __init__(self, r: redis.Redis, address: str = "", ttl: float = 5.0):
        self.r = r
        self.address = address
        self.ttl = ttl
        self._release = r.register_script(_RELEASE)
        self._claim = r.register_script(_CLAIM)
        self._live = r.register_script(_LIVE)

    def announce(self) -> None:
        """This forwarder is alive for another ``ttl`` seconds."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(alive_key(self.address), b"1", px=max(1, int(self.ttl * 1000)))
        pipe.sadd(MEMBERS, self.address)
        pipe.zrem(LAPSED, self.address)  # back (a stall, a restart): nobody sweeps it
        pipe.execute()

    def withdraw(self) -> None:
        """This forwarder stops (cleanly): its endpoints go elsewhere now, not after the TTL (the
        ones that never register elsewhere are swept like a dead forwarder's)."""
        self.r.delete(alive_key(self.address))
        self.live()

    def live(self) -> list[str]:
        """Addresses of the forwarders alive now (sorted); dead ones move to the lapsed set."""
        return [a.decode() if isinstance(a, bytes) else a
                for a in self._live(keys=[MEMBERS, LAPSED], args=[alive_key("")])]

    def owner(self, endpoint_id: str, fallback: str) -> str:
        """The forwarder ``endpoint_id`` should connect to (``fallback`` when none announced)."""
        return assign(endpoint_id, self.live()) or fallback

    def claim(self, endpoint_id: str) -> None:
        self._claim(keys=[owner_key(endpoint_id), endpoints_key(self.address)],
                    args=[self.address, endpoint_id, endpoints_key("")])

    def owns(self, endpoint_id: str) -> bool:
        """Whether no other forwarder has claimed ``endpoint_id`` since this one did."""
        holder = self.r.get(owner_key(endpoint_id))
        return holder is None or (holder.decode() if isinstance(holder, bytes) else holder) == self.address

    def owns_many(self, endpoint_ids: list[str]) -> list[bool]:
        """:meth:`owns` for many endpoints in one round trip."""
        if not endpoint_ids:
            return []
        holders = self.r.mget([owner_key(e) for e in endpoint_ids])
        return [h is None or (h.decode() if isinstance(h, bytes) else h) == self.address for h in holders]

    def release(self, endpoint_id: str) -> bool:
        """Whether this forwarder still owned ``endpoint_id`` (and so must settle its tasks)."""
        return bool(self._release(keys=[owner_key(endpoint_id), endpoints_key(self.address)], args=[self.address, endpoint_id]))
