"""The worker's side of the data plane: arguments passed by reference are downloaded from the
object store, and a result above the threshold is uploaded there and sent back as a reference.

Both use the task's data token (``TaskMessage.data_token``), which acts for the task's owner
while the task runs and for nothing else. Imported only when a task needs it (the node
manager's import time stays small).
"""

from __future__ import annotations

import logging

from fnserve import serialize
from fnserve.data_refs import read_ref
from fnserve.errors import FnserveError, SerializationError
from fnserve.messages import TaskMessage
from fnserve.object_transfer import ObjectStoreClient
from fnserve.oob_frames import Part

log = logging.getLogger(__name__)


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
    """Start uploading a serialized result (its parts, one after the other, in a thread) and
    return the reference buffer to send back at once: the SDK's download follows the upload
    (the two transfers overlap). The object is created here, so a refusal (quota, size) is the
    task's ``result_upload_failed``; an upload that breaks later deletes its object and the
    reader is told (``object_not_found``, or ``upload_stalled`` if this worker died)."""
    header = serialize.parse_header(bytes(parts[0][:64]))
    ref, done = _client(task).start_put(parts, strategy=header.strategy, name=f"result of task {task.task_id}")
    done.add_done_callback(lambda f: _log_failure(task.task_id, f.exception()))
    return ref.to_buffer(serialize.PYTHON_VERSION)


def _log_failure(task_id: str, exc: BaseException | None) -> None:
    if exc is not None:
        log.warning("the result of task %s could not be uploaded: %s", task_id, exc)
