"""fnserve: function serving for science.

Register a Python function once, then run it on HPC and cloud endpoints from a notebook, the
command line or plain HTTP.

Names are imported lazily so that the node manager, which imports only the small core
(``fnserve.messages``, ``fnserve.serialize``), starts fast inside workers.
"""

from __future__ import annotations

from typing import Any

from fnserve.version import __version__

_LAZY = {
    "Client": "fnserve.client",
    "ShellFunction": "fnserve.shell",
    "MPIFunction": "fnserve.shell",
    "Batch": "fnserve.client",
    "Executor": "fnserve.executor",
    "TaskFuture": "fnserve.futures",
    "AsyncClient": "fnserve.aio",
    "AsyncExecutor": "fnserve.aio_executor",
    "RemoteTraceback": "fnserve.remote_errors",
    "SourceFallbackWarning": "fnserve.serialize",
    "FnserveError": "fnserve.errors",
    "RemoteExecutionError": "fnserve.errors",
    "TaskCancelled": "fnserve.errors",
    "TaskFailed": "fnserve.errors",
    "TaskPending": "fnserve.errors",
    "report": "fnserve.outputs",
    "output_dir": "fnserve.output_files",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook (report() runs in tight loops)
        return value
    raise AttributeError(f"module 'fnserve' has no attribute {name!r}")
