"""Stopping a site manager: no new tasks, wait for the running ones and their acks, then leave.

Asked by :meth:`SiteManager.stop`, SIGTERM or SIGINT. Workers take nothing more from the
interchange (what is queued there stays unstarted and goes back to the service); the loop
leaves when the session saw every started task finish and the workers say they run none, or at
``drain_timeout``.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from site_manager.engine_like import EngineLike
from site_manager.session import Session

logger = logging.getLogger("site_manager.manager")  # the loop's log lines, as before the split

# Seconds between asking the workers whether they still run anything, while stopping.
DRAIN_CHECK = 0.25


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` (only from the main thread: signals reach only it)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals only reach the main thread; callers there use stop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())


class Drain:
    """A stop under way, begun at ``now`` (monotonic seconds)."""

    def __init__(self, session: Session, engine: EngineLike, timeout: float, now: float) -> None:
        self.session = session
        self.engine = engine
        self.timeout = timeout
        logger.info(
            "stopping: no new tasks; waiting up to %g s for the tasks running on workers and acks; "
            "the tasks not started go back to the service",
            timeout,
        )
        session.start_drain()
        # Workers take nothing more from the interchange: what is queued there stays unstarted.
        try:
            engine.hold()
        except Exception as exc:  # noqa: BLE001 - a dead interchange: nothing more starts anyway
            logger.warning("cannot hold the workers: %s", exc)
        self.deadline = now + timeout
        self.checked_at = 0.0

    def wake_at(self) -> float:
        """When the loop must look again: the deadline, or the next time to ask the workers."""
        return min(self.deadline, self.checked_at + DRAIN_CHECK)

    def finished(self, now: float) -> bool:
        if self.session.drained or now >= self.deadline:
            return True
        if not self.session.started_done or now - self.checked_at < DRAIN_CHECK:
            return False
        # The session saw every started task finish; the workers must say they hold none either
        # (a task can be on a worker a moment before its start marker arrives).
        self.checked_at = now
        try:
            return self.engine.status().tasks_running == 0
        except Exception as exc:  # noqa: BLE001
            logger.warning("cannot ask the workers what they run: %s", exc)
            return True

    def log_leaving(self) -> None:
        """Say what is left behind: tasks handed back, started tasks still running, unacked results."""
        session = self.session
        back = session.handed_back()
        if back:
            logger.info("handing %d task(s) that no worker started back to the service: %s", len(back),
                        ", ".join(back[:20]) + (" ..." if len(back) > 20 else ""))
        started = len(session.running) - len(back)
        if started or len(session.ledger):
            logger.warning(
                "leaving with %d started task(s) still running and %d result(s) unacked after %g s; "
                "the forwarder re-dispatches them", started, len(session.ledger), self.timeout,
            )
