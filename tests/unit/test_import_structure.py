"""The import structure stays honest: no import cycle hidden behind a function-level import.

Three pairs once imported each other, one side inside a function so that Python would not trip
over the cycle at start-up. What both sides needed now lives in a third module. These tests read
the source (AST), so they fail as soon as such an import comes back, whatever runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The pairs that had a cycle, and the module that now holds what both sides need.
PAIRS = [
    ("fnserve.client", "fnserve.login", "fnserve.globus_tokens"),
    ("site_manager.config", "site_manager.runtimes", "site_manager.config_errors"),
    ("web_service.services.endpoints", "web_service.services.tasks", "web_service.services.ended_tasks"),
]


def _source(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _package_files(module: str) -> list[Path]:
    """The module's file, or every file of the package (``site_manager.runtimes`` is one)."""
    path = ROOT / Path(*module.split("."))
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _imports(path: Path, *, nested: bool) -> set[str]:
    """Modules ``path`` imports at module level (``nested=False``) or inside functions (True);
    ``from a import b`` counts as both ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(), str(path))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    found: set[str] = set()
    for node in ast.walk(tree):
        if (id(node) in inside) != nested:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _imports_of(module: str, *, nested: bool) -> set[str]:
    out: set[str] = set()
    for path in _package_files(module):
        out |= _imports(path, nested=nested)
    return out


def _reaches(found: set[str], target: str) -> bool:
    return any(name == target or name.startswith(target + ".") for name in found)


@pytest.mark.parametrize(("a", "b", "shared"), PAIRS, ids=[p[0] for p in PAIRS])
def test_former_cycle_pairs_import_one_way_only(a: str, b: str, shared: str) -> None:
    """Of each pair, at most one imports the other, at module level; neither hides an import of
    the other in a function; and the third module imports neither."""
    for x, y in ((a, b), (b, a)):
        assert not _reaches(_imports_of(x, nested=True), y), f"{x} imports {y} inside a function (a hidden cycle)"
    both_ways = _reaches(_imports_of(a, nested=False), b) and _reaches(_imports_of(b, nested=False), a)
    assert not both_ways, f"{a} and {b} import each other"
    shared_imports = _imports(_source(shared), nested=False) | _imports(_source(shared), nested=True)
    assert not _reaches(shared_imports, a) and not _reaches(shared_imports, b), f"{shared} imports a side of the pair"


@pytest.mark.parametrize("module", sorted({m for pair in PAIRS for m in pair}))
def test_each_module_imports_on_its_own(module: str) -> None:
    """Each module imports first in a fresh interpreter (an import-order cycle would fail here)."""
    run = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
