"""The node manager runs one task message and always answers with a result message."""

from __future__ import annotations

import time

import pytest

from fnserve import serialize
from fnserve.messages import ResultMessage, TaskMessage, decode_result, encode_task
from node_manager import execute
from node_manager.capture import MAX_CAPTURE_CHARS
from node_manager.execute import execute_task


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    execute.function_cache.clear()


def make_task(
    fn_buf: bytes,
    *args: object,
    function_id: str = "fn-1",
    strategy: str | None = None,
    **task_fields: object,
) -> bytes:
    return encode_task(
        TaskMessage(
            task_id="task-1",
            function_id=function_id,
            function=fn_buf,
            payload=serialize.serialize_args(args, {}, strategy),
            **task_fields,  # type: ignore[arg-type]
        )
    )


def run(task_bytes: bytes) -> ResultMessage:
    return decode_result(execute_task(task_bytes))


def add(a: int, b: int) -> int:
    return a + b


def test_returns_the_functions_value_as_dill_data_by_default() -> None:
    result = run(make_task(serialize.serialize_function(add), 2, 3))
    assert result.ok and result.task_id == "task-1"
    assert serialize.parse_header(result.data).strategy == serialize.DILL_DATA
    assert serialize.deserialize_data(result.data) == 5


def test_json_result_strategy_gives_json_and_falls_back_to_dill_for_other_values() -> (
    None
):
    fn = serialize.serialize_source(
        "def f(x):\n    return {'x': x, 'l': [1, 2]}\n", "f"
    )
    result = run(
        make_task(fn, 7, strategy=serialize.JSON_DATA, result_strategy="json-data")
    )
    assert serialize.json_body(result.data) == b'{"x":7,"l":[1,2]}'

    fn = serialize.serialize_source("def g():\n    return {1, 2}\n", "g")
    result = run(make_task(fn, function_id="fn-2", result_strategy="json-data"))
    assert result.ok and serialize.deserialize_data(result.data) == {1, 2}


def test_second_task_of_a_function_reuses_the_cached_function() -> None:
    fn_buf = serialize.serialize_function(add)
    run(make_task(fn_buf, 1, 1))
    cached = execute.function_cache.get("fn-1", b"not used on a hit")
    result = run(make_task(fn_buf, 2, 2))
    assert serialize.deserialize_data(result.data) == 4
    assert execute.function_cache.misses == 1  # deserialized once for three lookups
    assert execute.function_cache.hits == 2
    assert execute.function_cache.get("fn-1", b"") is cached


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = execute.FunctionCache(maxsize=2)
    buf = serialize.serialize_function(add)
    cache.get("a", buf)
    cache.get("b", buf)
    cache.get("a", buf)  # "a" is now the most recently used
    cache.get("c", buf)
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2


def test_stdout_and_stderr_are_captured_and_restored() -> None:
    import sys

    before = sys.stdout, sys.stderr
    fn = serialize.serialize_source(
        "import sys\ndef f():\n    print('hello out')\n    print('hello err', file=sys.stderr)\n    return 1\n",
        "f",
    )
    result = run(make_task(fn))
    assert result.stdout == "hello out\n"
    assert result.stderr == "hello err\n"
    assert (sys.stdout, sys.stderr) == before


def test_huge_output_is_truncated_with_a_marker() -> None:
    fn = serialize.serialize_source("def f():\n    print('x' * 200000)\n", "f")
    result = run(make_task(fn))
    assert result.ok
    assert result.stdout.startswith("x" * MAX_CAPTURE_CHARS)
    assert "output truncated" in result.stdout
    assert len(result.stdout) < MAX_CAPTURE_CHARS + 200


def test_user_exception_comes_back_with_type_message_and_the_users_line() -> None:
    source = "def f(x):\n    y = x + 1\n    raise ValueError(f'bad value {y}')\n"
    result = run(make_task(serialize.serialize_source(source, "f"), 1))
    assert not result.ok and result.error is not None
    assert result.error.code == "user_exception"
    assert result.error.type == "ValueError"
    assert result.error.message == "bad value 2"
    assert "raise ValueError(f'bad value {y}')" in result.error.traceback
    assert 'File "<fnserve:f>", line 3, in f' in result.error.traceback
    assert "node_manager" not in result.error.traceback  # our frames are trimmed


def test_exception_types_are_qualified_with_their_module() -> None:
    fn = serialize.serialize_source("import json\ndef f():\n    json.loads('{')\n", "f")
    result = run(make_task(fn))
    assert (
        result.error is not None and result.error.type == "json.decoder.JSONDecodeError"
    )


def test_a_task_running_past_its_walltime_is_stopped() -> None:
    fn = serialize.serialize_source("import time\ndef f():\n    time.sleep(5)\n", "f")
    start = time.monotonic()
    result = run(make_task(fn, walltime=0.3))
    assert time.monotonic() - start < 2
    assert result.error is not None and result.error.code == "walltime_exceeded"
    assert "0.3" in result.error.message


def test_walltime_cannot_be_swallowed_by_except_exception() -> None:
    source = "import time\ndef f():\n    try:\n        time.sleep(5)\n    except Exception:\n        return 'swallowed'\n"
    result = run(make_task(serialize.serialize_source(source, "f"), walltime=0.2))
    assert result.error is not None and result.error.code == "walltime_exceeded"


def test_walltime_in_a_thread_other_than_main_is_enforced_too() -> None:
    import threading

    fn = serialize.serialize_source("def f():\n    while True:\n        pass\n", "f")
    out: list[ResultMessage] = []
    thread = threading.Thread(
        target=lambda: out.append(run(make_task(fn, walltime=0.3)))
    )
    thread.start()
    thread.join(5)
    assert out and out[0].error is not None and out[0].error.code == "walltime_exceeded"


def test_fast_task_with_walltime_leaves_no_alarm_behind() -> None:
    import signal

    result = run(make_task(serialize.serialize_function(add), 1, 2, walltime=10.0))
    assert result.ok
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_function_made_by_another_python_gives_version_mismatch() -> None:
    body = serialize.serialize_function(add).split(b"\n", 1)[1]
    foreign = b"fns1 dill-code 3.8\n" + body
    result = run(make_task(foreign, 1, 2))
    assert result.error is not None and result.error.code == "version_mismatch"
    assert (
        "3.8" in result.error.message
        and "function or arguments" in result.error.message
    )


def test_payload_not_made_by_fnserve_gives_a_clear_code() -> None:
    task = TaskMessage(
        task_id="t",
        function_id="f",
        function=serialize.serialize_function(add),
        payload=b"[1, 2]",
    )
    result = run(encode_task(task))
    assert result.error is not None and result.error.code == "not_fnserve_format"


def test_undecodable_task_message_still_gets_a_result() -> None:
    result = run(b"\x00garbage")
    assert (
        not result.ok
        and result.error is not None
        and result.error.code == "protocol_error"
    )


def test_unpicklable_return_value_is_reported_not_raised() -> None:
    fn = serialize.serialize_source("def f():\n    return (x for x in [1])\n", "f")
    result = run(make_task(fn))
    assert result.error is not None and result.error.code == "result_not_serializable"


def test_timings_and_resources_are_recorded() -> None:
    before = time.time()
    result = run(
        make_task(serialize.serialize_function(add), 1, 2, timings={"submitted": 1.0})
    )
    t = result.timings
    assert t["submitted"] == 1.0
    assert (
        before
        <= t["worker_received"]
        <= t["worker_started"]
        <= t["worker_finished"]
        <= time.time()
    )
    assert set(result.resources) == {"wall_time", "cpu_time", "max_rss_kb"}
    assert result.resources["max_rss_kb"] > 0


def test_sys_exit_in_user_code_is_a_user_exception() -> None:
    fn = serialize.serialize_source("import sys\ndef f():\n    sys.exit(3)\n", "f")
    result = run(make_task(fn))
    assert (
        result.error is not None
        and result.error.code == "user_exception"
        and result.error.type == "SystemExit"
    )
