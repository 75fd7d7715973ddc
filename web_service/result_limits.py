"""Sizes the forwarder accepts in a result, whatever the endpoint claims to enforce.

A worker refuses a result over its endpoint's ``max_result_bytes`` itself; this is the
service's own bound (``FNSERVE_MAX_RESULT_BYTES``), for endpoints that set a larger one or a
site manager that is not ours. A result over it is recorded as failed ``result_too_large`` (its
data dropped, never stored); captured text (stdout, stderr, the error's message and traceback)
is cut at :data:`MAX_TEXT_CHARS` each, with the cut stated.
"""

from __future__ import annotations

import msgspec

from fnserve.messages import RemoteError, ResultMessage

MAX_TEXT_CHARS = 256 * 1024
CUT_MARKER = "\n[fnserve: cut by the service at {limit} characters; {dropped} more not kept]\n"


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARKER.format(limit=limit, dropped=len(text) - limit)


def within_limits(result: ResultMessage, max_result_bytes: int) -> ResultMessage:
    """``result`` if it fits (the same object, the common case), else a bounded copy."""
    err = result.error
    texts = (result.stdout, result.stderr, err.message if err else "", err.traceback if err else "")
    if len(result.data) <= max_result_bytes and all(len(t) <= MAX_TEXT_CHARS for t in texts):
        return result
    error = RemoteError(code=err.code, type=err.type, message=_cut(err.message), traceback=_cut(err.traceback)) if err else None
    bounded = msgspec.structs.replace(result, stdout=_cut(result.stdout), stderr=_cut(result.stderr), error=error)
    if len(result.data) > max_result_bytes:
        bounded = msgspec.structs.replace(bounded, ok=False, data=b"", error=RemoteError(
            code="result_too_large", type="ResultTooLarge",
            message=f"the endpoint sent a result of {len(result.data)} bytes serialized, over the service's limit of "
                    f"{max_result_bytes} bytes (FNSERVE_MAX_RESULT_BYTES); return less data or write it to shared storage",
        ))
    return bounded


__all__ = ["MAX_TEXT_CHARS", "within_limits"]
