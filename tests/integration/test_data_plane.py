"""Large data by reference, end to end on the embedded stack (`fnserve up`: real Redis, gunicorn,
forwarder, site manager, HTEX workers): a 100 MiB numpy array goes in and a 100 MiB array comes
back through the object store, never inside Redis or a REST body; objects are the owner's alone
(another token, another OS account); the errors a user meets are clear.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from stack_support import running_stack

from fnserve._redis_server import redis_auth
from fnserve.client import Client
from fnserve.data_refs import read_ref
from fnserve.errors import FnserveError

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fnserve-data")) as stack:
        yield stack


@pytest.fixture(scope="module")
def store_redis(stack):
    r = redis.Redis.from_url(redis_auth(stack.home / "service").socket_url())
    yield r
    r.close()


@pytest.fixture(scope="module")
def other_token(stack):
    return stack.cli("service", "user", "add", "mallory").stdout.strip().splitlines()[-1]


DOUBLE = """
def double(a):
    import os

    return a * 2, os.getpid()
"""


def register_double(fc):
    return fc.register_source(DOUBLE, "double")


def test_a_100_mib_array_goes_in_and_a_100_mib_result_comes_back_by_reference(stack, store_redis):
    fc = stack.client()
    fid = register_double(fc)
    arr = np.random.default_rng(0).random(100 * MIB // 8)
    task_id = fc.submit(fid, stack.endpoint_id, [arr])
    task = fc.wait([task_id], timeout=180)[0]

    # Neither the arguments nor the result sat in Redis or travelled in a REST body.
    assert int(store_redis.hget(f"fns:task:{task_id}", "arg_bytes")) < 1024
    result_buf = base64.b64decode(task["result"])
    assert len(result_buf) < 1024
    ref = read_ref(result_buf)
    assert ref is not None and ref.size > 100 * MIB
    # The worker sent the reference as it started the upload (the SDK's download followed it):
    # no checksum in it, the object's own was checked by the service and by the SDK's download.
    stored = fc.objects.get(ref)
    info = fc.objects.info(ref.object_id)
    assert ref.sha256 == "" and info["complete"] and info["size"] == ref.size
    assert info["sha256"] == hashlib.sha256(stored).hexdigest()
    del stored

    got, _ = fc.get_result(task_id, timeout=180)
    assert got.shape == arr.shape and np.array_equal(got, arr * 2)
    # Both objects were one-shot: the result is deleted once the SDK has it, the arguments once
    # their task finished (their bytes with the owner's next upload): nothing stays on the disk.
    arg_id = store_redis.hget(f"fns:task:{task_id}", "arg_ref").decode()
    with pytest.raises(FnserveError) as err:
        fc.objects.info(arg_id)
    assert err.value.code == "object_expired" and "finished" in err.value.message
    with pytest.raises(FnserveError) as err:
        fc.get_result(task_id)
    assert err.value.code == "object_not_found" and "deleted once a client has downloaded it" in err.value.message
    fc.objects.delete(fc.objects.put(b"next", strategy="dill-data").object_id)  # an upload sweeps
    objects = stack.home / "service" / "objects"
    assert not (objects / arg_id[:2] / arg_id).exists() and not (objects / ref.object_id[:2] / ref.object_id).exists()


def test_small_arguments_and_results_stay_inline(stack):
    fc = stack.client()
    fid = register_double(fc)
    task_id = fc.submit(fid, stack.endpoint_id, [np.arange(10)])
    got, _ = fc.get_result(task_id, timeout=60)
    assert list(got) == [2 * i for i in range(10)]
    assert read_ref(base64.b64decode(fc.get_task(task_id)["result"])) is None


def test_without_references_the_inline_limit_names_them(stack):
    fc = Client(stack.url, stack.token, ref_threshold=None)
    fid = register_double(fc)
    with pytest.raises(FnserveError) as err:
        fc.submit(fid, stack.endpoint_id, [np.zeros(12 * MIB // 8)])
    assert err.value.http_status == 413
    assert "ref_threshold" in err.value.message or "reference" in err.value.message


def test_another_users_token_cannot_read_or_delete_an_object(stack, other_token):
    owner = stack.client()
    ref = owner.objects.put(b"secret bytes" * 1000, strategy="dill-data")
    mallory = Client(stack.url, other_token)
    for attempt in (lambda: mallory.objects.get(ref), lambda: mallory.objects.info(ref.object_id),
                    lambda: mallory.objects.delete(ref.object_id)):
        with pytest.raises(FnserveError) as err:
            attempt()
        assert err.value.code == "forbidden" and err.value.http_status == 403
    assert bytes(owner.objects.get(ref)) == b"secret bytes" * 1000


def test_another_os_account_with_a_made_up_data_token_is_refused(stack, attacker):
    ref = stack.client().objects.put(b"x" * 4096, strategy="dill-data")
    code = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
        "try:\n    urllib.request.urlopen(req); print('200')\n"
        "except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n"
    )
    url = f"{stack.url}/v1/objects/{ref.object_id}/data"
    for token in ("", "fnsd1.0123.forged", f"fnsd1.{ref.object_id}.AAAA", "fns_notarealtoken"):
        out = attacker.python(code, url, token)
        assert out.stdout.startswith("401"), (token, out.stdout, out.stderr)
    # Nor are the bytes readable on the service host's disk.
    path = stack.home / "service" / "objects" / ref.object_id[:2] / ref.object_id
    assert path.read_bytes() == b"x" * 4096  # the check can fail: this is where the bytes are
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert not attacker.can_read(path)


def test_a_task_data_token_reaches_its_arguments_and_what_it_made_only_while_the_task_runs(stack, store_redis, other_token):
    """The token a worker gets with alice's task (minted here with the service's data key, as the
    forwarder does) reads the object holding that task's arguments and the objects it creates;
    not alice's other objects, not mallory's; and stops working once the task ended (its
    arguments are released at once, what it made stays reachable for the grace)."""
    from web_service.object_rules import TOKEN_GRACE, mint_data_token
    from web_service.object_store import load_data_key

    alice, mallory = stack.client(), Client(stack.url, other_token)
    other = alice.objects.put(b"alice's other data" * 100, strategy="dill-data")
    theirs = mallory.objects.put(b"mallory's data" * 100, strategy="dill-data")
    fid = register_double(alice)
    key = load_data_key(stack.home / "service" / "data.key")
    # A task that waits (its endpoint is not connected): its token is live, its arguments there.
    offline = alice.register_endpoint("offline data token")["endpoint_id"]
    waiting = alice.submit(fid, offline, [np.ones(5 * MIB // 8)])  # arguments by reference
    waiting_args = store_redis.hget(f"fns:task:{waiting}", "arg_ref").decode()
    as_waiting = Client(stack.url, mint_data_token(key, waiting)).objects
    assert as_waiting.info(waiting_args)["sha256"] == alice.objects.info(waiting_args)["sha256"]
    for ref in (other, theirs):
        with pytest.raises(FnserveError) as err:
            as_waiting.get(ref)
        assert err.value.code == "forbidden"
    with pytest.raises(FnserveError) as err:
        Client(stack.url, mint_data_token(b"not the service key" * 2, waiting)).objects.info(waiting_args)
    assert err.value.code == "invalid_token" and err.value.http_status == 401
    alice.cancel(waiting)

    task_id = alice.submit(fid, stack.endpoint_id, [np.ones(5 * MIB // 8)])
    alice.get_result(task_id, timeout=120)
    arg_ref = store_redis.hget(f"fns:task:{task_id}", "arg_ref").decode()
    as_task = Client(stack.url, mint_data_token(key, task_id)).objects
    # Within the grace after the task ended: its arguments are released, an object it makes is its.
    with pytest.raises(FnserveError) as err:
        as_task.info(arg_ref)
    assert err.value.code == "object_expired"
    made = as_task.put(b"made by the task", strategy="dill-data")
    assert bytes(as_task.get(made)) == b"made by the task" and bytes(alice.objects.get(made)) == b"made by the task"
    for ref in (other, theirs):
        with pytest.raises(FnserveError) as err:
            as_task.get(ref)
        assert err.value.code == "forbidden"
    # Past the grace the token is dead (the task finished TOKEN_GRACE seconds ago).
    finished = float(alice.get_task(task_id)["timestamps"]["finished"])
    store_redis.hset(f"fns:task:{task_id}", "t_finished", repr(finished - TOKEN_GRACE - 1))
    with pytest.raises(FnserveError) as err:
        as_task.info(made.object_id)
    assert err.value.code == "invalid_token"


def test_an_object_is_checked_against_its_checksum_and_a_wrong_upload_is_refused(stack):
    fc = stack.client()
    meta = fc.objects.create(8, hashlib.sha256(b"12345678").hexdigest())
    with pytest.raises(FnserveError) as err:
        fc.objects._put_chunk(meta["object_id"], b"87654321", 0, 8)
    assert err.value.code == "checksum_mismatch"
    with pytest.raises(FnserveError) as err:
        fc.objects.info(meta["object_id"])
    assert err.value.code == "object_not_found"


def test_a_checksum_sent_with_the_last_chunk_is_checked_like_one_declared_at_creation(stack):
    fc = stack.client()
    data = bytes(range(256)) * 2048  # 512 KiB, in two chunks
    meta = fc.objects.create(len(data), None)
    assert meta["sha256"] == "" and not meta["complete"]
    fc.objects._put_chunk(meta["object_id"], data[:300_000], 0, len(data))
    with pytest.raises(FnserveError) as err:  # the last chunk must say what the bytes hash to
        fc.objects._put_chunk(meta["object_id"], data[300_000:], 300_000, len(data))
    assert err.value.code == "checksum_missing" and fc.objects.info(meta["object_id"])["received"] == 300_000
    with pytest.raises(FnserveError) as err:  # a wrong one deletes the object
        fc.objects._put_chunk(meta["object_id"], data[300_000:], 300_000, len(data), "0" * 64)
    assert err.value.code == "checksum_mismatch"
    with pytest.raises(FnserveError) as err:
        fc.objects.info(meta["object_id"])
    assert err.value.code == "object_not_found"
    # put() hashes while it sends: the reference and the stored object carry the bytes' SHA-256.
    ref = fc.objects.put([memoryview(data[:100_000]), memoryview(data[100_000:])], strategy="dill-data")
    assert ref.sha256 == hashlib.sha256(data).hexdigest() == fc.objects.info(ref.object_id)["sha256"]
    assert fc.objects.get(ref) == data


def test_an_upload_resumes_where_the_service_stands(stack):
    fc = stack.client()
    data = bytes(range(256)) * 4096  # 1 MiB
    meta = fc.objects.create(len(data), hashlib.sha256(data).hexdigest())
    oid = meta["object_id"]
    fc.objects._put_chunk(oid, data[:300_000], 0, len(data))
    with pytest.raises(FnserveError) as err:  # a chunk that skips ahead is refused with where to go on
        fc.objects._put_chunk(oid, data[400_000:500_000], 400_000, len(data))
    assert err.value.code == "wrong_offset" and err.value.details["received"] == 300_000
    fc.objects.upload(oid, memoryview(data), 256 * 1024, start=fc.objects.info(oid)["received"])
    assert fc.objects.info(oid)["complete"]
    # Range downloads, with curl as a user would.
    out = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {stack.token}", "-r", "1000-1999",
                          f"{stack.url}/v1/objects/{oid}/data"], capture_output=True, check=True)
    assert out.stdout == data[1000:2000]


def test_quota_and_size_errors_say_what_to_do(stack, other_token):
    fc = Client(stack.url, other_token)
    before = fc.usage()["objects"]
    ref = fc.objects.put(b"z" * 5000, strategy="dill-data")
    assert fc.usage()["objects"] == {"bytes": before["bytes"] + 5000, "quota_bytes": before["quota_bytes"]}
    fc.objects.delete(ref.object_id)
    assert fc.usage()["objects"]["bytes"] == before["bytes"]
    with pytest.raises(FnserveError) as err:
        fc.objects.create(10**15, "0" * 64)
    assert err.value.code == "object_too_large" and err.value.http_status == 413
    with pytest.raises(FnserveError) as err:
        fc.objects.create(5, "not a checksum")
    assert err.value.code == "invalid_request"


def test_an_expired_object_says_so(stack):
    import time

    fc = stack.client()
    ref = fc.objects.put(b"short-lived", strategy="dill-data", ttl=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            fc.objects.info(ref.object_id)
        except FnserveError as exc:
            assert exc.code == "object_expired" and exc.http_status == 410
            break
        time.sleep(0.2)
    else:
        pytest.fail("the object did not expire")
    fc.objects.put(b"another", strategy="dill-data")  # sweeps the expired one
    with pytest.raises(FnserveError) as err:
        fc.objects.get(ref)
    assert err.value.code == "object_expired"


ANALYSIS = """
def analysis(go_file, n):
    import os, time
    import fnserve

    out = fnserve.output_dir()
    (out / "frame-000.png").write_bytes(bytes(range(256)) * 4000)
    deadline = time.time() + 60
    while not os.path.exists(go_file) and time.time() < deadline:  # the client saw frame 0 first
        time.sleep(0.05)
    for i in range(1, n):
        (out / f"frame-{i:03d}.png").write_bytes(bytes([i]) * 1000)
    os.makedirs(out / "logs", exist_ok=True)
    log = open(out / "logs" / "run.txt", "w")
    log.write("still open when the function returns")
    return os.path.exists(go_file)
"""


def test_output_files_appear_while_the_function_runs_and_download_intact(stack, tmp_path):
    fc = stack.client()
    fid = fc.register_source(ANALYSIS, "analysis")
    go = tmp_path / "go"
    task_id = fc.submit(fid, stack.endpoint_id, [str(go), 3])
    seen = []
    for entry in fc.watch_files(task_id, timeout=120):
        seen.append(entry["file"])
        if entry["file"] == "frame-000.png":
            # Frame 0 arrived while the function waits for this file: it was shipped live.
            path = fc.download_file(entry, tmp_path)
            assert Path(path).read_bytes() == bytes(range(256)) * 4000
            go.write_text("go")
    assert fc.get_result(task_id, timeout=60) is True
    assert seen[0] == "frame-000.png"
    assert set(seen) == {"frame-000.png", "frame-001.png", "frame-002.png", "logs/run.txt"}
    listed = {f["file"]: f for f in fc.list_files(task_id)}
    assert fc.download_file(listed["logs/run.txt"], tmp_path / "run.txt") == str(tmp_path / "run.txt")
    assert (tmp_path / "run.txt").read_text() == "still open when the function returns"
    out = stack.cli("get", task_id, "--dir", str(tmp_path / "all"))
    assert (tmp_path / "all" / "frame-002.png").read_bytes() == bytes([2]) * 1000, out.stdout


def test_a_download_follows_an_upload_in_progress_and_says_when_it_stopped(stack):
    """A reference without a checksum (the SDK sends one while it still uploads the arguments):
    the reader gets each chunk as the service stores it, checks the whole against the checksum
    the service verified, and is told at once-ish (its wait, not the HTTP timeout) when the
    upload stops."""
    from fnserve.data_refs import ObjectRef
    from fnserve.object_transfer import ObjectStoreClient

    fc = stack.client()
    data = bytes(range(256)) * 4096 * 3  # 3 MiB, three chunks
    oid = fc.objects.create(len(data), None)["object_id"]
    reader = ObjectStoreClient(stack.url, stack.token, follow_wait=30.0)
    ref = ObjectRef(oid, len(data), "", "dill-data")
    fc.objects._put_chunk(oid, data[:MIB], 0, len(data))
    view = memoryview(bytearray(len(data)))
    receiving = reader._receive(ref, view)
    got = 0
    while got < MIB:  # the first chunk arrives while the object is incomplete
        got = next(receiving)
    assert not fc.objects.info(oid)["complete"] and bytes(view[:MIB]) == data[:MIB]
    fc.objects._put_chunk(oid, data[MIB:2 * MIB], MIB, len(data))
    fc.objects._put_chunk(oid, data[2 * MIB:], 2 * MIB, len(data), hashlib.sha256(data).hexdigest())
    assert list(receiving)[-1] == len(data) and bytes(view) == data
    assert reader.get(ref) == data  # complete now: read, and checked against the service's checksum

    # An upload that stops: the reader waits its follow_wait for the next chunk, then says so.
    oid = fc.objects.create(len(data), None)["object_id"]
    fc.objects._put_chunk(oid, data[:MIB], 0, len(data))
    reader.follow_wait = 1.0
    t0 = time.monotonic()
    with pytest.raises(FnserveError) as err:
        reader.get(ObjectRef(oid, len(data), "", "dill-data"))
    assert err.value.code == "upload_stalled" and err.value.details["received"] == MIB
    assert time.monotonic() - t0 < 10

    # An upload whose checksum does not match is deleted: a reader following it is told.
    oid = fc.objects.create(len(data), None)["object_id"]
    fc.objects._put_chunk(oid, data[:MIB], 0, len(data))
    failed = {}

    def follow():
        try:
            reader.get(ObjectRef(oid, len(data), "", "dill-data"))
        except FnserveError as exc:
            failed["code"] = exc.code

    reader.follow_wait = 30.0
    t = threading.Thread(target=follow)
    t.start()
    fc.objects._put_chunk(oid, data[MIB:2 * MIB], MIB, len(data))
    with pytest.raises(FnserveError):
        fc.objects._put_chunk(oid, data[2 * MIB:], 2 * MIB, len(data), "0" * 64)
    t.join(20)
    assert failed == {"code": "object_not_found"}
