"""Validation of REST request bodies (pure: no services)."""

from __future__ import annotations

import base64

import pytest

from fnserve import serialize
from fnserve.errors import BadRequest, FnserveError, PayloadTooLarge, SerializationError
from web_service.services.tasks import parse_task_batch, parse_task_ids, parse_return_when, parse_wait
from web_service.validation import decode_base64, parse_json_object

LIMIT = 1000


def batch(*tasks):
    return parse_task_batch({"tasks": list(tasks)}, max_payload_bytes=LIMIT, max_batch=5)


def b64(buf: bytes) -> str:
    return base64.b64encode(buf).decode()


def error(fn, *args) -> FnserveError:
    with pytest.raises(FnserveError) as info:
        fn(*args)
    return info.value


def test_args_become_a_json_buffer_that_asks_for_json_results():
    (spec,) = batch({"function_id": "f", "endpoint_id": "e", "args": [1, "a"], "kwargs": {"k": None}})
    assert serialize.parse_header(spec.payload).strategy == "json-data"
    assert serialize.deserialize_args(spec.payload) == ([1, "a"], {"k": None})
    assert spec.result_strategy == "json-data"


def test_no_arguments_means_an_empty_call():
    (spec,) = batch({"function_id": "f", "endpoint_id": "e"})
    assert serialize.deserialize_args(spec.payload) == ([], {})


def test_result_strategy_follows_result_format_then_payload():
    dill = b64(serialize.serialize_args([1], strategy="dill-data"))
    json_ = b64(serialize.serialize_args([1], strategy="json-data"))
    specs = batch(
        {"function_id": "f", "endpoint_id": "e", "payload": dill},
        {"function_id": "f", "endpoint_id": "e", "payload": json_},
        {"function_id": "f", "endpoint_id": "e", "payload": dill, "result_format": "json"},
        {"function_id": "f", "endpoint_id": "e", "payload": json_, "result_format": "python"},
    )
    assert [s.result_strategy for s in specs] == [None, "json-data", "json-data", None]


def test_payload_is_kept_byte_for_byte():
    buf = serialize.serialize_args([b"\x00\xff"], strategy="dill-data")
    (spec,) = batch({"function_id": "f", "endpoint_id": "e", "payload": b64(buf), "walltime": 1.5, "runtime": "gpu"})
    assert spec.payload == buf and spec.walltime == 1.5 and spec.runtime == "gpu"


@pytest.mark.parametrize("bad,field", [
    ({"endpoint_id": "e"}, "tasks[1].function_id"),
    ({"function_id": "f", "endpoint_id": "e", "walltime": -1}, "tasks[1].walltime"),
    ({"function_id": "f", "endpoint_id": "e", "walltime": "10"}, "tasks[1].walltime"),
    ({"function_id": "f", "endpoint_id": "e", "runtime": ""}, "tasks[1].runtime"),
    ({"function_id": "f" * 65, "endpoint_id": "e"}, "tasks[1].function_id"),
    ({"function_id": "f", "endpoint_id": "e", "payload": "abc"}, "tasks[1].payload"),
])
def test_invalid_task_names_field_and_index(bad, field):
    err = error(batch, {"function_id": "f", "endpoint_id": "e"}, bad)
    assert isinstance(err, BadRequest) and err.code == "invalid_request"
    assert err.details["field"] == field and err.details["index"] == 1 and field in err.message


def test_payload_must_be_a_data_buffer_in_fnserve_format():
    code_buf = serialize.serialize_source("def f():\n    pass\n", "f")
    for buf, code in [(code_buf, "wrong_strategy"), (b"\x80\x04pickle", "not_fnserve_format"), (b"fns1 xml 3.11\n", "unknown_strategy")]:
        err = error(batch, {"function_id": "f", "endpoint_id": "e", "payload": b64(buf)})
        assert isinstance(err, SerializationError) and err.code == code and err.details["index"] == 0


def test_size_limits():
    big = b64(b"fns1 json-data 3.11\n" + b"1" * LIMIT)
    assert error(batch, {"function_id": "f", "endpoint_id": "e", "payload": big}).http_status == 413
    assert error(batch, {"function_id": "f", "endpoint_id": "e", "args": ["x" * LIMIT]}).http_status == 413
    err = error(batch, *[{"function_id": "f", "endpoint_id": "e"}] * 6)
    assert isinstance(err, PayloadTooLarge) and err.code == "batch_too_large"


def test_decode_base64_is_strict_and_refuses_oversize_text_before_decoding():
    assert decode_base64(b64(b"abc"), "x", 10) == b"abc"
    assert error(decode_base64, "YWJj\n!!", "x", 10).code == "invalid_request"
    assert error(decode_base64, "A" * 10_000, "x", 10).code == "payload_too_large"


def test_json_object_parsing():
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    assert error(parse_json_object, b"{").code == "malformed_json"
    assert error(parse_json_object, b"[]").code == "invalid_request"


def test_wait_and_return_when():
    assert parse_wait(None) == 0 and parse_wait("2.5") == 2.5 and parse_wait(3) == 3.0
    for bad in ("x", "-1", -1, True, "nan"):
        assert error(parse_wait, bad).code == "invalid_request"
    assert parse_return_when({}) is False and parse_return_when({"return_when": "FIRST_COMPLETED"}) is True
    assert error(parse_return_when, {"return_when": "first"}).code == "invalid_request"
    a, b = "0b7f1c2e-1d2a-4c3b-9e8f-0123456789ab", "f0e1d2c3-b4a5-4697-8877-665544332211"
    assert parse_task_ids({"task_ids": [a, b]}, 5) == [a, b]
    assert error(parse_task_ids, {"task_ids": [a] * 6}, 5).code == "batch_too_large"
    # Not the form of a task id (``<id>:out`` named another Redis key type: a 500 before).
    for bad in ("a", f"{a}:out", f"{a}:outinfo", a.upper(), f"{a} "):
        err = error(parse_task_ids, {"task_ids": [b, bad]}, 5)
        assert err.code == "task_not_found" and err.http_status == 404 and err.details["index"] == 1


def test_walltime_is_bounded_by_the_services_maximum() -> None:
    task = {"function_id": "f", "endpoint_id": "e", "args": []}
    assert batch({**task, "walltime": 3600})[0].walltime == 3600.0
    for bad in (1e308, 31 * 24 * 3600):
        err = error(batch, {**task, "walltime": bad})
        assert err.code == "invalid_request" and err.details["field"] == "tasks[0].walltime" and "FNSERVE_MAX_WALLTIME" in err.message
    err = error(lambda: parse_task_batch({"tasks": [{**task, "walltime": 100}]}, max_payload_bytes=LIMIT, max_batch=5, max_walltime=60))
    assert err.details["limit"] == 60


def test_json_nested_too_deeply_is_a_400_not_a_crash() -> None:
    deep = b"[" * 1000 + b"]" * 1000
    err = error(parse_json_object, b'{"tasks": ' + deep + b"}")
    assert err.code == "json_too_deep" and err.http_status == 400


def test_the_depth_limit_holds_whatever_the_recursion_limit_is() -> None:
    # jedi (imported by IPython) raises the interpreter's limit to 3000; the limit must not move.
    import sys

    from web_service.validation import MAX_JSON_DEPTH, json_depth

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        err = error(parse_json_object, b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}")
        assert err.code == "json_too_deep"
    finally:
        sys.setrecursionlimit(old)
    just_fits = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    assert json_depth(parse_json_object(b'{"a": ' + just_fits + b"}")) == MAX_JSON_DEPTH
    assert json_depth({"a": [1, {"b": []}], "c": 2}) == 4 and json_depth(3) == 0


def test_stream_id_cursors_are_checked_against_redis_limits() -> None:
    from web_service.validation import is_stream_id

    assert is_stream_id("1716000000000-0") and is_stream_id(f"{2**64 - 1}-{2**64 - 1}")
    assert not is_stream_id(f"{2**64}-0") and not is_stream_id("1-18446744073709551616")
    assert not is_stream_id("yesterday") and not is_stream_id(None) and not is_stream_id("1-")


def test_query_counts_beyond_what_redis_takes_are_a_400() -> None:
    from web_service.services.tasks import MAX_COUNT, parse_count

    assert parse_count("0", "offset", 5, minimum=0) == 0 and parse_count(None, "offset", 5) == 5
    assert parse_count(str(MAX_COUNT), "offset", 0, minimum=0) == MAX_COUNT
    for bad in ("831926199017971380041809920", "-1", "x", "1" * 5000):
        err = error(parse_count, bad, "offset", 0, 0)
        assert err.code == "invalid_request" and err.details["field"] == "offset"
