"""A tiny in-process cache whose entries expire, for hot-path lookups (tokens, ownership)."""

from __future__ import annotations

import time
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Remembers values for ``ttl`` seconds; at most ``max_entries`` (then starts afresh).

    Thread-safe enough for CPython: each operation is one dict operation. A ``ttl`` of 0
    disables caching.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return hit[1]

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        if ttl <= 0:
            return
        if len(self._data) >= self.max_entries:
            self._data.clear()  # simpler than LRU, and rare: entries live seconds
        self._data[key] = (time.monotonic() + ttl, value)

    def forget(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
