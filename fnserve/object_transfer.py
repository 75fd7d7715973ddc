"""Moving bytes to and from the service's object store (``/v1/objects``), in bounded chunks.

Used by the SDK (arguments up, results down) and by workers (arguments down, results up, with
the task's data token). Uploads are resumable: each chunk says where it starts
(``Content-Range``); after a broken connection the upload asks the service how much it holds
and goes on from there. Downloads are checked against the reference's size and SHA-256.

    store = ObjectStoreClient("http://127.0.0.1:8780", token)
    ref = store.put(buf, strategy="dill-data")      # an ObjectRef
    assert store.get(ref) == buf
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

from fnserve.data_refs import DEFAULT_CHUNK_BYTES, ObjectRef
from fnserve.errors import FnserveError, ServiceUnavailable, error_from_dict
from fnserve.oob_frames import Part

# Times one chunk is tried (a connection broken mid-chunk is resumed from what the service holds).
CHUNK_ATTEMPTS = 3
_READ_BYTES = 1024 * 1024
# A download is hashed in a thread in steps of this many bytes, behind the receiving.
_HASH_BATCH = 8 * _READ_BYTES
# Seconds a reader following an upload in progress waits for each next chunk before it gives up.
FOLLOW_WAIT = 60.0


def _views(data: bytes | bytearray | memoryview | Sequence[Part]) -> list[memoryview]:
    parts: Sequence[Any] = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    return [memoryview(p).cast("B") for p in parts]


def _slice(parts: list[memoryview], start: int, end: int) -> list[memoryview]:
    """The views covering bytes ``[start, end)`` of the concatenation of ``parts``."""
    out, at = [], 0
    for v in parts:
        a, b = max(start - at, 0), min(end - at, v.nbytes)
        if a < b:
            out.append(v[a:b])
        at += v.nbytes
        if at >= end:
            break
    return out


def _raise_error(status: int, data: bytes) -> None:
    try:
        err = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": f"HTTP {status} from the object store"}
    raise error_from_dict(err, status)


def _feed(digest: Any, views: list[memoryview]) -> None:
    for v in views:
        digest.update(v)


class ObjectStoreClient:
    """The object store of one service, as one caller (a user token or a task's data token)."""

    def __init__(self, base_url: str, token: str, timeout: float = 300.0,
                 pool: urllib3.PoolManager | None = None, follow_wait: float = FOLLOW_WAIT) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.follow_wait = follow_wait
        self.pool = pool or urllib3.PoolManager(num_pools=2, maxsize=4, retries=False)

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              preload: bool = True) -> urllib3.BaseHTTPResponse:
        h = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        try:
            resp = self.pool.request(method, self.base_url + path, body=body, headers=h, timeout=self.timeout,
                                     preload_content=preload)
        except urllib3.exceptions.HTTPError as exc:
            raise ServiceUnavailable(f"cannot reach the object store at {self.base_url} ({type(exc).__name__})",
                                     code="service_unreachable") from exc
        if resp.status >= 400:
            _raise_error(resp.status, resp.data if preload else resp.read())
        return resp

    def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        resp = self._call(method, path, data, headers)
        return json.loads(resp.data) if resp.data else {}

    # -- API -----------------------------------------------------------------------------------

    def create(self, size: int, sha256: str | None, ttl: float | None = None, name: str | None = None) -> dict[str, Any]:
        """A new object; ``sha256`` None: the upload sends it with its last chunk."""
        body: dict[str, Any] = {"size": size}
        if sha256 is not None:
            body["sha256"] = sha256
        if ttl is not None:
            body["ttl"] = ttl
        if name is not None:
            body["name"] = name
        return self._json("POST", "/v1/objects", body)

    def info(self, object_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/objects/{object_id}")

    def delete(self, object_id: str) -> None:
        self._json("DELETE", f"/v1/objects/{object_id}")

    def put(self, data: bytes | bytearray | memoryview | Sequence[Part], strategy: str, ttl: float | None = None,
            name: str | None = None) -> ObjectRef:
        """Upload ``data`` (a buffer, or parts whose concatenation is the object: see
        :func:`fnserve.serialize.serialize_data_parts`) as a new object; returns its reference.
        Nothing is copied whole: chunks are sent as views of the parts. The SHA-256 is computed as
        the chunks go (in a thread, beside the sending) and sent with the last one, which the
        service checks against the bytes it stored."""
        parts = _views(data)
        size = sum(v.nbytes for v in parts)
        digest = hashlib.sha256()
        meta = self.create(size, None, ttl, name)
        self.upload(meta["object_id"], parts, int(meta.get("chunk_bytes") or DEFAULT_CHUNK_BYTES), digest=digest)
        return ObjectRef(meta["object_id"], size, digest.hexdigest(), strategy, meta.get("read_token"))

    def start_put(self, data: bytes | bytearray | memoryview | Sequence[Part], strategy: str, ttl: float | None = None,
                  name: str | None = None) -> tuple[ObjectRef, Future[None]]:
        """Create an object for ``data`` and upload it in a thread; returns its reference at once
        (with ``sha256`` empty: a reader follows the upload and checks the bytes against the
        checksum the service verified at the end) and the upload's future. ``data`` must not
        change until the future is done. An upload that fails deletes its object (if it still
        can), so that a reader following it is told at once (``object_not_found``)."""
        parts = _views(data)
        size = sum(v.nbytes for v in parts)
        meta = self.create(size, None, ttl, name)
        chunk = int(meta.get("chunk_bytes") or DEFAULT_CHUNK_BYTES)

        def upload() -> None:
            try:
                self.upload(meta["object_id"], parts, chunk, digest=hashlib.sha256())
            except BaseException:
                try:
                    self.delete(meta["object_id"])
                except FnserveError:
                    pass
                raise

        runner = ThreadPoolExecutor(1, thread_name_prefix="fnserve-upload")
        done = runner.submit(upload)
        runner.shutdown(wait=False)
        return ObjectRef(meta["object_id"], size, "", strategy, meta.get("read_token")), done

    def put_file(self, path: str | os.PathLike[str], name: str | None = None, ttl: float | None = None) -> ObjectRef:
        """Upload a file as a new object, reading it a chunk at a time (never whole)."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while piece := f.read(_READ_BYTES * 4):
                digest.update(piece)
            size = f.tell()
            meta = self.create(size, digest.hexdigest(), ttl, name)
            chunk = int(meta.get("chunk_bytes") or DEFAULT_CHUNK_BYTES)
            f.seek(0)
            offset = 0
            while True:
                part = f.read(chunk)
                answer = self._put_chunk(meta["object_id"], part, offset, size)
                offset = int(answer["received"])
                if answer.get("complete") or offset >= size:
                    break
                f.seek(offset)
        return ObjectRef(meta["object_id"], size, digest.hexdigest(), "file")

    def get_to_file(self, ref: ObjectRef, path: str | os.PathLike[str]) -> None:
        """Download an object into ``path`` (1 MiB at a time), checked against size and SHA-256."""
        digest = hashlib.sha256()
        got = 0
        resp = self._call("GET", f"/v1/objects/{ref.object_id}/data", preload=False)
        tmp = f"{path}.part"
        try:
            with open(tmp, "wb") as f:
                for piece in resp.stream(_READ_BYTES):
                    f.write(piece)
                    digest.update(piece)
                    got += len(piece)
        finally:
            resp.release_conn()
        if got != ref.size or digest.hexdigest() != ref.sha256:
            os.unlink(tmp)
            raise FnserveError(f"object {ref.object_id} does not match its reference (size {got} of {ref.size}, "
                               "or SHA-256 differs)", code="object_corrupt")
        os.replace(tmp, path)

    def upload(self, object_id: str, data: memoryview | Sequence[Part], chunk_bytes: int, start: int = 0,
               digest: Any = None) -> None:
        """Send ``data[start:]`` to an object created for it, resuming after broken connections.

        ``digest`` (a fresh ``hashlib.sha256()``, with ``start`` 0): fed every byte while the chunks
        are sent (hashlib lets go of the GIL, so hashing a chunk overlaps sending it) and sent with
        the last chunk (``X-Checksum-SHA256``), for an object created without a checksum."""
        parts = _views(data)
        size = sum(v.nbytes for v in parts)
        offset, failures, hashed = start, 0, start
        hasher = ThreadPoolExecutor(1, thread_name_prefix="fnserve-sha256") if digest is not None else None
        try:
            while True:
                end = min(offset + chunk_bytes, size)
                pending = None
                if hasher is not None and end > hashed:
                    pending = hasher.submit(_feed, digest, _slice(parts, hashed, end))
                    hashed = end
                checksum = None
                if hasher is not None and end == size:  # the last chunk carries the checksum
                    if pending is not None:
                        pending.result()
                    checksum = digest.hexdigest()
                try:
                    answer = self._put_chunk(object_id, _slice(parts, offset, end), offset, size, checksum)
                except ServiceUnavailable:
                    failures += 1
                    if failures >= CHUNK_ATTEMPTS:
                        raise
                    offset = int(self.info(object_id)["received"])
                    continue
                finally:
                    if pending is not None:
                        pending.result()
                offset = int(answer["received"])
                if answer.get("complete") or offset >= size:
                    return
        finally:
            if hasher is not None:
                hasher.shutdown()

    def _put_chunk(self, object_id: str, part: bytes | list[memoryview], start: int, size: int,
                   checksum: str | None = None) -> dict[str, Any]:
        # Views go to the socket as they are (a Content-Length keeps urllib3 from chunked encoding).
        n = len(part) if isinstance(part, bytes) else sum(v.nbytes for v in part)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(n)}
        if size:
            headers["Content-Range"] = f"bytes {start}-{start + n - 1}/{size}"
        if checksum is not None:
            headers["X-Checksum-SHA256"] = checksum
        resp = self._call("PUT", f"/v1/objects/{object_id}/data", body=part or b"", headers=headers)
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def get(self, ref: ObjectRef) -> bytearray:
        """The bytes of ``ref``'s object, checked against its size and SHA-256 (hashed in a thread,
        a few MiB behind the receiving, so that the check overlaps the transfer).

        A reference without a SHA-256 (:meth:`start_put`'s) names an object that may still be
        being uploaded: the download follows the upload, chunk by chunk as the service stores
        them (waiting at most ``follow_wait`` s for each), and the bytes are checked against the
        checksum the service verified when the upload completed. An upload that stops (its
        uploader died, or gave up) raises ``upload_stalled``."""
        buf = bytearray(ref.size)
        view = memoryview(buf)
        digest = hashlib.sha256()
        got = hashed = 0
        with ThreadPoolExecutor(1, thread_name_prefix="fnserve-sha256") as hasher:
            pending = None
            for got in self._receive(ref, view):
                if got - hashed >= _HASH_BATCH:
                    if pending is not None:
                        pending.result()
                    pending = hasher.submit(digest.update, view[hashed:got])
                    hashed = got
            if pending is not None:
                pending.result()
        digest.update(view[hashed:got])
        expected = ref.sha256 or (str(self.info(ref.object_id)["sha256"]) if got == ref.size else "")
        if got != ref.size or digest.hexdigest() != expected:
            raise FnserveError(f"object {ref.object_id} does not match its reference (size {got} of {ref.size}, "
                               "or SHA-256 differs)", code="object_corrupt")
        return buf

    def _receive(self, ref: ObjectRef, view: memoryview) -> Iterator[int]:
        """Download ``ref``'s bytes into ``view``, resuming broken transfers; yields how many are in.

        Read with the standard library's ``HTTPResponse.readinto``: the socket's bytes land in
        ``view`` itself (urllib3's reads return new ``bytes`` that would be copied once more)."""
        got = 0
        yield got
        follow = "" if ref.sha256 else f"?wait={quote(repr(self.follow_wait))}"
        for attempt in range(CHUNK_ATTEMPTS):
            headers = {"Range": f"bytes={got}-"} if got else {}
            conn, resp = self._open_download(f"/v1/objects/{ref.object_id}/data{follow}", headers)
            try:
                if resp.length is not None and got + resp.length > ref.size:
                    raise FnserveError(f"object {ref.object_id} holds more than the {ref.size} bytes its "
                                       "reference names", code="object_corrupt")
                while got < ref.size:
                    n = resp.readinto(view[got:min(got + _READ_BYTES, ref.size)])
                    if not n:
                        break
                    got += n
                    yield got
                if got == ref.size:
                    return
                raise http.client.IncompleteRead(b"", ref.size - got)
            except (http.client.HTTPException, OSError):
                if follow:
                    self._check_progress(ref, got)
                if attempt + 1 == CHUNK_ATTEMPTS:
                    raise ServiceUnavailable(f"download of object {ref.object_id} broke off at byte {got}",
                                             code="service_unreachable") from None
            finally:
                conn.close()

    def _open_download(self, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPConnection,
                                                                          http.client.HTTPResponse]:
        url = urlsplit(self.base_url)
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname or "localhost", url.port, timeout=self.timeout)
        try:
            conn.request("GET", url.path + path, headers={"Authorization": f"Bearer {self.token}", **headers})
            resp = conn.getresponse()
            if resp.status >= 400:
                _raise_error(resp.status, resp.read())
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ServiceUnavailable(f"cannot reach the object store at {self.base_url} ({type(exc).__name__})",
                                     code="service_unreachable") from exc
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def _check_progress(self, ref: ObjectRef, got: int) -> None:
        """After a followed download ended short: go on if the upload moved past ``got``, else
        say that it stopped (the service ends a followed stream after ``follow_wait`` s without
        a new chunk, or when the object is deleted)."""
        info = self.info(ref.object_id)  # object_not_found if the upload failed its checksum
        if not info.get("complete") and int(info.get("received", 0)) <= got:
            raise FnserveError(
                f"the upload of object {ref.object_id} stopped at byte {info.get('received')} of {ref.size}: no new "
                f"chunk for {self.follow_wait:g} s (its uploader stopped, or died); upload it again",
                code="upload_stalled", details={"object_id": ref.object_id, "received": info.get("received")})
