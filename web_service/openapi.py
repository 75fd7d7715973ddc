"""The REST contract as data: the OpenAPI 3.1 document served at ``GET /v1/openapi.json``.

The paths, their summaries and parameters are data here; every request and response body is a
msgspec Struct of :mod:`web_service.rest_bodies`, and ``components/schemas`` is generated from
those Structs (``msgspec.json.schema_components``), so the document describes what the routes
decode and encode. A unit test checks that every Flask route under ``/v1`` is described here,
and the schemathesis run in tests/integration/test_rest_contract.py that the live service
answers as described.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import msgspec

from fnserve.shell import ShellSpec
from fnserve.version import __version__
from web_service.rest_bodies import requests as rq
from web_service.rest_bodies import responses as rs
from web_service.rest_bodies.refs import REF_TEMPLATE, ref

Schema = dict[str, Any]
Body = type | Schema  # a Struct (by reference) or an inline schema

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


def _schema(body: Body) -> Schema:
    return ref(body.__name__) if isinstance(body, type) else body


def _responses(status: str, body: Body, description: str = "success") -> dict[str, Any]:
    out: dict[str, Any] = {status: {"description": description, "content": {"application/json": {"schema": _schema(body)}}}}
    for code, text in _ERRORS.items():
        out[code] = {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
    for code, text in _SERVER_ERRORS.items():
        out[code] = {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
    return out


def _op(summary: str, status: str, response: Body, *, body: Body | None = None, params: list[Schema] | None = None,
        public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(status, response)}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(body)}}}
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


WAIT_QUERY = {"name": "wait", "in": "query", "required": False,
              "description": "seconds to long-poll (capped by the service's FNSERVE_MAX_WAIT)",
              "schema": {"type": "number", "minimum": 0}}
CURSOR = {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"}
SHARED_QUERY = {"name": "shared", "in": "query", "required": False,
                "description": "true: also list what others share with the caller",
                "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}}


def _sharing_paths(kind: str) -> dict[str, Any]:
    p = [_path_param("ident")]
    return {f"/v1/{kind}/{{ident}}/sharing": {
        "get": _op(f"who the {kind[:-1]} is shared with (owner only)", "200", rq.Sharing, params=p),
        "put": _op(f"replace the {kind[:-1]}'s sharing (owner only)", "200", rq.Sharing, params=p, body=rq.Sharing),
    }}


def _submit_op() -> dict[str, Any]:
    op = _op("submit a batch of tasks, judged task by task (or whole, with atomic); with wait, also answer with "
             "those finished by then", "202", rs.TasksSubmitted, body=rq.TaskSubmission)
    op["responses"]["202"]["description"] = "every task accepted"
    op["responses"]["207"] = {"description": "some tasks accepted, others refused (see errors)",
                              "content": {"application/json": {"schema": ref("TasksSubmitted")}}}
    return op


_TIME_QUERIES = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
                  "description": "ISO 8601 time or unix seconds"} for n in ("since", "until")]
_COMPLETIONS_QUERIES = [
    {"name": "cursor", "in": "query", "required": False, "schema": CURSOR}, WAIT_QUERY,
    {"name": "max_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
    {"name": "min_tasks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
    {"name": "linger", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": 1}},
    {"name": "running", "in": "query", "required": False, "description": "true: also tasks that started running",
     "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}},
]
_PAGE_QUERIES = [
    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}},
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}},
]
_SHA256_HEADER = {"name": "X-Checksum-SHA256", "in": "header", "required": False,
                  "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
_RAW = {"type": "string", "format": "binary"}

PATHS: dict[str, Any] = {
    "/v1/version": {"get": _op("service and protocol version, auth mode", "200", rs.Version, public=True)},
    "/v1/health": {"get": _op("Redis and database reachable", "200", rs.Health, public=True)},
    "/v1/openapi.json": {"get": _op("this document", "200", {"type": "object"}, public=True)},
    "/v1/whoami": {"get": _op("the caller", "200", rs.WhoAmI)},
    "/v1/usage": {"get": _op("the caller's usage totals, and per owned endpoint", "200", rs.Usage, params=_TIME_QUERIES)},
    "/v1/functions": {
        "get": _op("the caller's functions", "200", rs.FunctionList, params=[SHARED_QUERY]),
        "post": _op("register a function", "201", rs.Function, body={
            **ref("FunctionRegistration"), "oneOf": [{"required": ["function"]}, {"required": ["shell"]}]}),
    },
    "/v1/functions/{function_id}": {
        "get": _op("one function", "200", rs.Function, params=[_path_param("function_id")]),
        "delete": _op("delete a function (owner only)", "200", rs.FunctionDeleted, params=[_path_param("function_id")]),
    },
    **_sharing_paths("functions"),
    "/v1/endpoints": {
        "get": _op("the caller's endpoints, with status", "200", rs.EndpointList, params=[SHARED_QUERY]),
        "post": _op("register an endpoint; the answer holds its secrets, shown once", "201", rs.EndpointRegistered,
                    body=rq.EndpointRegistration),
    },
    "/v1/endpoints/{endpoint_id}": {
        "get": _op("one endpoint, with status", "200", rs.Endpoint, params=[_path_param("endpoint_id")]),
        "delete": _op("delete an endpoint; its unfinished tasks fail with code endpoint_deleted", "200", rs.EndpointDeleted,
                      params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/status": {
        "get": _op("an endpoint's connection and queue", "200", rs.EndpointStatusOf, params=[_path_param("endpoint_id")]),
    },
    "/v1/endpoints/{endpoint_id}/allowed_functions": {
        "get": _op("the endpoint's function allowlist (owner only)", "200", rs.AllowlistOf,
                   params=[_path_param("endpoint_id")]),
        "put": _op("restrict the endpoint to functions, or lift it (owner only)", "200", rs.AllowlistOf,
                   params=[_path_param("endpoint_id")], body=rq.Allowlist),
    },
    **_sharing_paths("endpoints"),
    "/v1/tasks": {"post": _submit_op()},
    "/v1/tasks/results": {"post": _op("read many tasks, optionally waiting for them", "200", rs.TaskList,
                                      body=rq.TaskResultsRequest)},
    "/v1/tasks/completions": {"get": _op("the caller's finished tasks after a cursor (long-poll)", "200", rs.Completions,
                                         params=_COMPLETIONS_QUERIES)},
    "/v1/task_groups/{task_group_id}/tasks": {"get": _op("a page of the caller's tasks in a task group, oldest first", "200",
                                                         rs.TaskGroupPage, params=[_path_param("task_group_id"), *_PAGE_QUERIES])},
    "/v1/tasks/{task_id}": {"get": _op("one task, optionally waiting for it to finish", "200", rs.Task,
                                       params=[_path_param("task_id"), WAIT_QUERY])},
    "/v1/tasks/{task_id}/cancel": {"post": _op("cancel a task: a queued one is dropped, a running one killed", "200",
                                               rs.Task, params=[_path_param("task_id")])},
    "/v1/tasks/{task_id}/outputs": {"get": _op("a task's live outputs after a cursor (long-poll)", "200", rs.Outputs, params=[
        _path_param("task_id"), {"name": "since", "in": "query", "required": False, "schema": CURSOR}, WAIT_QUERY,
    ])},
    "/v1/objects": {"post": _op("create an object in the object store (then PUT its bytes; a sha256 left out here goes "
                                "with the last chunk as X-Checksum-SHA256)", "201", rs.ObjectMetadata, body=rq.ObjectCreation)},
    "/v1/objects/{object_id}": {
        "get": _op("an object's metadata (owner, or a worker of the owner's task)", "200", rs.ObjectMetadata,
                   params=[_path_param("object_id")]),
        "delete": _op("delete an object", "200", rs.ObjectDeleted, params=[_path_param("object_id")]),
    },
    "/v1/objects/{object_id}/data": {
        "get": _bytes_answer(_op("an object's bytes (Range: bytes=START- resumes; wait=S follows an upload in "
                                 "progress, at most S s for each next chunk)", "200", {"type": "string"},
                                 params=[_path_param("object_id"), {"name": "Range", "in": "header", "required": False,
                                                                    "schema": {"type": "string"}},
                                         {"name": "wait", "in": "query", "required": False,
                                          "schema": {"type": "number", "minimum": 0, "maximum": 300}}])),
        "put": {**_op("one upload chunk (Content-Range: bytes START-LAST/SIZE; application/octet-stream body)",
                      "200", rs.ObjectMetadata, params=[_path_param("object_id"), _SHA256_HEADER]),
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": _RAW}}}},
    },
    "/v1/runtimes": {
        "get": _op("the caller's runtimes", "200", rs.RuntimeList, params=[SHARED_QUERY]),
        "post": _op("register a runtime (a container image or Python environment)", "201", rs.Runtime,
                    body=rq.RuntimeRegistration),
    },
    "/v1/runtimes/{ident}": {
        "get": _op("one runtime", "200", rs.Runtime, params=[_path_param("ident")]),
        "delete": _op("delete a runtime (owner only)", "200", rs.RuntimeDeleted, params=[_path_param("ident")]),
    },
    **_sharing_paths("runtimes"),
    "/v1/triggers": {
        "get": _op("the caller's triggers (with shared=true also those shared with them)", "200", rs.TriggerList,
                   params=[SHARED_QUERY]),
        "post": _op("create a trigger (schedule, webhook or file) with its rules; a webhook's secret is in this answer only",
                    "201", rs.Trigger, body=rq.TriggerCreation),
    },
    "/v1/triggers/{trigger_id}": {
        "get": _op("one trigger (owner, or a user it is shared with: then only their rules)", "200", rs.Trigger,
                   params=[_path_param("trigger_id")]),
        "delete": _op("delete a trigger: it fires no more (owner only)", "200", rs.TriggerDeleted,
                      params=[_path_param("trigger_id")]),
    },
    **_sharing_paths("triggers"),
    "/v1/triggers/{trigger_id}/rules": {"post": _op("bind one more rule to a trigger (owner, or a user it is shared with)",
                                                    "201", rs.Rule, params=[_path_param("trigger_id")], body=rq.RuleRequest)},
    "/v1/triggers/{trigger_id}/rules/{rule_id}": {"delete": _op("remove a rule", "200", rs.RuleDeleted,
                                                                params=[_path_param("trigger_id"), _path_param("rule_id")])},
    "/v1/triggers/{trigger_id}/fire": {"post": _repeat_answers_200(_op(
        "send the trigger an event by hand; event_id makes a retry fire once", "202", rs.Delivered,
        params=[_path_param("trigger_id")], body=rq.FireRequest))},
    "/v1/triggers/{trigger_id}/events": {"get": _op(
        "the trigger's latest events, newest first, with the tasks each made", "200", rs.TriggerEvents,
        params=[_path_param("trigger_id"), {"name": "limit", "in": "query", "required": False,
                                            "schema": {"type": "integer", "minimum": 1}}])},
    "/v1/hooks/{trigger_id}": {"post": {**_op(
        "a webhook delivery: the body (a JSON object) is the event; signed with the trigger's secret "
        "(X-Fnserve-Timestamp, X-Fnserve-Signature: sha256=HMAC(secret, timestamp + '.' + body)); "
        "401 bad_signature otherwise", "202", rs.Delivered, body={"type": "object"},
        params=[_path_param("trigger_id")] + [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in ("X-Fnserve-Timestamp", "X-Fnserve-Event-Id")]),
        "security": [{"webhookSignature": []}],
    }},
    "/v1/groups": {
        "get": _op("the caller's groups", "200", rs.GroupList),
        "post": _op("create a group", "201", rs.Group, body=rq.GroupCreation),
    },
    "/v1/groups/{name}/members": {"post": _op("add and remove members (owner only)", "200", rs.Group,
                                              params=[_path_param("name")], body=rq.MemberChanges)},
}


_repeat_answers_200(PATHS["/v1/hooks/{trigger_id}"]["post"])  # a webhook sender's retry of one event


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the ``/v1`` API."""
    return {
        "openapi": "3.1.0",
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
            "schemas": schemas(),
        },
        "paths": PATHS,
    }


def _structs(module: ModuleType) -> list[type]:
    return [v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == module.__name__]


def schemas() -> dict[str, Schema]:
    """``components/schemas``: every REST body's Struct (and what they reference)."""
    _, components = msgspec.json.schema_components([*_structs(rq), *_structs(rs), ShellSpec], ref_template=REF_TEMPLATE)
    return components
