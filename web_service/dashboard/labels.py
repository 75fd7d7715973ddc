"""Names to show for the ids a page holds: functions and endpoints as the caller may see them
(owned or shared, by the same rule as the REST list routes), and usernames."""

from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from web_service.auth import Identity
from web_service.dashboard.task_list import TaskRow
from web_service.registry.models import Endpoint, Function, User
from web_service.services.functions import shared_with


def names(session: Session, who: Identity, function_ids: Iterable[str], endpoint_ids: Iterable[str]) -> dict[str, str]:
    """Names of the functions and endpoints among the ids that ``who`` may see (owned or
    shared, as the REST routes decide), by id; others are shown by id only."""
    out: dict[str, str] = {}
    for model, kind, ids in ((Function, "function", set(function_ids)), (Endpoint, "endpoint", set(endpoint_ids))):
        ids.discard("")
        if ids:
            out.update((row[0], row[1]) for row in session.execute(
                sa.select(model.id, model.name).where(model.id.in_(sorted(ids)), shared_with(model, kind, who))))
    return out


def task_names(session: Session, who: Identity, rows: Iterable[TaskRow]) -> dict[str, str]:
    rows = list(rows)
    return names(session, who, (r.function_id for r in rows), (r.endpoint_id for r in rows))


def usernames(session: Session, user_ids: Iterable[str]) -> dict[str, str]:
    ids = set(user_ids)
    return {row[0]: row[1] for row in session.execute(sa.select(User.id, User.username).where(User.id.in_(ids)))} if ids else {}


__all__ = ["names", "task_names", "usernames"]
