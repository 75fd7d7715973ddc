"""The instructions :class:`~site_manager.session.Session` answers events with, for the site
manager's I/O loop to carry out (:data:`Action`)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from fnserve.messages import FolderWatch, TaskMessage


@dataclass(frozen=True)
class Send:
    """Send ``message`` to the forwarder."""

    message: msgspec.Struct


@dataclass(frozen=True)
class Submit:
    """Hand ``task`` to the engine."""

    task: TaskMessage


@dataclass(frozen=True)
class Reconnect:
    """Close the connection and open a new one after ``delay`` seconds, to ``address`` (a
    forwarder's; empty: the same one as before)."""

    reason: str
    delay: float
    address: str = ""


@dataclass(frozen=True)
class Exit:
    """Stop the site manager with exit status ``code``."""

    code: int
    reason: str


@dataclass(frozen=True)
class Kill:
    """Stop the workers running these (cancelled) tasks."""

    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Watch:
    """Watch these folders for file triggers (the whole list: it replaces the last one)."""

    watches: tuple[FolderWatch, ...]


Action = Send | Submit | Reconnect | Exit | Kill | Watch
