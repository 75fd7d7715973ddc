"""The object store's decisions, as pure functions: who may touch an object, whether an upload
fits the owner's quota, whether a chunk is the one expected, how long an object lives, and the
task data tokens that let a worker act for the task's owner.

A *data token* (``fnsd1.<task id>.<signature>``) is minted by the forwarder for each task it
dispatches and travels in the task message. It is an HMAC of the task id under the service's
data key, so the service verifies it without storing anything; it is honoured only while the
task is not finished (plus a short grace for the result upload racing the result), and it acts
as the task's owner: read the owner's objects, create objects counted in the owner's quota.
A worker running someone else's task on the same endpoint holds a token for that task only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from fnserve.errors import (
    BadRequest,
    Conflict,
    FnserveError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
)

DATA_TOKEN_PREFIX = "fnsd1."
# Seconds after its task finished that a data token still works (the worker uploads the result
# before it sends the result message; the two can cross).
TOKEN_GRACE = 60.0
_TERMINAL = ("success", "failed", "cancelled")
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


class Gone(FnserveError):
    code = "object_expired"
    http_status = 410


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user (by token), or a task's worker acting for the task's owner."""

    user_id: str
    task_id: str | None = None
    # For a task: the objects its arguments name (besides those it made itself). For a read
    # token: the one object it reads.
    objects: frozenset[str] = frozenset()
    read_only: bool = False  # an object read token: reads its object, nothing else


@dataclass(frozen=True)
class ObjectMeta:
    object_id: str
    owner: str
    size: int
    sha256: str
    received: int
    complete: bool
    expires: float
    gone: bool = False
    task: str | None = None  # the task whose worker made it
    released: bool = False  # it held a task's arguments and that task finished (it expired then)


# -- access ------------------------------------------------------------------------------------


def check_access(meta: ObjectMeta | None, object_id: str, who: Principal, now: float) -> ObjectMeta:
    """``meta`` if ``who`` may use the object; else the error to answer with.

    Unknown: 404 ``object_not_found``; another user's, or for a task's data token one its task neither names
    in its arguments nor made: 403 ``forbidden``; past its TTL:
    410 ``object_expired``. The owner's check comes first, so another user learns nothing about
    an object's life.
    """
    if meta is None:
        raise NotFound(f"no object {object_id!r} (unknown, or deleted)", code="object_not_found",
                       details={"object_id": object_id})
    if meta.owner != who.user_id:
        raise Forbidden(f"object {object_id!r} belongs to another user",
                        details={"object_id": object_id})
    if who.read_only and object_id not in who.objects:
        raise Forbidden(f"this read token is for another object than {object_id!r}", details={"object_id": object_id})
    if who.task_id is not None and meta.task != who.task_id and object_id not in who.objects:
        # A worker reaches what its task names and what it made, not the owner's other objects.
        raise Forbidden(f"object {object_id!r} is not one task {who.task_id} names or made",
                        details={"object_id": object_id})
    if meta.released and (meta.gone or meta.expires <= now):
        raise Gone(f"object {object_id!r} held the arguments of a task that has finished: they are deleted then "
                   "(submit the task again to run it again)", details={"object_id": object_id, "released": True})
    if meta.gone or meta.expires <= now:
        raise Gone(f"object {object_id!r} expired (its TTL passed) and its bytes were deleted; upload it again",
                   details={"object_id": object_id})
    return meta


def check_readable(meta: ObjectMeta) -> None:
    if not meta.complete:
        raise Conflict(f"object {meta.object_id!r} is still being uploaded ({meta.received} of {meta.size} bytes)",
                       code="object_incomplete", details={"received": meta.received, "size": meta.size})


# A reader may follow an upload in progress (``GET /v1/objects/ID/data?wait=S``): the stream waits
# at most S seconds for each next chunk; past that it ends short and the reader is told.
MAX_FOLLOW_WAIT = 300.0


def follow_wait(value: str | None) -> float | None:
    """The ``wait`` query parameter of a download: None (the object must be complete), else the
    seconds to wait for each next chunk of an upload in progress, at most :data:`MAX_FOLLOW_WAIT`.

    >>> follow_wait(None), follow_wait("2.5"), follow_wait("9999")
    (None, 2.5, 300.0)
    """
    if value is None or value == "":
        return None
    try:
        wait = float(value)
    except ValueError:
        wait = -1.0
    if not wait >= 0:
        raise BadRequest(f"wait={value!r}: give the seconds to wait for each next chunk (0-{MAX_FOLLOW_WAIT:g})",
                         code="invalid_wait")
    return min(wait, MAX_FOLLOW_WAIT)


def readable_end(meta: ObjectMeta) -> int:
    """How many bytes a reader following an upload may read now: every stored byte, but the last
    one only once the object is complete (its checksum matched), so that a stream that ends
    whole has passed the service's check.

    >>> m = ObjectMeta("x", "u", 10, "", 4, False, 0.0)
    >>> readable_end(m), readable_end(ObjectMeta("x", "u", 10, "", 10, False, 0.0))
    (4, 9)
    >>> readable_end(ObjectMeta("x", "u", 10, "s", 10, True, 0.0))
    10
    """
    return meta.size if meta.complete else min(meta.received, meta.size - 1)


def check_object_id(object_id: str) -> None:
    if not _ID.match(object_id):
        raise NotFound(f"no object {object_id!r} (object ids are 32 hex digits)", code="object_not_found")


# -- creation ----------------------------------------------------------------------------------


def check_new_object(size: object, sha256: object, used: int, quota: int, max_object: int) -> tuple[int, str]:
    """The declared size and checksum ("" when left for the last chunk) of a new object, if they
    fit; else the error."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest("size must be the object's length in bytes (an integer >= 0)", code="invalid_request",
                         details={"field": "size"})
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise BadRequest("sha256 must be the object's SHA-256 as 64 lowercase hex digits (or left out, and sent "
                         "with the last chunk as X-Checksum-SHA256)", code="invalid_request", details={"field": "sha256"})
    if size > max_object:
        raise PayloadTooLarge(f"an object of {size} bytes is over this service's limit of {max_object} bytes per "
                              "object (max_object_bytes)", code="object_too_large",
                              details={"size": size, "limit": max_object})
    if used + size > quota:
        raise PayloadTooLarge(f"storing {size} more bytes would pass your object store quota of {quota} bytes "
                              f"({used} in use); delete objects (DELETE /v1/objects/ID) or wait for their TTL",
                              code="object_quota_exceeded", details={"size": size, "used": used, "quota": quota})
    return size, sha256 or ""


def object_ttl(asked: object, default: float, maximum: float) -> float:
    """Seconds a new object lives: ``asked`` if valid, capped at ``maximum``."""
    if asked is None:
        return default
    if not isinstance(asked, (int, float)) or isinstance(asked, bool) or asked <= 0:
        raise BadRequest("ttl must be a positive number of seconds", code="invalid_request", details={"field": "ttl"})
    return float(min(asked, maximum))


# -- uploads -----------------------------------------------------------------------------------


def parse_content_range(header: str | None, length: int | None, size: int) -> tuple[int, int]:
    """``(start, end)`` (end exclusive) of an upload chunk.

    ``Content-Range: bytes START-LAST/TOTAL``; without it the body is the whole object.
    """
    if header is None:
        start, end, total = 0, (size if length is None else length), size
    else:
        m = _RANGE.match(header.strip())
        if not m:
            raise BadRequest("Content-Range must read 'bytes START-LAST/TOTAL'", code="invalid_range")
        start, end, total = int(m[1]), int(m[2]) + 1, int(m[3])
        if end <= start:
            raise BadRequest("Content-Range: LAST must not be before START", code="invalid_range")
    if total != size:
        raise BadRequest(f"Content-Range total {total} is not the object's declared size {size}", code="invalid_range")
    if end > size:
        raise BadRequest(f"chunk ends at byte {end}, past the object's size {size}", code="invalid_range")
    if length is not None and length != end - start:
        raise BadRequest(f"body has {length} bytes but Content-Range names {end - start}", code="invalid_range")
    return start, end


def upload_checksum(declared: str, header: str | None, last: bool) -> str:
    """The SHA-256 an upload's bytes must match: the one declared at creation, else the one the
    chunk carries (``X-Checksum-SHA256``, meant for the last chunk, so that an uploader hashes
    the bytes as it sends them instead of in a pass before). The last chunk needs one of them."""
    if header is not None and not _SHA256.match(header):
        raise BadRequest("X-Checksum-SHA256 must be the object's SHA-256 as 64 lowercase hex digits",
                         code="invalid_request", details={"field": "X-Checksum-SHA256"})
    if declared and header is not None and header != declared:
        raise BadRequest("X-Checksum-SHA256 is not the sha256 declared when the object was created",
                         code="checksum_mismatch")
    want = declared or header or ""
    if last and not want:
        raise BadRequest("this object was created without a sha256: send it with the last chunk "
                         "(header X-Checksum-SHA256)", code="checksum_missing")
    return want


def check_chunk(meta: ObjectMeta, start: int, end: int, max_chunk: int) -> None:
    """A chunk may only continue the upload where it stands (uploads are sequential; resume by
    reading ``received`` from ``GET /v1/objects/ID``)."""
    if meta.complete:
        raise Conflict(f"object {meta.object_id!r} is complete; objects are immutable", code="object_complete")
    if end - start > max_chunk:
        raise PayloadTooLarge(f"a chunk of {end - start} bytes is over the limit of {max_chunk}; send at most "
                              f"{max_chunk} bytes per request", code="chunk_too_large", details={"limit": max_chunk})
    if start != meta.received:
        raise Conflict(f"chunk starts at byte {start} but the object holds {meta.received}: send from there",
                       code="wrong_offset", details={"received": meta.received})


# -- the local-disk backend's pool of deleted objects' files (web_service/object_disk.py) -----


def pick_recycled(pool: list[tuple[str, int]], need: int) -> str:
    """Which pooled file (name, size) a new object of ``need`` bytes takes over: the smallest
    that holds it (the least cut off and freed at the end), else the largest.

    >>> pick_recycled([("a", 10), ("b", 300), ("c", 120)], 100), pick_recycled([("a", 10), ("b", 30)], 100)
    ('c', 'b')
    """
    fits = [p for p in pool if p[1] >= need]
    return min(fits, key=lambda p: p[1])[0] if fits else max(pool, key=lambda p: p[1])[0]


def recycle_room(pool_sizes: list[int], size: int, limit: int) -> bool:
    """Whether a deleted object's file of ``size`` bytes joins the pool (at most ``limit`` bytes).

    >>> recycle_room([100], 50, 200), recycle_room([100, 80], 50, 200), recycle_room([], 0, 200)
    (True, False, False)
    """
    return 0 < size and sum(pool_sizes) + size <= limit


# -- task data tokens --------------------------------------------------------------------------


def _sign(key: bytes, task_id: str) -> str:
    mac = hmac.new(key, (DATA_TOKEN_PREFIX + task_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def mint_data_token(key: bytes, task_id: str) -> str:
    return f"{DATA_TOKEN_PREFIX}{task_id}.{_sign(key, task_id)}"


def data_token_task(key: bytes, token: str) -> str | None:
    """The task id a data token was minted for, or None if it is not one of ours."""
    if not token.startswith(DATA_TOKEN_PREFIX):
        return None
    task_id, _, sig = token[len(DATA_TOKEN_PREFIX):].partition(".")
    if not task_id or not hmac.compare_digest(sig, _sign(key, task_id)):
        return None
    return task_id


def data_token_live(state: str | None, finished_at: float | None, now: float, grace: float = TOKEN_GRACE) -> bool:
    """A task's data token works while the task runs, and ``grace`` seconds after it finished."""
    if state is None:
        return False
    if state not in _TERMINAL:
        return True
    return finished_at is not None and now - finished_at <= grace


def finishing_upload(meta: ObjectMeta | None, task_id: str) -> bool:
    """Whether a task's data token, past its time, may still act on this object: one its task made
    whose upload is not complete (a worker sends a large result's reference before the upload
    ends, so the upload may outlive the task by more than the grace).

    >>> finishing_upload(ObjectMeta("x", "u", 10, "", 4, False, 0.0, task="t"), "t")
    True
    >>> finishing_upload(ObjectMeta("x", "u", 10, "s", 10, True, 0.0, task="t"), "t")
    False
    """
    return meta is not None and meta.task == task_id and not meta.complete and not meta.gone


# -- object read tokens ------------------------------------------------------------------------
#
# ``fnsr1.<object id>.<signature>``: an HMAC of the object id under the data key, handed to the
# object's creator. It reads that one object (GET) until the object expires, and does nothing
# else: like an S3 presigned URL. A ProxyStore proxy carries one, so that whoever resolves the
# proxy (a worker, the SDK) reads the bytes without holding the owner's token.

READ_TOKEN_PREFIX = "fnsr1."


def mint_read_token(key: bytes, object_id: str) -> str:
    mac = hmac.new(key, (READ_TOKEN_PREFIX + object_id).encode(), hashlib.sha256).digest()
    return f"{READ_TOKEN_PREFIX}{object_id}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def read_token_object(key: bytes, token: str) -> str | None:
    """The object id a read token was minted for, or None if it is not one of ours."""
    if not key or not token.startswith(READ_TOKEN_PREFIX):
        return None
    object_id = token[len(READ_TOKEN_PREFIX):].partition(".")[0]
    return object_id if _ID.match(object_id) and hmac.compare_digest(token, mint_read_token(key, object_id)) else None


def read_principal(owner: str, object_id: str) -> Principal:
    return Principal(owner, objects=frozenset({object_id}), read_only=True)


def check_writer(who: Principal) -> None:
    """Creating, uploading and deleting need a user's or a task's token, not a read token."""
    if who.read_only:
        raise Forbidden("a read token only reads its object (GET); create, upload and delete need your token",
                        code="forbidden")


_GET_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeNotSatisfiable(FnserveError):
    code = "range_not_satisfiable"
    http_status = 416


def parse_range(header: str | None, size: int) -> tuple[int, int]:
    """``(start, end)`` (end exclusive) of a download: the whole object, or one ``Range:
    bytes=START-[LAST]`` (how a broken download resumes). Several ranges are not served."""
    if not header:
        return 0, size
    m = _GET_RANGE.match(header.strip())
    if not m:
        raise RangeNotSatisfiable("Range must read 'bytes=START-' or 'bytes=START-LAST' (one range)")
    start = int(m[1])
    end = min(int(m[2]) + 1, size) if m[2] else size
    if start >= size or end <= start:
        if start == 0 and size == 0:
            return 0, 0
        raise RangeNotSatisfiable(f"range starts at {start}, the object has {size} bytes", details={"size": size})
    return start, end
