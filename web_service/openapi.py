"""The REST contract as data: the OpenAPI 3 document served at ``GET /v1/openapi.json``.

Hand-written dicts (not generated from the routes), because the routes validate bodies by hand
with stable error codes; a unit test checks that every Flask route under ``/v1`` is described
here, and the schemathesis run in tests/integration/test_rest_contract.py checks that the live
service answers as described.
"""

from __future__ import annotations

from typing import Any

from fnserve.version import __version__
from web_service.services.runtimes import RUNTIME_TYPES

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _str(max_len: int = 255, **extra: Any) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, **extra}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_BASE64 = {"type": "string", "pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
_ID = _str(64)
_TIMESTAMP = {"type": "string", "description": "ISO 8601 time, UTC"}
_WAIT_QUERY = {"name": "wait", "in": "query", "required": False,
               "description": "seconds to long-poll (capped by the service's FNSERVE_MAX_WAIT)",
               "schema": {"type": "number", "minimum": 0}}
_CURSOR = {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"}
_SHARED_QUERY = {"name": "shared", "in": "query", "required": False,
                 "description": "true: also list what others share with the caller",
                 "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj({
        "error": _obj({
            "code": {"type": "string", "description": "stable machine-readable code"},
            "message": {"type": "string"},
            "details": {"type": "object"},
        }, ["code", "message"]),
    }, ["error"]),
    "Function": _obj({
        "function_id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "strategy": {"type": "string"}, "python": {"type": "string"}, "created_at": _TIMESTAMP,
        "owner_id": {"type": "string"},
    }, ["function_id", "name", "strategy", "created_at", "owner_id"]),
    "Endpoint": _obj({
        "endpoint_id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "created_at": _TIMESTAMP, "owner_id": {"type": "string"}, "restricted": {"type": "boolean"},
        "status": _ref("EndpointStatus"),
    }, ["endpoint_id", "name", "created_at", "owner_id", "restricted"]),
    "EndpointRegistered": {"allOf": [_ref("Endpoint"), _obj({
        "secret": {"type": "string"}, "forwarder_address": {"type": "string"},
        "curve_public_key": _nullable({"type": "string"}), "curve_secret_key": _nullable({"type": "string"}),
        "forwarder_public_key": _nullable({"type": "string"}),
    }, ["secret", "forwarder_address"])]},
    "EndpointStatus": _obj({
        "connected": {"type": "boolean"}, "last_heartbeat": _nullable({"type": "number"}),
        "connected_since": _nullable({"type": "number"}), "disconnected_since": _nullable({"type": "number"}),
        "tasks_waiting": {"type": "integer"}, "tasks_in_flight": {"type": "integer"},
        "site": {"type": "object"},
    }, ["connected", "tasks_waiting", "tasks_in_flight"]),
    "TaskError": _obj({
        "code": {"type": "string"}, "type": {"type": "string"}, "message": {"type": "string"},
        "traceback": {"type": "string"},
        "module": {"type": "string", "description": "module of the exception's class (user_exception)"},
        "qualname": {"type": "string", "description": "qualified name of the exception's class"},
        "args": {"type": "array", "description": "the exception's args, when all are JSON scalars"},
    }, ["code", "message"]),
    "BatchError": _obj({
        "index": {"type": "integer", "minimum": 0, "description": "the refused task's position in the batch"},
        "status": {"type": "integer", "description": "the HTTP status this error has on its own"},
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"},
    }, ["index", "status", "code", "message"]),
    "Task": _obj({
        "task_id": {"type": "string"},
        "state": {"type": "string", "enum": ["waiting-for-endpoint", "dispatched", "running", "success", "failed", "cancelled"]},
        "function_id": {"type": "string"}, "endpoint_id": {"type": "string"},
        "runtime": _nullable({"type": "string"}),
        "timestamps": {"type": "object", "additionalProperties": {"type": "number"}},
        "result": _nullable({**_BASE64, "description": "base64 of the serialized result"}),
        "result_json": {"description": "the result as JSON, for results made with the JSON strategy"},
        "error": _nullable(_ref("TaskError")),
        "stdout": _nullable({"type": "string"}), "stderr": _nullable({"type": "string"}),
        "timings": _nullable({"type": "object"}), "resources": _nullable({"type": "object"}),
        "placement": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "where it ran: block, job_id (the block's batch job), node, runtime, container"},
        "max_retries": {"type": "integer"}, "task_group_id": {"type": "string"},
        "resource_specification": {"type": "object"},
        "user_endpoint_config": {"type": "object", "description": "the values the task gave a multi-user endpoint's template"},
    }, ["task_id", "state", "function_id", "endpoint_id", "timestamps"]),
    "TaskSpec": _obj({
        "function_id": _ID, "endpoint_id": _ID, "runtime": _str(128),
        "walltime": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                     "description": "seconds; at most the service's FNSERVE_MAX_WALLTIME (30 days by default)"},
        "result_format": {"type": "string", "enum": ["json", "python"]},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": 100,
                        "description": "reruns after a lost worker or block (default: the endpoint's max_retries)"},
        "payload": {**_BASE64, "description": "base64 of arguments made by fnserve.serialize (not with args/kwargs)"},
        "args": {"type": "array", "description": "JSON arguments (instead of payload)"},
        "kwargs": {"type": "object", "description": "JSON keyword arguments (instead of payload)"},
        "task_group_id": {**_ID, "description": "a task group of the caller's to add the task to (any id they choose)"},
        "resource_specification": {"type": "object", "description": "what the task asks of the endpoint's resources "
                                   "(recorded and forwarded to the endpoint; at most 4 KiB as JSON): a worker's cores, "
                                   "memory (MB), gpus, walltime (s); MPI num_nodes, ranks_per_node, num_ranks. A request "
                                   "no worker of the endpoint can hold is refused (400 resources_never_fit)"},
        "user_endpoint_config": {"type": "object", "description": "values for a multi-user endpoint's user endpoint "
                                 "template, checked against the schema the endpoint publishes (400 "
                                 "invalid_user_endpoint_config); at most 4 KiB as JSON"},
    }, ["function_id", "endpoint_id"]),
    "Sharing": _obj({
        "public": {"type": "boolean"},
        "users": {"type": "array", "items": _str(), "maxItems": 1000},
        "groups": {"type": "array", "items": _str(), "maxItems": 1000},
    }),
    "Allowlist": _obj({
        "restricted": {"type": "boolean"},
        "function_ids": {"type": "array", "items": _ID, "maxItems": 10_000},
    }),
    "Group": _obj({
        "group_id": {"type": "string"}, "name": {"type": "string"}, "owner": {"type": "string"},
        "members": {"type": "array", "items": {"type": "string"}},
    }, ["group_id", "name"]),
    "Runtime": _obj({
        "runtime_id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "image": {"type": "string"}, "description": {"type": "string"}, "owner_id": {"type": "string"},
        "created_at": _TIMESTAMP,
    }, ["runtime_id", "name", "type"]),
    "Rule": _obj({
        "rule_id": {"type": "string"}, "function_id": _ID, "endpoint_id": _ID,
        "args_template": _obj({"args": {"type": "array"}, "kwargs": {"type": "object"}}),
        "filters": {"type": "array", "maxItems": 16, "items": _obj({
            "field": _str(), "op": {"type": "string", "enum": ["eq", "ne", "in", "glob", "gt", "ge", "lt", "le", "exists"]},
            "value": {},
        }, ["field"])},
        "max_concurrency": _nullable({"type": "integer", "minimum": 1, "maximum": 100_000}),
    }, ["function_id", "endpoint_id"]),
    "Trigger": _obj({
        "trigger_id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string", "enum": ["schedule", "webhook", "file"]},
        "config": {"type": "object"}, "owner_id": {"type": "string"}, "created_at": _TIMESTAMP,
        "rules": {"type": "array", "items": _ref("Rule")},
        "webhook_path": {"type": "string", "description": "webhook triggers: where to POST signed events"},
        "next_time": {"type": "string", "description": "schedule triggers: the next time it fires (UTC)"},
        "secret": {"type": "string", "description": "webhook triggers, in the answer to create only: the signing secret"},
    }, ["trigger_id", "name", "kind", "config", "rules"]),
    "Firing": _obj({
        "rule_id": {"type": "string"}, "task_id": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "submitted", "done", "refused"]},
        "error": _obj({"code": {"type": "string"}, "message": {"type": "string"}}),
    }, ["rule_id", "task_id", "state"]),
    "Delivered": _obj({
        "event_id": {"type": "string"}, "duplicate": {"type": "boolean"},
        "firings": {"type": "array", "items": _ref("Firing")},
    }, ["event_id", "duplicate", "firings"]),
    "Object": _obj({
        "object_id": {"type": "string"}, "size": {"type": "integer"}, "sha256": {"type": "string"},
        "received": {"type": "integer"}, "complete": {"type": "boolean"}, "expires": {"type": "number"},
        "chunk_bytes": {"type": "integer"},
    }, ["object_id", "size", "sha256", "received", "complete", "expires", "chunk_bytes"]),
    "Outputs": _obj({
        "task_id": {"type": "string"}, "state": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
        "cursor": {"type": "string"}, "complete": {"type": "boolean"}, "truncated": {"type": "boolean"},
    }, ["task_id", "outputs", "cursor", "complete"]),
}

# Every error status a route may answer; each has the Error body.
_ERRORS = {
    "400": "invalid request (the body names the field)", "401": "missing, invalid or expired token",
    "403": "not allowed for this user", "404": "no such resource", "405": "method not allowed",
    "409": "conflict", "410": "gone: an object past its TTL (object_expired)",
    "416": "a download Range the object cannot satisfy (range_not_satisfiable)", "413": "request, payload or batch too large (a chunked body too: refused, never cut)",
    "429": "rate limited (per user, or per address without a valid token), over quota, or too many long-polls open "
           "(too_many_waits); with Retry-After",
    "503": "a backing store (Redis or the database) is unavailable, or this web worker holds its most long-polls "
           "(service_busy, with Retry-After)",
}


# Answered by the HTTP server (gunicorn) before a request reaches the service, as HTML: a request
# line over 4 KiB (a URL that long is not a request this API defines) or oversized headers.
_SERVER_ERRORS = {
    "414": "request line longer than the HTTP server accepts (4 KiB); answered as HTML by the server",
    "431": "request headers larger than the HTTP server accepts; answered as HTML by the server",
}


def _responses(status: str, schema: Schema, description: str = "success") -> dict[str, Any]:
    out: dict[str, Any] = {status: {"description": description, "content": {"application/json": {"schema": schema}}}}
    for code, text in _ERRORS.items():
        out[code] = {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
    for code, text in _SERVER_ERRORS.items():
        out[code] = {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
    return out


def _op(summary: str, status: str, response: Schema, *, body: Schema | None = None, params: list[Schema] | None = None,
        public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(status, response)}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _bytes_answer(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` answering raw bytes: 200 whole, 206 a range."""
    raw = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    op["responses"]["200"] = {"description": "the object's bytes", "content": raw}
    op["responses"]["206"] = {"description": "the requested range of the object's bytes", "content": raw}
    return op


def _repeat_answers_200(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` (an event delivery) answering 200 with the first delivery when its event id repeats."""
    op["responses"]["200"] = {**op["responses"]["202"],
                              "description": "a repeated event (same event id): the first delivery, nothing fired again"}
    return op


def _path_param(name: str) -> Schema:
    # Any text fits the route; the service answers 404 for unknown ids.
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}


def _list_of(key: str, item: str) -> Schema:
    return _obj({key: {"type": "array", "items": _ref(item)}}, [key])


def _deleted(key: str) -> Schema:
    return _obj({key: {"type": "string"}, "deleted": {"type": "boolean"}}, [key, "deleted"])


_TOTALS = {"type": "object"}


def _sharing_paths(kind: str) -> dict[str, Any]:
    p = [_path_param("ident")]
    return {f"/v1/{kind}/{{ident}}/sharing": {
        "get": _op(f"who the {kind[:-1]} is shared with (owner only)", "200", _ref("Sharing"), params=p),
        "put": _op(f"replace the {kind[:-1]}'s sharing (owner only)", "200", _ref("Sharing"), params=p, body=_ref("Sharing")),
    }}


def _submit_op() -> dict[str, Any]:
    answer = _obj({
        "task_ids": {"type": "array", "items": _nullable({"type": "string"}),
                     "description": "in batch order; null for a refused task"},
        "errors": {"type": "array", "items": _ref("BatchError")},
        "tasks": {"type": "array", "items": _ref("Task")},
    }, ["task_ids"])
    op = _op("submit a batch of tasks, judged task by task (or whole, with atomic); with wait, also answer with "
             "those finished by then", "202", answer, body=_obj({
                 "tasks": {"type": "array", "items": _ref("TaskSpec"), "minItems": 1},
                 "wait": {"type": "number", "minimum": 0},
                 "atomic": {"type": "boolean", "description": "refuse the whole batch if any task is bad"},
             }, ["tasks"]))
    op["responses"]["202"]["description"] = "every task accepted"
    op["responses"]["207"] = {"description": "some tasks accepted, others refused (see errors)",
                              "content": {"application/json": {"schema": answer}}}
    return op


PATHS: dict[str, Any] = {
    "/v1/version": {"get": _op("service and protocol version, auth mode", "200", _obj({
        "version": {"type": "string"}, "protocol_version": {"type": "integer"}, "api": {"type": "string"},
        "auth": {"type": "object"},
        "limits": _obj({"max_payload_bytes": {"type": "integer"}, "max_request_bytes": {"type": "integer"},
                        "max_batch": {"type": "integer"}}),
    }, ["version", "protocol_version", "api", "auth"]), public=True)},
    "/v1/health": {"get": {**_op("Redis and database reachable", "200", _obj({
        "status": {"type": "string", "enum": ["ok", "unavailable"]}, "redis": {"type": "boolean"},
        "database": {"type": "boolean"},
    }, ["status", "redis", "database"]), public=True)}},
    "/v1/openapi.json": {"get": _op("this document", "200", {"type": "object"}, public=True)},
    "/v1/whoami": {"get": _op("the caller", "200", _obj({
        "user_id": {"type": "string"}, "username": {"type": "string"}, "auth_mode": {"type": "string"},
    }, ["user_id", "username", "auth_mode"]))},
    "/v1/usage": {"get": _op("the caller's usage totals, and per owned endpoint", "200", _obj({
        "since": {"type": "string"}, "until": {"type": "string"}, "user": _TOTALS,
        "endpoints": {"type": "array", "items": _TOTALS},
        "objects": _obj({"bytes": {"type": "integer"}, "quota_bytes": {"type": "integer"}}, ["bytes", "quota_bytes"]),
    }, ["since", "until", "user", "endpoints", "objects"]), params=[
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"},
         "description": "ISO 8601 time or unix seconds"} for n in ("since", "until")])},
    "/v1/functions": {
        "get": _op("the caller's functions", "200", _list_of("functions", "Function"), params=[_SHARED_QUERY]),
        "post": _op("register a function", "201", _ref("Function"), body={**_obj({
            "name": _str(), "description": _nullable(_str(10_000)),
            "function": {**_BASE64, "description": "base64 of a function buffer made by fnserve.serialize"},
            "shell": {**_obj({
                "command": {"type": "string", "minLength": 1, "description": "command line with {placeholders}"},
                "sandbox": {"type": "boolean"}, "walltime": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 2592000},
                "max_output_bytes": {"type": "integer", "minimum": 0, "maximum": 16777216},
            }, ["command"]), "additionalProperties": False,
                "description": "a shell function instead of a buffer (docs/user-guide.md#shell-functions-run-an-existing-executable)"},
        }, ["name"]), "oneOf": [{"required": ["function"]}, {"required": ["shell"]}]}),
    },
    "/v1/functions/{function_id}": {
        "get": _op("one function", "200", _ref("Function"), params=[_path_param("function_id")]),
        "delete": _op("delete a function (owner only)", "200", _deleted("function_id"), params=[_path_param("function_id")]),
    },
    **_sharing_paths("functions"),
    "/v1/endpoints": {
        "get": _op("the caller's endpoints, with status", "200", _list_of("endpoints", "Endpoint"), params=[_SHARED_QUERY]),
        "post": _op("register an endpoint; the answer holds its secrets, shown once", "201", _ref("EndpointRegistered"),
                    body=_obj({"name": _str(), "description": _nullable(_str(10_000))}, ["name"])),
    },
    "/v1/endpoints/{endpoint_id}": {
        "get": _op("one endpoint, with status", "200", _ref("Endpoint"), params=[_path_param("endpoint_id")]),
        "delete": _op("delete an endpoint; its unfinished tasks fail with code endpoint_deleted", "200", _obj({
            "endpoint_id": {"type": "string"}, "deleted": {"type": "boolean"}, "tasks_failed": {"type": "integer"},
            "tasks_cancelled": {"type": "integer"},
        }, ["endpoint_id", "deleted"]), params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/status": {
        "get": _op("an endpoint's connection and queue", "200", {"allOf": [
            _obj({"endpoint_id": {"type": "string"}}, ["endpoint_id"]), _ref("EndpointStatus")]},
            params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/allowed_functions": {
        "get": _op("the endpoint's function allowlist (owner only)", "200", _ref("Allowlist"),
                   params=[_path_param("endpoint_id")]),
        "put": _op("restrict the endpoint to functions, or lift it (owner only)", "200", _ref("Allowlist"),
                   params=[_path_param("endpoint_id")], body=_ref("Allowlist")),
    },
    **_sharing_paths("endpoints"),
    "/v1/tasks": {"post": _submit_op()},
    "/v1/tasks/results": {"post": _op("read many tasks, optionally waiting for them", "200", _list_of("tasks", "Task"), body=_obj({
        "task_ids": {"type": "array", "items": _ID, "minItems": 1},
        "wait": {"type": "number", "minimum": 0},
        "return_when": {"type": "string", "enum": ["ALL_COMPLETED", "FIRST_COMPLETED"]},
    }, ["task_ids"]))},
    "/v1/tasks/completions": {"get": _op("the caller's finished tasks after a cursor (long-poll)", "200", _obj({
        "cursor": {"type": "string"}, "tasks": {"type": "array", "items": _ref("Task")}, "gap": {"type": "boolean"},
    }, ["cursor", "tasks", "gap"]), params=[
        {"name": "cursor", "in": "query", "required": False, "schema": _CURSOR}, _WAIT_QUERY,
        {"name": "max_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "min_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "linger", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": 1}},
        {"name": "running", "in": "query", "required": False, "description": "true: also tasks that started running",
         "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}},
    ])},
    "/v1/task_groups/{task_group_id}/tasks": {"get": _op("a page of the caller's tasks in a task group, oldest first", "200", _obj({
        "task_group_id": {"type": "string"}, "tasks": {"type": "array", "items": _ref("Task")},
        "total": {"type": "integer"}, "next_offset": _nullable({"type": "integer"}),
    }, ["task_group_id", "tasks", "total", "next_offset"]), params=[
        _path_param("task_group_id"),
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}},
    ])},
    "/v1/tasks/{task_id}": {"get": _op("one task, optionally waiting for it to finish", "200", _ref("Task"),
                                       params=[_path_param("task_id"), _WAIT_QUERY])},
    "/v1/tasks/{task_id}/cancel": {"post": _op("cancel a task: a queued one is dropped, a running one killed", "200",
                                               _ref("Task"), params=[_path_param("task_id")])},
    "/v1/tasks/{task_id}/outputs": {"get": _op("a task's live outputs after a cursor (long-poll)", "200", _ref("Outputs"), params=[
        _path_param("task_id"), {"name": "since", "in": "query", "required": False, "schema": _CURSOR}, _WAIT_QUERY,
    ])},
    "/v1/objects": {"post": _op("create an object in the object store (then PUT its bytes)", "201", _ref("Object"),
                                body=_obj({"size": {"type": "integer", "minimum": 0},
                                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                           "ttl": {"type": "number", "minimum": 0, "exclusiveMinimum": True}, "name": _str(256)},
                                          ["size", "sha256"]))},
    "/v1/objects/{object_id}": {
        "get": _op("an object's metadata (owner, or a worker of the owner's task)", "200", _ref("Object"),
                   params=[_path_param("object_id")]),
        "delete": _op("delete an object", "200", _deleted("object_id"), params=[_path_param("object_id")]),
    },
    "/v1/objects/{object_id}/data": {
        "get": _bytes_answer(_op("an object's bytes (Range: bytes=START- resumes)", "200", {"type": "string"},
                                 params=[_path_param("object_id"), {"name": "Range", "in": "header", "required": False,
                                                                    "schema": {"type": "string"}}])),
        "put": {**_op("one upload chunk (Content-Range: bytes START-LAST/SIZE; application/octet-stream body)",
                      "200", _ref("Object"), params=[_path_param("object_id")]),
                "requestBody": {"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}},
    },
    "/v1/runtimes": {
        "get": _op("the caller's runtimes", "200", _list_of("runtimes", "Runtime"), params=[_SHARED_QUERY]),
        "post": _op("register a runtime (a container image or Python environment)", "201", _ref("Runtime"), body=_obj({
            "name": _str(128, pattern=r"^\S+$"), "type": {"type": "string", "enum": list(RUNTIME_TYPES)},
            "image": _nullable(_str(4096)), "description": _nullable(_str(10_000)),
        }, ["name", "type"])),
    },
    "/v1/runtimes/{ident}": {
        "get": _op("one runtime", "200", _ref("Runtime"), params=[_path_param("ident")]),
        "delete": _op("delete a runtime (owner only)", "200", _deleted("runtime"), params=[_path_param("ident")]),
    },
    **_sharing_paths("runtimes"),
    "/v1/triggers": {
        "get": _op("the caller's triggers", "200", _list_of("triggers", "Trigger")),
        "post": _op("create a trigger (schedule, webhook or file) with its rules; a webhook's secret is in this answer only",
                    "201", _ref("Trigger"), body=_obj({
                        "name": _str(), "kind": {"type": "string", "enum": ["schedule", "webhook", "file"]},
                        "config": _obj({
                            "cron": _str(200), "every": {"type": "number", "minimum": 1}, "timezone": _str(64),
                            "catch_up": {"type": "integer", "minimum": 0, "maximum": 100},
                            "endpoint_id": _ID, "folder": _str(1024), "pattern": _str(), "recursive": {"type": "boolean"},
                            "settle": {"type": "number", "minimum": 0, "maximum": 3600}, "poll": {"type": "boolean"},
                        }, ),
                        "rules": {"type": "array", "items": _ref("Rule"), "maxItems": 32},
                    }, ["name", "kind"])),
    },
    "/v1/triggers/{trigger_id}": {
        "get": _op("one trigger (owner only)", "200", _ref("Trigger"), params=[_path_param("trigger_id")]),
        "delete": _op("delete a trigger: it fires no more (owner only)", "200", _deleted("trigger_id"),
                      params=[_path_param("trigger_id")]),
    },
    "/v1/triggers/{trigger_id}/rules": {"post": _op("bind one more rule to a trigger", "201", _ref("Rule"),
                                                    params=[_path_param("trigger_id")], body=_ref("Rule"))},
    "/v1/triggers/{trigger_id}/rules/{rule_id}": {"delete": _op("remove a rule", "200", _deleted("rule_id"),
                                                                params=[_path_param("trigger_id"), _path_param("rule_id")])},
    "/v1/triggers/{trigger_id}/fire": {"post": {**_repeat_answers_200(_op(
        "send the trigger an event by hand; event_id makes a retry fire once", "202", _ref("Delivered"),
        params=[_path_param("trigger_id")],
        body=_obj({"data": {}, "event_id": _str(160)}))),
    }},
    "/v1/triggers/{trigger_id}/events": {"get": _op("the trigger's latest events, newest first, with the tasks each made",
                                                    "200", _obj({"trigger_id": {"type": "string"}, "events": {
                                                        "type": "array", "items": _obj({
                                                            "event_id": {"type": "string"}, "event_key": {"type": "string"},
                                                            "kind": {"type": "string"}, "time": {"type": "string"},
                                                            "data": {}, "firings": {"type": "array", "items": _ref("Firing")},
                                                        })}}, ["trigger_id", "events"]),
                                                    params=[_path_param("trigger_id"), {
                                                        "name": "limit", "in": "query", "required": False,
                                                        "schema": {"type": "integer", "minimum": 1}}])},
    "/v1/hooks/{trigger_id}": {"post": {**_op(
        "a webhook delivery: the body (a JSON object) is the event; signed with the trigger's secret "
        "(X-Fnserve-Timestamp, X-Fnserve-Signature: sha256=HMAC(secret, timestamp + '.' + body)); "
        "401 bad_signature otherwise", "202", _ref("Delivered"), body={"type": "object"},
        params=[_path_param("trigger_id")] + [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in ("X-Fnserve-Timestamp", "X-Fnserve-Event-Id")]),
        "security": [{"webhookSignature": []}],
    }},
    "/v1/groups": {
        "get": _op("the caller's groups", "200", _obj({"groups": {"type": "array", "items": _ref("Group")}}, ["groups"])),
        "post": _op("create a group", "201", _ref("Group"), body=_obj({"name": _str()}, ["name"])),
    },
    "/v1/groups/{name}/members": {"post": _op("add and remove members (owner only)", "200", _ref("Group"),
                                              params=[_path_param("name")], body=_obj({
        "add": {"type": "array", "items": _str()}, "remove": {"type": "array", "items": _str()},
    }))},
}


_repeat_answers_200(PATHS["/v1/hooks/{trigger_id}"]["post"])  # a webhook sender's retry of one event


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the ``/v1`` API."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "fnserve", "version": __version__,
                 "description": "Function serving for science. Errors are {\"error\": {\"code\", \"message\", \"details\"}}."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                # Webhook deliveries: sha256=HMAC-SHA256(trigger secret, X-Fnserve-Timestamp + "." + body).
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "X-Fnserve-Signature"},
            },
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }
