"""A call's large arguments uploaded while its task is sent (the worker's download follows).

``Client.submit`` and ``Client.call`` upload arguments over ``ref_threshold`` in a thread and
send the task at once with a reference that carries no checksum (the reader checks the bytes
against the one the service verified when the upload completed), so the worker starts
downloading while the SDK is still uploading: the two transfers overlap instead of following
each other. ``submit`` returns once the upload is done (the caller may change its arguments
then). An upload that fails deletes its object, so the worker following it fails at once
(``object_not_found``), and the upload's error is raised from ``submit``, unless the task
finished first (its argument object is released then: the task's outcome says what happened).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from fnserve import oob_frames, serialize
from fnserve.data_refs import by_reference
from fnserve.errors import FnserveError
from fnserve.object_transfer import ObjectStoreClient
from fnserve.oob_frames import Part


class InFlightUploads:
    """The argument uploads of the call a thread is sending (one list per thread)."""

    def __init__(self, objects: Callable[[], ObjectStoreClient]) -> None:
        self._objects = objects
        self._local = threading.local()

    def reference(self, parts: list[Part], threshold: int | None, ttl: float | None) -> bytes:
        """The payload ``parts`` make, or, over ``threshold``, a reference to an object whose
        upload has started (a task spec's ``reference`` callback)."""
        if not by_reference(oob_frames.total(parts), threshold):
            return oob_frames.join(parts)
        header = serialize.parse_header(bytes(parts[0][:64]))
        ref, done = self._objects().start_put(parts, strategy=header.strategy, ttl=ttl, name="task arguments")
        self._local.__dict__.setdefault("uploads", []).append((ref.object_id, done))
        return ref.to_buffer(serialize.PYTHON_VERSION)

    def send(self, post: Callable[[], Any]) -> Any:
        """``post()`` (the task submission), then wait for the uploads started for it."""
        uploads: list[tuple[str, Future[None]]] = self._local.__dict__.pop("uploads", [])
        try:
            answer = post()
        except BaseException:
            try:
                self._finish(uploads)
            except Exception:  # noqa: BLE001, S110 - the refusal of the task is the error to raise
                pass
            raise
        self._finish(uploads)
        return answer

    def _finish(self, uploads: list[tuple[str, Future[None]]]) -> None:
        failure: BaseException | None = None
        for _object_id, done in uploads:
            try:
                done.result()  # a failed upload has deleted its object (ObjectStoreClient.start_put)
            except FnserveError as exc:
                if not exc.details.get("released"):  # else: the task finished first; its outcome says why
                    failure = failure or exc
            except Exception as exc:  # noqa: BLE001 - raised below, once every upload has ended
                failure = failure or exc
        if failure is not None:
            raise failure
