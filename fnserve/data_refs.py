"""Large arguments and results by reference: the decisions and the reference format.

A serialized payload (a task's arguments, or a result) above a threshold does not travel inside
the task message, Redis or a REST body. It is uploaded to the service's object store and what
travels instead is a small *reference buffer*, a fnserve buffer whose strategy is ``ref``::

    fns1 ref 3.11\\n{"object_id": "...", "size": 104857721, "sha256": "...", "strategy": "dill-data"}

``strategy`` names the strategy of the buffer the object holds, so that a serializer policy is
checked from the reference alone (and checked again on the real header after download). Whoever
reads the payload (the worker for arguments, the SDK for results) downloads the object,
verifies its size and checksum, and deserializes it as if it had come inline.

Everything here is pure: no I/O. Transfers are in :mod:`fnserve.object_transfer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fnserve.errors import SerializationError

MIB = 1024 * 1024
REF = "ref"
# Payloads above this many bytes go by reference when an object store is reachable (SDK default,
# and the worker's for results). Small enough that REST bodies and Redis entries stay small,
# large enough that a small call never pays an upload.
DEFAULT_REF_THRESHOLD = 4 * MIB
# Bytes per upload request: under the service's 64 MiB request limit, large enough that the
# per-request cost (about 1-2 ms) is small next to the copy.
DEFAULT_CHUNK_BYTES = 16 * MIB


@dataclass(frozen=True)
class ObjectRef:
    """Where a payload's bytes are: an object in the service's object store."""

    object_id: str
    size: int
    sha256: str
    strategy: str  # the strategy of the stored buffer (its own header says it again)
    # Reads this object only (GET), for whoever holds it, until it expires: set on the ref
    # ``ObjectStoreClient.put`` returns, never written into a reference buffer.
    read_token: str | None = None

    def to_buffer(self, python: str) -> bytes:
        body = json.dumps({"object_id": self.object_id, "size": self.size, "sha256": self.sha256,
                           "strategy": self.strategy}, separators=(",", ":"))
        return f"fns1 {REF} {python}\n{body}".encode()


def read_ref(buf: bytes | bytearray | memoryview) -> ObjectRef | None:
    """The reference in ``buf`` if it is a reference buffer, else ``None`` (no I/O, no loading)."""
    head = bytes(buf[:64])
    end = head.find(b"\n")
    if end < 0 or head[:end].split(b" ")[1:2] != [REF.encode()]:
        return None
    try:
        d = json.loads(bytes(buf[end + 1 :]))
        ref = ObjectRef(str(d["object_id"]), int(d["size"]), str(d["sha256"]), str(d["strategy"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise SerializationError(f"reference buffer is not valid: {exc}", code="corrupt_buffer") from None
    if ref.size < 0 or not ref.object_id:
        raise SerializationError("reference buffer is not valid: bad size or object id", code="corrupt_buffer")
    return ref


def by_reference(size: int, threshold: int | None) -> bool:
    """Whether a payload of ``size`` bytes goes by reference (``threshold`` None: never)."""
    return threshold is not None and size > threshold


def result_route(size: int, threshold: int | None, inline_limit: int, store_reachable: bool) -> str:
    """How a worker sends back a serialized result of ``size`` bytes.

    ``"inline"`` inside the result message; ``"reference"`` uploaded to the object store (only
    when one is reachable); ``"too_large"`` when neither fits (the task fails with
    ``result_too_large``, which names references as the way out).

    >>> result_route(100, 4, 10, True), result_route(8, 4, 10, False), result_route(20, 4, 10, False)
    ('reference', 'inline', 'too_large')
    """
    if store_reachable and by_reference(size, threshold):
        return "reference"
    return "inline" if size <= inline_limit else "too_large"


def chunks(size: int, chunk_bytes: int, start: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges (end exclusive) covering ``[start, size)`` in ``chunk_bytes``.

    >>> chunks(10, 4), chunks(0, 4), chunks(10, 4, start=8)
    ([(0, 4), (4, 8), (8, 10)], [], [(8, 10)])
    """
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    return [(a, min(a + chunk_bytes, size)) for a in range(start, size, chunk_bytes)]
