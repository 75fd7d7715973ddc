"""REST: registering, listing, reading and deleting functions."""

from __future__ import annotations

from datetime import datetime

from fnserve import serialize
from rest_support import MAX_PAYLOAD, assert_error, b64, register_function, source_function
from web_service.task_store import function_key


def test_registered_function_is_listed_read_and_cached_for_dispatch(client, alice, store):
    buf = source_function()
    resp = client.post("/v1/functions", json={"name": "double", "function": b64(buf), "description": "x2"}, headers=alice)
    assert resp.status_code == 201
    fn = resp.json
    assert fn["name"] == "double" and fn["description"] == "x2"
    assert fn["strategy"] == "source" and fn["python"] == serialize.PYTHON_VERSION
    assert datetime.fromisoformat(fn["created_at"]).tzinfo is not None
    assert store.r.get(function_key(fn["function_id"])) == buf

    assert client.get(f"/v1/functions/{fn['function_id']}", headers=alice).json == fn
    assert client.get("/v1/functions", headers=alice).json == {"functions": [fn]}


def test_dill_function_is_accepted(client, alice):
    buf = serialize.serialize_function(lambda x: x + 1, strategy="dill-code")
    resp = client.post("/v1/functions", json={"name": "inc", "function": b64(buf)}, headers=alice)
    assert resp.status_code == 201 and resp.json["strategy"] == "dill-code"


def test_list_shows_only_own_functions(client, alice, bob):
    mine = register_function(client, alice, "mine")
    register_function(client, bob, "theirs")
    assert [f["function_id"] for f in client.get("/v1/functions", headers=alice).json["functions"]] == [mine]


def test_deleted_function_is_gone_everywhere(client, alice, store):
    fid = register_function(client, alice)
    resp = client.delete(f"/v1/functions/{fid}", headers=alice)
    assert resp.status_code == 200 and resp.json == {"function_id": fid, "deleted": True}
    assert_error(client.get(f"/v1/functions/{fid}", headers=alice), 404, "function_not_found")
    assert_error(client.delete(f"/v1/functions/{fid}", headers=alice), 404, "function_not_found")
    assert client.get("/v1/functions", headers=alice).json == {"functions": []}
    assert not store.has_function(fid)


def test_other_users_function_cannot_be_read_or_deleted(client, alice, bob):
    fid = register_function(client, alice)
    assert_error(client.get(f"/v1/functions/{fid}", headers=bob), 403, "forbidden")
    assert_error(client.delete(f"/v1/functions/{fid}", headers=bob), 403, "forbidden")
    assert client.get(f"/v1/functions/{fid}", headers=alice).status_code == 200


def test_unknown_function_is_404(client, alice):
    assert_error(client.get("/v1/functions/00000000-0000-4000-8000-000000000000", headers=alice), 404, "function_not_found")


def test_data_buffer_is_refused_as_a_function(client, alice):
    buf = serialize.serialize_args([1], strategy="json-data")
    err = assert_error(client.post("/v1/functions", json={"name": "f", "function": b64(buf)}, headers=alice), 400, "wrong_strategy")
    assert err["details"]["field"] == "function"


def test_buffers_not_made_by_fnserve_are_refused(client, alice):
    cases = {b"def f(x): return x\n": "not_fnserve_format", b"fns1 pickle 3.11\nxxx": "unknown_strategy"}
    for buf, code in cases.items():
        assert_error(client.post("/v1/functions", json={"name": "f", "function": b64(buf)}, headers=alice), 400, code)


def test_bad_register_requests_name_the_field(client, alice):
    good = b64(source_function())
    cases = [
        ({"function": good}, "name"),
        ({"name": 3, "function": good}, "name"),
        ({"name": "", "function": good}, "name"),
        ({"name": "f"}, "function"),
        ({"name": "f", "function": "not base64!!"}, "function"),
        ({"name": "f", "function": 12}, "function"),
        ({"name": "f", "function": good, "description": ["x"]}, "description"),
    ]
    for body, field in cases:
        err = assert_error(client.post("/v1/functions", json=body, headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == field, body
        assert field in err["message"]


def test_function_over_the_size_limit_is_413(client, alice):
    padding = "x" * (MAX_PAYLOAD + 10)
    buf = serialize.serialize_source(f"def f(x):\n    return {padding!r}\n", "f")
    err = assert_error(client.post("/v1/functions", json={"name": "f", "function": b64(buf)}, headers=alice), 413, "payload_too_large")
    assert err["details"]["limit"] == MAX_PAYLOAD
