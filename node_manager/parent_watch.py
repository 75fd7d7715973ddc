"""End a child process of an endpoint when its site manager dies (a watchdog on the parent).

The site manager puts its identity in the environment (``FNSERVE_SITE_MANAGER=host:pid:start``,
``start`` being the kernel's start time of that pid, so a recycled pid is not mistaken for it);
everything it starts inherits it: the HTEX interchange, local worker pools, their workers.
:func:`watch` starts a daemon thread that checks twice a second whether that process still
lives, and calls ``on_death`` when it does not.

Why a watchdog and not only ``PR_SET_PDEATHSIG``: the parent-death signal covers direct
children only (a worker pool is started by Parsl's provider through ``bash``, whose parent is
gone at once), and it fires when the *thread* that started the child ends, not the process. The
watchdog works for grandchildren, costs one ``/proc`` read every 0.5 s, and is armed only where
the site manager is visible: on its own host and in its PID namespace (a worker pool on another
node or inside a container does not watch; the interchange's heartbeat and the site manager's
block cancel end those). The interchange, a direct child started from the site manager's main
loop thread, also asks for the parent-death signal (:func:`die_with_parent`): it then stops
dispatching the instant its site manager dies, not up to 0.5 s later, so no task starts on a
worker after the site manager that sent it is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

ENV = "FNSERVE_SITE_MANAGER"
INTERVAL = 0.5


def start_time(pid: int) -> str | None:
    """The kernel's start time of a live ``pid`` (clock ticks since boot), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def identity(pid: int | None = None) -> str:
    """This process's identity as the watchdog reads it: ``host:pid:start``."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{start_time(pid)}"


def parse(value: str, hostname: str) -> tuple[int, str] | None:
    """``(pid, start)`` from an identity made on ``hostname``; None from another host or garbled.

    >>> parse("h:12:345", "h")
    (12, '345')
    >>> parse("other:12:345", "h") is None
    True
    """
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != hostname or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), parts[2]


PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int) -> bool:
    """SIGKILL this process when its parent dies (Linux); False where that cannot be set."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != expected_parent:  # it died before the signal was asked for
        os._exit(0)
    return True


_armed: tuple[int, str] | None | bool = False  # not looked yet; then None (nothing to watch) or (pid, start)


def orphaned() -> bool:
    """Whether the site manager in the environment, seen alive by this process before, is gone:
    one ``/proc`` read (about 10 us). A worker asks before each task, so that a task handed out
    before its site manager died does not start (the restarted site manager dispatches it again:
    running it here would run it twice, its result having nowhere to go). A site manager that
    this process never saw (another host, another PID namespace) is never reported gone."""
    global _armed
    if _armed is False:
        parent = parse(os.environ.get(ENV, ""), socket.gethostname())
        _armed = parent if parent is not None and start_time(parent[0]) == parent[1] else None
    return _armed is not None and start_time(_armed[0]) != _armed[1]  # type: ignore[index]


def watch(on_death: Callable[[], None], interval: float = INTERVAL) -> bool:
    """Call ``on_death`` (in a daemon thread) once the site manager in the environment is gone.

    Returns False, and watches nothing, when there is no such site manager visible from here.
    """
    parent = parse(os.environ.get(ENV, ""), socket.gethostname())
    if parent is None or start_time(parent[0]) != parent[1]:
        return False
    pid, start = parent

    def loop() -> None:
        while start_time(pid) == start:
            time.sleep(interval)
        on_death()

    threading.Thread(target=loop, name="fnserve-parent-watch", daemon=True).start()
    return True
