"""The worker's side of the data plane: arguments passed by reference are downloaded from the
object store, and a result above the threshold is uploaded there and sent back as a reference.

Both use the task's data token (``TaskMessage.data_token``), which acts for the task's owner
while the task runs and for nothing else. Imported only when a task needs it (the node
manager's import time stays small).
"""

from __future__ import annotations

from fnserve import serialize
from fnserve.data_refs import read_ref
from fnserve.errors import FnserveError, SerializationError
from fnserve.messages import TaskMessage
from fnserve.object_transfer import ObjectStoreClient
from fnserve.oob_frames import Part


def _client(task: TaskMessage) -> ObjectStoreClient:
    if not task.data_url or not task.data_token:
        raise FnserveError("the arguments were passed by reference but this task has no object store "
                           "(the service sets FNSERVE_PUBLIC_URL for its workers; docs/data.md)",
                           code="no_object_store")
    return ObjectStoreClient(task.data_url, task.data_token)


def fetch_arguments(task: TaskMessage) -> bytearray:
    """The arguments' buffer the task's reference names, checked against the endpoint's policy
    again on its real header (a reference only declares its strategy)."""
    ref = read_ref(task.payload)
    assert ref is not None
    buf = _client(task).get(ref)
    header = serialize.parse_header(bytes(buf[:64]))
    if header.strategy != ref.strategy:
        raise SerializationError(f"the object holds {header.strategy!r} but its reference declared {ref.strategy!r}",
                                 code="corrupt_buffer")
    if task.allowed_serializers is not None:
        serialize.check_allowed(bytes(buf[:64]), task.allowed_serializers, "the arguments")
    return buf


def store_result(task: TaskMessage, parts: list[Part]) -> bytes:
    """Upload a serialized result (its parts, one after the other); returns the reference
    buffer to send back instead."""
    header = serialize.parse_header(bytes(parts[0][:64]))
    ref = _client(task).put(parts, strategy=header.strategy, name=f"result of task {task.task_id}")
    return ref.to_buffer(serialize.PYTHON_VERSION)
