"""REST: the runtime registry, functions with a default runtime, and runtime checks at submit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from rest_support import assert_error, b64, register_endpoint, register_function, state

from fnserve.messages import EndpointStatus


def register_runtime(client, headers, name="sci", type="podman", image="localhost/fnserve-worker:latest"):
    resp = client.post("/v1/runtimes", json={"name": name, "type": type, "image": image}, headers=headers)
    assert resp.status_code == 201, resp.json
    return resp.json["runtime_id"]


def submit(client, headers, *tasks):
    return client.post("/v1/tasks", json={"tasks": list(tasks)}, headers=headers)


def report(store, endpoint_id, *runtimes):
    """What the forwarder stores when the site manager sends its status."""
    store.touch(endpoint_id, EndpointStatus(runtimes={r: {"workers": 0} for r in runtimes}))


def test_runtime_is_registered_listed_fetched_by_id_or_name_and_deleted(client, alice):
    rid = register_runtime(client, alice, description := "sci")
    assert [r["runtime_id"] for r in client.get("/v1/runtimes", headers=alice).json["runtimes"]] == [rid]
    by_name = client.get("/v1/runtimes/sci", headers=alice).json
    assert by_name == client.get(f"/v1/runtimes/{rid}", headers=alice).json
    assert (by_name["type"], by_name["image"]) == ("podman", "localhost/fnserve-worker:latest")
    assert_error(client.post("/v1/runtimes", json={"name": "sci", "type": "venv", "image": "/x/python"}, headers=alice), 409, "runtime_exists")
    assert client.delete("/v1/runtimes/sci", headers=alice).status_code == 200
    assert_error(client.get(f"/v1/runtimes/{rid}", headers=alice), 404, "runtime_not_found")


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "type": "lxc", "image": "i"}, "type"),
    ({"name": "x", "type": "podman"}, "image"),
    ({"name": "a b", "type": "host"}, "name"),
    ({"type": "host"}, "name"),
])
def test_bad_runtime_bodies_name_the_field(client, alice, body, field):
    assert assert_error(client.post("/v1/runtimes", json=body, headers=alice), 400, "invalid_request")["details"]["field"] == field


def test_others_runtimes_are_private_until_shared(client, alice, bob):
    rid = register_runtime(client, alice)
    assert_error(client.get(f"/v1/runtimes/{rid}", headers=bob), 403, "forbidden")
    assert_error(client.get("/v1/runtimes/sci", headers=bob), 404, "runtime_not_found")  # names resolve among your own and shared
    assert client.put(f"/v1/runtimes/{rid}/sharing", json={"public": True}, headers=alice).status_code == 200
    assert client.get("/v1/runtimes/sci", headers=bob).json["runtime_id"] == rid
    assert_error(client.delete(f"/v1/runtimes/{rid}", headers=bob), 403, "owner_only")


def test_unknown_runtime_is_refused_at_submit(client, alice, store):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    err = assert_error(submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": "nope"}), 404, "runtime_not_found")
    assert "nope" in err["message"]
    assert_error(client.post("/v1/functions", json={"name": "f", "function": b64(b"x"), "runtime": "nope"}, headers=alice), 404, "runtime_not_found")


def test_runtime_the_endpoint_does_not_report_is_refused_naming_what_it_runs(client, alice, store):
    register_runtime(client, alice, "sci")
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    report(store, eid, "host", "py-venv")
    err = assert_error(submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": "sci"}), 409, "runtime_not_supported")
    assert "sci" in err["message"] and err["details"]["supported"] == ["host", "py-venv"]
    report(store, eid, "host", "sci")
    assert submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": "sci"}).status_code == 202
    assert store.claim(eid, 10)[0].runtime == "sci"


def test_first_submit_naming_a_runtime_resolves_it_in_one_query_and_a_repeat_in_none(app, client, alice, bob, store):
    """A hot spare's first call: the service's first use of a runtime name reads the runtime and
    who may use it together (it was three statements: the name, the row again, its grants)."""
    register_runtime(client, alice, "sci")
    gpu = register_runtime(client, alice, "gpu", type="venv", image="/opt/gpu/bin/python")
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    for path, body in ((f"runtimes/{gpu}", {"users": ["bob"]}), (f"functions/{fid}", {"public": True}), (f"endpoints/{eid}", {"public": True})):
        assert client.put(f"/v1/{path}/sharing", json=body, headers=alice).status_code == 200
    report(store, eid, "host", "sci", "gpu")
    for who in (alice, bob):  # the function and endpoint are known to this process from here on
        assert submit(client, who, {"function_id": fid, "endpoint_id": eid, "args": [1]}).status_code == 202
    store.claim(eid, 10)
    statements: list[str] = []
    sa.event.listen(state(app).engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for who, name in ((alice, "sci"), (bob, "gpu"), (alice, "gpu")):  # own, shared with bob, own
        statements.clear()
        assert submit(client, who, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": name}).status_code == 202
        assert len(statements) == 1, statements
        statements.clear()
        assert submit(client, who, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": name}).status_code == 202
        assert statements == []
    assert [t.runtime for t in store.claim(eid, 10)] == ["sci", "sci", "gpu", "gpu", "gpu", "gpu"]
    assert_error(submit(client, bob, {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": "sci"}), 404, "runtime_not_found")


def test_function_default_runtime_travels_with_its_tasks_unless_a_task_names_another(client, alice, store):
    rid = register_runtime(client, alice, "sci")
    register_runtime(client, alice, "other", type="venv", image="/opt/other/bin/python")
    resp = client.post("/v1/functions", json={"name": "f", "function": b64(_fn()), "runtime": rid}, headers=alice)
    assert resp.status_code == 201 and resp.json["runtime_id"] == rid
    fid, eid = resp.json["function_id"], register_endpoint(client, alice)["endpoint_id"]
    assert submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]},
                  {"function_id": fid, "endpoint_id": eid, "args": [1], "runtime": "other"}).status_code == 202
    assert [t.runtime for t in store.claim(eid, 10)] == ["sci", "other"]
    plain = register_function(client, alice)
    submit(client, alice, {"function_id": plain, "endpoint_id": eid, "args": [1]})
    assert store.claim(eid, 10)[0].runtime is None  # the endpoint's default runtime


def test_function_shared_with_its_runtime_runs_for_others_but_not_after_the_runtime_is_deleted(client, alice, bob, store):
    rid = register_runtime(client, alice, "sci")
    fid = client.post("/v1/functions", json={"name": "f", "function": b64(_fn()), "runtime": "sci"}, headers=alice).json["function_id"]
    client.put(f"/v1/functions/{fid}/sharing", json={"users": ["bob"]}, headers=alice)
    eid = register_endpoint(client, bob)["endpoint_id"]
    assert submit(client, bob, {"function_id": fid, "endpoint_id": eid, "args": [1]}).status_code == 202
    client.delete(f"/v1/runtimes/{rid}", headers=alice)
    assert_error(submit(client, alice, {"function_id": fid, "endpoint_id": register_endpoint(client, alice)["endpoint_id"], "args": [1]}),
                 404, "runtime_not_found")


def _fn() -> bytes:
    from fnserve import serialize

    return serialize.serialize_source("def f(x):\n    return x\n", "f")
