"""Operator actions, for the CLI and the embedded launcher."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from fnserve.errors import NotFound
from web_service.auth import create_user, issue_token
from web_service.registry.db import make_engine, make_session_factory, migrate
from web_service.registry.models import User
from web_service.settings import Settings


def add_user(settings: Settings, username: str, *, exist_ok: bool = False) -> str:
    """Create ``username`` (migrating the database first) and return a new token for them.

    With ``exist_ok``, an existing user gets a fresh token instead of a ``user_exists`` error
    (what the embedded launcher wants on its second start).
    """
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            user_id = session.scalar(sa.select(User.id).where(User.username == username))
            if user_id is not None and exist_ok:
                return issue_token(session, user_id, label="cli")[1]
            return create_user(session, username)[1]
    finally:
        engine.dispose()


def new_user_token(settings: Settings, username: str, label: str | None = None, expires_in: timedelta | None = None) -> str:
    """Issue another token for an existing user."""
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            user_id = session.scalar(sa.select(User.id).where(User.username == username))
            if user_id is None:
                raise NotFound(f"no user {username!r}", code="user_not_found")
            return issue_token(session, user_id, label=label, expires_in=expires_in)[1]
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """``python -m web_service.admin add-user NAME [--reuse]``: prints the new token on stdout.

    Settings come from ``FNSERVE_*`` variables, as for the service.
    """
    import argparse
    import sys

    from fnserve.errors import FnserveError

    parser = argparse.ArgumentParser(prog="python -m web_service.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-user", help="create a user and print a token for it (shown once)")
    add.add_argument("username")
    add.add_argument("--reuse", action="store_true", help="if the user exists, print a new token for them")
    token = commands.add_parser("new-token", help="print another token for an existing user")
    token.add_argument("username")
    token.add_argument("--label")
    args = parser.parse_args(argv)
    try:
        if args.command == "add-user":
            print(add_user(Settings.from_env(), args.username, exist_ok=args.reuse))
        else:
            print(new_user_token(Settings.from_env(), args.username, label=args.label))
    except FnserveError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
