"""Accounting for a task that a call ended before it ran to the end (cancelled, or failed because
its endpoint was deleted): one usage entry with no resources.

Its own module so that the task, endpoint and user services all use it without importing each
other (``services.tasks`` imports ``services.endpoints``)."""

from __future__ import annotations

import time

from web_service.task_store import TaskRecord, TaskStore
from web_service.usage import UsageEntry


def log_cancelled(store: TaskStore, rec: TaskRecord, state: str = "cancelled") -> None:
    """Account a task that this call ended (cancelled, or failed as its endpoint was deleted; no
    resources: it never ran to the end)."""
    store.log_usage([UsageEntry(
        task_id=rec.task_id, user_id=rec.owner, function_id=rec.function_id, endpoint_id=rec.endpoint_id,
        runtime=rec.runtime or "", state=state, wall_time=0.0, cpu_time=0.0, max_rss_kb=0.0,
        submitted_at=rec.timestamps.get("submitted", 0.0), finished_at=time.time(),
    )])
