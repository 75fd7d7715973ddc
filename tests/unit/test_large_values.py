"""Large values without copies (pickle protocol 5 frames), object read tokens, and the
ProxyStore decisions: pure, no services."""

from __future__ import annotations

import numpy as np
import pytest

from fnserve import oob_frames, proxies, serialize
from fnserve.object_transfer import _slice
from web_service.object_rules import (
    Principal,
    check_access,
    check_writer,
    mint_read_token,
    read_principal,
    read_token_object,
)
from web_service.object_rules import ObjectMeta

KEY = b"k" * 32
OID = "a" * 32


def test_a_large_array_is_a_part_of_its_own_not_a_copy_and_loads_as_a_view_of_the_download():
    arr = np.arange(1_000_000, dtype=np.float64)
    parts = serialize.serialize_args_parts([arr, "x"], {"k": np.ones(3)})
    big = [p for p in parts if memoryview(p).nbytes == arr.nbytes]
    assert len(big) == 1 and np.shares_memory(np.frombuffer(big[0], dtype=np.float64), arr)
    download = bytearray(oob_frames.join(parts))
    (got, text), kwargs = serialize.deserialize_args(download)
    assert np.array_equal(got, arr) and text == "x" and np.array_equal(kwargs["k"], np.ones(3))
    assert got.flags.writeable and np.shares_memory(got, np.frombuffer(download, dtype=np.uint8))
    # Aligned as numpy needs for its dtype (the frame pads buffers to 64 bytes of its own start;
    # where the download starts is the allocator's: glibc's large blocks start 16 bytes into a page).
    assert got.flags.aligned


def test_a_read_only_buffer_loads_writable_copies():
    buf = serialize.serialize_data(np.arange(100_000.0))
    got = serialize.deserialize_data(bytes(buf))
    got[0] = 5.0  # writable, as it was when dumped
    assert got[1] == 1.0


def test_small_and_non_contiguous_values_keep_the_classic_stream():
    for value in ({"a": 1}, np.ones(10), np.arange(100_000.0)[::2], lambda x: x + 1):
        parts = serialize.serialize_data_parts(value)
        body = memoryview(oob_frames.join(parts))[serialize.parse_header(parts[0]).length:]
        assert not oob_frames.is_frame(body)
    assert serialize.deserialize_data(serialize.serialize_data(np.arange(100_000.0)[::2]))[1] == 2.0


def test_call_options_travel_beside_the_arguments():
    buf = oob_frames.join(serialize.serialize_args_parts([1], {"a": 2}, options={"result_proxy": {"threshold": 5}}))
    assert serialize.deserialize_call(buf) == ([1], {"a": 2}, {"result_proxy": {"threshold": 5}})
    assert serialize.deserialize_args(buf) == ([1], {"a": 2})


def test_a_chunk_is_sent_as_views_spanning_parts():
    parts = [memoryview(b"abc"), memoryview(b"defgh"), memoryview(b"ij")]
    assert [bytes(v) for v in _slice(parts, 2, 9)] == [b"c", b"defgh", b"i"]
    assert [bytes(v) for v in _slice(parts, 0, 3)] == [b"abc"]
    assert _slice(parts, 10, 10) == []


def test_a_read_token_reads_its_object_only_and_cannot_be_forged():
    token = mint_read_token(KEY, OID)
    assert read_token_object(KEY, token) == OID
    assert read_token_object(b"x" * 32, token) is None
    assert read_token_object(KEY, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert read_token_object(KEY, mint_read_token(KEY, "b" * 32).replace("b" * 32, OID)) is None
    assert read_token_object(b"", mint_read_token(b"", OID)) is None  # no key: no read tokens
    who = read_principal("alice", OID)
    meta = ObjectMeta(OID, "alice", 10, "0" * 64, 10, True, expires=100.0)
    assert check_access(meta, OID, who, now=1.0) is meta
    other = ObjectMeta("b" * 32, "alice", 10, "0" * 64, 10, True, expires=100.0)
    with pytest.raises(Exception) as err:
        check_access(other, other.object_id, who, now=1.0)
    assert err.value.code == "forbidden"
    with pytest.raises(Exception) as err:
        check_writer(who)
    assert err.value.code == "forbidden"
    check_writer(Principal("alice"))


def test_only_large_arguments_become_proxies():
    class FakeStore:  # a ProxyStore Store's surface that proxies use; the real ones run in integration tests
        def __init__(self):
            self.stored: list[bytes] = []
            self.connector = self

        def serializer(self, obj):
            return repr(obj).encode()

        def put(self, data):
            self.stored.append(data)
            return len(self.stored)

        def proxy_from_key(self, key):
            return ("proxy", key)

    store = FakeStore()
    args, kwargs = proxies.proxy_arguments((np.ones(2), b"x" * 100, "y" * 5), {"k": list(range(50))}, store, 64)
    assert isinstance(args[0], np.ndarray) and args[1] == ("proxy", 1) and args[2] == "y" * 5
    assert kwargs["k"] == ("proxy", 2)  # size known only by serializing: serialized once
    assert proxies.size_hint(np.ones(8)) == 64 and proxies.size_hint(object()) is None
    assert proxies.resolve(5) == 5


def test_the_object_store_connector_config_never_holds_a_token_and_a_task_writes_with_its_own():
    from fnserve.proxystore_connector import ObjectStoreConnector

    conn = ObjectStoreConnector("http://laptop:8780/", "user-secret-token", ttl=60)
    assert "user-secret-token" not in repr(conn.config()) and conn.config() == {"url": "http://laptop:8780", "ttl": 60}
    rebuilt = ObjectStoreConnector.from_config(conn.config())
    assert rebuilt.token is None
    with pytest.raises(Exception) as err:
        rebuilt._writer()
    assert err.value.code == "no_token"
    with proxies.task_context("http://service:8780", "fnsd1.task.sig"):
        writer = rebuilt._writer()
        assert (writer.base_url, writer.token) == ("http://service:8780", "fnsd1.task.sig")
    assert proxies.task_token("http://laptop:8780") is None


def test_a_json_payload_cannot_ask_the_worker_to_import_a_proxystore_connector():
    from fnserve.messages import TaskMessage, decode_result, encode_task
    from node_manager.execute import execute_task

    fn = serialize.serialize_source("def f(x):\n    return [x] * 3\n", "f")
    payload = serialize.serialize_data(
        {"args": [1], "kwargs": {}, "options": {"result_proxy": {"store": {"name": "x", "connector": {
            "kind": "os.system", "options": {}}}, "threshold": 0}}}, serialize.JSON_DATA)
    task = TaskMessage(task_id="t1", function_id="f1", function=fn, payload=payload)
    result = decode_result(execute_task(encode_task(task)))
    assert result.ok, result.error
    assert serialize.deserialize_data(result.data) == [1, 1, 1]
