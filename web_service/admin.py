"""Operator actions, for the CLI and the embedded launcher."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import NotFound
from web_service.auth import create_user, issue_token, list_tokens, revoke_token
from web_service.registry.db import make_engine, make_session_factory, migrate
from web_service.registry.models import Quota, User
from web_service.redis_client import redis_from_settings
from web_service.settings import Settings


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _user_id(session: Session, username: str) -> str:
    user_id = session.scalar(sa.select(User.id).where(User.username == username))
    if user_id is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    return str(user_id)


def revoke(settings: Settings, token_or_id: str) -> bool:
    """Revoke a token given as its text or its id (``list-tokens``); False if unknown."""
    with _session(settings) as session:
        return revoke_token(session, token_or_id)


def tokens_of(settings: Settings, username: str) -> list[dict[str, Any]]:
    with _session(settings) as session:
        return [
            {"id": t.id, "label": t.label, "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at}
            for t in list_tokens(session, _user_id(session, username))
        ]


def set_user_quota(settings: Settings, username: str, period: str, max_tasks: int | None, max_core_hours: float | None) -> None:
    from web_service.quotas import set_quota

    with _session(settings) as session:
        set_quota(session, _user_id(session, username), period, max_tasks, max_core_hours)


def get_user_quota(settings: Settings, username: str) -> dict[str, Any] | None:
    with _session(settings) as session:
        q = session.get(Quota, _user_id(session, username))
        return None if q is None else {"period": q.period, "max_tasks": q.max_tasks, "max_core_hours": q.max_core_hours}


def disable_user(settings: Settings, username: str, disabled: bool = True) -> None:
    """Disable (or enable) a user: effective within ``cache_seconds`` in every web worker."""
    from web_service.services.users import set_disabled

    with _session(settings) as session:
        set_disabled(session, username, disabled)


def delete_user(settings: Settings, username: str) -> dict[str, Any]:
    """Delete a user (see :mod:`web_service.services.users`); returns what was done."""
    import dataclasses

    from web_service.services.users import delete_user as delete
    from web_service.task_store import TaskStore

    store = TaskStore(redis_from_settings(settings), result_ttl=settings.result_ttl)
    try:
        with _session(settings) as session:
            return dataclasses.asdict(delete(session, store, username))
    finally:
        store.r.close()


def set_operator(settings: Settings, username: str, on: bool = True) -> None:
    """Make ``username`` an operator (or, with ``on=False``, no longer one): operators see the
    dashboard's Operators page (service health, queues, error rates of every endpoint)."""
    with _session(settings) as session:
        session.execute(sa.update(User).where(User.id == _user_id(session, username)).values(is_operator=on))
        session.commit()


def add_user(settings: Settings, username: str, *, exist_ok: bool = False, expires_in: timedelta | None = None) -> str:
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
                return issue_token(session, user_id, label="cli", expires_in=expires_in)[1]
            user, token = create_user(session, username)
            if expires_in is not None:  # the first token is made without expiry: replace it
                revoke_token(session, token)
                token = issue_token(session, user.id, label="initial", expires_in=expires_in)[1]
            return token
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
    """Operator commands; prints tokens on stdout (shown once). Settings come from ``FNSERVE_*``
    variables, as for the service::

        python -m web_service.admin add-user NAME [--reuse] [--expires-in DAYS]
        python -m web_service.admin new-token NAME [--label L] [--expires-in DAYS]
        python -m web_service.admin list-tokens NAME
        python -m web_service.admin revoke-token TOKEN_OR_ID      ('-' reads it from stdin)
        python -m web_service.admin set-quota NAME --period day [--tasks N] [--core-hours H]
        python -m web_service.admin show-quota NAME
        python -m web_service.admin disable-user|enable-user NAME
        python -m web_service.admin delete-user NAME --yes
        python -m web_service.admin set-operator NAME [--off]
    """
    import argparse
    import json
    import sys

    from fnserve.errors import FnserveError

    parser = argparse.ArgumentParser(prog="python -m web_service.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-user", help="create a user and print a token for it (shown once)")
    add.add_argument("username")
    add.add_argument("--reuse", action="store_true", help="if the user exists, print a new token for them")
    add.add_argument("--expires-in", type=float, metavar="DAYS", help="the token expires after DAYS days")
    token = commands.add_parser("new-token", help="print another token for an existing user")
    token.add_argument("username")
    token.add_argument("--label")
    token.add_argument("--expires-in", type=float, metavar="DAYS")
    listing = commands.add_parser("list-tokens", help="a user's tokens: ids, labels, dates (never the tokens)")
    listing.add_argument("username")
    rev = commands.add_parser("revoke-token", help="revoke a token (its text, or its id from list-tokens)")
    rev.add_argument("token", help="token text or id; '-' reads it from stdin (keeps it out of `ps`)")
    quota = commands.add_parser("set-quota", help="set a user's quota (omit both limits to remove it)")
    quota.add_argument("username")
    quota.add_argument("--period", default="day", choices=["hour", "day", "week", "month"])
    quota.add_argument("--tasks", type=int, help="tasks per period")
    quota.add_argument("--core-hours", type=float, help="core-hours (CPU hours) per period")
    show = commands.add_parser("show-quota", help="print a user's quota as JSON")
    show.add_argument("username")
    for name, text in (("disable-user", "refuse the user's requests (403 user_disabled) until enabled again"),
                       ("enable-user", "undo disable-user")):
        commands.add_parser(name, help=text).add_argument("username")
    delete = commands.add_parser("delete-user", help="revoke the user's tokens, delete their functions, endpoints, "
                                 "runtimes and groups, cancel their unfinished tasks")
    delete.add_argument("username")
    delete.add_argument("--yes", action="store_true", help="required: deleting cannot be undone")
    operator = commands.add_parser("set-operator", help="let a user see the dashboard's Operators page")
    operator.add_argument("username")
    operator.add_argument("--off", action="store_true", help="take the operator flag away")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    expires = timedelta(days=args.expires_in) if getattr(args, "expires_in", None) else None
    try:
        if args.command == "add-user":
            print(add_user(settings, args.username, exist_ok=args.reuse, expires_in=expires))
        elif args.command == "new-token":
            print(new_user_token(settings, args.username, label=args.label, expires_in=expires))
        elif args.command == "list-tokens":
            print(json.dumps(tokens_of(settings, args.username), default=str, indent=2))
        elif args.command == "revoke-token":
            text = sys.stdin.readline().strip() if args.token == "-" else args.token
            if not revoke(settings, text):
                print("error: no such token, or already revoked", file=sys.stderr)
                return 1
            print("revoked")
        elif args.command in ("disable-user", "enable-user"):
            disable_user(settings, args.username, args.command == "disable-user")
            print(f"{args.command.split('-')[0]}d {args.username}")
        elif args.command == "delete-user":
            if not args.yes:
                print("error: deleting a user cannot be undone; add --yes", file=sys.stderr)
                return 2
            print(json.dumps(delete_user(settings, args.username)))
        elif args.command == "set-quota":
            set_user_quota(settings, args.username, args.period, args.tasks, args.core_hours)
            print(json.dumps(get_user_quota(settings, args.username)))
        elif args.command == "set-operator":
            set_operator(settings, args.username, on=not args.off)
            print(f"{args.username} is {'no longer ' if args.off else ''}an operator")
        else:
            print(json.dumps(get_user_quota(settings, args.username)))
    except FnserveError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
