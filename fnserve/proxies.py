"""Pass by reference with ProxyStore: large arguments become proxies, resolved lazily where
they are used; large results come back the same way.

With ``Client(proxy_store=store)`` (any ProxyStore ``Store``: fnserve's own object store through
:class:`fnserve.proxystore_connector.ObjectStoreConnector`, a shared filesystem through
ProxyStore's ``FileConnector``, Redis through its ``RedisConnector``), each top-level argument
whose serialized size passes ``proxy_threshold`` is put into the store and a proxy travels in
its place. The worker unpickles the proxy without fetching anything; the bytes move when the
function first touches it. The task also carries the store's config: a result over the
threshold is put into the same store by the worker and comes back as a proxy, which
``result()`` resolves (``lazy=True`` hands the proxy itself).

Nothing here imports ProxyStore until a proxy is made or met, so plain calls pay nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

# The running task's object store (url, data token), set by the worker around a task: what an
# ObjectStoreConnector rebuilt from a proxy's config writes with inside a task.
_task: tuple[str, str] | None = None


@contextlib.contextmanager
def task_context(url: str | None, token: str | None) -> Iterator[None]:
    global _task
    before, _task = _task, ((url, token) if url and token else None)
    try:
        yield
    finally:
        _task = before


def task_token(url: str) -> str | None:
    """The running task's data token (a worker talks to the one service that sent the task)."""
    return _task[1] if _task is not None else None


def task_url(url: str) -> str:
    """Inside a task, the service's URL as workers reach it (``FNSERVE_PUBLIC_URL``, which may
    differ from the one the client used: a compute node may not reach a laptop's tunnel); else
    ``url``."""
    return _task[0].rstrip("/") if _task is not None else url


def size_hint(obj: Any) -> int | None:
    """The size of ``obj``'s bytes when known without serializing it (buffers, strings)."""
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj)
    nbytes = getattr(type(obj), "nbytes", None)  # numpy arrays (read on the type: never a proxy's target)
    if nbytes is not None and not _is_proxy(obj):
        return int(obj.nbytes)
    return None


def _is_proxy(obj: Any) -> bool:
    if "proxystore" not in sys.modules:
        return False
    from proxystore.proxy import Proxy

    return type(obj) is Proxy


def proxy_large(obj: Any, store: Any, threshold: int) -> Any:
    """``obj``, or a proxy of it from ``store`` when its serialized size passes ``threshold``."""
    if _is_proxy(obj):
        return obj
    hint = size_hint(obj)
    if hint is not None and hint <= threshold:
        return obj
    data = store.serializer(obj)
    if len(data) <= threshold:
        return obj
    return store.proxy_from_key(store.connector.put(data))


def proxy_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], store: Any,
                    threshold: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (tuple(proxy_large(a, store, threshold) for a in args),
            {k: proxy_large(v, store, threshold) for k, v in kwargs.items()})


def result_spec(store: Any, threshold: int) -> dict[str, Any]:
    """What a task carries so that its worker proxies a large result into ``store``."""
    return {"store": store.config().model_dump(), "threshold": threshold}


def proxy_result(value: Any, spec: dict[str, Any]) -> Any:
    from proxystore.store import get_or_create_store
    from proxystore.store.config import StoreConfig

    store = get_or_create_store(StoreConfig(**spec["store"]), register=True)
    return proxy_large(value, store, int(spec["threshold"]))


def resolve(value: Any, lazy: bool = False) -> Any:
    """``value``, its target when it is a proxy (unless ``lazy``)."""
    if lazy or not _is_proxy(value):
        return value
    from proxystore.proxy import extract

    return extract(value)
