"""ProxyStore proxies through the real stack (`fnserve up`: Redis, gunicorn, forwarder, site
manager, HTEX workers), with each connector a user would pick: fnserve's own object store
(ObjectStoreConnector), a shared filesystem (ProxyStore's FileConnector on a temporary folder)
and Redis (ProxyStore's RedisConnector on a real redis-server started here, without a password:
ProxyStore 1.1's RedisConnector takes none).

Each test sends an argument over the threshold: the worker receives a proxy it has not resolved
yet (resolved lazily when the function touches it), and a result over the threshold comes back
through the same store: ``get_result`` returns the object, ``lazy=True`` the proxy.
"""

from __future__ import annotations

import base64
import uuid

import numpy as np
import pytest
import redis
from stack_support import running_stack

from fnserve._redis_server import start_redis
from fnserve.client import Client
from fnserve.errors import FnserveError

proxystore = pytest.importorskip("proxystore")
from proxystore.connectors.file import FileConnector  # noqa: E402
from proxystore.connectors.redis import RedisConnector  # noqa: E402
from proxystore.proxy import Proxy, extract, is_resolved  # noqa: E402
from proxystore.store import Store  # noqa: E402

from fnserve.proxystore_connector import ObjectStoreConnector  # noqa: E402

MIB = 1024 * 1024

INSPECT = """
def inspect(a, n):
    from proxystore.proxy import Proxy, is_resolved
    import numpy as np

    was_proxy = type(a) is Proxy
    unresolved_at_start = was_proxy and not is_resolved(a)
    return {"was_proxy": was_proxy, "unresolved_at_start": unresolved_at_start, "sum": float(a.sum())}, np.full(n, 3.0)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fnserve-proxystore")) as stack:
        yield stack


def round_trip(fc: Client, stack, store) -> tuple[dict, np.ndarray, str]:
    fid = fc.register_source(INSPECT, "inspect")
    arr = np.random.default_rng(1).random(2 * MIB // 8)  # 2 MiB: over the 1 MiB threshold
    task_id = fc.submit(fid, stack.endpoint_id, [arr, 3 * MIB // 8])
    info, out = fc.get_result(task_id, timeout=120)
    assert info == {"was_proxy": True, "unresolved_at_start": True, "sum": pytest.approx(float(arr.sum()))}
    assert type(out) is np.ndarray and out.shape == (3 * MIB // 8,) and np.all(out == 3.0)
    # The task's arguments and result were small: proxies, not the arrays.
    raw = fc.get_task(task_id)
    assert len(base64.b64decode(raw["result"])) < 64 * 1024
    return info, out, task_id


def test_proxies_through_fnserve_object_store_resolve_lazily_and_results_come_back(stack):
    fc = stack.client()
    store = Store(f"fnserve-objects-{uuid.uuid4().hex[:8]}", ObjectStoreConnector.for_client(fc))
    fc = Client(stack.url, stack.token, proxy_store=store, proxy_threshold=MIB)
    _, _, task_id = round_trip(fc, stack, store)

    lazy = fc.get_result(task_id, lazy=True)
    assert type(lazy) is Proxy and not is_resolved(lazy)
    key = lazy.__proxy_factory__.key
    assert isinstance(key, tuple) and key.read_token.startswith("fnsr1.")
    assert extract(lazy)[1].shape == (3 * MIB // 8,)

    # The key's read token reads that object only: no uploads, no deletes, no other object.
    reader = Client(stack.url, key.read_token).objects
    assert reader.info(key.object_id)["complete"]
    with pytest.raises(FnserveError) as err:
        reader.delete(key.object_id)
    assert err.value.code == "forbidden"
    with pytest.raises(FnserveError) as err:
        reader.create(10, "0" * 64)
    assert err.value.code == "forbidden"
    other = fc.objects.put(b"x" * 100, strategy="file")
    with pytest.raises(FnserveError) as err:
        reader.info(other.object_id)
    assert err.value.code == "forbidden"
    with pytest.raises(FnserveError) as err:
        forged = key.read_token[:-1] + ("A" if key.read_token[-1] != "A" else "B")
        Client(stack.url, forged).objects.info(key.object_id)
    assert err.value.code == "invalid_token"


def test_proxies_through_a_shared_filesystem_with_proxystore_file_connector(stack, tmp_path):
    folder = tmp_path / "proxies"
    store = Store(f"fs-{uuid.uuid4().hex[:8]}", FileConnector(str(folder), clear=False))
    fc = Client(stack.url, stack.token, proxy_store=store, proxy_threshold=MIB)
    round_trip(fc, stack, store)
    # The argument (put by the SDK) and the result (put by the worker) are files there.
    sizes = sorted(p.stat().st_size for p in folder.iterdir())
    assert len(sizes) >= 2 and sizes[-1] > 3 * MIB and sizes[-2] > 2 * MIB


@pytest.fixture
def proxy_redis(tmp_path):
    proc, url = start_redis(tmp_path / "redis", appendonly=False)
    yield redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    proc.terminate()
    proc.wait(timeout=10)


def test_proxies_through_redis_with_proxystore_redis_connector(stack, proxy_redis):
    store = Store(f"redis-{uuid.uuid4().hex[:8]}", RedisConnector("127.0.0.1", proxy_redis))
    fc = Client(stack.url, stack.token, proxy_store=store, proxy_threshold=MIB)
    round_trip(fc, stack, store)
    r = redis.Redis(port=proxy_redis)
    sizes = sorted(r.strlen(k) for k in r.keys("*"))
    r.close()
    assert len(sizes) >= 2 and sizes[-1] > 3 * MIB and sizes[-2] > 2 * MIB


def test_small_arguments_stay_plain_values(stack, tmp_path):
    store = Store(f"fs-small-{uuid.uuid4().hex[:8]}", FileConnector(str(tmp_path / "p"), clear=False))
    fc = Client(stack.url, stack.token, proxy_store=store, proxy_threshold=MIB)
    fid = fc.register_source(INSPECT, "inspect")
    info, out = fc.get_result(fc.submit(fid, stack.endpoint_id, [np.ones(10), 4]), timeout=120)
    assert info["was_proxy"] is False and out.shape == (4,)
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
