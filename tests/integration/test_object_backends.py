"""The object store's contract on each backend: local disk, and S3 through boto3 against moto's
server mode (a stand-in: a local server speaking the S3 protocol over HTTP, since no
S3-compatible server installs here; the backend's code path is the same boto3 calls as on AWS).
Real Redis for the metadata.
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import time

import pytest

from fnserve.errors import FnserveError
from web_service.object_rules import Gone, Principal
from web_service.object_store import LocalDiskBackend, ObjectStore

MIB = 1024 * 1024
ALICE, MALLORY = Principal("alice"), Principal("mallory")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_s3():
    """moto's S3 server (stand-in for an S3-compatible service) as its own process."""
    import boto3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.list_buckets()
            break
        except Exception:  # noqa: BLE001 - not up yet (connection refused, or answering 5xx)
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.1)
    s3.create_bucket(Bucket="fnserve-test")
    yield s3
    proc.kill()
    proc.wait()


@pytest.fixture(params=["disk", "disk-recycling", "s3"])
def store(request, redis_client, tmp_path):
    if request.param.startswith("disk"):
        backend = LocalDiskBackend(tmp_path / "objects", recycle_bytes=64 * MIB if request.param == "disk-recycling" else 0)
    else:
        from web_service.object_backends_s3 import S3Backend

        backend = S3Backend("fnserve-test", client=request.getfixturevalue("moto_s3"), prefix=f"{tmp_path.name}/")
    return ObjectStore(redis_client, backend, quota_bytes=8 * MIB, max_object_bytes=6 * MIB, chunk_bytes=MIB)


def _upload(store, who, data, chunk):
    meta = store.create(who, len(data), hashlib.sha256(data).hexdigest(), ttl=3600)
    for start in range(0, len(data), chunk):
        end = min(start + chunk, len(data))
        meta = store.write_chunk(meta.object_id, who, start, end, io.BytesIO(data[start:end]))
    return meta


def test_chunks_in_reads_back_whole_and_by_range(store):
    data = bytes(range(256)) * (3 * MIB // 256 + 7)
    meta = _upload(store, ALICE, data, 700_000)  # chunks not aligned to anything
    assert meta.complete and meta.received == len(data)
    assert b"".join(store.backend.read(meta.object_id)) == data
    assert b"".join(store.backend.read(meta.object_id, 699_990, 1_400_010)) == data[699_990:1_400_010]
    assert store.used("alice") == len(data)


def test_a_retried_chunk_replaces_nothing_and_a_skipped_one_is_refused(store):
    data = b"x" * 300_000
    meta = store.create(ALICE, len(data), hashlib.sha256(data).hexdigest(), ttl=3600)
    store.write_chunk(meta.object_id, ALICE, 0, 100_000, io.BytesIO(data[:100_000]))
    with pytest.raises(FnserveError) as err:
        store.write_chunk(meta.object_id, ALICE, 0, 100_000, io.BytesIO(data[:100_000]))
    assert err.value.code == "wrong_offset"
    with pytest.raises(FnserveError) as err:
        store.write_chunk(meta.object_id, ALICE, 100_000, 200_000, io.BytesIO(b"short"))
    assert err.value.code == "incomplete_body"
    store.write_chunk(meta.object_id, ALICE, 100_000, 300_000, io.BytesIO(data[100_000:]))
    assert b"".join(store.backend.read(meta.object_id)) == data


def test_a_wrong_checksum_deletes_the_object_and_frees_the_quota(store):
    meta = store.create(ALICE, 10, hashlib.sha256(b"0123456789").hexdigest(), ttl=3600)
    with pytest.raises(FnserveError) as err:
        store.write_chunk(meta.object_id, ALICE, 0, 10, io.BytesIO(b"9876543210"))
    assert err.value.code == "checksum_mismatch"
    assert store.meta(meta.object_id) is None and store.used("alice") == 0
    assert not store.backend.exists(meta.object_id)


def test_quota_holds_across_objects_and_deleting_frees_it(store):
    a = _upload(store, ALICE, b"a" * 5 * MIB, MIB)
    with pytest.raises(FnserveError) as err:
        store.create(ALICE, 4 * MIB, "0" * 64, ttl=3600)
    assert err.value.code == "object_quota_exceeded"
    assert store.create(MALLORY, 4 * MIB, "0" * 64, ttl=3600).size == 4 * MIB  # quotas are per user
    store.delete(a.object_id, ALICE)
    assert store.used("alice") == 0
    assert store.create(ALICE, 4 * MIB, "0" * 64, ttl=3600).size == 4 * MIB


def test_only_the_owner_touches_an_object(store):
    meta = _upload(store, ALICE, b"private", 4)
    for attempt in (lambda: store.get(meta.object_id, MALLORY), lambda: store.delete(meta.object_id, MALLORY),
                    lambda: store.write_chunk(meta.object_id, MALLORY, 7, 7, io.BytesIO(b""))):
        with pytest.raises(FnserveError) as err:
            attempt()
        assert err.value.code == "forbidden"
    # A worker of alice's task whose arguments name it.
    assert store.get(meta.object_id, Principal("alice", task_id="t1", objects=frozenset({meta.object_id}))).complete


def test_expired_objects_are_swept_and_say_so(store):
    meta = _upload(store, ALICE, b"old" * 1000, 1000)
    assert store.sweep("alice", now=time.time() + 7200) == 1
    assert store.used("alice") == 0
    assert not store.backend.exists(meta.object_id)
    with pytest.raises(Gone):
        store.get(meta.object_id, ALICE)


@pytest.fixture
def recycling(redis_client, tmp_path):
    backend = LocalDiskBackend(tmp_path / "objects", recycle_bytes=5 * MIB)
    return ObjectStore(redis_client, backend, quota_bytes=64 * MIB, max_object_bytes=6 * MIB, chunk_bytes=MIB)


def test_a_deleted_objects_file_is_overwritten_by_the_next_upload_and_no_old_byte_shows(recycling):
    """The disk backend keeps deleted objects' files (up to its pool's bytes) and the next upload
    takes one over: its page cache is overwritten instead of new pages filled. The new object
    reads back exactly its own bytes, while it is uploaded and after (never the old tail)."""
    store, backend = recycling, recycling.backend
    old = _upload(store, ALICE, b"\xaa" * (3 * MIB), MIB)
    inode = backend.path(old.object_id).stat().st_ino
    store.delete(old.object_id, ALICE)
    assert [p.stat().st_ino for p in backend.pool.iterdir()] == [inode]

    data = bytes(range(256)) * (MIB // 256) + b"tail"  # 1 MiB + 4 bytes, in two chunks
    meta = store.create(MALLORY, len(data), hashlib.sha256(data).hexdigest(), ttl=3600)
    store.write_chunk(meta.object_id, MALLORY, 0, MIB, io.BytesIO(data[:MIB]))
    path = backend.path(meta.object_id)
    assert path.stat().st_ino == inode and not list(backend.pool.iterdir())  # taken over
    assert b"".join(store.follow(meta.object_id, 0, len(data), wait=0)) == data[:MIB]  # stops at what was written
    store.write_chunk(meta.object_id, MALLORY, MIB, len(data), io.BytesIO(data[MIB:]))
    assert path.stat().st_size == len(data) and b"".join(backend.read(meta.object_id, 0, len(data))) == data
    assert store.get(meta.object_id, MALLORY).sha256 == hashlib.sha256(data).hexdigest()

    # Over the pool's bytes, or while a reader has the file open, a deleted file is deleted outright.
    big = _upload(store, ALICE, b"b" * (6 * MIB), MIB)
    store.delete(big.object_id, ALICE)
    reading = backend.read(meta.object_id, 0, len(data))
    first = next(reading)
    store.delete(meta.object_id, MALLORY)
    assert not list(backend.pool.iterdir()) and not path.exists()
    assert first + b"".join(reading) == data  # the reader keeps the bytes it started on
