"""The service's object store: users' objects (large arguments, results, output files), their
metadata in Redis and their bytes in a backend (local disk by default).

Keys (prefixed ``fns:``)::

    obj:{id}            hash: owner, size, sha256 ("" until the last chunk declares it), received
                        (bytes stored so far), complete
                        ("1" once every byte arrived and the checksum matched), created, expires,
                        name, task (the task whose worker made it, if one did), gone ("1" once
                        swept), released ("1" once the task whose arguments it holds finished:
                        it expires then; see store/scripts/record.lua). Lives a day past
                        ``expires`` so that a late reader is told ``object_expired`` rather
                        than ``object_not_found``.
    objs:{owner}        sorted set: the owner's live objects as "{id}:{size}", scored by their
                        expiry time (the size is there so a sweep needs nothing else)
    objbytes:{owner}    bytes counted against the owner's quota: the declared sizes of live
                        objects (counted at creation, so an upload in progress holds its room)

Expired objects are swept per owner (bytes deleted, counter lowered, hash marked ``gone``)
before each of that owner's creations, and by :meth:`ObjectStore.sweep_all`. Uploads are
sequential chunks (``received`` moves forward only by the chunk that started there); the last
chunk checks the SHA-256 declared at creation (or, for an object created without one, sent with
the last chunk), and a mismatch deletes the object.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import redis

from fnserve.errors import BadRequest, NotFound
from web_service.object_rules import (
    ObjectMeta,
    Principal,
    check_access,
    check_chunk,
    check_new_object,
    readable_end,
    upload_checksum,
)
from web_service.object_disk import LocalDiskBackend
from web_service.redis_replies import text_map, zset_members
from web_service.store.keys import OBJECT_META_PREFIX, OBJECT_OWNER_PREFIX

P = "fns:"
TOMBSTONE_SECONDS = 24 * 3600


def meta_key(object_id: str) -> str:
    return OBJECT_META_PREFIX + object_id


def owner_key(owner: str) -> str:
    return OBJECT_OWNER_PREFIX + owner


def bytes_key(owner: str) -> str:
    return f"{P}objbytes:{owner}"


def progress_channel(object_id: str) -> str:
    """Pub/sub channel told each time an upload moves on (a chunk stored, completed, deleted)."""
    return f"{P}objprog:{object_id}"


def load_data_key(path: str | os.PathLike[str]) -> bytes:
    """The service's data-token key from ``path``, created (0600, 32 random bytes) if missing.

    Created with O_EXCL, so the web service and the forwarder starting together agree on one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
    for _ in range(100):  # the creator may not have written it yet
        text = p.read_text().strip()
        if text:
            return bytes.fromhex(text)
        time.sleep(0.01)
    raise RuntimeError(f"data key file {p} is empty; delete it and restart")


def object_backend(settings: Any) -> Any:
    """The backend ``settings`` name: local disk (the default) or an S3 bucket."""
    if settings.object_backend == "disk":
        return LocalDiskBackend(settings.objects_dir, recycle_bytes=settings.object_recycle_bytes)
    if settings.object_backend == "s3":
        if not settings.s3_bucket:
            raise ValueError("FNSERVE_OBJECT_BACKEND=s3 needs FNSERVE_S3_BUCKET")
        from web_service.object_backends_s3 import S3Backend

        return S3Backend(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    raise ValueError(f"FNSERVE_OBJECT_BACKEND={settings.object_backend!r}: use 'disk' or 's3'")


# KEYS: owner's set, owner's byte counter, new meta key. ARGV: size, quota, set member,
# tombstone seconds, then meta fields (name value ...) with 'expires' first. Returns -1 when
# created, else the bytes in use (over quota: nothing written).
_CREATE = """
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return used end
redis.call('INCRBY', KEYS[2], ARGV[1])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
local expires = tonumber(ARGV[6])
redis.call('EXPIREAT', KEYS[3], math.ceil(expires) + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[1], expires, ARGV[3])
return -1
"""

# KEYS: meta key. ARGV: start, end. Moves ``received`` forward only if it still stands at start.
_ADVANCE = """
local r = tonumber(redis.call('HGET', KEYS[1], 'received') or '-1')
if r ~= tonumber(ARGV[1]) then return r end
redis.call('HSET', KEYS[1], 'received', ARGV[2])
return tonumber(ARGV[2])
"""

# KEYS: owner's set, owner's counter, meta key. ARGV: set member, size. Idempotent: only the
# caller whose ZREM removed the member lowers the counter.
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DECRBY', KEYS[2], ARGV[2])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'gone', '1') end
  return 1
end
return 0
"""


class _Hashing:
    """A request body that feeds what is read from it to a running checksum (if there is one)."""

    def __init__(self, stream: IO[bytes], digest: Any) -> None:
        self.stream, self.digest = stream, digest

    def read(self, n: int = -1) -> bytes:
        piece = self.stream.read(n)
        if self.digest is not None:
            self.digest.update(piece)
        return piece


# Uploads in progress whose running checksum this process holds (oldest dropped beyond this).
_RUNNING_MAX = 256


class ObjectStore:
    def __init__(self, r: redis.Redis, backend: Any, *, quota_bytes: int, max_object_bytes: int,
                 chunk_bytes: int) -> None:
        self._running: dict[str, tuple[int, Any]] = {}
        self.r = r
        self.backend = backend
        self.quota_bytes = quota_bytes
        self.max_object_bytes = max_object_bytes
        self.chunk_bytes = chunk_bytes
        self._create = r.register_script(_CREATE)
        self._advance = r.register_script(_ADVANCE)
        self._release = r.register_script(_RELEASE)

    # -- reading metadata ------------------------------------------------------------------------

    def meta(self, object_id: str) -> ObjectMeta | None:
        h = text_map(self.r.hgetall(meta_key(object_id)))
        if not h:
            return None
        return ObjectMeta(object_id=object_id, owner=h["owner"], size=int(h["size"]), sha256=h["sha256"],
                          received=int(h.get("received", 0)), complete=h.get("complete") == "1",
                          expires=float(h["expires"]), gone=h.get("gone") == "1", task=h.get("task"),
                          released=h.get("released") == "1")

    def get(self, object_id: str, who: Principal) -> ObjectMeta:
        return check_access(self.meta(object_id), object_id, who, time.time())

    def used(self, owner: str) -> int:
        return int(self.r.get(bytes_key(owner)) or 0)

    # -- changes -------------------------------------------------------------------------------

    def create(self, who: Principal, size: object, sha256: object, ttl: float, name: str | None = None) -> ObjectMeta:
        self.sweep(who.user_id)
        size, digest = check_new_object(size, sha256, self.used(who.user_id), self.quota_bytes, self.max_object_bytes)
        if size == 0 and not digest:
            digest = hashlib.sha256(b"").hexdigest()
        object_id = uuid.uuid4().hex
        now = time.time()
        fields = ["expires", repr(now + ttl), "owner", who.user_id, "size", str(size), "sha256", digest,
                  "received", "0", "complete", "1" if size == 0 else "0", "created", repr(now)]
        if name:
            fields += ["name", name[:256]]
        if who.task_id:
            fields += ["task", who.task_id]
        used = self._create(keys=[owner_key(who.user_id), bytes_key(who.user_id), meta_key(object_id)],
                            args=[size, self.quota_bytes, f"{object_id}:{size}", TOMBSTONE_SECONDS, *fields])
        if int(used) >= 0:  # another creation took the room in between
            check_new_object(size, digest, int(used), self.quota_bytes, self.max_object_bytes)
        if size == 0 and digest != hashlib.sha256(b"").hexdigest():
            self.delete(object_id, who)
            raise BadRequest("an empty object's sha256 must be that of no bytes", code="checksum_mismatch")
        meta = self.meta(object_id)
        assert meta is not None
        return meta

    def write_chunk(self, object_id: str, who: Principal, start: int, end: int, stream: IO[bytes],
                    declared: str | None = None) -> ObjectMeta:
        """Store bytes ``[start, end)``; ``declared``: the SHA-256 sent with the chunk, for an object
        created without one (checked at the last chunk like one declared at creation)."""
        meta = self.get(object_id, who)
        check_chunk(meta, start, end, self.chunk_bytes)
        want = upload_checksum(meta.sha256, declared, end == meta.size)
        # The checksum is computed as the bytes go by (one pass over them, no re-read at the end),
        # when this process saw every earlier chunk; else (another web process took some) the
        # last chunk re-reads the object.
        digest: Any = None
        if start == 0:
            digest = hashlib.sha256()
        else:
            at, running = self._running.pop(object_id, (None, None))
            digest = running if at == start else None
        try:
            wrote = self.backend.write(object_id, start, _Hashing(stream, digest), end - start, size=meta.size)
        except FileNotFoundError:  # deleted while this chunk came in
            raise NotFound(f"no object {object_id!r} (deleted during the upload)", code="object_not_found",
                           details={"object_id": object_id}) from None
        if wrote != end - start:
            raise BadRequest(f"the body ended after {wrote} of {end - start} bytes; send the chunk again",
                             code="incomplete_body", details={"received": meta.received})
        received = int(self._advance(keys=[meta_key(object_id)], args=[start, end]))
        if received == meta.size and received == end:
            got = digest.hexdigest() if digest is not None else self.backend.sha256(object_id)
            if got != want:
                self.delete(object_id, who)
                raise BadRequest(f"the uploaded bytes do not match the declared sha256; object {object_id} was "
                                 "deleted: create it again", code="checksum_mismatch")
            self.r.hset(meta_key(object_id), mapping={"complete": "1", "sha256": want})
        elif received == end and digest is not None:
            self._running[object_id] = (end, digest)
            while len(self._running) > _RUNNING_MAX:
                self._running.pop(next(iter(self._running)))
        if received == end:
            self.r.publish(progress_channel(object_id), received)  # readers following the upload
        now_meta = self.meta(object_id)
        assert now_meta is not None
        return now_meta

    def delete(self, object_id: str, who: Principal) -> None:
        meta = self.get(object_id, who)
        self._drop(meta)
        self.r.delete(meta_key(object_id))
        self.r.publish(progress_channel(object_id), "deleted")

    def follow(self, object_id: str, start: int, end: int, wait: float) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of an object, sent as its upload stores them: each stored chunk
        is read as soon as the uploader's request for it is done; the last byte only once the
        object is complete (checksum matched). Waits at most ``wait`` seconds for each next chunk
        (woken by :func:`progress_channel`, no polling); past that, or if the object is deleted,
        the stream ends short and the reader, missing bytes, asks for the object's state."""
        sub = self.r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(progress_channel(object_id))  # before the first look: no progress is missed
        try:
            pos = start
            while pos < end:
                meta = self.meta(object_id)
                if meta is None or meta.gone:
                    return
                now_end = min(readable_end(meta), end)
                if now_end > pos:
                    yield from self.backend.read(object_id, pos, now_end)
                    pos = now_end
                    continue
                deadline = time.monotonic() + wait
                while sub.get_message(timeout=max(0.0, deadline - time.monotonic())) is None:
                    if time.monotonic() >= deadline:
                        return
        finally:
            sub.close()

    def _drop(self, meta: ObjectMeta) -> None:
        self._release_member(meta.owner, meta.object_id, meta.size)

    def _release_member(self, owner: str, object_id: str, size: int) -> int:
        self.backend.delete(object_id)
        return int(self._release(keys=[owner_key(owner), bytes_key(owner), meta_key(object_id)],
                                 args=[f"{object_id}:{size}", size]))

    def sweep(self, owner: str, now: float | None = None) -> int:
        """Delete the owner's expired objects (bytes, quota, index); returns how many."""
        n = 0
        for raw in zset_members(self.r.zrangebyscore(owner_key(owner), "-inf", now or time.time())):
            object_id, _, size = raw.partition(":")
            n += self._release_member(owner, object_id, int(size))
        return n
