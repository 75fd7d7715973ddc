"""State that only its owner can read: files 0600 in folders 0700, made so when created.

On a shared login node every other account can read a 0644 file in a 0755 folder: the registry
with every user's functions, Redis's append-only file with every payload, an endpoint's
unacked results, logs. So every fnserve process (and, through the umask, every process it
starts: Redis, gunicorn, the Parsl interchange, worker pools, batch jobs) creates files 0600 and
folders 0700, and each one checks its state folders when it starts, warning about anything a
site admin (or an older fnserve) left readable by others.

    private_umask()                    # at process start: children inherit it
    private_dir(path)                  # mkdir -p, the new folders 0700
    write_private(path, text)          # 0600 whatever the umask
    for problem in check_private([path]): log.warning(problem)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077
# Entries looked at per folder tree at start-up (block logs can be many; the top matters most).
CHECK_LIMIT = 5000


def private_umask() -> int:
    """Make this process (and what it starts) create private files; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path`` with every folder it creates 0700 (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(p, 0o700)  # mkdir's mode passes through the umask
    return path


def write_private(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``path`` as a 0600 file (created so: never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def open_private(path: str | os.PathLike[str], mode: str = "ab") -> int:
    """A file descriptor on ``path`` opened for appending (``ab``) or writing, created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def too_open(mode: int) -> bool:
    """Whether a file or folder with ``mode`` lets other accounts (group or others) in (pure)."""
    return bool(stat.S_IMODE(mode) & 0o077)


def describe_problem(path: str, mode: int, is_dir: bool) -> str:
    """The warning for one loosened entry (pure)."""
    kind, want = ("folder", "0700") if is_dir else ("file", "0600")
    return (f"{kind} {path} is mode {stat.S_IMODE(mode):04o}: other accounts on this host may read it; "
            f"fnserve state should be private ({want}): chmod {'-R go-rwx' if is_dir else '600'} {path}")


def _entries(root: Path, limit: int) -> Iterator[tuple[str, os.stat_result]]:
    try:
        yield str(root), os.lstat(root)
    except OSError:
        return
    if not root.is_dir() or root.is_symlink():
        return
    seen = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            seen += 1
            if seen > limit:
                return
            path = os.path.join(folder, name)
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


def check_private(paths: Iterable[str | os.PathLike[str]], limit: int = CHECK_LIMIT) -> list[str]:
    """Warnings for folders and regular files under ``paths`` that others may read.

    A loosened folder is reported and not entered further (its contents share the problem).
    Sockets and symlinks are left out: a folder's mode is what protects them.
    """
    problems: list[str] = []
    loose_dirs: list[str] = []
    for root in paths:
        for path, st in _entries(Path(root), limit):
            if any(path.startswith(d + os.sep) for d in loose_dirs):
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)) or not too_open(st.st_mode):
                continue
            problems.append(describe_problem(path, st.st_mode, is_dir))
            if is_dir:
                loose_dirs.append(path)
    return problems


__all__ = ["PRIVATE_UMASK", "check_private", "describe_problem", "open_private", "private_dir", "private_umask",
           "too_open", "write_private"]
