"""The task store's old import path, kept because much of the code base imports it: everything
lives in :mod:`web_service.store` (keys, the task's shape, the rules, the Lua scripts, TaskStore)."""

from web_service.store.keys import (
    CANCEL_WAKE, COMPLETION_LOG_ENTRIES, DEFAULT_RESULT_TTL, REJECTED_RESULTS, REVOKE_WAKE, WAKE_CHANNEL, WATCH_WAKE, P, cancels_key,
    completed_key, done_channel, function_key, group_key, inflight_key, queue_key, status_channel, status_key,
    submit_log_key, submitted_channel, task_key, tombstone_key,
)
from web_service.store.reads import CompletedBatch, Completions
from web_service.store.record import PLACEMENT_KEY, NewTask, StoredTask, TaskOptions, TaskRecord, TaskSpec
from web_service.store.submit import LOG_UPKEEP_SECONDS, SUBMIT_LOG_ENTRIES, log_upkeep_due
from web_service.store.task_store import TaskStore

__all__ = [
    "CANCEL_WAKE", "COMPLETION_LOG_ENTRIES", "CompletedBatch", "Completions", "DEFAULT_RESULT_TTL", "LOG_UPKEEP_SECONDS",
    "NewTask", "P", "PLACEMENT_KEY", "REJECTED_RESULTS", "REVOKE_WAKE", "SUBMIT_LOG_ENTRIES", "StoredTask", "TaskOptions",
    "TaskRecord", "TaskSpec", "TaskStore", "WAKE_CHANNEL", "WATCH_WAKE", "cancels_key", "completed_key", "done_channel",
    "function_key", "group_key", "inflight_key", "log_upkeep_due", "queue_key", "status_channel", "status_key",
    "submit_log_key", "submitted_channel", "task_key", "tombstone_key",
]
