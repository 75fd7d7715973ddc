"""The SDK's decisions without a service: how a batch is cut into requests, how the service's
per-task answer is read, how a remote exception becomes a local one (and what it may never do),
and when a function may fall back from dill to its source text."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import pytest

from fnserve import serialize
from fnserve.batching import Outstanding, chunked, payload_bytes, run_chunk, split_by_bytes, submit_outcomes
from fnserve.errors import FnserveError, RemoteExecutionError, SerializationError
from fnserve.remote_errors import RemoteTraceback, find_class, remote_exception

# -- cutting batches ------------------------------------------------------------------------------


def test_requests_stay_under_the_byte_and_count_limits():
    assert split_by_bytes([12] * 8, 60, 1000) == [5, 3]  # eight 9 MiB payloads under 64 MiB
    assert split_by_bytes([1] * 5, 100, 2) == [2, 2, 1]
    assert split_by_bytes([100, 1, 1], 50, 10) == [1, 2]  # an item over the limit goes alone
    assert split_by_bytes([], 10, 10) == []


def test_payload_bytes_is_the_decoded_size():
    import base64

    for n in (0, 1, 2, 3, 1000):
        assert payload_bytes({"payload": base64.b64encode(b"x" * n).decode()}) == n


def test_chunks_and_chunk_runner():
    assert list(chunked(zip(range(5), "abcde"), 2)) == [((0, "a"), (1, "b")), ((2, "c"), (3, "d")), ((4, "e"),)]
    assert run_chunk(lambda a, b: f"{a}{b}", ((1, "x"), (2, "y"))) == ["1x", "2y"]


# -- reading the service's answer -------------------------------------------------------------------


def test_a_partial_answer_gives_each_task_its_id_or_its_error():
    err = {"index": 1, "status": 413, "code": "payload_too_large", "message": "too big"}
    assert submit_outcomes(3, {"task_ids": ["a", None, "c"], "errors": [err]}) == [("a", None), (None, err), ("c", None)]


def test_a_refused_request_fails_each_task_with_its_own_error_or_the_common_one():
    one = FnserveError("bad token", code="invalid_token")
    one.http_status = 401
    assert [e["code"] for _, e in submit_outcomes(2, error=one)] == ["invalid_token", "invalid_token"]
    per_task = FnserveError("first", code="endpoint_not_found", details={"index": 0, "errors": [
        {"index": 0, "status": 404, "code": "endpoint_not_found", "message": "no endpoint"},
        {"index": 1, "status": 400, "code": "invalid_request", "message": "walltime"}]})
    assert [e["code"] for _, e in submit_outcomes(2, error=per_task)] == ["endpoint_not_found", "invalid_request"]


def test_outstanding_reports_started_tasks_and_adopts_reloaded_ones_once():
    out: Outstanding[str] = Outstanding()
    out.posting()
    out.sent([("t1", "f1")])
    assert out.started(["t1", "other"]) == ["f1"] and len(out) == 1  # still outstanding
    assert out.adopt("t1", "f-new") == "f1" and out.adopt("t2", "f2") == "f2"
    assert out.completed([("t2", {"state": "success"})]) == [("f2", {"state": "success"})]


# -- remote exceptions --------------------------------------------------------------------------------


def _error(module: str, qualname: str, args: list | None, message: str = "m") -> dict:
    return {"code": "user_exception", "type": f"{module}.{qualname}", "message": message, "module": module,
            "qualname": qualname, "args": args, "traceback": "Traceback (most recent call last):\n  ...\nboom\n"}


def test_a_known_exception_class_is_raised_as_itself_and_as_remote_execution_error():
    exc = remote_exception(_error("builtins", "KeyError", ["k"]), "t1")
    assert isinstance(exc, KeyError) and isinstance(exc, RemoteExecutionError)
    assert type(exc).__name__ == "KeyError" and str(exc) == "'k'" and exc.args == ("k",)
    assert isinstance(exc.__cause__, RemoteTraceback) and "boom" in str(exc.__cause__) and exc.task_id == "t1"
    assert type(pickle.loads(pickle.dumps(exc))) is KeyError  # pickles as the plain class
    os_error = remote_exception(_error("builtins", "FileNotFoundError", [2, "No such file"]))
    assert isinstance(os_error, FileNotFoundError) and os_error.errno == 2


def test_unknown_unimported_or_refusing_classes_fall_back_to_remote_execution_error():
    for error in (_error("no_such_module_xyz", "Err", []), _error("json.decoder", "JSONDecodeError", ["only one arg"]),
                  _error("builtins", "Nope", []), {"code": "user_exception", "type": "Weird", "message": "x"}):
        exc = remote_exception(error, "t")
        assert type(exc) is RemoteExecutionError and exc.remote_message == error["message"]
    assert pickle.loads(pickle.dumps(exc)).remote_type == "Weird"


def test_a_hostile_endpoint_cannot_make_the_client_import_call_or_exit():
    # Not an Exception: a callable with side effects, a BaseException, a module never imported.
    for module, qualname, args in (("os", "system", ["echo pwned"]), ("subprocess", "Popen", ["true"]),
                                   ("builtins", "SystemExit", [3]), ("builtins", "KeyboardInterrupt", []),
                                   ("builtins", "eval", ["1"]), ("antigravity", "X", [])):
        exc = remote_exception(_error(module, qualname, args))
        assert type(exc) is RemoteExecutionError, (module, qualname)
    assert find_class("this", "X") is None and find_class("json.decoder", "JSONDecodeError") is not None
    # A fresh interpreter: naming a module never imports it.
    code = ("import sys; from fnserve.remote_errors import remote_exception; "
            "remote_exception({'type': 'antigravity.X', 'module': 'antigravity', 'qualname': 'X', 'message': ''}); "
            "print('antigravity' in sys.modules, 'this' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False False\n"


def test_old_records_without_module_are_read_from_the_type_name():
    assert find_class("", "", "ValueError") is ValueError
    assert find_class("", "", "json.decoder.JSONDecodeError") is not None
    assert find_class("", "", "collections.OrderedDict") is None  # not an exception


# -- dill or source text ----------------------------------------------------------------------------


def test_dill_failure_falls_back_to_source_only_for_a_self_contained_function_and_says_so():
    def self_contained(x, _g=(i for i in range(3))):
        return x

    state = (i for i in range(3))

    def uses_state():
        return next(state)

    with pytest.warns(serialize.SourceFallbackWarning):
        assert serialize.parse_header(serialize.serialize_function(self_contained)).strategy == "source"
    with pytest.raises(SerializationError, match="uses state from around it"):
        serialize.serialize_function(uses_state)
    with pytest.raises(SerializationError, match="dill could not serialize"):
        serialize.serialize_function(self_contained, "dill-code")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert serialize.parse_header(serialize.serialize_function(self_contained, "source")).strategy == "source"
        assert serialize.parse_header(serialize.serialize_function(len)).strategy == "dill-code"
    with pytest.raises(SerializationError):
        serialize.serialize_function(len, "pickle")
