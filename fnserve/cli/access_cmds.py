"""CLI commands for identity, sharing and accounting (added to the groups of ``fnserve.cli.main``).

    fnserve login [--service URL] [--token T]   fnserve logout   fnserve whoami
    fnserve usage [--since T] [--until T]
    fnserve share|unshare function|endpoint|runtime|trigger ID [--user U]... [--group G]... [--public]
    fnserve sharing function|endpoint|runtime|trigger ID
    fnserve group create|add|remove|list ...
    fnserve endpoint allow|disallow EP FUNCTION_ID...   fnserve endpoint unrestrict|allowlist EP
    fnserve service token new|list|revoke ...   fnserve service quota set|show ...
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import click


def _client() -> Any:
    from fnserve.client import Client

    return Client()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def _admin(*args: str, stdin: str | None = None) -> None:
    """Run an operator command of the service (``python -m web_service.admin``) on this host."""
    from fnserve.cli.processes import python_module

    out = subprocess.run(python_module("web_service.admin", *args), input=stdin, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.returncode)


def add_user_commands(main: click.Group) -> None:
    @main.command()
    @click.option("--service", "service_url", help="Service URL (default: the configured one).")
    @click.option("--token", help="Local mode: the token your operator gave you (prompted if absent).")
    def login(service_url: str | None, token: str | None) -> None:
        """Log in: a Globus login (prints a URL, reads the code) or a local token."""
        from fnserve import login as auth
        from fnserve.config import ClientConfig

        url = (service_url or ClientConfig.load().service_url).rstrip("/")
        if auth.service_auth(url).get("mode") != "globus" and not token:
            token = click.prompt("token", hide_input=True)
        cfg = auth.login(url, token)
        me = _client().whoami()
        click.echo(f"logged in to {cfg.service_url} as {me['username']} ({cfg.auth})")

    @main.command()
    def logout() -> None:
        """Forget (and for Globus, revoke) the saved login."""
        from fnserve import login as auth

        click.echo("logged out" if auth.logout() else "was not logged in")

    @main.command()
    def whoami() -> None:
        """Show who the service thinks you are."""
        me = _client().whoami()
        click.echo(f"{me['username']}  (user {me['user_id']}, {me['auth_mode']} mode)")

    @main.command()
    @click.option("--since", help="Start (ISO 8601 or unix seconds); default 30 days ago.")
    @click.option("--until", help="End (ISO 8601 or unix seconds); default now.")
    @click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
    def usage(since: str | None, until: str | None, as_json: bool) -> None:
        """Your tasks, CPU and wall time over a period; per endpoint for the endpoints you own."""
        data = _client().usage(since, until)
        if as_json:
            _echo_json(data)
            return
        click.echo(f"{data['since']} .. {data['until']}")
        click.echo(_usage_line(data["user"]["username"], data["user"]))
        for ep in data["endpoints"]:
            click.echo(_usage_line(f"endpoint {ep['name']}", ep))
            for user, t in sorted(ep["by_user"].items()):
                click.echo("  " + _usage_line(user, t))

    def _usage_line(who: str, t: dict[str, Any]) -> str:
        return (f"{who:<28} tasks={t['tasks']} (ok {t['succeeded']}, failed {t['failed']}, cancelled {t['cancelled']}) "
                f"core-hours={t['core_hours']:.4f} wall={t['wall_time_s']:.1f}s peak-mem={t['peak_memory_kb'] / 1024:.1f}MiB")

    kinds = click.Choice(["function", "endpoint", "runtime", "trigger"])

    @main.command()
    @click.argument("kind", type=kinds)
    @click.argument("resource_id")
    @click.option("--user", "users", multiple=True, help="Username to share with (repeatable).")
    @click.option("--group", "groups", multiple=True, help="Group to share with (repeatable).")
    @click.option("--public", is_flag=True, help="Let every user use it.")
    def share(kind: str, resource_id: str, users: tuple[str, ...], groups: tuple[str, ...], public: bool) -> None:
        """Share a function, endpoint, runtime or trigger you own (KIND: function, endpoint, runtime or trigger)."""
        _echo_json(_client().share(kind, resource_id, users=users, groups=groups, public=True if public else None))

    @main.command()
    @click.argument("kind", type=kinds)
    @click.argument("resource_id")
    @click.option("--user", "users", multiple=True)
    @click.option("--group", "groups", multiple=True)
    @click.option("--public", is_flag=True, help="Remove public access.")
    def unshare(kind: str, resource_id: str, users: tuple[str, ...], groups: tuple[str, ...], public: bool) -> None:
        """Stop sharing a function or endpoint with users / groups / everyone."""
        _echo_json(_client().unshare(kind, resource_id, users=users, groups=groups, public=public))

    @main.command()
    @click.argument("kind", type=kinds)
    @click.argument("resource_id")
    def sharing(kind: str, resource_id: str) -> None:
        """Show who a function or endpoint you own is shared with."""
        _echo_json(_client().get_sharing(kind, resource_id))

    @main.group()
    def group() -> None:
        """Groups of users to share with."""

    @group.command("create")
    @click.argument("name")
    def group_create(name: str) -> None:
        _echo_json(_client().create_group(name))

    @group.command("add")
    @click.argument("name")
    @click.argument("usernames", nargs=-1, required=True)
    def group_add(name: str, usernames: tuple[str, ...]) -> None:
        _echo_json(_client().add_group_members(name, *usernames))

    @group.command("remove")
    @click.argument("name")
    @click.argument("usernames", nargs=-1, required=True)
    def group_remove(name: str, usernames: tuple[str, ...]) -> None:
        _echo_json(_client().remove_group_members(name, *usernames))

    @group.command("list")
    def group_list() -> None:
        _echo_json(_client().list_groups())


def add_endpoint_commands(endpoint: click.Group) -> None:
    @endpoint.command("allow")
    @click.argument("endpoint_id")
    @click.argument("function_ids", nargs=-1, required=True)
    def allow(endpoint_id: str, function_ids: tuple[str, ...]) -> None:
        """Add functions to ENDPOINT_ID's allowlist (restricting it to the list)."""
        _echo_json(_client().allow_functions(endpoint_id, *function_ids))

    @endpoint.command("disallow")
    @click.argument("endpoint_id")
    @click.argument("function_ids", nargs=-1, required=True)
    def disallow(endpoint_id: str, function_ids: tuple[str, ...]) -> None:
        """Remove functions from ENDPOINT_ID's allowlist (it stays restricted)."""
        _echo_json(_client().disallow_functions(endpoint_id, *function_ids))

    @endpoint.command("unrestrict")
    @click.argument("endpoint_id")
    def unrestrict(endpoint_id: str) -> None:
        """Let ENDPOINT_ID run any function again."""
        _echo_json(_client().set_allowed_functions(endpoint_id, None))

    @endpoint.command("allowlist")
    @click.argument("endpoint_id")
    def allowlist(endpoint_id: str) -> None:
        """Show ENDPOINT_ID's allowlist."""
        _echo_json(_client().get_allowed_functions(endpoint_id))


def add_service_commands(service: click.Group) -> None:
    @service.group("token")
    def token() -> None:
        """Local tokens (operators; runs against FNSERVE_DATABASE_URL on this host)."""

    @token.command("new")
    @click.argument("username")
    @click.option("--label")
    @click.option("--expires-in", type=float, metavar="DAYS")
    def token_new(username: str, label: str | None, expires_in: float | None) -> None:
        """Print another token for USERNAME (shown once)."""
        _admin("new-token", username, *(["--label", label] if label else []), *(["--expires-in", str(expires_in)] if expires_in else []))

    @token.command("list")
    @click.argument("username")
    def token_list(username: str) -> None:
        """USERNAME's tokens: ids, labels, dates (never the tokens)."""
        _admin("list-tokens", username)

    @token.command("revoke")
    @click.argument("token_or_id", required=False)
    def token_revoke(token_or_id: str | None) -> None:
        """Revoke a token (its text, or its id from `token list`); prompts when not given, so
        the token stays out of the shell history."""
        text = token_or_id or click.prompt("token or token id", hide_input=True)
        _admin("revoke-token", "-", stdin=text + "\n")

    @service.group("quota")
    def quota() -> None:
        """Per-user quotas, enforced at submit (429 quota_exceeded)."""

    @quota.command("set")
    @click.argument("username")
    @click.option("--period", type=click.Choice(["hour", "day", "week", "month"]), default="day", show_default=True)
    @click.option("--tasks", type=int, help="Tasks per period.")
    @click.option("--core-hours", type=float, help="Core-hours (CPU hours) per period.")
    def quota_set(username: str, period: str, tasks: int | None, core_hours: float | None) -> None:
        """Set USERNAME's quota (give neither limit to remove it)."""
        args = ["set-quota", username, "--period", period]
        if tasks is not None:
            args += ["--tasks", str(tasks)]
        if core_hours is not None:
            args += ["--core-hours", str(core_hours)]
        _admin(*args)

    @quota.command("show")
    @click.argument("username")
    def quota_show(username: str) -> None:
        _admin("show-quota", username)
