"""Run a blocking call (a disk write) in a native thread, so that the web worker goes on with the
next piece of a request meanwhile: under gevent (whose monkey-patching turns ``threading`` into
greenlets) in the hub's native thread pool, else in a small thread pool.

    wait = in_native_thread(os.pwrite, fd, data, offset)
    ...                 # read the next piece
    wait()              # the call's result (or its exception)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_pool: ThreadPoolExecutor | None = None


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def in_native_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Start ``fn(*args)`` in a native thread; returns a function that waits for its result."""
    global _pool
    if _gevent_patched():
        import gevent

        result = gevent.get_hub().threadpool.spawn(fn, *args)
        return result.get  # type: ignore[no-any-return]
    if _pool is None:
        _pool = ThreadPoolExecutor(4, thread_name_prefix="fnserve-io")
    return _pool.submit(fn, *args).result
