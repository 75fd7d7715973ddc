"""A finished task object from the REST API turned into its value, or the error it ended with
(:func:`result_of`), and the status entry ``get_batch_result`` reports for one task."""

from __future__ import annotations

import base64
from typing import Any, Callable

from fnserve import proxies, serialize
from fnserve.data_refs import ObjectRef, read_ref
from fnserve.errors import RemoteExecutionError, SerializationError, TaskCancelled, TaskFailed, TaskPending
from fnserve.remote_errors import remote_exception

# A json-data header, to check a result the service already sent as JSON against a policy.
_JSON_HEADER = serialize.serialize_data(None, serialize.JSON_DATA)


def status_entry(task: dict[str, Any], allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"pending": task["state"] not in ("success", "failed", "cancelled"), "status": task["state"],
                             "state": task["state"]}
    if not entry["pending"]:
        try:
            entry["result"] = result_of(task, allowed)
        except (RemoteExecutionError, TaskFailed, TaskCancelled, SerializationError) as exc:
            entry["exception"] = exc
        if "finished" in task.get("timestamps", {}):
            entry["completion_t"] = task["timestamps"]["finished"]
    return entry


def result_of(task: dict[str, Any], allowed: tuple[str, ...] | None = None,
              fetch: Callable[[ObjectRef], bytearray] | None = None, lazy: bool = False) -> Any:
    """The value of a finished task object from the REST API, or the error it ended with.

    ``allowed``: the serializer strategies to load a result from (None: any); another one raises
    :class:`~fnserve.errors.SerializationError` (``serializer_not_allowed``) unloaded.
    ``fetch``: downloads a result passed by reference (``Client.fetch_object``); without it
    such a result raises ``unresolved_reference``. A ProxyStore proxy is resolved to its
    target unless ``lazy``.
    """
    state = task["state"]
    if state == "success":
        if "result_json" in task:
            serialize.check_allowed(_JSON_HEADER, allowed, f"the result of task {task['task_id']}")
            return task["result_json"]
        if not task.get("result"):
            return None
        buf: bytes | bytearray = base64.b64decode(task["result"])
        serialize.check_allowed(buf, allowed, f"the result of task {task['task_id']}")
        ref = read_ref(buf)
        if ref is not None and fetch is not None:
            buf = fetch(ref)
            serialize.check_allowed(bytes(buf[:64]), allowed, f"the result of task {task['task_id']}")
        return proxies.resolve(serialize.deserialize_data(buf), lazy)
    error = task.get("error") or {}
    if state == "failed" and error.get("code") == "user_exception":
        raise remote_exception(error, task["task_id"])
    if state == "failed":
        raise TaskFailed(f"task {task['task_id']} failed: {error.get('message', 'unknown error')}", code=error.get("code", "task_failed"), details=error)
    if state == "cancelled":
        raise TaskCancelled(f"task {task['task_id']} was cancelled")
    raise TaskPending(f"task {task['task_id']} is still {state}", details={"state": state})
