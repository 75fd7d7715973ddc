"""Helpers shared by the Executor tests (test_executor.py, test_executor_parity.py): an SDK
client whose real HTTP transport counts the requests it makes."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from fnserve.client import Client
from fnserve.transport import Transport


class CountingTransport(Transport):
    """The real HTTP transport, counting the requests it makes by (method, route)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()

    def request(self, method, path, *args, **kwargs):
        # Task ids are the last path segment of per-task routes: group them as "{id}".
        route = "/v1/tasks/{id}" if path.startswith("/v1/tasks/") and path.count("/") == 3 and not path.endswith(("/results", "/completions")) else path
        with self._count_lock:
            self.counts[(method, route)] += 1
        return super().request(method, path, *args, **kwargs)


def counting_client(stack: Any) -> Client:
    """A client of ``stack`` (a running stack) whose transport is a :class:`CountingTransport`."""
    fc = Client(stack.url, stack.token)
    fc.transport = CountingTransport(stack.url, stack.token, timeout=60)
    return fc
