"""What a running web service holds: settings, database sessions, task store, authenticator."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from web_service.auth import Authenticator
from web_service.quotas import QuotaChecker, RateLimiter
from web_service.services import OwnershipCache
from web_service.settings import Settings
from web_service.task_store import TaskStore

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


def current() -> ServiceState:
    """The state of the app handling the current request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
