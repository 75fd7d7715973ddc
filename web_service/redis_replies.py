"""Redis replies as the types the service reads them as.

redis-py types each reply for both of its modes at once (``bytes | str``, streams as a union of
nested shapes). The service's clients are bytes clients (no ``decode_responses``): these turn a
reply into text, or name the stream shapes, so that code reading Redis type-checks without a
cast at every call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

# One stream entry (id, fields) and one stream's part of an XREAD / XREADGROUP answer.
StreamEntry = tuple[bytes, dict[bytes, bytes]]
StreamRead = tuple[bytes, list[StreamEntry]]


def text(value: bytes | str) -> str:
    """A reply element as text (UTF-8)."""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: Iterable[bytes | str]) -> list[str]:
    # text() inlined: this runs per element of id lists on the forwarder's paths.
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def text_map(mapping: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply as text keys and values."""
    return {text(k): text(v) for k, v in mapping.items()}


def stream_entries(reply: Any) -> list[StreamEntry]:
    """An XRANGE / XREVRANGE reply (or the entries of one stream in an XREAD answer)."""
    return cast(list[StreamEntry], reply or [])


def stream_reads(reply: Any) -> list[StreamRead]:
    """An XREAD / XREADGROUP answer: one (stream, entries) pair per stream that had entries."""
    return cast(list[StreamRead], reply or [])


def zset_members(reply: Any) -> list[str]:
    """A ZRANGE-family reply asked without scores: its members as text."""
    return texts(reply)


def popped_texts(reply: Any) -> list[str]:
    """An LPOP / RPOP reply asked with a count: the popped elements as text (none: empty)."""
    return texts(reply) if reply else []


def optional_blobs(reply: Any) -> list[bytes | None]:
    """An MGET / HMGET reply of binary values (function bodies, task fields) as the bytes
    client returns them, None where the key or field is missing: typed, not copied."""
    return cast(list[bytes | None], reply)


def optional_texts(values: Iterable[bytes | str | None]) -> list[str | None]:
    """An HMGET / MGET reply as text, None where the field or key is missing."""
    return [None if v is None else text(v) for v in values]
