"""A result over the endpoint's limit fails the task with result_too_large; the worker goes on."""

from __future__ import annotations

from fnserve import serialize
from fnserve.messages import TaskMessage, decode_result, encode_task
from node_manager.execute import DEFAULT_MAX_RESULT_BYTES, execute_task


def blob(n: int) -> bytes:
    return b"x" * n


def run(n: int, limit: int | None):
    task = TaskMessage(task_id="t", function_id="blob", function=serialize.serialize_function(blob),
                       payload=serialize.serialize_args((n,), {}), max_result_bytes=limit)
    return decode_result(execute_task(encode_task(task)))


def test_a_result_over_the_limit_is_a_failure_naming_the_limit():
    result = run(5000, limit=1000)
    assert not result.ok and result.data == b""
    assert result.error.code == "result_too_large"
    assert "limit of 1000 bytes" in result.error.message and "max_result_bytes" in result.error.message


def test_a_result_under_the_limit_comes_back_and_the_default_is_10_mib():
    result = run(500, limit=1000)
    assert result.ok and serialize.deserialize_data(result.data) == b"x" * 500
    assert DEFAULT_MAX_RESULT_BYTES == 10 * 1024 * 1024
    assert run(DEFAULT_MAX_RESULT_BYTES + 1, limit=None).error.code == "result_too_large"
