"""Request bodies into their Structs: every refusal names the field, with a stable code.

``msgspec.convert`` does the checking (types, lengths, bounds, enums, required fields, all
declared on the Structs); :func:`field_error` turns its :class:`msgspec.ValidationError` into
``400 invalid_request`` with ``details.field`` the path of the bad value as the client wrote
it (``tasks[1].walltime``), and a message in plain words.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

from fnserve.errors import BadRequest
from web_service.validation import invalid

T = TypeVar("T")

_AT = re.compile(r"(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_LENGTH = re.compile(r"Expected `(?P<kind>str|array|object)` of length (?P<op>[<>]=) (?P<n>\d+)")
_BOUND = re.compile(r"Expected `(?:int|float)` (?P<op>[<>]=?) (?P<n>\S+)")
_PATTERN = re.compile(r"Expected `str` matching regex (?P<regex>.+)")
_ENUM = re.compile(r"Invalid enum value (?P<value>.+)")
_SEGMENT = re.compile(r"\.(\w+)|\[(\d+)\]")

_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "array": "a list",
          "object": "an object"}
_UNITS = {"str": "characters", "array": "items", "object": "keys"}


def decode(body: Any, type_: type[T], prefix: str = "") -> T:
    """``body`` (parsed JSON) as a ``type_``; 400 ``invalid_request`` naming ``prefix`` + the field."""
    try:
        return msgspec.convert(body, type_)
    except msgspec.ValidationError as exc:
        raise field_error(exc, type_, prefix) from None


def field_error(exc: msgspec.ValidationError, type_: Any, prefix: str = "") -> BadRequest:
    """The ``invalid_request`` error for a failed decode of ``type_`` (a pure function)."""
    match = _AT.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    reason, path = match["reason"], match["path"] or ""
    details: dict[str, Any] = {}
    missing = _MISSING.fullmatch(reason)
    if missing:
        path, text = f"{path}.{missing['name']}", "is required"
    else:
        text = _plain(reason)
        allowed = _ENUM.fullmatch(reason) and _allowed(type_, path)
        if allowed:
            text = f"must be one of {', '.join(map(str, allowed))}"
            details["allowed"] = allowed
    field = (prefix + path).lstrip(".") or "(body)"
    return invalid(field, text, **details)


def _plain(reason: str) -> str:
    m = _TYPE.fullmatch(reason)
    if m:
        wanted = [_WORDS.get(w, w) for w in m["want"].split(" | ") if w != "null"]
        return f"must be {' or '.join(wanted)}, not {m['got']}"
    m = _LENGTH.fullmatch(reason)
    if m:
        what, n, unit = _WORDS[m["kind"]], m["n"], _UNITS[m["kind"]]
        if m["op"] == ">=" and n == "1":
            return f"must be {what} that is not empty"
        return f"must be {what} of {'at least' if m['op'] == '>=' else 'at most'} {n} {unit}"
    m = _BOUND.fullmatch(reason)
    if m:
        return f"must be a number {m['op']} {m['n']}"
    m = _PATTERN.fullmatch(reason)
    if m:
        return f"must be text matching {m['regex']}"
    return f"is not valid: {reason}"


def _allowed(type_: Any, path: str) -> list[Any] | None:
    """The values an enum field at ``path`` (``.a[0].b``) of ``type_`` takes, if it is one."""
    info = mi.type_info(type_)
    for name, _index in _SEGMENT.findall(path):
        info = _unwrap(info)
        if name and isinstance(info, mi.StructType):
            info = next((f.type for f in info.fields if f.encode_name == name), mi.AnyType())
        elif not name and isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            info = info.item_type
        else:
            return None
    info = _unwrap(info)
    if isinstance(info, mi.LiteralType):
        return list(info.values)
    if isinstance(info, mi.EnumType):
        return [m.value for m in info.cls]
    return None


def _unwrap(info: mi.Type) -> mi.Type:
    """The one type in ``X | None`` (what an optional field holds; UNSET is not in the union)."""
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return rest[0] if len(rest) == 1 else info
    return info
