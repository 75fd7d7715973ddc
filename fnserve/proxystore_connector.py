"""A ProxyStore connector for the service's object store, so that ProxyStore proxies carry
fnserve objects (``pip install fnserve[proxystore]``).

    from proxystore.store import Store
    from fnserve.proxystore_connector import ObjectStoreConnector

    store = Store("fnserve-objects", ObjectStoreConnector.for_client(fc))
    fc = Client(proxy_store=store)              # large arguments go as proxies (fnserve.proxies)

A key names the object, its size and SHA-256, and the object's *read token*
(``fnsr1.``: reads that one object until it expires, nothing else). Whoever resolves a proxy
(a worker, the SDK) reads with the key's read token: the owner's token never travels, and the
connector's config holds only the service URL (inside a task, the URL the task was given for
its service is used instead: ``FNSERVE_PUBLIC_URL``). Writing needs a token: the one given (a user's),
else, inside a worker, the running task's data token (so a worker can put a large result into
the same store). Downloads are checked against size and SHA-256 like any object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from fnserve import proxies
from fnserve.data_refs import ObjectRef
from fnserve.errors import FnserveError
from fnserve.object_transfer import ObjectStoreClient


class ObjectStoreKey(NamedTuple):
    object_id: str
    size: int
    sha256: str
    read_token: str


class ObjectStoreConnector:
    """ProxyStore's ``Connector`` protocol over ``/v1/objects`` of one fnserve service."""

    def __init__(self, url: str, token: str | None = None, ttl: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.ttl = ttl

    @classmethod
    def for_client(cls, client: Any, ttl: float | None = None) -> ObjectStoreConnector:
        """The object store of ``client``'s service, writing as ``client``'s user."""
        return cls(client.service_url, client.objects.token, ttl)

    def __repr__(self) -> str:
        return f"ObjectStoreConnector({self.url!r})"

    def _writer(self) -> ObjectStoreClient:
        token = self.token or proxies.task_token(self.url)
        if not token:
            raise FnserveError("this object store connector has no token to write with: build it with "
                               "ObjectStoreConnector.for_client(client), or use it inside a task", code="no_token")
        return ObjectStoreClient(proxies.task_url(self.url), token)

    def _reader(self, key: ObjectStoreKey) -> ObjectStoreClient:
        return ObjectStoreClient(proxies.task_url(self.url), key.read_token)

    # -- the Connector protocol --------------------------------------------------------------------

    def close(self) -> None:
        pass  # objects go at their TTL (or evict); nothing is held open

    def config(self) -> dict[str, Any]:
        return {"url": self.url, "ttl": self.ttl}  # never a token: configs travel inside proxies

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ObjectStoreConnector:
        return cls(config["url"], ttl=config.get("ttl"))

    def put(self, obj: bytes | bytearray | memoryview) -> ObjectStoreKey:
        ref = self._writer().put(obj, strategy="proxystore", ttl=self.ttl, name="proxystore object")
        assert ref.read_token, "the service answered no read token (too old for ProxyStore)"
        return ObjectStoreKey(ref.object_id, ref.size, ref.sha256, ref.read_token)

    def put_batch(self, objs: Sequence[bytes | bytearray | memoryview]) -> list[ObjectStoreKey]:
        return [self.put(obj) for obj in objs]

    def get(self, key: ObjectStoreKey) -> bytearray | None:
        try:
            return self._reader(key).get(ObjectRef(key.object_id, key.size, key.sha256, "proxystore"))
        except FnserveError as exc:
            if exc.code in ("object_not_found", "object_expired", "invalid_token"):
                return None
            raise

    def get_batch(self, keys: Sequence[ObjectStoreKey]) -> list[bytearray | None]:
        return [self.get(key) for key in keys]

    def exists(self, key: ObjectStoreKey) -> bool:
        try:
            return bool(self._reader(key).info(key.object_id).get("complete"))
        except FnserveError as exc:
            if exc.code in ("object_not_found", "object_expired", "invalid_token"):
                return False
            raise

    def evict(self, key: ObjectStoreKey) -> None:
        try:
            self._writer().delete(key.object_id)
        except FnserveError as exc:
            if exc.code not in ("object_not_found", "object_expired", "no_token", "forbidden"):
                raise
