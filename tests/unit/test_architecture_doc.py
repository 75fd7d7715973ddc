"""docs/architecture.md shows what the code defines: its two pictures are what
scripts/gen_architecture.py renders from fnserve/states.py, fnserve/messages.py and the stack's
process list now."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_architecture.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_architecture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_holds_what_the_generator_renders_now():
    gen = _generator()
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert gen.render(doc) == doc, "docs/architecture.md is out of date: run python3 scripts/gen_architecture.py"
    check = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_the_state_picture_follows_may_move():
    """Every move may_move allows is an arrow, and no other (terminal states have none out)."""
    from fnserve.states import TERMINAL, TaskState, may_move

    picture = _generator().states_diagram()
    ids = {s: s.name.lower() for s in TaskState}
    for a in TaskState:
        for b in TaskState:
            if a is not b:
                assert (f"    {ids[a]} --> {ids[b]}" in picture.splitlines()) == may_move(a, b), (a, b)
    for s in TERMINAL:
        assert not any(line.startswith(f"    {ids[s]} --> ") and not line.endswith("[*]") for line in picture.splitlines())


def test_the_process_picture_names_every_wire_message():
    import typing

    from fnserve.messages import ForwarderMessage, SiteMessage

    picture = _generator().processes_diagram()
    for union in (SiteMessage, ForwarderMessage):
        for kind in typing.get_args(union):
            assert kind.__name__ in picture
