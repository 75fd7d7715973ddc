"""REST: shell functions registered and called with plain JSON (what curl sends), checked by the
service: a bad template at registration and a missing placeholder at submit are 400s with stable
codes, before anything is queued."""

from __future__ import annotations

from rest_support import assert_error, b64, register_endpoint

from fnserve import serialize
from web_service.task_store import function_key, queue_key


def register_shell(client, headers, **shell):
    return client.post("/v1/functions", json={"name": "count", "shell": shell}, headers=headers)


def test_shell_function_from_plain_json_is_stored_and_shown_with_its_placeholders(client, alice, store):
    resp = register_shell(client, alice, command="wc -l {path} {more}", sandbox=True, walltime=30)
    assert resp.status_code == 201, resp.json
    fid = resp.json["function_id"]
    assert resp.json["strategy"] == "shell"
    shown = client.get(f"/v1/functions/{fid}", headers=alice).json
    assert shown["shell"] == {"command": "wc -l {path} {more}", "sandbox": True, "walltime": 30,
                              "max_output_bytes": 65536, "placeholders": ["path", "more"]}
    # The cached body is an fnserve buffer workers load like any function (JSON, no code).
    buf = store.r.get(function_key(fid))
    assert serialize.parse_header(buf).strategy == "shell"
    assert serialize.deserialize_function(buf).command == "wc -l {path} {more}"


def test_bad_templates_are_refused_at_registration_naming_the_field(client, alice):
    for shell, field in (({"command": "echo {0}"}, "command"), ({"command": "echo {a.b}"}, "command"),
                         ({"command": "echo {a"}, "command"), ({"command": "  "}, "command"),
                         ({"command": "x", "walltime": -1}, "walltime"), ({"command": "x", "oops": 1}, "shell")):
        body = assert_error(register_shell(client, alice, **shell), 400, "invalid_shell_template")
        assert body["details"]["field"] == field, (shell, body)
    assert_error(client.post("/v1/functions", json={"name": "x", "shell": "ls"}, headers=alice), 400, "invalid_shell_template")
    both = client.post("/v1/functions", json={"name": "x", "shell": {"command": "ls"}, "function": "eA=="}, headers=alice)
    assert_error(both, 400, "invalid_request")


def test_a_shell_buffer_with_a_bad_template_is_refused_like_the_json_form(client, alice):
    buf = b"fns1 shell 3.11\n" + b'{"command":"echo {}"}'
    assert_error(client.post("/v1/functions", json={"name": "x", "function": b64(buf)}, headers=alice), 400,
                 "invalid_shell_template")


def test_submit_checks_json_arguments_against_the_placeholders(client, alice, store):
    fid = register_shell(client, alice, command="cp {src} {dst}").json["function_id"]
    eid = register_endpoint(client, alice)["endpoint_id"]
    task = {"function_id": fid, "endpoint_id": eid}

    missing = client.post("/v1/tasks", json={"tasks": [{**task, "kwargs": {"src": "a"}}]}, headers=alice)
    body = assert_error(missing, 400, "missing_placeholder")
    assert body["details"]["placeholder"] == "dst" and "{dst}" in body["message"]
    extra = client.post("/v1/tasks", json={"tasks": [{**task, "kwargs": {"src": "a", "dst": "b", "dts": "c"}}]}, headers=alice)
    assert assert_error(extra, 400, "unknown_placeholder")["details"]["placeholder"] == "dts"
    positional = client.post("/v1/tasks", json={"tasks": [{**task, "args": ["a", "b"]}]}, headers=alice)
    assert_error(positional, 400, "invalid_shell_arguments")
    nested = client.post("/v1/tasks", json={"tasks": [{**task, "kwargs": {"src": {"x": 1}, "dst": "b"}}]}, headers=alice)
    assert_error(nested, 400, "invalid_shell_arguments")
    assert store.r.llen(queue_key(eid)) == 0  # nothing was queued

    # Per-task answers: the good task is queued, the bad one refused with its index.
    mixed = client.post("/v1/tasks", json={"tasks": [{**task, "kwargs": {"src": "a", "dst": "b"}}, {**task, "kwargs": {}}]},
                        headers=alice)
    assert mixed.status_code == 207, mixed.json
    assert mixed.json["task_ids"][0] and mixed.json["task_ids"][1] is None
    assert mixed.json["errors"][0]["code"] == "missing_placeholder" and mixed.json["errors"][0]["index"] == 1
    assert store.r.llen(queue_key(eid)) == 1


def test_shell_functions_are_code_for_an_endpoint_policy(client, alice):
    # A shell function runs commands: an endpoint whose allowed_serializers leave it out never loads it.
    assert serialize.SHELL in serialize.CODE_CAPABLE and serialize.SHELL in serialize.CODE_STRATEGIES
    assert serialize.data_only(None).count(serialize.SHELL) == 1


def test_mpi_requests_an_endpoint_can_never_run_are_refused_at_submit(client, alice, store):
    fid = register_shell(client, alice, command="$PARSL_MPI_PREFIX ./sim").json["function_id"]
    eids = {name: register_endpoint(client, alice, name)["endpoint_id"] for name in ("mpi2", "plain", "old")}
    # What each endpoint said when it connected (the forwarder writes this from its Register).
    store.set_connected(eids["mpi2"], True, serializers="*", mpi_nodes=2)
    store.set_connected(eids["plain"], True, serializers="*", mpi_nodes=0)
    store.set_connected(eids["old"], True, serializers="*")  # an older site manager says nothing

    def submit(endpoint: str, spec: dict):
        return client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eids[endpoint],
                                                         "kwargs": {}, "resource_specification": spec}]}, headers=alice)

    assert submit("mpi2", {"num_nodes": 2, "ranks_per_node": 4}).status_code == 202
    body = assert_error(submit("mpi2", {"num_nodes": 3}), 400, "resources_never_fit")
    assert body["details"]["limit"] == 2 and body["details"]["field"] == "tasks[0].resource_specification.num_nodes"
    assert_error(submit("plain", {"num_ranks": 2}), 400, "mpi_not_enabled")
    assert submit("plain", {"num_ranks": 1}).status_code == 202  # one rank runs anywhere
    assert submit("plain", {"priority": 5}).status_code == 202  # not an MPI request
    assert submit("old", {"num_nodes": 64}).status_code == 202  # unknown size: the endpoint decides
    for bad in ({"num_nodes": 0}, {"num_ranks": "2"}, {"num_nodes": 2, "num_ranks": 3}):
        assert_error(submit("old", bad), 400, "invalid_resource_specification")
    assert store.r.llen(queue_key(eids["mpi2"])) == 1 and store.r.llen(queue_key(eids["plain"])) == 2
