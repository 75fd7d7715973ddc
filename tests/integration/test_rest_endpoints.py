"""REST: registering endpoints, their status, deletion, and secret checks for the forwarder."""

from __future__ import annotations

from rest_support import assert_error, register_endpoint, register_function, state
from web_service.services.endpoints import verify_endpoint_secret


def test_registration_shows_the_secret_once_and_where_to_connect(client, alice):
    ep = register_endpoint(client, alice, "cluster")
    assert ep["name"] == "cluster" and ep["description"] == ""
    assert ep["secret"] and ep["forwarder_address"] == "tcp://forwarder.example:55001"
    shown = client.get(f"/v1/endpoints/{ep['endpoint_id']}", headers=alice).json
    assert "secret" not in shown
    assert shown["endpoint_id"] == ep["endpoint_id"] and shown["created_at"] == ep["created_at"]
    assert shown["status"]["connected"] is False and shown["status"]["tasks_waiting"] == 0


def test_list_and_status_reflect_the_connection(client, alice, bob, store):
    ep = register_endpoint(client, alice)
    register_endpoint(client, bob)
    store.set_connected(ep["endpoint_id"], True)
    listed = client.get("/v1/endpoints", headers=alice).json["endpoints"]
    assert [e["endpoint_id"] for e in listed] == [ep["endpoint_id"]]
    assert listed[0]["status"]["connected"] is True
    status = client.get(f"/v1/endpoints/{ep['endpoint_id']}/status", headers=alice).json
    assert status["endpoint_id"] == ep["endpoint_id"] and status["connected"] is True


def test_forwarder_checks_endpoint_secrets(app, client, alice):
    ep = register_endpoint(client, alice)
    with state(app).sessions() as session:
        assert verify_endpoint_secret(session, ep["endpoint_id"], ep["secret"])
        assert not verify_endpoint_secret(session, ep["endpoint_id"], ep["secret"] + "x")
        assert not verify_endpoint_secret(session, "no-such-endpoint", ep["secret"])
    client.delete(f"/v1/endpoints/{ep['endpoint_id']}", headers=alice)
    with state(app).sessions() as session:
        assert not verify_endpoint_secret(session, ep["endpoint_id"], ep["secret"])


def test_other_users_endpoint_is_refused(client, alice, bob):
    eid = register_endpoint(client, alice)["endpoint_id"]
    for path in (f"/v1/endpoints/{eid}", f"/v1/endpoints/{eid}/status"):
        assert_error(client.get(path, headers=bob), 403, "forbidden")
    assert_error(client.delete(f"/v1/endpoints/{eid}", headers=bob), 403, "forbidden")


def test_unknown_endpoint_is_404(client, alice):
    for path in ("/v1/endpoints/nope", "/v1/endpoints/nope/status"):
        assert_error(client.get(path, headers=alice), 404, "endpoint_not_found")


def test_deleting_an_endpoint_fails_its_waiting_tasks_at_once_and_refuses_new_ones(client, alice, store):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    ids = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}] * 2}, headers=alice).json["task_ids"]
    resp = client.delete(f"/v1/endpoints/{eid}", headers=alice)
    assert resp.status_code == 200 and resp.json["deleted"] is True and resp.json["tasks_failed"] == 2
    assert [store.get(t).state.value for t in ids] == ["failed", "failed"]
    # A waiting client gets the failure at once, with a code to act on.
    got = client.get(f"/v1/tasks/{ids[0]}", headers=alice).json
    assert got["state"] == "failed" and got["error"]["code"] == "endpoint_deleted", got
    assert eid in got["error"]["message"]
    assert_error(client.get(f"/v1/endpoints/{eid}", headers=alice), 404, "endpoint_not_found")
    again = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}]}, headers=alice)
    assert_error(again, 404, "endpoint_not_found")


def test_endpoint_deleted_by_another_process_refuses_tasks_despite_cached_ownership(app, client, alice, store, settings):
    from web_service.app import create_app

    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    body = {"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}]}
    assert client.post("/v1/tasks", json=body, headers=alice).status_code == 202  # caches ownership
    other = create_app(settings)  # a second gunicorn worker, say
    try:
        assert other.test_client().delete(f"/v1/endpoints/{eid}", headers=alice).status_code == 200
    finally:
        state(other).engine.dispose()
    assert_error(client.post("/v1/tasks", json=body, headers=alice), 404, "endpoint_not_found")


def test_bad_register_requests_name_the_field(client, alice):
    for body, field in [({}, "name"), ({"name": 1}, "name"), ({"name": "x", "description": 5}, "description")]:
        err = assert_error(client.post("/v1/endpoints", json=body, headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == field
