"""The registry: users, tokens, functions and endpoints, in SQL (SQLite or PostgreSQL)."""

from web_service.registry.db import make_engine, make_session_factory, migrate, session_factory
from web_service.registry.models import Base, Endpoint, Function, Token, User

__all__ = [
    "Base", "Endpoint", "Function", "Token", "User",
    "make_engine", "make_session_factory", "migrate", "session_factory",
]
