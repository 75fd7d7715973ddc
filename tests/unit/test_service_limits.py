"""The web service's limits as pure functions: long-poll retry times, log escaping, result bounds,
and the gunicorn settings each worker class gets."""

from __future__ import annotations

import logging

import pytest

from fnserve.messages import RemoteError, ResultMessage
from web_service.log_safety import EscapeControlCharacters, printable
from web_service.result_limits import MAX_TEXT_CHARS, within_limits
from web_service.server import gunicorn_config
from web_service.waits import retry_after, too_many_waits


def test_retry_after_is_the_time_until_the_soonest_wait_ends_at_least_one_second():
    # Deadlines carry 5 s of slack past the wait itself.
    assert retry_after(soonest_deadline=130.0, now=100.0) == 25
    assert retry_after(soonest_deadline=105.2, now=100.0) == 1
    assert retry_after(soonest_deadline=90.0, now=100.0) == 1
    err = too_many_waits(32, 130.0, 100.0)
    assert err.http_status == 429 and err.code == "too_many_waits" and err.details == {"limit": 32, "retry_after": 25}
    assert "completions" in err.message  # says what to do instead


def test_control_characters_are_escaped_one_line_per_record():
    assert printable("GET /v1/tasks/\x1b[31mX\nFORGED\r\x00\x7f\x85\u2028ok") == (
        "GET /v1/tasks/\\x1b[31mX\\x0aFORGED\\x0d\\x00\\x7f\\x85\\u2028ok")
    assert printable("plain é ünïcode / path") == "plain é ünïcode / path"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "endpoint %s said %r", ("ep\nA", "b\x1b"), None)
    assert EscapeControlCharacters().filter(record)
    assert record.getMessage() == "endpoint ep\\x0aA said 'b\\x1b'"


def test_results_within_the_limits_are_untouched_and_others_bounded():
    ok = ResultMessage(task_id="t", ok=True, data=b"x" * 100, stdout="hi")
    assert within_limits(ok, 100) is ok
    big = within_limits(ResultMessage(task_id="t", ok=True, data=b"x" * 101, stdout="o" * (MAX_TEXT_CHARS + 10)), 100)
    assert not big.ok and big.data == b"" and big.error.code == "result_too_large" and "101 bytes" in big.error.message
    assert big.stdout.startswith("o" * MAX_TEXT_CHARS) and "10 more not kept" in big.stdout
    chatty = within_limits(ResultMessage(task_id="t", ok=False, error=RemoteError(
        code="user_exception", type="E", message="m" * (MAX_TEXT_CHARS + 1), traceback="tb")), 100)
    assert chatty.error.code == "user_exception" and "1 more not kept" in chatty.error.message and chatty.error.traceback == "tb"


def test_gthread_gets_a_thread_per_allowed_wait_and_gevent_a_connection_per_wait():
    threaded = gunicorn_config("127.0.0.1:1", 2, 32, "gthread", max_open_waits=256)
    assert threaded["worker_class"] == "gthread" and threaded["threads"] == 32 + 256 and threaded["accesslog"] is None
    green = gunicorn_config("127.0.0.1:1", 1, 32, "gevent", max_open_waits=256)
    assert green["worker_class"] == "gevent" and green["worker_connections"] == 256 + 1000 and "threads" not in green
    with pytest.raises(ValueError):
        gunicorn_config("127.0.0.1:1", 1, 32, "sync", max_open_waits=256)
