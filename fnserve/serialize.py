"""Serialization of functions, arguments and results.

Every buffer starts with a one-line ASCII header naming the strategy that made it and the
Python version of the process that made it::

    fns1 dill-code 3.11\n<body>

Strategies:

``dill-code``  a function serialized with dill (by value where it lives in ``__main__``).
``source``     a function as source text, re-executed on the other side: portable across Python
               and dill versions. The body is ``<entry name>\n<source text>``.
``shell``      a command-line template (:mod:`fnserve.shell`): the body is a JSON object, so
               the service may read it; tasks pass the placeholders as keyword arguments.
``dill-data``  arguments or results serialized with dill.
``json-data``  arguments or results as JSON: for callers that are not Python (curl, other
               languages). Arguments are ``{"args": [...], "kwargs": {...}}``.

Reading a buffer checks the header first. A ``dill-*`` buffer made by another Python minor
version is refused with a ``version_mismatch`` error naming both versions, because pickled code
objects are not portable across them.

The web service only ever reads headers (:func:`parse_header`); it never calls :func:`loads`.
Where a policy limits the strategies (an endpoint's ``allowed_serializers``, a client's
``allowed_result_serializers``), :func:`check_allowed` refuses a buffer from its header alone.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any, Callable

from fnserve import oob_frames
from fnserve.errors import SerializationError, SerializerNotAllowed

MAGIC = "fns1"
DILL_CODE = "dill-code"
SOURCE = "source"
DILL_DATA = "dill-data"
JSON_DATA = "json-data"
SHELL = "shell"
CODE_STRATEGIES = (DILL_CODE, SOURCE, SHELL)
DATA_STRATEGIES = (DILL_DATA, JSON_DATA)
STRATEGIES = CODE_STRATEGIES + DATA_STRATEGIES
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_MAX_HEADER = 64
# A reference to a payload held in the object store (fnserve.data_refs); not a policy name: a
# policy is checked against the strategy the reference declares for the stored buffer.
REF = "ref"


@dataclass(frozen=True)
class Header:
    strategy: str
    python: str
    length: int  # bytes taken by the header line, newline included

    @property
    def is_code(self) -> bool:
        return self.strategy in CODE_STRATEGIES


def _header(strategy: str) -> bytes:
    return f"{MAGIC} {strategy} {PYTHON_VERSION}\n".encode("ascii")


def parse_header(buf: bytes | bytearray) -> Header:
    """Read and check the header of ``buf`` without touching its body.

    Raises :class:`SerializationError` (code ``not_fnserve_format``) when ``buf`` is not a
    buffer made by fnserve.
    """
    end = buf.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise SerializationError(
            "payload is not in fnserve's format: it must start with a header line such as "
            f"'{MAGIC} json-data 3.11' (make payloads with fnserve.serialize or the SDK)",
            code="not_fnserve_format",
        )
    try:
        magic, strategy, python = buf[:end].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        magic, strategy, python = "", "", ""
    if magic != MAGIC:
        raise SerializationError(
            f"payload is not in fnserve's format: header must be '{MAGIC} <strategy> <python>'",
            code="not_fnserve_format",
        )
    if strategy not in STRATEGIES and strategy != REF:
        raise SerializationError(
            f"unknown serialization strategy {strategy!r}; known: {', '.join(STRATEGIES)}",
            code="unknown_strategy",
        )
    return Header(strategy=strategy, python=python, length=end + 1)


# -- serializer policy -------------------------------------------------------------------------
#
# Which strategies a party accepts. Every strategy but ``json-data`` is code: a function is code by
# design, and loading a dill-data buffer can run anything (pickle's __reduce__). An endpoint names
# the strategies it accepts for functions and arguments (``allowed_serializers`` in its config);
# a caller names the ones it accepts for results (``Client(allowed_result_serializers=...)``).

# Strategies whose loading can run code chosen by whoever made the buffer.
CODE_CAPABLE = frozenset({DILL_CODE, SOURCE, SHELL, DILL_DATA})


def parse_policy(value: object, key: str = "allowed_serializers") -> tuple[str, ...] | None:
    """A list of strategy names from a config or call, checked (``None`` means: any)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise SerializationError(f"{key} must be a list of strategy names ({', '.join(STRATEGIES)})",
                                 code="invalid_serializer_policy", details={"key": key})
    names = tuple(dict.fromkeys(value))
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise SerializationError(f"{key}: unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}",
                                 code="invalid_serializer_policy", details={"key": key, "allowed": list(STRATEGIES)})
    return names


def narrow(*policies: tuple[str, ...] | list[str] | None) -> tuple[str, ...] | None:
    """What every one of ``policies`` allows (``None`` entries allow everything).

    >>> narrow(None, ("source", "json-data"), ("dill-code", "source", "json-data"))
    ('source', 'json-data')
    """
    out: tuple[str, ...] | None = None
    for p in policies:
        if p is not None:
            out = tuple(p) if out is None else tuple(s for s in out if s in p)
    return out


def data_only(policy: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``policy`` with its code-capable data strategies removed (functions left as they are)."""
    return tuple(s for s in (policy if policy is not None else STRATEGIES) if s != DILL_DATA)


def check_allowed(buf: bytes | bytearray, allowed: tuple[str, ...] | list[str] | None, what: str) -> Header:
    """``buf``'s header, if its strategy is in ``allowed``; else ``serializer_not_allowed``.

    Reads only the header: a refused buffer is never loaded.
    """
    header = parse_header(buf)
    strategy = header.strategy
    if strategy == REF:
        from fnserve.data_refs import read_ref

        ref = read_ref(buf)
        strategy = ref.strategy if ref is not None else REF
        header = Header(strategy=strategy, python=header.python, length=header.length)
    if allowed is not None and strategy not in allowed:
        hint = " (JSON: serializer='json-data')" if JSON_DATA in allowed and not header.is_code else ""
        raise SerializerNotAllowed(
            f"{what}: serializer {header.strategy!r} is not allowed here; allowed: "
            f"{', '.join(allowed) or 'none'}{hint}",
            details={"strategy": header.strategy, "allowed": list(allowed)},
        )
    return header


def _check_python(header: Header) -> None:
    if header.strategy.startswith("dill") and header.python != PYTHON_VERSION:
        raise SerializationError(
            f"buffer was made with dill on Python {header.python} but this is Python "
            f"{PYTHON_VERSION}; dill buffers only load on the same Python minor version. "
            "Use a runtime with the same Python, or register the function with the 'source' "
            "strategy and pass JSON arguments.",
            code="version_mismatch",
            details={"made_with": header.python, "running": PYTHON_VERSION},
        )


# -- functions -------------------------------------------------------------------------------


AUTO = "auto"  # serialize_function: dill, else the source text with a warning


class SourceFallbackWarning(UserWarning):
    """A function dill could not serialize was sent as its source text instead."""


def serialize_function(fn: Callable[..., Any], strategy: str | None = None) -> bytes:
    """Serialize ``fn`` with ``strategy``.

    ``"dill-code"``: dill only (an error if dill cannot). ``"source"``: the source text only.
    ``"auto"`` or None (the default): dill; if dill cannot, the source text, with a
    :class:`SourceFallbackWarning` saying why, but only when the source alone is enough: a
    function that uses names from around it (globals, closure variables, imported modules) would
    fail on the endpoint with a ``NameError``, so that is a :class:`SerializationError` here.
    """
    if not callable(fn):
        raise SerializationError(f"{fn!r} is not callable", code="not_callable")
    if hasattr(fn, "__fnserve_buffer__"):  # a fnserve.ShellFunction: its own buffer, whatever the strategy
        return fn.__fnserve_buffer__()  # type: ignore[no-any-return]
    if strategy not in (None, AUTO, DILL_CODE, SOURCE):
        raise SerializationError(f"{strategy!r} is not a function strategy; use one of {CODE_STRATEGIES} or {AUTO!r}")
    if strategy == SOURCE:
        return serialize_source(_function_source(fn), fn.__name__)
    try:
        import dill

        code: bytes = dill.dumps(fn, recurse=True)
        return _header(DILL_CODE) + code
    except Exception as exc:  # dill raises many types
        reason = f"{type(exc).__name__}: {exc}"
        if strategy == DILL_CODE:
            raise SerializationError(f"dill could not serialize {_name(fn)}: {reason}", code="not_serializable") from exc
    missing = _names_from_around(fn)
    if missing:
        raise SerializationError(
            f"dill could not serialize {_name(fn)} ({reason}), and its source text alone would not work: it uses "
            f"{', '.join(missing)} from around it. Import or define those inside the function, or make what it "
            "uses serializable by dill", code="not_serializable", details={"names": missing})
    try:
        buf = serialize_source(_function_source(fn), fn.__name__)
    except SerializationError as src_exc:
        raise SerializationError(f"dill could not serialize {_name(fn)} ({reason}), nor could its source text be used: "
                                 f"{src_exc.message}", code="not_serializable") from src_exc
    import warnings

    warnings.warn(f"dill could not serialize {_name(fn)} ({reason}); sending its source text instead. "
                  "serializer='source' chooses that without this warning, serializer='dill-code' makes it an error",
                  SourceFallbackWarning, stacklevel=3)
    return buf


def serialize_shell(spec: Any) -> bytes:
    """A ``shell`` buffer of a :class:`fnserve.shell.ShellSpec` (checked first)."""
    from fnserve import shell

    return _header(SHELL) + shell.spec_buffer_body(spec)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _names_from_around(fn: Callable[..., Any]) -> list[str]:
    """Names ``fn`` reads that its source text would not bring along (closure variables and
    module globals, imported modules included)."""
    try:
        found = inspect.getclosurevars(fn)
    except (TypeError, ValueError):
        return []
    return sorted(set(found.nonlocals) | set(found.globals))


def serialize_source(source: str, name: str) -> bytes:
    """A ``source`` buffer: run ``source`` in a fresh namespace and call its ``name``."""
    if not name.isidentifier():
        raise SerializationError(f"{name!r} is not a valid function name", code="bad_entry_point")
    try:
        compile(source, f"<fnserve:{name}>", "exec")
    except SyntaxError as exc:
        raise SerializationError(f"source of {name!r} does not compile: {exc}", code="bad_source") from exc
    return _header(SOURCE) + name.encode() + b"\n" + source.encode("utf-8")


def _function_source(fn: Callable[..., Any]) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise SerializationError(f"cannot read the source of {fn!r}: {exc}", code="no_source") from exc


def deserialize_function(buf: bytes) -> Callable[..., Any]:
    header = parse_header(buf)
    if not header.is_code:
        raise SerializationError(f"expected a function buffer, got {header.strategy!r}", code="wrong_strategy")
    _check_python(header)
    body = buf[header.length :]
    if header.strategy == SHELL:
        from fnserve import shell

        return shell.ShellFunction.from_spec(shell.load_spec(body))
    if header.strategy == DILL_CODE:
        import dill

        try:
            fn = dill.loads(body)
        except Exception as exc:
            raise SerializationError(f"cannot load function with dill: {type(exc).__name__}: {exc}", code="corrupt_buffer") from exc
    else:
        name, _, source = body.partition(b"\n")
        namespace: dict[str, Any] = {"__name__": "__fnserve__"}
        try:
            exec(compile(source.decode("utf-8"), f"<fnserve:{name.decode()}>", "exec"), namespace)
        except Exception as exc:
            raise SerializationError(f"running the function's source failed: {type(exc).__name__}: {exc}", code="bad_source") from exc
        fn = namespace.get(name.decode())
    if not callable(fn):
        raise SerializationError("function buffer did not yield a callable", code="corrupt_buffer")
    return fn  # type: ignore[no-any-return]


# -- data (arguments and results) ---------------------------------------------------------------


def serialize_args(args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, strategy: str | None = None) -> bytes:
    """Serialize call arguments; JSON when asked (or for non-Python callers), dill otherwise."""
    return serialize_data({"args": list(args), "kwargs": dict(kwargs or {})}, strategy)


def deserialize_args(buf: bytes) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs, _ = deserialize_call(buf)
    return args, kwargs


def deserialize_call(buf: bytes | bytearray) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Arguments, keyword arguments and the call's options (see :func:`serialize_args_parts`)."""
    value = deserialize_data(buf)
    if not isinstance(value, dict) or not isinstance(value.get("args", []), list) or not isinstance(value.get("kwargs", {}), dict):
        raise SerializationError('arguments must be {"args": [...], "kwargs": {...}}', code="bad_arguments")
    options = value.get("options")
    return value.get("args", []), value.get("kwargs", {}), options if isinstance(options, dict) else {}


def serialize_data(value: Any, strategy: str | None = None) -> bytes:
    return oob_frames.join(serialize_data_parts(value, strategy))


def serialize_args_parts(args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None,
                         strategy: str | None = None, options: dict[str, Any] | None = None) -> list[oob_frames.Part]:
    """:func:`serialize_args` as parts to send one after the other (large arrays not copied).
    ``options``: for the worker, beside the arguments (``result_proxy``: fnserve.proxies)."""
    call = {"args": list(args), "kwargs": dict(kwargs or {})}
    if options:
        call["options"] = options
    return serialize_data_parts(call, strategy)


def serialize_data_parts(value: Any, strategy: str | None = None) -> list[oob_frames.Part]:
    """The buffer of ``value`` as a list of parts whose concatenation is the buffer.

    A ``dill-data`` value holding large contiguous buffers (numpy arrays, bytearrays) is framed
    with pickle protocol 5 (:mod:`fnserve.oob_frames`): those buffers are parts of their own,
    views of the value's memory, so sending a 1 GiB array copies nothing here."""
    strategy = strategy or DILL_DATA
    if strategy == JSON_DATA:
        try:
            return [_header(JSON_DATA) + json.dumps(value, separators=(",", ":")).encode()]
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"value is not JSON-serializable: {exc}", code="not_json") from exc
    if strategy == DILL_DATA:
        if _plain(value, 3):
            # Builtin values pickle identically with pickle and dill (dill.loads reads both),
            # and pickle is about 10x faster: this is the per-task cost of a small call.
            import pickle

            return [_header(DILL_DATA) + pickle.dumps(value, protocol=4)]
        import dill

        try:
            parts = oob_frames.dump_parts(value, oob_frames.dill_dumps)
            if parts is None:
                return [_header(DILL_DATA) + dill.dumps(value)]
        except Exception as exc:
            raise SerializationError(f"dill could not serialize {type(value).__name__}: {exc}") from exc
        return [_header(DILL_DATA), *parts]
    raise SerializationError(f"{strategy!r} is not a data strategy; use one of {DATA_STRATEGIES}")


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _plain(value: Any, depth: int) -> bool:
    """Only builtin scalars in builtin containers (exact types, a few levels, short)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if depth == 0 or t not in (list, tuple, dict) or len(value) > 64:
        return False
    if t is dict:
        return all(type(k) is str and _plain(v, depth - 1) for k, v in value.items())
    return all(_plain(v, depth - 1) for v in value)


def deserialize_data(buf: bytes | bytearray) -> Any:
    header = parse_header(buf)
    if header.is_code:
        raise SerializationError(f"expected a data buffer, got {header.strategy!r}", code="wrong_strategy")
    if header.strategy == REF:
        raise SerializationError("this buffer is a reference to an object in the object store; "
                                 "download it first (fnserve.object_transfer)", code="unresolved_reference")
    # A view, not a copy: a payload downloaded by reference can be hundreds of MiB.
    body = memoryview(buf)[header.length :]
    if header.strategy == JSON_DATA:
        try:
            return json.loads(bytes(body))
        except ValueError as exc:
            raise SerializationError(f"JSON body is not valid: {exc}", code="corrupt_buffer") from exc
    _check_python(header)
    import dill

    try:
        if oob_frames.is_frame(body):
            return oob_frames.load(body, dill.loads)
        return dill.loads(body)
    except Exception as exc:
        raise SerializationError(f"cannot load data with dill: {type(exc).__name__}: {exc}", code="corrupt_buffer") from exc


def json_body(buf: bytes) -> bytes | None:
    """The raw JSON text of a ``json-data`` buffer (without parsing it), else ``None``."""
    header = parse_header(buf)
    return buf[header.length :] if header.strategy == JSON_DATA else None
