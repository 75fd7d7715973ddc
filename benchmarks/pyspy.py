"""py-spy on several running processes at once, and what their samples say.

``record(pids)`` starts one ``py-spy record --format raw`` per process (non-blocking sampling,
idle threads left out, so a sample is time on a CPU or about to be), ``stop`` ends them with
SIGINT (py-spy writes its file then) and ``summary`` reads a collapsed-stack file into the
functions that hold the most samples, inclusive (anywhere on the stack) and self (the leaf).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Recording:
    out_dir: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def record(pids: dict[int, str], rate: int = 1000, out_dir: str | None = None, gil: bool = True) -> Recording:
    """One py-spy per pid, labelled (labels must be unique). ``gil``: only samples of the thread
    holding the GIL (Python running; a gevent hub or a thread blocked in C is left out)."""
    rec = Recording(out_dir or tempfile.mkdtemp(prefix="pyspy-"))
    for pid, name in pids.items():
        path = os.path.join(rec.out_dir, f"{name.replace(' ', '_').replace('(', '').replace(')', '')}-{pid}.txt")
        rec.files[name] = path
        rec.procs[name] = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", path, *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return rec


def stop(rec: Recording, timeout: float = 30) -> None:
    for p in rec.procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in rec.procs.values():
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def read(path: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (``frame;frame;... count``, root first) and their sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if stack and n.isdigit():
                    stacks[tuple(_short(fr) for fr in stack.split(";"))] += int(n)
    except OSError:
        pass
    return stacks


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: one row per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({module})" if module else name


def summary(stacks: Counter[tuple[str, ...]], top: int = 12) -> dict[str, object]:
    """Total samples, and the ``top`` functions by inclusive and by self share."""
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, n in stacks.items():
        for fr in set(stack):
            inclusive[fr] += n
        if stack:
            own[stack[-1]] += n
    share = (lambda c: [(fr, round(n / total, 3)) for fr, n in c.most_common(top)]) if total else (lambda c: [])
    return {"samples": total, "inclusive": share(inclusive), "self": share(own)}
