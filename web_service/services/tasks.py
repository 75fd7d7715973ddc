"""Submitting tasks and reading, waiting for and cancelling them.

The submit hot path: validate the whole batch in memory, authorize each distinct function and
endpoint (in-process cache, else one SQL query for all of them), one pipelined Redis check that
function bodies are cached and endpoints not deleted, then one pipelined Redis write.

A batch is judged task by task: every check yields an outcome per task (a :class:`TaskSpec`
still good, or the error that refused it, naming its index), so one bad task fails alone. An
``atomic`` batch is refused whole when any task is bad (the first bad task's error).

Reading the request is :mod:`web_service.services.task_parsing` (its names are importable from
here too); the endpoint-specific refusals are :mod:`web_service.services.task_refusals`.
"""

from __future__ import annotations

import json
import uuid
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import FnserveError, Forbidden
from web_service.auth import Identity
from web_service.registry.models import Function
from web_service.services import OwnershipCache
from web_service.services.access import access_for, function_not_allowed, may_use
from web_service.services.endpoints import endpoint_not_found
from web_service.services.ended_tasks import log_cancelled
from web_service.services.functions import forbidden, function_not_found
from web_service.services.runtimes import task_runtimes
from web_service.quotas import QuotaChecker
from web_service.store.record import TaskRecord, TaskSpec, new_task
from web_service.task_store import TaskStore
from web_service.validation import invalid
from web_service.services.task_parsing import (
    MAX_COUNT,
    MAX_ID_LENGTH,
    Outcome,
    check_task_id,
    check_task_ids,
    error_entry,
    judge_tasks,
    parse_count,
    parse_return_when,
    parse_task,
    parse_task_batch,
    parse_task_ids,
    parse_task_items,
    parse_wait,
    raise_first_error,
    task_not_found,
)
from web_service.services.task_refusals import (
    SHELL_HEADER_START,
    resource_refusal,
    serializer_policy,
    serializer_refusal,
    shell_refusal,
    shell_templates,
    stamp_for_multi_user,
)


# -- submit ----------------------------------------------------------------------------------------


def submit_tasks(session: Session, store: TaskStore, owner: Identity, specs: list[Outcome], cache: OwnershipCache | None = None,
                 quotas: QuotaChecker | None = None, *, atomic: bool = True,
                 task_ids: list[str] | None = None) -> list[str | FnserveError]:
    """Authorize, count against quotas and durably queue a validated batch.

    ``specs`` holds a spec per task, or the error that already refused it (see
    :func:`parse_task_items`). Returns, in batch order, the task id of each accepted task and
    the error of each refused one. ``atomic``: refuse the whole batch (raise the first task's
    error) unless every task passes; otherwise the good tasks are queued and the bad ones fail
    alone. A batch in which no task passes raises its first error either way.

    ``task_ids`` (one per spec): ids fixed in advance (trigger firings); a task whose id
    already exists is not written again (see :meth:`TaskStore.submit_new`).
    """
    outcomes = list(specs)
    live = [i for i, s in enumerate(outcomes) if isinstance(s, TaskSpec)]
    for stage in (_authorize, _check_allowlists, _ensure_usable):
        if not live:
            break
        view = {i: outcomes[i] for i in live}
        refused = stage(session, store, owner, view, cache)  # type: ignore[arg-type]
        for i, s in view.items():  # a stage may stamp a spec (a multi-user endpoint's task)
            outcomes[i] = s
        for i, err in refused.items():
            outcomes[i] = err
        live = [i for i in live if i not in refused]
    runtimes = _runtimes(session, store, owner, outcomes, live, cache)
    if atomic or not runtimes:
        errors = [error_entry(i, o) for i, o in enumerate(outcomes) if isinstance(o, FnserveError)]
        if len(errors) > 1:  # refused whole: the first error's body lists every bad task
            next(o for o in outcomes if isinstance(o, FnserveError)).details["errors"] = errors
        raise_first_error(outcomes)
    tasks = []
    for i, runtime in runtimes.items():
        s = outcomes[i]
        assert isinstance(s, TaskSpec)
        tasks.append(new_task(s, task_ids[i] if task_ids is not None else str(uuid.uuid4()), owner.user_id, runtime=runtime))
    reservation = quotas.reserve(session, owner.user_id, len(tasks)) if quotas is not None else None
    try:
        if task_ids is None:
            store.submit(tasks)
        else:
            written = set(store.submit_new(tasks))
            if reservation is not None and len(written) < len(tasks):
                reservation.release(len(tasks) - len(written))
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    for i, task in zip(runtimes, tasks):
        outcomes[i] = task.task_id  # type: ignore[call-overload]
    return outcomes  # type: ignore[return-value]


def _authorize(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
               cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """Each task's function and endpoint are live and usable by ``owner`` (owned, shared or
    public). Cached snapshots make this zero SQL queries on the warm path."""
    keys = {k: None for s in specs.values() for k in (("function", s.function_id), ("endpoint", s.endpoint_id))}
    access = access_for(session, keys, cache)
    usable: dict[tuple[str, str], bool] = {}
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        for kind, ident in (("function", s.function_id), ("endpoint", s.endpoint_id)):
            acc = access.get((kind, ident))
            if acc is None:
                refused[i] = (function_not_found if kind == "function" else endpoint_not_found)(ident, index=i)
                break
            if (kind, ident) not in usable:
                usable[(kind, ident)] = may_use(session, owner, acc, cache)
            if not usable[(kind, ident)]:
                refused[i] = forbidden(kind, ident, index=i)
                break
    return refused


def _check_allowlists(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
                      cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """A restricted endpoint runs only the functions on its allowlist."""
    access = access_for(session, {("endpoint", s.endpoint_id): None for s in specs.values()}, cache)
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        acc = access.get(("endpoint", s.endpoint_id))
        if acc is not None and acc.restricted and s.function_id not in acc.allowed:
            refused[i] = function_not_allowed(s.function_id, s.endpoint_id, index=i)
    return refused


def _ensure_usable(session: Session, store: TaskStore, owner: Identity, specs: dict[int, TaskSpec],
                   cache: OwnershipCache | None) -> dict[int, FnserveError]:
    """One Redis round trip: function bodies present, endpoints not deleted meanwhile, and each
    task's arguments in a strategy its endpoint loads (:func:`serializer_refusal`)."""
    functions = list({s.function_id: None for s in specs.values()})
    endpoints = list({s.endpoint_id: None for s in specs.values()})
    heads, deleted, status = store.submit_checks(functions, endpoints, len(SHELL_HEADER_START), ("serializers", "mpi_nodes", "offers", "user_config_schema"))
    declared = {e: serializer_policy(v[0]) for e, v in status.items()}
    mpi_nodes = {e: int(v[1]) if v[1] is not None else -1 for e, v in status.items()}
    offers = {e: json.loads(v[2]) if v[2] else None for e, v in status.items()}
    # A multi-user endpoint's schema; "": an ordinary endpoint, or one that never connected.
    schemas = {e: v[3].decode() if v[3] else "" for e, v in status.items()}
    gone: set[tuple[str, str]] = set()
    for ident in deleted:
        if cache is not None:
            cache.forget(("endpoint", ident))
        gone.add(("endpoint", ident))
    missing = [f for f in functions if f not in heads]
    if missing:
        gone |= {("function", f) for f in _recache_functions(session, store, missing, cache)}
    refused: dict[int, FnserveError] = {}
    for i, s in specs.items():
        if ("function", s.function_id) in gone:
            refused[i] = function_not_found(s.function_id, index=i)
        elif ("endpoint", s.endpoint_id) in gone:
            refused[i] = endpoint_not_found(s.endpoint_id, index=i)
    access = access_for(session, {("endpoint", e): None for e in declared}, cache)
    for i, s in specs.items():
        if i not in refused:
            err = serializer_refusal(i, s, declared.get(s.endpoint_id), access.get(("endpoint", s.endpoint_id)))
            if err is not None:
                refused[i] = err
    for i, s in specs.items():
        if i not in refused and s.resource_specification is not None:
            err = resource_refusal(i, s, mpi_nodes.get(s.endpoint_id, -1), offers.get(s.endpoint_id))
            if err is not None:
                refused[i] = err
        schema = schemas.get(s.endpoint_id, "")
        if i not in refused and (schema or s.user_endpoint_config is not None):
            # Other tasks' resource_specification is forwarded as the caller gave it.
            stamped = stamp_for_multi_user(i, s, owner, schema)
            if isinstance(stamped, FnserveError):
                refused[i] = stamped
            else:
                specs[i] = stamped
    shells = {ident for ident, head in heads.items() if head == SHELL_HEADER_START}
    if shells:
        templates = shell_templates(store, shells)
        for i, s in specs.items():
            if i not in refused and s.function_id in templates:
                err = shell_refusal(i, s, templates[s.function_id])
                if err is not None:
                    refused[i] = err
    return refused


def _recache_functions(session: Session, store: TaskStore, function_ids: list[str], cache: OwnershipCache | None) -> list[str]:
    """Cache the bodies of live functions again; returns the ids that are gone."""
    # Rare: after a Redis flush/restart, or the function was deleted by another process.
    rows: dict[str, bytes] = {
        fid: body for fid, body in session.execute(
            sa.select(Function.id, Function.body).where(Function.id.in_(function_ids), Function.deleted_at.is_(None))
        )
    }
    gone = [fid for fid in function_ids if fid not in rows]
    for fid in gone:
        if cache is not None:
            cache.forget(("function", fid))
    for fid, body in rows.items():
        store.cache_function(fid, body)
    return gone


def _runtimes(session: Session, store: TaskStore, owner: Identity, outcomes: list[Outcome], live: list[int],
              cache: OwnershipCache | None) -> dict[int, str | None]:
    """The runtime each live task runs in; a task whose runtime is refused gets its error in
    ``outcomes`` instead (checked again without it, which happens only when one is refused)."""
    live = list(live)
    while live:
        specs = [outcomes[i] for i in live]
        try:
            names = task_runtimes(session, store, owner, [(s.function_id, s.endpoint_id, s.runtime) for s in specs], cache)  # type: ignore[union-attr]
        except FnserveError as exc:
            pos = exc.details.get("index")
            if not isinstance(pos, int) or not 0 <= pos < len(live):
                raise
            exc.details["index"] = live[pos]
            outcomes[live.pop(pos)] = exc
            continue
        return dict(zip(live, names))
    return {}


# -- reading, waiting, cancelling --------------------------------------------------------------------


def get_tasks(store: TaskStore, owner: Identity, task_ids: list[str], wait: float = 0.0, any_: bool = False) -> list[TaskRecord]:
    """The owner's tasks, in order, after waiting up to ``wait`` seconds for them to finish.

    Unknown (or expired) ids are ``task_not_found`` and other users' ids ``forbidden``, for the
    whole call, before any waiting.
    """
    # The common single-task read skips the pipeline machinery.
    records = {task_ids[0]: store.get(task_ids[0])} if len(task_ids) == 1 else store.get_many(task_ids)
    _check_owned(records.items(), owner)
    pending = [tid for tid, rec in records.items() if rec is not None and not rec.finished]
    done_some = len(pending) < len(records)
    if wait > 0 and pending and not (any_ and done_some):
        records.update(store.wait(owner.user_id, task_ids, wait, any_=any_))
        _check_owned(records.items(), owner)  # a task can expire while we wait
    return [records[tid] for tid in task_ids]  # type: ignore[misc]


def _check_owned(records: Iterable[tuple[str, TaskRecord | None]], owner: Identity) -> None:
    for tid, rec in records:
        if rec is None:
            raise task_not_found(tid)
        if rec.owner != owner.user_id:
            raise Forbidden(f"task {tid!r} belongs to another user", details={"task_id": tid})


def group_tasks(store: TaskStore, owner: Identity, task_group_id: str, offset: int, limit: int) -> tuple[list[TaskRecord], int]:
    """A page of the owner's tasks in one of their task groups, and how many ids it holds.

    Groups are kept per owner (another user's group of the same id is another group), and a
    task that expired after its result TTL is left out."""
    if len(task_group_id) > MAX_ID_LENGTH:
        raise invalid("task_group_id", f"must be 1 to {MAX_ID_LENGTH} characters")
    ids, total = store.group_task_ids(owner.user_id, task_group_id, offset, limit)
    records = store.get_many(ids) if ids else {}
    return [r for r in records.values() if r is not None and r.owner == owner.user_id], total


def cancel_task(store: TaskStore, owner: Identity, task_id: str) -> TaskRecord:
    """Cancel one of the owner's tasks unless it already finished; returns it afterwards."""
    rec = get_tasks(store, owner, [task_id])[0]
    if not rec.finished:
        if store.cancel(task_id, owner.user_id) not in (None, "success", "failed", "cancelled"):
            log_cancelled(store, rec)
        rec = get_tasks(store, owner, [task_id])[0]
    return rec


__all__ = [
    "Outcome", "TaskSpec", "check_task_id", "error_entry", "judge_tasks", "check_task_ids", "parse_task_batch", "parse_task_items", "raise_first_error",
    "parse_task", "parse_task_ids", "parse_return_when", "parse_wait", "submit_tasks", "get_tasks", "cancel_task", "group_tasks",
    "parse_count", "MAX_COUNT", "parse_task", "task_not_found",
]
