"""Raising a task's remote exception here as its own type, safely.

A function that raised on the endpoint comes back as data: the exception's class (module and
qualified name), its message, its args when they are plain JSON scalars, and the remote
traceback as text. :func:`remote_exception` turns that into an exception to raise here:

* When the class is an ``Exception`` subclass already imported in this process (a builtin such
  as ``ValueError``, or your ``mylib.errors.MyDomainError`` once ``mylib.errors`` is imported),
  the answer is an instance of a subclass of *both* that class and
  :class:`~fnserve.errors.RemoteExecutionError`, made by calling the class with the remote args:
  ``except MyDomainError`` and ``except RemoteExecutionError`` both catch it, and it prints as
  ``MyDomainError: ...``.
* Otherwise (class unknown here, not an ``Exception``, or its constructor refuses the args) it
  is a plain :class:`~fnserve.errors.RemoteExecutionError`.

Either way ``remote_traceback`` and ``task_id`` are set, and ``__cause__`` is a
:class:`RemoteTraceback` holding the remote traceback, so an uncaught error prints the remote
frames first, then "The above exception was the direct cause of the following exception"
(as :class:`concurrent.futures.ProcessPoolExecutor` does).

Security: an endpoint may be run by someone else, so nothing it sends is unpickled and no
module is imported on its word (importing runs code): the class is looked up only among modules
this process has already imported, must be an ``Exception`` subclass (never ``SystemExit``,
``KeyboardInterrupt`` or a non-exception callable), and is called with the plain args only.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

from fnserve.errors import RemoteExecutionError

_SCALARS = (str, int, float, bool, type(None))
_DERIVED: dict[type[Exception], type[Exception]] = {}


class RemoteTraceback(Exception):
    """The traceback of an exception raised on the endpoint, as printed there (the ``__cause__``
    of what ``result()`` raises)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class _Remote(RemoteExecutionError):
    """Sits between a user's exception class and RemoteExecutionError in a derived class: its
    ``__init__`` takes the user class's arguments (a cooperative ``super().__init__(...)`` in the
    user's class lands here), and its ``__str__`` is the plain exception's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Exception.__init__(self, *args)

    __str__ = Exception.__str__
    __repr__ = Exception.__repr__


def remote_exception(error: dict[str, Any], task_id: str | None = None) -> Exception:
    """The exception to raise for a task's ``error`` object (``code`` ``user_exception``)."""
    type_name = str(error.get("type") or "Exception")
    message = str(error.get("message") or "")
    tb = str(error.get("traceback") or "")
    cls = find_class(str(error.get("module") or ""), str(error.get("qualname") or ""), type_name)
    exc: Exception | None = None
    if cls is not None:
        args = error.get("args")
        plain = isinstance(args, list) and all(type(a) in _SCALARS for a in args)
        exc = _construct(cls, tuple(args) if plain else (message,))  # type: ignore[arg-type]
    if exc is None:
        exc = RemoteExecutionError(type_name, message, tb, task_id)
    else:
        exc.remote_type, exc.remote_message = type_name, message  # type: ignore[attr-defined]
        exc.remote_traceback, exc.task_id = tb, task_id  # type: ignore[attr-defined]
    exc.__cause__ = RemoteTraceback(tb) if tb else None
    return exc


def find_class(module: str, qualname: str, type_name: str = "") -> type[Exception] | None:
    """The ``Exception`` subclass ``module.qualname`` if its module is already imported here.

    Without ``module``/``qualname`` (results recorded by an older endpoint), ``type_name`` is
    read: a bare name is a builtin or a class of ``__main__``; a dotted one ends in the class."""
    candidates: list[tuple[str, str]] = []
    if module and qualname:
        candidates.append((module, qualname))
    elif "." in type_name:
        parts = type_name.split(".")
        # The longest imported module prefix wins: "pkg.mod.Outer.Inner".
        candidates += [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    elif type_name:
        candidates += [("builtins", type_name), ("__main__", type_name)]
    for mod_name, qual in candidates:
        found = _lookup(mod_name, qual)
        if found is not None:
            return found
    return None


def _lookup(module: str, qualname: str) -> type[Exception] | None:
    mod = builtins if module == "builtins" else sys.modules.get(module)  # never import
    if mod is None or "<" in qualname:  # "<locals>": defined inside a function, not reachable
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _construct(cls: type[Exception], args: tuple[Any, ...]) -> Exception | None:
    try:
        derived = _derived(cls)
        exc = derived(*args)
    except Exception:  # noqa: BLE001 - a class we cannot derive from, or that refuses these args
        return None
    return exc if isinstance(exc, cls) else None


def _derived(cls: type[Exception]) -> type[Exception]:
    """``cls`` and :class:`RemoteExecutionError` in one class (made once per class), named and
    placed like ``cls`` so tracebacks print ``ValueError: ...``, and pickled as plain ``cls``."""
    if issubclass(cls, RemoteExecutionError):
        return cls
    derived = _DERIVED.get(cls)
    if derived is None:

        def __reduce__(self: Exception) -> tuple[Any, ...]:
            return (cls, self.args)

        derived = type(cls.__name__, (cls, _Remote), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__reduce__": __reduce__,
            "__doc__": f"{cls.__qualname__} raised on an fnserve endpoint (also a RemoteExecutionError).",
        })
        if cls.__str__ is not BaseException.__str__:
            derived.__str__ = cls.__str__  # type: ignore[method-assign]  # e.g. KeyError quotes its key
        if cls.__repr__ is not BaseException.__repr__:
            derived.__repr__ = cls.__repr__  # type: ignore[method-assign]
        _DERIVED[cls] = derived
    return derived


__all__ = ["RemoteTraceback", "find_class", "remote_exception"]
