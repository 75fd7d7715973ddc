"""Every Redis key and channel of the task store, each pattern written once here.

Layout (all prefixed by ``fns:``)::

    task:{id}            hash: the task as :class:`web_service.store.record.StoredTask` writes it
                         (owner, function_id, endpoint_id, state, payload, arg_ref, arg_bytes,
                         t_submitted and the submitter's options), then t_dispatched/t_running/
                         t_finished and the result fields once finished (expires ``result_ttl``
                         after finishing)
    task:{id}:out, task:{id}:outinfo  a task's live outputs (stream) and their budget (hash)
    usage                stream: finished tasks for the usage writers to account in SQL
    submitted:{user}     stream: the user's submission log, one entry per submitted batch with
                         its task ids in order (``ids``, comma-separated); about
                         SUBMIT_LOG_ENTRIES entries, expiring a day after the result TTL (renewed
                         at most once a minute per process). The dashboard lists a user's tasks
                         from it, skipping ids whose task expired. One O(1) XADD per batch.
    fn:{id}              the serialized function body, cached for dispatch
    ep:{id}:queue        list of task ids waiting for the endpoint (oldest at the left)
    ep:{id}:inflight     set of task ids sent to the endpoint and not yet finished
    ep:{id}:status       hash: connected, timestamps, what the site manager last reported, the
                         serializers it accepts (``serializers``) and ``restricted`` (allowlist)
    ep:{id}:deleted      set (with a TTL) when the endpoint is deleted: submit and the forwarder
                         check it
    cancels:{id}         list of the endpoint's dispatched tasks cancelled since, for its forwarder
    channel ep:{id}:changed  published with the endpoint id whenever its status hash changes
                         (connect, disconnect, heartbeat, report): the dashboard's live view
    stats:rejected_results  hash: endpoint id -> results it sent for tasks it did not hold
    channel wake         published with an endpoint id whenever its queue grows ("cancel:" +
                         id: dispatched tasks were cancelled; "revoke:" + id: it was deleted)
    channel done:{user}  published with the ids (comma-separated) of the user's tasks that just
                         finished, once per recorded batch
    channel submitted:{user}  published with the number of tasks the user just submitted (a
                         channel and a stream may share a name: they are different namespaces)
    completed:{user}     stream: the user's completion log, one entry per recorded batch with the
                         ``ids`` that finished and ``prev``, the id of the entry before it (so a
                         reader can tell entries were trimmed past its cursor); capped, expiring.
                         Entries with ``kind`` = ``running`` list tasks that started running
                         (read only by readers that ask for them; never published on done:{user})
    group:{user}:{group} list of the task ids of one of the user's task groups, in submission
                         order (expires with the tasks, ``result_ttl`` after the last submission)
    quota:{user}:{window start}:tasks  counter of the tasks a user submitted in a quota window
    rl:{who} / rl:{scope}:{who}        hash: a rate-limit token bucket (tokens, ts)

Lua scripts take whole-key prefixes (``TASK_PREFIX`` ...) where they reach keys they only learn
inside the script (the task hashes of ids they pop).
"""

from __future__ import annotations

P = "fns:"
TASK_PREFIX = P + "task:"
DONE_PREFIX = P + "done:"
COMPLETED_PREFIX = P + "completed:"
WAKE_CHANNEL = P + "wake"
# A wake message is an endpoint id (tasks to dispatch) or CANCEL_WAKE + an endpoint id (dispatched
# tasks were cancelled: the forwarder reads the endpoint's cancel list only then).
CANCEL_WAKE = "cancel:"
# REVOKE_WAKE + an endpoint id: the endpoint was deleted or disabled; the forwarder serving it
# cuts its connection at once.
REVOKE_WAKE = "revoke:"
# WATCH_WAKE + an endpoint id: its file triggers changed; the forwarder sends the new watch list.
WATCH_WAKE = "watch:"
# The object store's keys (web_service.object_store) the record script reaches: an object's
# metadata hash, and the set of its owner's live objects (a recorded task's argument object
# expires then).
OBJECT_META_PREFIX = P + "obj:"
OBJECT_OWNER_PREFIX = P + "objs:"
# Stream: finished tasks to account, read by the usage writers (web_service.usage).
USAGE_STREAM = P + "usage"
# Hash: endpoint id -> results it sent for tasks it did not hold (dropped; see result_origin).
REJECTED_RESULTS = P + "stats:rejected_results"
# How long a finished task (and what hangs off it) is kept, unless the service is told otherwise.
DEFAULT_RESULT_TTL = 7 * 24 * 3600
# Entries kept in a user's completion log (each holds one recorded batch of task ids). A reader
# that falls further behind is told there is a gap and reads its tasks directly instead.
COMPLETION_LOG_ENTRIES = 10_000


def task_key(task_id: str) -> str:
    return TASK_PREFIX + task_id


def outputs_key(task_id: str) -> str:
    """Stream: a task's live outputs (web_service.task_outputs)."""
    return f"{TASK_PREFIX}{task_id}:out"


def outputs_info_key(task_id: str) -> str:
    """Hash: what a task's outputs used of their budget, and whether they ended."""
    return f"{TASK_PREFIX}{task_id}:outinfo"


def queue_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:queue"


QUEUE_PATTERN = f"{P}ep:*:queue"  # SCAN pattern of every endpoint's queue


def queue_endpoint(key: str) -> str | None:
    """The endpoint whose queue ``key`` is (None: not a queue key)."""
    head, tail = f"{P}ep:", ":queue"
    if not (key.startswith(head) and key.endswith(tail)):
        return None
    return key[len(head):-len(tail)]


def inflight_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:inflight"


def cancels_key(endpoint_id: str) -> str:
    """Ids of tasks cancelled after dispatch, for the forwarder to relay to the endpoint."""
    return f"{P}cancels:{endpoint_id}"


def tombstone_key(endpoint_id: str) -> str:
    """Set (with a TTL) when an endpoint is deleted: submit and the forwarder check it."""
    return f"{P}ep:{endpoint_id}:deleted"


def status_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:status"


def status_channel(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:changed"


def submit_log_key(owner: str) -> str:
    return f"{P}submitted:{owner}"


def submitted_channel(owner: str) -> str:
    return f"{P}submitted:{owner}"


def function_key(function_id: str) -> str:
    return f"{P}fn:{function_id}"


def done_channel(owner: str) -> str:
    return DONE_PREFIX + owner


def completed_key(owner: str) -> str:
    return COMPLETED_PREFIX + owner


def group_key(owner: str, task_group_id: str) -> str:
    return f"{P}group:{owner}:{task_group_id}"


def quota_tasks_key(user_id: str, window_start: int) -> str:
    """The counter of the tasks ``user_id`` submitted in the quota window starting then (unix s)."""
    return f"{P}quota:{user_id}:{window_start}:tasks"


def rate_bucket_prefix(scope: str) -> str:
    """Prefix of the rate-limit buckets of one scope ("user": per user, else per scope)."""
    return f"{P}rl:" if scope == "user" else f"{P}rl:{scope}:"
