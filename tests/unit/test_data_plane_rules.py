"""The data plane's decisions (fnserve.data_refs, web_service.object_rules), without services."""

from __future__ import annotations

import pytest

from fnserve import serialize
from fnserve.data_refs import ObjectRef, by_reference, chunks, read_ref, result_route
from fnserve.errors import FnserveError, SerializationError, SerializerNotAllowed
from web_service.object_rules import (
    Gone,
    ObjectMeta,
    Principal,
    check_access,
    check_chunk,
    check_new_object,
    data_token_live,
    data_token_task,
    mint_data_token,
    object_ttl,
    parse_content_range,
    parse_range,
    pick_recycled,
    recycle_room,
    upload_checksum,
)

REF = ObjectRef("a" * 32, 123, "b" * 64, "dill-data")


def meta(**kw):
    base = {"object_id": "a" * 32, "owner": "alice", "size": 100, "sha256": "b" * 64, "received": 0, "complete": False,
            "expires": 1e12}
    return ObjectMeta(**{**base, **kw})


def test_a_payload_goes_by_reference_only_above_the_threshold():
    assert by_reference(5, 4) and not by_reference(4, 4) and not by_reference(10**12, None)


def test_a_result_goes_by_reference_when_a_store_is_reachable_else_inline_up_to_the_limit():
    assert result_route(100, 10, 50, True) == "reference"
    assert result_route(100, 10, 50, False) == "too_large"
    assert result_route(40, 10, 50, False) == "inline"
    assert result_route(5, 10, 50, True) == "inline"
    assert result_route(100, None, 50, True) == "too_large"


def test_chunks_cover_the_object_once():
    assert chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunks(10, 4, start=6) == [(6, 10)]
    with pytest.raises(ValueError):
        chunks(10, 0)


def test_a_reference_buffer_round_trips_and_is_not_a_plain_buffer():
    buf = REF.to_buffer("3.11")
    assert read_ref(buf) == REF
    assert read_ref(serialize.serialize_data([1, 2])) is None
    with pytest.raises(SerializationError) as err:
        serialize.deserialize_data(buf)
    assert err.value.code == "unresolved_reference"
    with pytest.raises(SerializationError):
        read_ref(b"fns1 ref 3.11\n{not json")


def test_a_policy_is_checked_against_the_strategy_a_reference_declares():
    buf = REF.to_buffer("3.11")
    with pytest.raises(SerializerNotAllowed):
        serialize.check_allowed(buf, ("json-data",), "arguments")
    assert serialize.check_allowed(buf, ("dill-data",), "arguments").strategy == "dill-data"
    assert not serialize.parse_header(buf).is_code  # the service accepts it as arguments


def test_only_the_owner_reaches_an_object_and_others_learn_nothing_of_its_life():
    assert check_access(meta(), "x", Principal("alice"), 0.0).owner == "alice"
    # A task's data token: the objects its arguments name, and those its worker made; no others.
    assert check_access(meta(), "x", Principal("alice", task_id="t1", objects=frozenset({"x"})), 0.0)
    assert check_access(meta(task="t1"), "x", Principal("alice", task_id="t1"), 0.0)
    with pytest.raises(FnserveError) as err:
        check_access(meta(task="t2"), "x", Principal("alice", task_id="t1", objects=frozenset({"y"})), 0.0)
    assert err.value.code == "forbidden"
    with pytest.raises(FnserveError) as err:
        check_access(meta(expires=1.0), "x", Principal("mallory"), 5.0)
    assert err.value.code == "forbidden" and err.value.http_status == 403
    with pytest.raises(Gone):
        check_access(meta(expires=1.0), "x", Principal("alice"), 5.0)
    with pytest.raises(Gone):
        check_access(meta(gone=True), "x", Principal("alice"), 0.0)
    with pytest.raises(FnserveError) as err:
        check_access(None, "x", Principal("alice"), 0.0)
    assert err.value.code == "object_not_found"


def test_a_new_object_must_fit_the_quota_and_the_object_limit():
    assert check_new_object(10, "c" * 64, used=0, quota=10, max_object=10) == (10, "c" * 64)
    for size, used, code in ((11, 0, "object_too_large"), (6, 5, "object_quota_exceeded")):
        with pytest.raises(FnserveError) as err:
            check_new_object(size, "c" * 64, used=used, quota=10, max_object=10)
        assert err.value.code == code and err.value.http_status == 413
    for size, sha in ((-1, "c" * 64), (True, "c" * 64), ("5", "c" * 64), (5, "C" * 64), (5, "c" * 63)):
        with pytest.raises(FnserveError) as err:
            check_new_object(size, sha, used=0, quota=10, max_object=10)
        assert err.value.code == "invalid_request"
    # The checksum may be left for the last chunk.
    assert check_new_object(10, None, used=0, quota=10, max_object=10) == (10, "")


def test_the_checksum_comes_at_creation_or_with_the_last_chunk_and_the_last_chunk_needs_one():
    c, d = "c" * 64, "d" * 64
    assert upload_checksum(c, None, last=True) == c and upload_checksum(c, c, last=True) == c
    assert upload_checksum("", d, last=True) == d and upload_checksum("", None, last=False) == ""
    for declared, header, last, code in (("", None, True, "checksum_missing"), (c, d, True, "checksum_mismatch"),
                                         ("", "D" * 64, True, "invalid_request"), ("", "x", False, "invalid_request")):
        with pytest.raises(FnserveError) as err:
            upload_checksum(declared, header, last=last)
        assert err.value.code == code and err.value.http_status == 400


def test_ttl_defaults_and_caps():
    assert object_ttl(None, 60, 3600) == 60
    assert object_ttl(10**9, 60, 3600) == 3600
    for bad in (0, -1, "5", True):
        with pytest.raises(FnserveError):
            object_ttl(bad, 60, 3600)


def test_upload_chunks_continue_where_the_object_stands():
    assert parse_content_range("bytes 0-9/100", 10, 100) == (0, 10)
    assert parse_content_range(None, 100, 100) == (0, 100)
    for header, length in (("bytes 0-9/99", 10), ("bytes 95-104/100", 10), ("bytes 0-9/100", 9), ("0-9", 10),
                           ("bytes 9-0/100", 10)):
        with pytest.raises(FnserveError) as err:
            parse_content_range(header, length, 100)
        assert err.value.code == "invalid_range"
    check_chunk(meta(received=10), 10, 20, max_chunk=16)
    with pytest.raises(FnserveError) as err:
        check_chunk(meta(received=10), 20, 30, max_chunk=16)
    assert err.value.code == "wrong_offset" and err.value.details["received"] == 10
    with pytest.raises(FnserveError) as err:
        check_chunk(meta(received=0), 0, 32, max_chunk=16)
    assert err.value.code == "chunk_too_large"
    with pytest.raises(FnserveError) as err:
        check_chunk(meta(received=100, complete=True), 100, 100, max_chunk=16)
    assert err.value.code == "object_complete"


def test_download_ranges():
    assert parse_range(None, 100) == (0, 100)
    assert parse_range("bytes=10-", 100) == (10, 100)
    assert parse_range("bytes=10-19", 100) == (10, 20)
    assert parse_range("bytes=10-500", 100) == (10, 100)
    for bad in ("bytes=100-", "bytes=0-1,5-6", "items=0-1"):
        with pytest.raises(FnserveError) as err:
            parse_range(bad, 100)
        assert err.value.http_status == 416


def test_a_data_token_names_its_task_only_under_the_service_key():
    key = b"k" * 32
    token = mint_data_token(key, "task-1")
    assert data_token_task(key, token) == "task-1"
    assert data_token_task(b"x" * 32, token) is None
    assert data_token_task(key, token.replace("task-1", "task-2")) is None
    assert data_token_task(key, "fns_usertoken") is None


def test_a_data_token_lives_while_its_task_runs_and_a_grace_after():
    assert data_token_live("running", None, now=100.0)
    assert data_token_live("waiting-for-endpoint", None, now=100.0)
    assert data_token_live("success", 90.0, now=100.0, grace=60)
    assert not data_token_live("success", 30.0, now=100.0, grace=60)
    assert not data_token_live("failed", None, now=100.0)
    assert not data_token_live(None, None, now=100.0)


def test_output_files_are_shipped_again_only_when_they_changed():
    from fnserve.output_files import files_to_ship, is_file_output

    shipped = {"a.png": (10, 1), "b.png": (10, 1)}
    now = {"a.png": (10, 1), "b.png": (12, 2), "logs/c.txt": (1, 3)}
    assert files_to_ship(now, shipped) == ["b.png", "logs/c.txt"]
    assert files_to_ship({}, shipped) == []
    assert is_file_output({"file": "a.png", "object_id": "x" * 32, "size": 1, "sha256": "y"})
    assert not is_file_output({"step": 3})


def test_output_dir_outside_a_worker_is_a_local_folder(tmp_path, monkeypatch):
    import fnserve

    monkeypatch.chdir(tmp_path)
    assert fnserve.output_dir() == tmp_path / "fnserve-outputs" or fnserve.output_dir().resolve() == tmp_path / "fnserve-outputs"
    assert (tmp_path / "fnserve-outputs").is_dir()


def test_a_download_may_follow_an_upload_for_a_bounded_wait_and_gets_the_last_byte_once_checked():
    from web_service.object_rules import MAX_FOLLOW_WAIT, follow_wait, readable_end

    assert follow_wait(None) is None and follow_wait("") is None
    assert follow_wait("2.5") == 2.5 and follow_wait("1e9") == MAX_FOLLOW_WAIT
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(FnserveError) as err:
            follow_wait(bad)
        assert err.value.code == "invalid_wait"
    assert readable_end(meta(received=40)) == 40
    assert readable_end(meta(received=100)) == 99  # stored, but its checksum not yet checked
    assert readable_end(meta(received=100, complete=True)) == 100


def test_a_finished_tasks_token_may_only_finish_an_upload_its_task_started():
    from web_service.object_rules import finishing_upload

    assert finishing_upload(meta(task="t1", received=50), "t1")
    assert not finishing_upload(meta(task="t1", received=50), "t2")
    assert not finishing_upload(meta(task="t1", received=100, complete=True), "t1")
    assert not finishing_upload(meta(task="t1", gone=True), "t1")
    assert not finishing_upload(None, "t1")


@pytest.mark.parametrize("pool, need, taken", [
    ([("a", 10), ("b", 300), ("c", 120)], 100, "c"),  # the smallest that holds it
    ([("a", 10), ("b", 300), ("c", 120)], 120, "c"),
    ([("a", 10), ("b", 30)], 100, "b"),  # none holds it: the largest (it grows)
])
def test_a_new_object_takes_the_recycled_file_that_wastes_least(pool, need, taken):
    assert pick_recycled(pool, need) == taken


@pytest.mark.parametrize("pool, size, limit, joins", [
    ([], 100, 100, True), ([60], 40, 100, True), ([60], 41, 100, False), ([], 0, 100, False), ([], 1, 0, False),
])
def test_the_recycle_pool_holds_at_most_its_bytes(pool, size, limit, joins):
    assert recycle_room(pool, size, limit) is joins


def test_released_arguments_say_their_task_finished():
    m = meta(released=True, expires=1.0)
    with pytest.raises(Gone) as err:
        check_access(m, m.object_id, Principal("alice"), now=2.0)
    assert err.value.details["released"] and "finished" in err.value.message
