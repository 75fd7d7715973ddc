"""File triggers at the forwarder: which watch list each connected endpoint was last sent (so
only a changed one is sent again), when the registry is next looked at, and recording the file
events an endpoint reports. The forwarder's loop sends what this returns."""

from __future__ import annotations

import logging
from typing import Any

from fnserve import messages as m

log = logging.getLogger("web_service.forwarder")

# Seconds between looks at the registry for changed file triggers (a change made through the
# REST API also wakes the forwarder at once: WATCH_WAKE).
WATCH_REFRESH = 5.0


class WatchLists:
    """The watch lists sent per endpoint; ``file_triggers`` is a
    :class:`web_service.triggers.files.FileTriggerBridge` (None: no file triggers)."""

    def __init__(self, file_triggers: Any = None) -> None:
        self.file_triggers = file_triggers
        self._sent: dict[str, list[m.FolderWatch]] = {}
        self._check_at = 0.0

    def due(self, now: float) -> bool:
        """Whether the registry is to be looked at again now (then not before WATCH_REFRESH)."""
        if self.file_triggers is None or now < self._check_at:
            return False
        self._check_at = now + WATCH_REFRESH
        return True

    def forget(self, endpoint_id: str) -> None:
        """The endpoint's connection ended or is new: it gets its list again."""
        self._sent.pop(endpoint_id, None)

    def changed(self, endpoint_ids: list[str]) -> dict[str, list[m.FolderWatch]]:
        """Each endpoint's watch list where it changed since last sent (noted as sent)."""
        if self.file_triggers is None or not endpoint_ids:
            return {}
        try:
            lists = self.file_triggers.watches(endpoint_ids)
        except Exception:  # the registry away: the next refresh tries again
            log.exception("could not read file triggers")
            return {}
        out = {}
        for endpoint_id, watches in lists.items():
            if endpoint_id in self._sent and self._sent[endpoint_id] == watches:
                continue
            out[endpoint_id] = watches
        return out

    def mark_sent(self, endpoint_id: str, watches: list[m.FolderWatch]) -> None:
        self._sent[endpoint_id] = watches

    def record(self, endpoint_id: str, events: list[m.FileEvent]) -> list[str] | None:
        """Record file events (each once, in one transaction); their keys to ack, or None
        (unacked: the site manager sends them again after its next registration)."""
        if self.file_triggers is None:
            return None
        try:
            return list(self.file_triggers.record(endpoint_id, events))
        except Exception:
            log.exception("could not record %d file event(s) of endpoint %s", len(events), endpoint_id)
            return None
