"""What the Operators page shows: service health, every endpoint's queue and connection, error
rates, and the task store's own figures. Bounded reads only (one pipelined Redis round trip for
all endpoints' queues, grouped SQL over the last day of usage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from web_service.registry.models import Endpoint, Usage, User
from web_service.routes.version import check_health
from web_service.state import ServiceState
from web_service.task_store import inflight_key, queue_key, status_key
from web_service.usage import GROUP, STREAM

MAX_ENDPOINTS = 5000  # read at most this many endpoints' queues
SHOWN = 50  # rows of the busiest endpoints shown


@dataclass(frozen=True)
class EndpointLoad:
    endpoint_id: str
    name: str
    owner: str
    connected: bool
    last_heartbeat: float | None
    waiting: int
    in_flight: int


@dataclass(frozen=True)
class ErrorRate:
    window: str
    tasks: int
    failed: int

    @property
    def rate(self) -> float | None:
        return self.failed / self.tasks if self.tasks else None


@dataclass
class OperatorView:
    health: dict[str, bool]
    endpoints: list[EndpointLoad]
    endpoint_count: int
    connected: int
    waiting: int
    in_flight: int
    error_rates: list[ErrorRate]
    failing: list[tuple[str, str, int, int]]  # endpoint id, name, tasks, failed (last hour)
    users: int
    redis: dict[str, Any] = field(default_factory=dict)
    usage_writers: list[tuple[str, float]] = field(default_factory=list)  # name, idle seconds


def busiest(loads: list[EndpointLoad], n: int = SHOWN) -> list[EndpointLoad]:
    """The endpoints an operator looks at first: most waiting, then most in flight; the
    disconnected ones with work waiting come first of all."""
    return sorted(loads, key=lambda e: (not (e.waiting and not e.connected), -e.waiting, -e.in_flight, e.name))[:n]


def endpoint_loads(session: Session, r: redis.Redis) -> tuple[list[EndpointLoad], int]:
    rows = session.execute(
        sa.select(Endpoint.id, Endpoint.name, User.username).join(User, User.id == Endpoint.owner_id)
        .where(Endpoint.deleted_at.is_(None)).order_by(Endpoint.created_at).limit(MAX_ENDPOINTS)
    ).all()
    count = session.scalar(sa.select(sa.func.count()).select_from(Endpoint).where(Endpoint.deleted_at.is_(None))) or 0
    pipe = r.pipeline(transaction=False)
    for row in rows:
        pipe.hmget(status_key(row.id), "connected", "last_heartbeat")
        pipe.llen(queue_key(row.id))
        pipe.scard(inflight_key(row.id))
    answers = pipe.execute()
    loads = []
    for i, row in enumerate(rows):
        (connected, heartbeat), waiting, in_flight = answers[3 * i: 3 * i + 3]
        loads.append(EndpointLoad(row.id, row.name, row.username, connected == b"1",
                                  float(heartbeat) if heartbeat else None, int(waiting), int(in_flight)))
    return loads, int(count)


def error_rates(session: Session, now: datetime) -> tuple[list[ErrorRate], list[tuple[str, str, int, int]]]:
    rates = []
    failed_col = sa.func.sum(sa.case((Usage.state == "failed", 1), else_=0))
    for label, delta in (("last hour", timedelta(hours=1)), ("last 24 hours", timedelta(days=1))):
        tasks, failed = session.execute(
            sa.select(sa.func.count(), failed_col).where(Usage.finished_at >= now - delta)).one()
        rates.append(ErrorRate(label, int(tasks or 0), int(failed or 0)))
    failing = session.execute(
        sa.select(Usage.endpoint_id, Endpoint.name, sa.func.count(), failed_col.label("failed"))
        .join(Endpoint, Endpoint.id == Usage.endpoint_id, isouter=True)
        .where(Usage.finished_at >= now - timedelta(hours=1))
        .group_by(Usage.endpoint_id, Endpoint.name).order_by(sa.desc("failed")).limit(10)
    ).all()
    return rates, [(eid, name or "", int(n), int(f or 0)) for eid, name, n, f in failing if f]


def _redis_figures(r: redis.Redis) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    info = r.info()
    figures = {k: info.get(k) for k in ("redis_version", "used_memory_human", "connected_clients", "uptime_in_seconds")}
    try:
        writers = [(c["name"].decode() if isinstance(c["name"], bytes) else c["name"], c["idle"] / 1000.0)
                   for c in r.xinfo_consumers(STREAM, GROUP)]
    except redis.ResponseError:  # no usage recorded yet: no group
        writers = []
    return figures, writers


def operator_view(state: ServiceState) -> OperatorView:
    now = datetime.now(timezone.utc)
    r = state.store.r
    with state.sessions() as session:
        loads, count = endpoint_loads(session, r)
        rates, failing = error_rates(session, now)
        users = int(session.scalar(sa.select(sa.func.count()).select_from(User)) or 0)
    figures, writers = _redis_figures(r)
    return OperatorView(
        health=check_health(state), endpoints=busiest(loads), endpoint_count=count,
        connected=sum(e.connected for e in loads), waiting=sum(e.waiting for e in loads),
        in_flight=sum(e.in_flight for e in loads), error_rates=rates, failing=failing, users=users,
        redis=figures, usage_writers=writers,
    )


__all__ = ["EndpointLoad", "ErrorRate", "OperatorView", "busiest", "operator_view"]
