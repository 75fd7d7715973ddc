"""The reusable parts of the OpenAPI document (:mod:`web_service.openapi`): the helpers that
build schemas, the shared parameters, and the named schemas under ``components/schemas``."""

from __future__ import annotations

from typing import Any


Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(max_len: int = 255, **extra: Any) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, **extra}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


BASE64 = {"type": "string", "pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
ID = string(64)
TIMESTAMP = {"type": "string", "description": "ISO 8601 time, UTC"}
WAIT_QUERY = {"name": "wait", "in": "query", "required": False,
               "description": "seconds to long-poll (capped by the service's FNSERVE_MAX_WAIT)",
               "schema": {"type": "number", "minimum": 0}}
CURSOR = {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"}
SHARED_QUERY = {"name": "shared", "in": "query", "required": False,
                 "description": "true: also list what others share with the caller",
                 "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({
        "error": obj({
            "code": {"type": "string", "description": "stable machine-readable code"},
            "message": {"type": "string"},
            "details": {"type": "object"},
        }, ["code", "message"]),
    }, ["error"]),
    "Function": obj({
        "function_id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "strategy": {"type": "string"}, "python": {"type": "string"}, "created_at": TIMESTAMP,
        "owner_id": {"type": "string"},
    }, ["function_id", "name", "strategy", "created_at", "owner_id"]),
    "Endpoint": obj({
        "endpoint_id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "created_at": TIMESTAMP, "owner_id": {"type": "string"}, "restricted": {"type": "boolean"},
        "status": ref("EndpointStatus"),
    }, ["endpoint_id", "name", "created_at", "owner_id", "restricted"]),
    "EndpointRegistered": {"allOf": [ref("Endpoint"), obj({
        "secret": {"type": "string"}, "forwarder_address": {"type": "string"},
        "curve_public_key": nullable({"type": "string"}), "curve_secret_key": nullable({"type": "string"}),
        "forwarder_public_key": nullable({"type": "string"}),
    }, ["secret", "forwarder_address"])]},
    "EndpointStatus": obj({
        "connected": {"type": "boolean"}, "last_heartbeat": nullable({"type": "number"}),
        "connected_since": nullable({"type": "number"}), "disconnected_since": nullable({"type": "number"}),
        "tasks_waiting": {"type": "integer"}, "tasks_in_flight": {"type": "integer"},
        "site": {"type": "object"},
    }, ["connected", "tasks_waiting", "tasks_in_flight"]),
    "TaskError": obj({
        "code": {"type": "string"}, "type": {"type": "string"}, "message": {"type": "string"},
        "traceback": {"type": "string"},
        "module": {"type": "string", "description": "module of the exception's class (user_exception)"},
        "qualname": {"type": "string", "description": "qualified name of the exception's class"},
        "args": {"type": "array", "description": "the exception's args, when all are JSON scalars"},
    }, ["code", "message"]),
    "BatchError": obj({
        "index": {"type": "integer", "minimum": 0, "description": "the refused task's position in the batch"},
        "status": {"type": "integer", "description": "the HTTP status this error has on its own"},
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"},
    }, ["index", "status", "code", "message"]),
    "Task": obj({
        "task_id": {"type": "string"},
        "state": {"type": "string", "enum": ["waiting-for-endpoint", "dispatched", "running", "success", "failed", "cancelled"]},
        "function_id": {"type": "string"}, "endpoint_id": {"type": "string"},
        "runtime": nullable({"type": "string"}),
        "timestamps": {"type": "object", "additionalProperties": {"type": "number"}},
        "result": nullable({**BASE64, "description": "base64 of the serialized result"}),
        "result_json": {"description": "the result as JSON, for results made with the JSON strategy"},
        "error": nullable(ref("TaskError")),
        "stdout": nullable({"type": "string"}), "stderr": nullable({"type": "string"}),
        "timings": nullable({"type": "object"}), "resources": nullable({"type": "object"}),
        "placement": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "where it ran: block, job_id (the block's batch job), node, runtime, container"},
        "max_retries": {"type": "integer"}, "task_group_id": {"type": "string"},
        "resource_specification": {"type": "object"},
    }, ["task_id", "state", "function_id", "endpoint_id", "timestamps"]),
    "TaskSpec": obj({
        "function_id": ID, "endpoint_id": ID, "runtime": string(128),
        "walltime": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                     "description": "seconds; at most the service's FNSERVE_MAX_WALLTIME (30 days by default)"},
        "result_format": {"type": "string", "enum": ["json", "python"]},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": 100,
                        "description": "reruns after a lost worker or block (default: the endpoint's max_retries)"},
        "payload": {**BASE64, "description": "base64 of arguments made by fnserve.serialize (not with args/kwargs)"},
        "args": {"type": "array", "description": "JSON arguments (instead of payload)"},
        "kwargs": {"type": "object", "description": "JSON keyword arguments (instead of payload)"},
        "task_group_id": {**ID, "description": "a task group of the caller's to add the task to (any id they choose)"},
        "resource_specification": {"type": "object", "description": "what the task asks of the endpoint's resources "
                                   "(recorded and forwarded to the endpoint; at most 4 KiB as JSON)"},
    }, ["function_id", "endpoint_id"]),
    "Sharing": obj({
        "public": {"type": "boolean"},
        "users": {"type": "array", "items": string(), "maxItems": 1000},
        "groups": {"type": "array", "items": string(), "maxItems": 1000},
    }),
    "Allowlist": obj({
        "restricted": {"type": "boolean"},
        "function_ids": {"type": "array", "items": ID, "maxItems": 10_000},
    }),
    "Group": obj({
        "group_id": {"type": "string"}, "name": {"type": "string"}, "owner": {"type": "string"},
        "members": {"type": "array", "items": {"type": "string"}},
    }, ["group_id", "name"]),
    "Runtime": obj({
        "runtime_id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "image": {"type": "string"}, "description": {"type": "string"}, "owner_id": {"type": "string"},
        "created_at": TIMESTAMP,
    }, ["runtime_id", "name", "type"]),
    "Rule": obj({
        "rule_id": {"type": "string"}, "function_id": ID, "endpoint_id": ID,
        "owner_id": nullable({"type": "string", "description": "in answers: who bound the rule (its tasks run as them)"}),
        "args_template": obj({"args": {"type": "array"}, "kwargs": {"type": "object"}}),
        "filters": {"type": "array", "maxItems": 16, "items": obj({
            "field": string(), "op": {"type": "string", "enum": ["eq", "ne", "in", "glob", "gt", "ge", "lt", "le", "exists"]},
            "value": {},
        }, ["field"])},
        "max_concurrency": nullable({"type": "integer", "minimum": 1, "maximum": 100_000}),
    }, ["function_id", "endpoint_id"]),
    "Trigger": obj({
        "trigger_id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string", "enum": ["schedule", "webhook", "file"]},
        "config": {"type": "object"}, "owner_id": {"type": "string"}, "created_at": TIMESTAMP,
        "rules": {"type": "array", "items": ref("Rule")},
        "webhook_path": {"type": "string", "description": "webhook triggers: where to POST signed events"},
        "next_time": {"type": "string", "description": "schedule triggers: the next time it fires (UTC)"},
        "secret": {"type": "string", "description": "webhook triggers, in the answer to create only: the signing secret"},
    }, ["trigger_id", "name", "kind", "config", "rules"]),
    "Firing": obj({
        "rule_id": {"type": "string"}, "task_id": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "submitted", "done", "refused"]},
        "error": obj({"code": {"type": "string"}, "message": {"type": "string"}}),
    }, ["rule_id", "task_id", "state"]),
    "Delivered": obj({
        "event_id": {"type": "string"}, "duplicate": {"type": "boolean"},
        "firings": {"type": "array", "items": ref("Firing")},
    }, ["event_id", "duplicate", "firings"]),
    "Object": obj({
        "object_id": {"type": "string"}, "size": {"type": "integer"}, "sha256": {"type": "string"},
        "received": {"type": "integer"}, "complete": {"type": "boolean"}, "expires": {"type": "number"},
        "chunk_bytes": {"type": "integer"},
    }, ["object_id", "size", "sha256", "received", "complete", "expires", "chunk_bytes"]),
    "Outputs": obj({
        "task_id": {"type": "string"}, "state": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
        "cursor": {"type": "string"}, "complete": {"type": "boolean"}, "truncated": {"type": "boolean"},
    }, ["task_id", "outputs", "cursor", "complete"]),
}
