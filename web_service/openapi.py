"""The REST contract as data: the OpenAPI 3 document served at ``GET /v1/openapi.json``.

Hand-written dicts (not generated from the routes; the named schemas are in
:mod:`web_service.openapi_schemas`), because the routes validate bodies by hand
with stable error codes; a unit test checks that every Flask route under ``/v1`` is described
here, and the schemathesis run in tests/integration/test_rest_contract.py checks that the live
service answers as described.
"""

from __future__ import annotations

from typing import Any

from fnserve.version import __version__
from web_service.services.runtimes import RUNTIME_TYPES
from web_service.openapi_schemas import BASE64, CURSOR, ID, SCHEMAS, SHARED_QUERY, WAIT_QUERY, Schema, nullable, obj, ref, string

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
        out[code] = {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
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
    return obj({key: {"type": "array", "items": ref(item)}}, [key])


def _deleted(key: str) -> Schema:
    return obj({key: {"type": "string"}, "deleted": {"type": "boolean"}}, [key, "deleted"])


_TOTALS = {"type": "object"}


def _sharing_paths(kind: str) -> dict[str, Any]:
    p = [_path_param("ident")]
    return {f"/v1/{kind}/{{ident}}/sharing": {
        "get": _op(f"who the {kind[:-1]} is shared with (owner only)", "200", ref("Sharing"), params=p),
        "put": _op(f"replace the {kind[:-1]}'s sharing (owner only)", "200", ref("Sharing"), params=p, body=ref("Sharing")),
    }}


def _submit_op() -> dict[str, Any]:
    answer = obj({
        "task_ids": {"type": "array", "items": nullable({"type": "string"}),
                     "description": "in batch order; null for a refused task"},
        "errors": {"type": "array", "items": ref("BatchError")},
        "tasks": {"type": "array", "items": ref("Task")},
    }, ["task_ids"])
    op = _op("submit a batch of tasks, judged task by task (or whole, with atomic); with wait, also answer with "
             "those finished by then", "202", answer, body=obj({
                 "tasks": {"type": "array", "items": ref("TaskSpec"), "minItems": 1},
                 "wait": {"type": "number", "minimum": 0},
                 "atomic": {"type": "boolean", "description": "refuse the whole batch if any task is bad"},
             }, ["tasks"]))
    op["responses"]["202"]["description"] = "every task accepted"
    op["responses"]["207"] = {"description": "some tasks accepted, others refused (see errors)",
                              "content": {"application/json": {"schema": answer}}}
    return op


PATHS: dict[str, Any] = {
    "/v1/version": {"get": _op("service and protocol version, auth mode", "200", obj({
        "version": {"type": "string"}, "protocol_version": {"type": "integer"}, "api": {"type": "string"},
        "auth": {"type": "object"},
        "limits": obj({"max_payload_bytes": {"type": "integer"}, "max_request_bytes": {"type": "integer"},
                        "max_batch": {"type": "integer"}}),
    }, ["version", "protocol_version", "api", "auth"]), public=True)},
    "/v1/health": {"get": {**_op("Redis and database reachable", "200", obj({
        "status": {"type": "string", "enum": ["ok", "unavailable"]}, "redis": {"type": "boolean"},
        "database": {"type": "boolean"},
    }, ["status", "redis", "database"]), public=True)}},
    "/v1/openapi.json": {"get": _op("this document", "200", {"type": "object"}, public=True)},
    "/v1/whoami": {"get": _op("the caller", "200", obj({
        "user_id": {"type": "string"}, "username": {"type": "string"}, "auth_mode": {"type": "string"},
    }, ["user_id", "username", "auth_mode"]))},
    "/v1/usage": {"get": _op("the caller's usage totals, and per owned endpoint", "200", obj({
        "since": {"type": "string"}, "until": {"type": "string"}, "user": _TOTALS,
        "endpoints": {"type": "array", "items": _TOTALS},
        "objects": obj({"bytes": {"type": "integer"}, "quota_bytes": {"type": "integer"}}, ["bytes", "quota_bytes"]),
    }, ["since", "until", "user", "endpoints", "objects"]), params=[
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"},
         "description": "ISO 8601 time or unix seconds"} for n in ("since", "until")])},
    "/v1/functions": {
        "get": _op("the caller's functions", "200", _list_of("functions", "Function"), params=[SHARED_QUERY]),
        "post": _op("register a function", "201", ref("Function"), body={**obj({
            "name": string(), "description": nullable(string(10_000)),
            "function": {**BASE64, "description": "base64 of a function buffer made by fnserve.serialize"},
            "shell": {**obj({
                "command": {"type": "string", "minLength": 1, "description": "command line with {placeholders}"},
                "sandbox": {"type": "boolean"}, "walltime": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 2592000},
                "max_output_bytes": {"type": "integer", "minimum": 0, "maximum": 16777216},
            }, ["command"]), "additionalProperties": False,
                "description": "a shell function instead of a buffer (docs/user-guide.md#shell-functions-run-an-existing-executable)"},
        }, ["name"]), "oneOf": [{"required": ["function"]}, {"required": ["shell"]}]}),
    },
    "/v1/functions/{function_id}": {
        "get": _op("one function", "200", ref("Function"), params=[_path_param("function_id")]),
        "delete": _op("delete a function (owner only)", "200", _deleted("function_id"), params=[_path_param("function_id")]),
    },
    **_sharing_paths("functions"),
    "/v1/endpoints": {
        "get": _op("the caller's endpoints, with status", "200", _list_of("endpoints", "Endpoint"), params=[SHARED_QUERY]),
        "post": _op("register an endpoint; the answer holds its secrets, shown once", "201", ref("EndpointRegistered"),
                    body=obj({"name": string(), "description": nullable(string(10_000))}, ["name"])),
    },
    "/v1/endpoints/{endpoint_id}": {
        "get": _op("one endpoint, with status", "200", ref("Endpoint"), params=[_path_param("endpoint_id")]),
        "delete": _op("delete an endpoint; its unfinished tasks fail with code endpoint_deleted", "200", obj({
            "endpoint_id": {"type": "string"}, "deleted": {"type": "boolean"}, "tasks_failed": {"type": "integer"},
            "tasks_cancelled": {"type": "integer"},
        }, ["endpoint_id", "deleted"]), params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/status": {
        "get": _op("an endpoint's connection and queue", "200", {"allOf": [
            obj({"endpoint_id": {"type": "string"}}, ["endpoint_id"]), ref("EndpointStatus")]},
            params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/allowed_functions": {
        "get": _op("the endpoint's function allowlist (owner only)", "200", ref("Allowlist"),
                   params=[_path_param("endpoint_id")]),
        "put": _op("restrict the endpoint to functions, or lift it (owner only)", "200", ref("Allowlist"),
                   params=[_path_param("endpoint_id")], body=ref("Allowlist")),
    },
    **_sharing_paths("endpoints"),
    "/v1/tasks": {"post": _submit_op()},
    "/v1/tasks/results": {"post": _op("read many tasks, optionally waiting for them", "200", _list_of("tasks", "Task"), body=obj({
        "task_ids": {"type": "array", "items": ID, "minItems": 1},
        "wait": {"type": "number", "minimum": 0},
        "return_when": {"type": "string", "enum": ["ALL_COMPLETED", "FIRST_COMPLETED"]},
    }, ["task_ids"]))},
    "/v1/tasks/completions": {"get": _op("the caller's finished tasks after a cursor (long-poll)", "200", obj({
        "cursor": {"type": "string"}, "tasks": {"type": "array", "items": ref("Task")}, "gap": {"type": "boolean"},
    }, ["cursor", "tasks", "gap"]), params=[
        {"name": "cursor", "in": "query", "required": False, "schema": CURSOR}, WAIT_QUERY,
        {"name": "max_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "min_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "linger", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": 1}},
        {"name": "running", "in": "query", "required": False, "description": "true: also tasks that started running",
         "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}},
    ])},
    "/v1/task_groups/{task_group_id}/tasks": {"get": _op("a page of the caller's tasks in a task group, oldest first", "200", obj({
        "task_group_id": {"type": "string"}, "tasks": {"type": "array", "items": ref("Task")},
        "total": {"type": "integer"}, "next_offset": nullable({"type": "integer"}),
    }, ["task_group_id", "tasks", "total", "next_offset"]), params=[
        _path_param("task_group_id"),
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}},
    ])},
    "/v1/tasks/{task_id}": {"get": _op("one task, optionally waiting for it to finish", "200", ref("Task"),
                                       params=[_path_param("task_id"), WAIT_QUERY])},
    "/v1/tasks/{task_id}/cancel": {"post": _op("cancel a task: a queued one is dropped, a running one killed", "200",
                                               ref("Task"), params=[_path_param("task_id")])},
    "/v1/tasks/{task_id}/outputs": {"get": _op("a task's live outputs after a cursor (long-poll)", "200", ref("Outputs"), params=[
        _path_param("task_id"), {"name": "since", "in": "query", "required": False, "schema": CURSOR}, WAIT_QUERY,
    ])},
    "/v1/objects": {"post": _op("create an object in the object store (then PUT its bytes; a sha256 left out here goes with the last chunk as X-Checksum-SHA256)", "201", ref("Object"),
                                body=obj({"size": {"type": "integer", "minimum": 0},
                                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                           "ttl": {"type": "number", "minimum": 0, "exclusiveMinimum": True}, "name": string(256)},
                                          ["size"]))},
    "/v1/objects/{object_id}": {
        "get": _op("an object's metadata (owner, or a worker of the owner's task)", "200", ref("Object"),
                   params=[_path_param("object_id")]),
        "delete": _op("delete an object", "200", _deleted("object_id"), params=[_path_param("object_id")]),
    },
    "/v1/objects/{object_id}/data": {
        "get": _bytes_answer(_op("an object's bytes (Range: bytes=START- resumes; wait=S follows an upload in "
                                 "progress, at most S s for each next chunk)", "200", {"type": "string"},
                                 params=[_path_param("object_id"), {"name": "Range", "in": "header", "required": False,
                                                                    "schema": {"type": "string"}},
                                         {"name": "wait", "in": "query", "required": False,
                                          "schema": {"type": "number", "minimum": 0, "maximum": 300}}])),
        "put": {**_op("one upload chunk (Content-Range: bytes START-LAST/SIZE; application/octet-stream body)",
                      "200", ref("Object"), params=[_path_param("object_id"), {"name": "X-Checksum-SHA256", "in": "header", "required": False,
                                                               "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}]),
                "requestBody": {"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}},
    },
    "/v1/runtimes": {
        "get": _op("the caller's runtimes", "200", _list_of("runtimes", "Runtime"), params=[SHARED_QUERY]),
        "post": _op("register a runtime (a container image or Python environment)", "201", ref("Runtime"), body=obj({
            "name": string(128, pattern=r"^\S+$"), "type": {"type": "string", "enum": list(RUNTIME_TYPES)},
            "image": nullable(string(4096)), "description": nullable(string(10_000)),
        }, ["name", "type"])),
    },
    "/v1/runtimes/{ident}": {
        "get": _op("one runtime", "200", ref("Runtime"), params=[_path_param("ident")]),
        "delete": _op("delete a runtime (owner only)", "200", _deleted("runtime"), params=[_path_param("ident")]),
    },
    **_sharing_paths("runtimes"),
    "/v1/triggers": {
        "get": _op("the caller's triggers (with shared=true also those shared with them)", "200",
                   _list_of("triggers", "Trigger"), params=[SHARED_QUERY]),
        "post": _op("create a trigger (schedule, webhook or file) with its rules; a webhook's secret is in this answer only",
                    "201", ref("Trigger"), body=obj({
                        "name": string(), "kind": {"type": "string", "enum": ["schedule", "webhook", "file"]},
                        "config": obj({
                            "cron": string(200), "every": {"type": "number", "minimum": 1}, "timezone": string(64),
                            "catch_up": {"type": "integer", "minimum": 0, "maximum": 100},
                            "endpoint_id": ID, "folder": string(1024), "pattern": string(), "recursive": {"type": "boolean"},
                            "settle": {"type": "number", "minimum": 0, "maximum": 3600}, "poll": {"type": "boolean"},
                        }, ),
                        "rules": {"type": "array", "items": ref("Rule"), "maxItems": 32},
                    }, ["name", "kind"])),
    },
    "/v1/triggers/{trigger_id}": {
        "get": _op("one trigger (owner, or a user it is shared with: then only their rules)", "200", ref("Trigger"),
                   params=[_path_param("trigger_id")]),
        "delete": _op("delete a trigger: it fires no more (owner only)", "200", _deleted("trigger_id"),
                      params=[_path_param("trigger_id")]),
    },
    **_sharing_paths("triggers"),
    "/v1/triggers/{trigger_id}/rules": {"post": _op("bind one more rule to a trigger (owner, or a user it is shared with)", "201", ref("Rule"),
                                                    params=[_path_param("trigger_id")], body=ref("Rule"))},
    "/v1/triggers/{trigger_id}/rules/{rule_id}": {"delete": _op("remove a rule", "200", _deleted("rule_id"),
                                                                params=[_path_param("trigger_id"), _path_param("rule_id")])},
    "/v1/triggers/{trigger_id}/fire": {"post": {**_repeat_answers_200(_op(
        "send the trigger an event by hand; event_id makes a retry fire once", "202", ref("Delivered"),
        params=[_path_param("trigger_id")],
        body=obj({"data": {}, "event_id": string(160)}))),
    }},
    "/v1/triggers/{trigger_id}/events": {"get": _op("the trigger's latest events, newest first, with the tasks each made",
                                                    "200", obj({"trigger_id": {"type": "string"}, "events": {
                                                        "type": "array", "items": obj({
                                                            "event_id": {"type": "string"}, "event_key": {"type": "string"},
                                                            "kind": {"type": "string"}, "time": {"type": "string"},
                                                            "data": {}, "firings": {"type": "array", "items": ref("Firing")},
                                                        })}}, ["trigger_id", "events"]),
                                                    params=[_path_param("trigger_id"), {
                                                        "name": "limit", "in": "query", "required": False,
                                                        "schema": {"type": "integer", "minimum": 1}}])},
    "/v1/hooks/{trigger_id}": {"post": {**_op(
        "a webhook delivery: the body (a JSON object) is the event; signed with the trigger's secret "
        "(X-Fnserve-Timestamp, X-Fnserve-Signature: sha256=HMAC(secret, timestamp + '.' + body)); "
        "401 bad_signature otherwise", "202", ref("Delivered"), body={"type": "object"},
        params=[_path_param("trigger_id")] + [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in ("X-Fnserve-Timestamp", "X-Fnserve-Event-Id")]),
        "security": [{"webhookSignature": []}],
    }},
    "/v1/groups": {
        "get": _op("the caller's groups", "200", obj({"groups": {"type": "array", "items": ref("Group")}}, ["groups"])),
        "post": _op("create a group", "201", ref("Group"), body=obj({"name": string()}, ["name"])),
    },
    "/v1/groups/{name}/members": {"post": _op("add and remove members (owner only)", "200", ref("Group"),
                                              params=[_path_param("name")], body=obj({
        "add": {"type": "array", "items": string()}, "remove": {"type": "array", "items": string()},
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
