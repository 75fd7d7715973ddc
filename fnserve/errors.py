"""Errors shared by the SDK, the service and the site.

Every error carries a stable machine-readable ``code`` (what programs match on) and an
``http_status`` (what the REST API answers with). Messages are written for a person to act on.
"""

from __future__ import annotations

from typing import Any


class FnserveError(Exception):
    """Base class: a stable ``code``, an HTTP status and a message a person can act on."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class BadRequest(FnserveError):
    code = "bad_request"
    http_status = 400


class InvalidPayload(BadRequest):
    code = "invalid_payload"


class SerializationError(FnserveError):
    """A buffer could not be made or read (unknown strategy, version mismatch, corrupt body)."""

    code = "serialization_error"
    http_status = 400


class SerializerNotAllowed(SerializationError):
    """A buffer's strategy is not one the reader accepts (an endpoint's ``allowed_serializers``,
    a function-restricted endpoint's data-only arguments, ``Client(allowed_result_serializers=...)``).
    The buffer was not loaded."""

    code = "serializer_not_allowed"


class Unauthorized(FnserveError):
    code = "unauthorized"
    http_status = 401


class Forbidden(FnserveError):
    code = "forbidden"
    http_status = 403


class NotFound(FnserveError):
    code = "not_found"
    http_status = 404


class Conflict(FnserveError):
    code = "conflict"
    http_status = 409


class PayloadTooLarge(FnserveError):
    code = "payload_too_large"
    http_status = 413


class TooManyRequests(FnserveError):
    code = "too_many_requests"
    http_status = 429


class QuotaExceeded(TooManyRequests):
    """A per-user quota (tasks or core-hours per period) is used up; ``details`` say which
    and ``resets_at`` when."""

    code = "quota_exceeded"


class RateLimited(TooManyRequests):
    """Too many requests too fast; ``details["retry_after"]`` is the seconds to wait."""

    code = "rate_limited"


class ServiceUnavailable(FnserveError):
    code = "service_unavailable"
    http_status = 503


class TaskPending(FnserveError):
    """Raised by ``Client.get_result`` when the timeout passes before the task finishes."""

    code = "task_pending"
    http_status = 408


class TaskCancelled(FnserveError):
    code = "task_cancelled"
    http_status = 409


class TaskFailed(FnserveError):
    """A task ended in ``failed`` for a reason other than the function raising.

    (Lost worker, bad runtime, deserialization failure at the worker, result too large...)
    """

    code = "task_failed"
    http_status = 200


class RemoteExecutionError(Exception):
    """The user's function raised on the endpoint.

    ``remote_type`` and ``remote_message`` describe the original exception and
    ``remote_traceback`` is its formatted traceback, as printed on the worker; ``__cause__`` is a
    :class:`fnserve.remote_errors.RemoteTraceback` holding that traceback. When the original
    exception's class is imported in this process, what is raised is an instance of that class
    too (``except ValueError`` catches it): see :mod:`fnserve.remote_errors`.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str, task_id: str | None = None):
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.task_id = task_id
        super().__init__(f"{remote_type}: {remote_message}")

    def __str__(self) -> str:
        where = f" (task {self.task_id})" if self.task_id else ""
        return f"{self.remote_type}: {self.remote_message}{where}\n\nRemote traceback:\n{self.remote_traceback}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.remote_type, self.remote_message, self.remote_traceback, self.task_id))


_BY_CODE: dict[str, type[FnserveError]] = {}


def _index(cls: type[FnserveError]) -> None:
    for sub in cls.__subclasses__():
        _BY_CODE.setdefault(sub.code, sub)
        _index(sub)


def error_from_dict(body: dict[str, Any], http_status: int) -> FnserveError:
    """Rebuild the closest error class from a REST error body ``{"code":..., "message":...}``."""
    if not _BY_CODE:
        _index(FnserveError)
    code = str(body.get("code", "error"))
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = next((c for c in _BY_CODE.values() if c.http_status == http_status), FnserveError)
    err = cls(str(body.get("message", "")), code=code, details=body.get("details"))
    err.http_status = http_status
    return err
