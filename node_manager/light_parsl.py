"""Start Parsl's worker pool and interchange without importing all of Parsl.

A process that imports any Parsl module first runs ``parsl/__init__.py``, which imports the
DataFlowKernel, every executor and provider (boto3, the Kubernetes client, Azure, Google Cloud
when installed) and the monitoring database (SQLAlchemy). The worker pool, its workers, Parsl's
Manager server and the interchange use none of that: on this 2-core machine importing
``process_worker_pool`` took 3.3-5.2 s of which 1.0-1.7 s is what it needs (``-X importtime``:
``parsl.dataflow``, ``parsl.providers`` and ``parsl.monitoring`` were the rest). A new engine
(interchange, pool, Manager server, two workers: five such imports) is what recovery from a
site-manager-side fault waits for.

:func:`skip_package_inits` registers the packages whose ``__init__`` only re-exports (``parsl``,
``parsl.executors``, ``parsl.providers``, ``parsl.launchers``, ``parsl.monitoring``) as empty
packages with the same search path: their submodules import as usual, from the same files, and
nothing of Parsl's code changes. A name such a package's ``__init__`` re-exports is imported
from its own module when first asked for (``from parsl.providers import SlurmProvider`` imports
``parsl.providers.slurm.slurm`` alone); any other name runs the real ``__init__`` then, so code
that needs more of Parsl gets it, later. Entry points call it: :mod:`node_manager.pool`,
:mod:`site_manager.interchange`, ``python -m site_manager`` (the daemon, which imports executors,
providers and launchers by name: 3.6-5.9 s against 13-16 s at load 20), and the pool's spawned
children through :func:`light_children` (multiprocessing's spawn makes each child import the
parent's main module by name, which would be Parsl's ``process_worker_pool`` with its full
``import parsl``; workers import :mod:`node_manager.pool_child_main` instead, which skips the same
inits first, and the Manager server no main module at all).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import sys
import types
from typing import Any

# Packages whose __init__ only re-exports names (and imports everything to do so).
PACKAGES = ("parsl", "parsl.executors", "parsl.providers", "parsl.launchers", "parsl.monitoring")
POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"
CHILD_MAIN = "node_manager.pool_child_main"


def skip_package_inits(names: tuple[str, ...] = PACKAGES) -> bool:
    """Register ``names`` as empty packages (their submodules still import) unless Parsl was
    imported already or is not installed; whether it did."""
    if "parsl" in sys.modules or importlib.util.find_spec("parsl") is None:
        return False
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            continue
        module = types.ModuleType(name)
        module.__spec__ = spec
        module.__path__ = list(spec.submodule_search_locations)
        module.__file__ = spec.origin
        module.__package__ = name
        module.__getattr__ = _lazy_init(module)  # type: ignore[method-assign]
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
    from parsl.version import VERSION

    sys.modules["parsl"].__version__ = VERSION  # type: ignore[attr-defined] # parsl.utils reads it
    logging.getLogger("parsl").addHandler(logging.NullHandler())  # as parsl/__init__.py does
    return True


def reexports(source: str) -> dict[str, tuple[str, str]]:
    r"""Names a package's ``__init__`` source imports from other modules: name -> (module,
    attribute) (pure).

    >>> reexports("from parsl.providers.local.local import LocalProvider as L\nX = 1")
    {'L': ('parsl.providers.local.local', 'LocalProvider')}
    """
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def _lazy_init(module: types.ModuleType) -> Any:
    """A module ``__getattr__`` for a package registered without its ``__init__``: a name the
    ``__init__`` re-exports is imported from its own module alone (``from parsl.providers import
    SlurmProvider`` imports ``parsl.providers.slurm.slurm``); any other name runs the real
    ``__init__`` first, so the package then behaves as if it had been imported normally."""
    table: dict[str, tuple[str, str]] | None = None

    def __getattr__(name: str) -> Any:
        nonlocal table
        package = module.__name__
        if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(name)  # a submodule: the import system imports it
        origin = module.__file__ or ""
        source = open(origin).read()
        if table is None:
            table = reexports(source)
        if name in table:
            value = getattr(importlib.import_module(table[name][0]), table[name][1])
        else:
            exec(compile(source, origin, "exec"), module.__dict__)  # noqa: S102 - Parsl's own __init__
            if name not in module.__dict__:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = module.__dict__[name]
        setattr(module, name, value)
        return value

    return __getattr__


def child_main(name: str | None, process: str) -> str | None:
    """The main module the spawned child ``process`` (its name) of a pool whose main module is
    ``name`` imports; None: none (pure). Workers need the pool module's ``worker`` (as
    ``__main__.worker``): they get :data:`CHILD_MAIN`. The ``multiprocessing`` Manager server
    (``SyncManager-N``) runs only ``multiprocessing`` code and needs no main module at all.

    >>> child_main(POOL_MODULE, "HTEX-Worker-0"), child_main(POOL_MODULE, "SyncManager-1"), child_main("x", "y")
    ('node_manager.pool_child_main', None, 'x')
    """
    if name != POOL_MODULE:
        return name
    return None if process.startswith("SyncManager-") else CHILD_MAIN


def light_children() -> None:
    """Make the children this process spawns load :data:`CHILD_MAIN` (workers) or no main
    module (the Manager server) instead of Parsl's pool module (:func:`child_main`)."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if "init_main_from_name" in data:
            main = child_main(data["init_main_from_name"], name)
            if main is None:
                del data["init_main_from_name"]
            else:
                data["init_main_from_name"] = main
        return data

    spawn.get_preparation_data = preparation_data
