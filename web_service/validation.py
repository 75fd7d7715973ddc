"""Checks of request bodies beyond their Structs' (web_service.rest_bodies): JSON parsing with a
depth limit, strict base64 with a size limit, stream-id cursors; every failure names the field,
with a stable code."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeGuard

import msgspec

from fnserve.errors import BadRequest, PayloadTooLarge

_decoder = msgspec.json.Decoder()

#: Deepest nesting of arrays/objects a request body may have. Checked explicitly: the decoder's
#: own guard follows the interpreter's recursion limit, which imported libraries raise (jedi, which
#: IPython imports, sets 3000), so a 1,000-deep body was accepted in one process and not another.
MAX_JSON_DEPTH = 128


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def is_stream_id(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a Redis stream id Redis accepts: two unsigned 64-bit numbers, 'ms-seq'.

    The cursors of the completions and outputs routes are stream ids; a larger number made
    Redis refuse the read (a 500 before this check)."""
    return isinstance(value, str) and bool(_STREAM_ID.fullmatch(value)) and all(int(n) < 2**64 for n in value.split("-"))


def invalid(field: str, message: str, **details: Any) -> BadRequest:
    return BadRequest(f"{field} {message}", code="invalid_request", details={"field": field, **details})


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (``malformed_json`` / ``invalid_request`` otherwise)."""
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None
    except RecursionError:
        raise too_deep() from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise too_deep()
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_request", details={"field": "(body)"})
    return body


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), level by level, without recursion."""
    depth, level = 0, [value] if isinstance(value, (list, dict)) else []
    while level:
        depth += 1
        level = [c for node in level for c in (node.values() if type(node) is dict else node)
                 if type(c) is dict or type(c) is list]
    return depth


def too_deep() -> BadRequest:
    return BadRequest("request body is nested too deeply (hundreds of levels of arrays or objects); flatten it",
                      code="json_too_deep")


def decode_base64(value: Any, field: str, max_bytes: int, **details: Any) -> bytes:
    """Strict standard base64 (``invalid_request``), at most ``max_bytes`` decoded (413)."""
    if not isinstance(value, str):
        raise invalid(field, "must be a base64 string", **details)
    # Refuse before decoding: decoded size is about 3/4 of the text.
    if (len(value) // 4) * 3 - 2 > max_bytes:
        raise too_large(field, max_bytes, **details)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not valid base64", **details) from None
    if len(data) > max_bytes:
        raise too_large(field, max_bytes, **details)
    return data


def too_large(field: str, max_bytes: int, **details: Any) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{field} is larger than the limit of {max_bytes} bytes",
        details={"field": field, "limit": max_bytes, **details},
    )


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
