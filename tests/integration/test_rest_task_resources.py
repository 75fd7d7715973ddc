"""REST (real Redis and SQL, no endpoint processes): per-task resources and ``user_endpoint_config``
checked at submit against what each endpoint said when it connected (as the forwarder records
it from the endpoint's Register), and the submitter's identity stamped for a multi-user endpoint
where no client can forge it."""

from __future__ import annotations

import json

from rest_support import assert_error, b64, register_endpoint, source_function

from fnserve.user_endpoint_config import ROUTING_KEY
from web_service.task_store import queue_key

SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"partition": {"enum": ["debug"]}, "workers": {"type": "integer", "maximum": 2}}}


def _function(client, headers) -> str:
    resp = client.post("/v1/functions", json={"name": "double", "function": b64(source_function())}, headers=headers)
    assert resp.status_code == 201, resp.json
    return resp.json["function_id"]


def _submit(client, headers, fid, eid, **task):
    return client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1], **task}]},
                       headers=headers)


def test_a_task_no_worker_can_hold_is_refused_at_submit_with_what_the_endpoint_offers(client, alice, store):
    fid = _function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    store.set_connected(eid, True, serializers="*", mpi_nodes=0,
                        offers=json.dumps({"host": {"cores": 2, "memory": 4096, "gpus": 0, "walltime": 3600}}))
    assert _submit(client, alice, fid, eid, resource_specification={"cores": 2, "memory": 1024}).status_code == 202
    for spec, words in (({"cores": 4}, "4 cores"), ({"memory": 8192}, "8192 MB"), ({"gpus": 1}, "1 GPUs"),
                        ({"walltime": 7200}, "7200 s")):
        body = assert_error(_submit(client, alice, fid, eid, resource_specification=spec), 400, "resources_never_fit")
        assert words in body["message"] and "ask for at most cores 2" in body["message"], body
        assert body["details"]["field"].startswith("tasks[0].resource_specification")
    assert_error(_submit(client, alice, fid, eid, resource_specification={"cores": "two"}), 400, "invalid_resource_specification")
    assert store.r.llen(queue_key(eid)) == 1


def test_a_multi_user_endpoints_tasks_carry_the_submitter_and_checked_values(client, alice, store):
    fid = _function(client, alice)
    eid = register_endpoint(client, alice, "mep")["endpoint_id"]
    store.set_connected(eid, True, serializers="*", mpi_nodes=-1, offers="null", user_config_schema=json.dumps(SCHEMA))
    body = assert_error(_submit(client, alice, fid, eid, user_endpoint_config={"workers": 3}), 400, "invalid_user_endpoint_config")
    assert body["details"]["field"] == "tasks[0].user_endpoint_config.workers", body
    assert_error(_submit(client, alice, fid, eid, user_endpoint_config={"queue": "x"}), 400, "invalid_user_endpoint_config")
    assert_error(_submit(client, alice, fid, eid, user_endpoint_config=["debug"]), 400, "invalid_user_endpoint_config")
    # A client cannot say who submitted: the key is the service's.
    forged = {ROUTING_KEY: {"identity": {"username": "root", "user_id": "0"}}}
    assert_error(_submit(client, alice, fid, eid, resource_specification=forged), 400, "invalid_request")
    assert store.r.llen(queue_key(eid)) == 0

    resp = _submit(client, alice, fid, eid, user_endpoint_config={"partition": "debug"}, resource_specification={"cores": 64})
    assert resp.status_code == 202, resp.json  # offers not said (each user endpoint's own): the endpoint decides
    tid = resp.json["task_ids"][0]
    sent = store.claim(eid, 10)[0]  # what the forwarder sends the endpoint
    stamp = sent.resource_specification[ROUTING_KEY]
    assert stamp["identity"]["username"] == "alice" and stamp["config"] == {"partition": "debug"}
    assert sent.resource_specification["cores"] == 64
    # The owner sees what they asked, not the stamp.
    view = client.get(f"/v1/tasks/{tid}", headers=alice).json
    assert view["resource_specification"] == {"cores": 64} and view["user_endpoint_config"] == {"partition": "debug"}

    # Submitted before the endpoint ever connected, with values: stamped, the values left to the
    # endpoint to check; without values to an ordinary endpoint, forwarded as given (nothing).
    later = register_endpoint(client, alice, "later")["endpoint_id"]
    plain = register_endpoint(client, alice, "plain")["endpoint_id"]
    store.set_connected(plain, True, serializers="*", mpi_nodes=0, offers="null", user_config_schema="")
    assert _submit(client, alice, fid, later, user_endpoint_config={"anything": 1}).status_code == 202
    assert _submit(client, alice, fid, plain).status_code == 202
    assert store.claim(later, 10)[0].resource_specification[ROUTING_KEY]["identity"]["username"] == "alice"
    assert store.claim(plain, 10)[0].resource_specification is None
