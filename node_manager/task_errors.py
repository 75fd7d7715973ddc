"""A failed task's error as the client sees it (:class:`~fnserve.messages.RemoteError`): the
user's exception with our own frames trimmed from its traceback and its plain arguments, a
(de)serialization failure, or the node manager's own failure."""

from __future__ import annotations

import os
import traceback
from types import TracebackType

from fnserve import serialize
from fnserve.errors import SerializationError
from fnserve.messages import RemoteError

# Our own source folders: frames from them are trimmed from user tracebacks.
_OUR_DIRS = tuple(
    os.path.dirname(os.path.abspath(mod_file)) + os.sep
    for mod_file in (__file__, serialize.__file__)
)


def qualified_name(cls: type) -> str:
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_ours(tb: TracebackType) -> bool:
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_OUR_DIRS)


def _user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and _is_ours(tb):  # drop our frames above the user's function
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def user_error(exc: BaseException) -> RemoteError:
    cls = type(exc)
    return RemoteError(
        code="user_exception",
        type=qualified_name(cls),
        message=safe_str(exc),
        traceback=_user_traceback(exc),
        module=str(getattr(cls, "__module__", "")),
        qualname=str(getattr(cls, "__qualname__", "")),
        args=_plain_args(exc),
    )


_SCALARS = (str, int, float, bool, type(None))


def _plain_args(exc: BaseException) -> list[object] | None:
    """The exception's args if each is a plain JSON scalar (a client can call the class with
    them again); None otherwise. Only data crosses: never an object to unpickle."""
    try:
        args = exc.args
    except Exception:  # noqa: BLE001 - a user's exception can break its own args
        return None
    if not isinstance(args, tuple) or len(args) > 16:
        return None
    if all(type(a) in _SCALARS and (type(a) is not str or len(a) <= 65536) for a in args):
        return list(args)
    return None


def serialization_error(
    exc: SerializationError, what: str, code: str | None = None
) -> RemoteError:
    return RemoteError(
        code=code or exc.code,
        type=qualified_name(type(exc)),
        message=f"could not deserialize the task's {what}: {exc.message}"
        if code is None
        else f"could not serialize the task's {what}: {exc.message}",
    )


def system_error(exc: BaseException) -> RemoteError:
    code = getattr(exc, "code", None)
    return RemoteError(
        code=code if isinstance(code, str) else "node_manager_error",
        type=qualified_name(type(exc)),
        message=f"the node manager could not run the task: {safe_str(exc)}",
        traceback="".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        ),
    )


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a user's __str__ can itself raise
        return f"<unprintable {type(exc).__name__}>"
