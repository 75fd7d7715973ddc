"""What a running web service holds: settings, database sessions, task store, authenticator."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from web_service.auth import Authenticator
from web_service.object_store import ObjectStore
from web_service.quotas import QuotaChecker, RateLimiter
from web_service.services import OwnershipCache
from web_service.settings import Settings
from web_service.task_store import TaskStore
from web_service.waits import WaitGate

EXTENSION = "fnserve"


@dataclass
class ServiceState:
    settings: Settings
    engine: sa.Engine
    sessions: sessionmaker[Session]
    store: TaskStore
    authenticator: Authenticator
    ownership: OwnershipCache
    quotas: QuotaChecker
    limiter: RateLimiter
    address_limiter: RateLimiter  # requests without a verified token, per client address
    waits: WaitGate
    trigger_limiter: RateLimiter | None = None  # events per trigger (webhook calls, fires)
    objects: ObjectStore | None = None
    data_key: bytes = b""


def current() -> ServiceState:
    """The state of the app handling the current request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
