"""``TaskFuture``: a :class:`concurrent.futures.Future` for one fnserve task.

It follows the standard library where the standard library defines behaviour:

* states go PENDING -> RUNNING -> FINISHED (or PENDING -> CANCELLED); ``running()`` is true
  once the service reports the task running: a worker started the function;
* ``cancel()`` never blocks: it returns False once the task runs or finished, and otherwise
  cancels the future at once (True) and the task in the service in the background (a task that
  finished in the service meanwhile keeps its result there; the future stays cancelled);
* ``result()`` / ``exception()`` raise or return what the remote call did (see
  :mod:`fnserve.remote_errors`); ``as_completed``, ``wait``, ``add_done_callback`` and
  ``asyncio.wrap_future`` work as with any future.

Beyond the standard library: ``task_id`` (the service's id, once accepted; ``submitted()``
waits for it), ``task`` (the finished task as the REST API shows it: state, stdout, stderr,
timestamps, hop timings) and ``outputs()`` (the task's live outputs as they arrive).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from fnserve.errors import FnserveError, RemoteExecutionError, TaskCancelled, TaskFailed, TaskPending

if TYPE_CHECKING:
    from fnserve.pipeline import Pipeline


class TaskFuture(Future[Any]):
    """A :class:`concurrent.futures.Future` for one fnserve task (see the module's docstring)."""

    def __init__(self, pipeline: Pipeline | None = None, task_id: str | None = None) -> None:
        super().__init__()
        self.task_id: str | None = task_id
        self.task: dict[str, Any] | None = None
        self._pipeline = pipeline
        self._taken = False  # picked up by the sender: its task may exist in the service
        self._sent = threading.Event()  # the submission ended: accepted (task_id set) or refused
        if task_id is not None:
            self._sent.set()

    def cancel(self) -> bool:
        """Cancel the task unless it is running or finished (then False). Never blocks: the
        task is cancelled in the service in the background."""
        if not cancel_locally(self):
            return False
        if self._pipeline is not None:
            self._pipeline.cancelled(self)
        return True

    def submitted(self, timeout: float | None = None) -> str | None:
        """Block until the service has accepted the task; returns its id (None if the
        submission failed, the future was cancelled first, or ``timeout`` passed)."""
        self._sent.wait(timeout)
        return self.task_id

    def outputs(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Iterate over the task's live outputs (``fnserve.report``) as they arrive, until it
        ends: ``{"seq", "time", "values"}`` each (see :meth:`Client.watch_outputs`)."""
        task_id = self.submitted(timeout)
        if task_id is None:
            if self.done():
                self.result(0)  # the submission failed or was cancelled: raise why
            raise TimeoutError("the task was not submitted within the timeout")
        assert self._pipeline is not None
        return self._pipeline.client.watch_outputs(task_id, timeout=timeout)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" task_id={self.task_id}>"


def cancel_locally(future: Future[Any]) -> bool:
    """``Future.cancel()`` and, as an executor's worker would, wake ``wait()`` /
    ``as_completed()`` callers at once. False if the future runs or finished."""
    if future.cancelled():
        return True
    if not Future.cancel(future):
        return False
    try:
        future.set_running_or_notify_cancel()
    except RuntimeError:
        pass  # another thread notified it at the same moment
    return True


def mark_running(future: Future[Any]) -> None:
    """PENDING -> RUNNING (the service says the task started); anything else stays."""
    if future.running() or future.done():
        return
    try:
        future.set_running_or_notify_cancel()
    except RuntimeError:
        pass  # cancelled, or started, by another thread meanwhile


def resolve(future: TaskFuture, task: dict[str, Any]) -> None:
    """Complete ``future`` from a finished task object (first completion wins), through
    RUNNING as the standard library's executors do."""
    from fnserve.task_results import result_of

    future.task = task
    if future.done():
        return
    # The client's allowed_result_serializers hold for futures too.
    client = future._pipeline.client if future._pipeline is not None else None
    allowed = client.allowed_result_serializers if client is not None else None
    try:
        # A result passed by reference is downloaded here, in the thread resolving futures.
        value = result_of(task, allowed, getattr(client, "fetch_result", None))
    except TaskCancelled:
        cancel_locally(future)
        return
    except (RemoteExecutionError, TaskFailed, TaskPending, FnserveError) as exc:
        settle(future, future.set_exception, exc)
        return
    except Exception as exc:  # noqa: BLE001 - e.g. the result cannot be deserialized here
        settle(future, future.set_exception, exc)
        return
    settle(future, future.set_result, value)


def settle(future: Future[Any], setter: Callable[[Any], None], value: Any) -> None:
    """Set a result or exception on a future that may still be PENDING."""
    mark_running(future)
    try:
        setter(value)
    except InvalidStateError:
        pass  # cancelled meanwhile by its owner


__all__ = ["TaskFuture", "cancel_locally", "mark_running", "resolve", "settle"]
