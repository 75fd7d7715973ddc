"""``fnserve trigger create|list|show|delete|history|fire|rule``: schedules and webhooks that run
registered functions (docs/triggers.md).

    fnserve trigger create nightly --cron '0 3 * * *' --timezone Europe/Berlin --function F --endpoint E
    fnserve trigger create every-minute --every 60 --function F --endpoint E --arg '$data.scheduled_at'
    fnserve trigger create scan-done --webhook --function F --endpoint E --arg '$data.path' \\
        --filter 'data.path glob *.h5'
    fnserve trigger history TRIGGER_ID
    fnserve trigger share TRIGGER_ID --user bob [--group beamline]   (unshare, sharing: likewise)
"""

from __future__ import annotations

import json
from typing import Any

import click


def _client() -> Any:
    from fnserve.client import Client

    return Client()


def _json_value(text: str) -> Any:
    """A JSON value, or the text itself (so ``--arg '$data.path'`` needs no quoting)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _filter(text: str) -> dict[str, Any]:
    """``'FIELD OP VALUE'`` (``data.size gt 1024``, ``data.path glob *.h5``, ``data.x exists``)."""
    parts = text.split(None, 2)
    if len(parts) == 2 and parts[1] == "exists":
        return {"field": parts[0], "op": "exists"}
    if len(parts) != 3:
        raise click.BadParameter(f"{text!r}: write 'FIELD OP VALUE', e.g. 'data.path glob *.h5'", param_hint="--filter")
    return {"field": parts[0], "op": parts[1], "value": _json_value(parts[2])}


def _rule(function: str | None, endpoint: str | None, args: tuple[str, ...], kwargs: tuple[str, ...], filters: tuple[str, ...],
          max_concurrency: int | None) -> dict[str, Any] | None:
    if function is None and endpoint is None:
        if args or kwargs or filters or max_concurrency:
            raise click.UsageError("--arg, --kwarg, --filter and --max-concurrency belong to a rule: give --function and --endpoint")
        return None
    if function is None or endpoint is None:
        raise click.UsageError("a rule needs both --function and --endpoint")
    kw: dict[str, Any] = {}
    for item in kwargs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--kwarg")
        kw[key] = _json_value(value)
    from fnserve.client_triggers import TriggerMethods

    return TriggerMethods.rule(function, endpoint, args=[_json_value(a) for a in args] if args or kw else None,
                               kwargs=kw or None, filters=[_filter(f) for f in filters] or None, max_concurrency=max_concurrency)


def _rule_options(f: Any) -> Any:
    for option in reversed([
        click.option("--function", "function", help="Function the rule runs (id)."),
        click.option("--endpoint", "endpoint", help="Endpoint it runs on (id)."),
        click.option("--arg", "args", multiple=True, help="A positional argument: JSON, or '$field' from the event (repeat)."),
        click.option("--kwarg", "kwargs", multiple=True, help="NAME=VALUE keyword argument, VALUE as for --arg (repeat)."),
        click.option("--filter", "filters", multiple=True, help="'FIELD OP VALUE' the event must satisfy (repeat)."),
        click.option("--max-concurrency", type=click.IntRange(1), help="At most this many of the rule's tasks unfinished."),
    ]):
        f = option(f)
    return f


def _show_firings(firings: list[dict[str, Any]]) -> None:
    for f in firings:
        err = f.get("error")
        click.echo(f"  rule {f['rule_id']}  task {f['task_id']}  {f['state']}" + (f"  ({err['code']}: {err['message']})" if err else ""))


def add_commands(main: click.Group) -> None:
    @main.group()
    def trigger() -> None:
        """Schedules and webhooks that run your functions."""

    @trigger.command("create")
    @click.argument("name")
    @click.option("--cron", help="Cron expression: 'minute hour day month weekday' (a sixth field: seconds).")
    @click.option("--every", type=float, help="Fire every this many seconds.")
    @click.option("--timezone", default="UTC", show_default=True, help="Time zone of the cron expression (IANA name).")
    @click.option("--catch-up", type=click.IntRange(0, 100), help="Missed times to fire after downtime (default 10).")
    @click.option("--webhook", is_flag=True, help="A webhook: signed HTTP POSTs are its events.")
    @_rule_options
    def create(name: str, cron: str | None, every: float | None, timezone: str, catch_up: int | None, webhook: bool,
               function: str | None, endpoint: str | None, args: tuple[str, ...], kwargs: tuple[str, ...],
               filters: tuple[str, ...], max_concurrency: int | None) -> None:
        """Create trigger NAME (a schedule with --cron or --every, or --webhook), with one rule
        if --function and --endpoint are given. Prints the trigger; a webhook's secret is shown once."""
        if sum(x is not None and x is not False for x in (cron, every, webhook or None)) != 1:
            raise click.UsageError("give exactly one of --cron, --every or --webhook")
        rule = _rule(function, endpoint, args, kwargs, filters, max_concurrency)
        config: dict[str, Any] | None = None
        if not webhook:
            config = {"timezone": timezone, **({"cron": cron} if cron is not None else {"every": every})}
            if catch_up is not None:
                config["catch_up"] = catch_up
        trig = _client().create_trigger(name, "webhook" if webhook else "schedule", config, [rule] if rule else [])
        click.echo(json.dumps(trig, indent=2, sort_keys=True, ensure_ascii=False))
        if webhook:
            click.echo(f"the secret is shown only now: sign each POST to {trig['webhook_path']} with it "
                       "(fnserve.webhooks.sign; see docs/triggers.md)", err=True)

    @trigger.command("list")
    @click.option("--shared", is_flag=True, help="Also the triggers shared with you.")
    def list_(shared: bool) -> None:
        """List your triggers."""
        rows = _client().list_triggers(shared)
        for t in rows:
            when = t.get("next_time") or t.get("webhook_path", "")
            click.echo(f"{t['trigger_id']}  {t['name']:<20} {t['kind']:<8} {len(t['rules'])} rule(s)  {when}")
        if not rows:
            click.echo("no triggers yet: `fnserve trigger create NAME --every 60 --function F --endpoint E`")

    @trigger.command("show")
    @click.argument("trigger_id")
    def show(trigger_id: str) -> None:
        """Show a trigger and its rules."""
        click.echo(json.dumps(_client().get_trigger(trigger_id), indent=2, sort_keys=True, ensure_ascii=False))

    @trigger.command("delete")
    @click.argument("trigger_id")
    def delete(trigger_id: str) -> None:
        """Delete a trigger: it fires no more (tasks it made are not touched)."""
        _client().delete_trigger(trigger_id)
        click.echo(f"deleted {trigger_id}")

    @trigger.command("history")
    @click.argument("trigger_id")
    @click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
    def history(trigger_id: str, limit: int, as_json: bool) -> None:
        """The trigger's latest events, newest first, with the task each rule made."""
        events = _client().trigger_history(trigger_id, limit)
        if as_json:
            click.echo(json.dumps(events, indent=2, sort_keys=True, ensure_ascii=False))
            return
        for e in events:
            click.echo(f"{e['time']}  {e['kind']:<8} event {e['event_id']}  {json.dumps(e['data'], sort_keys=True)[:80]}")
            _show_firings(e["firings"])
        if not events:
            click.echo("no events yet")

    @trigger.command("fire")
    @click.argument("trigger_id")
    @click.option("--data", default="{}", help="The event's data (JSON).")
    @click.option("--event-id", help="Your id of the event: firing again with it does nothing.")
    def fire(trigger_id: str, data: str, event_id: str | None) -> None:
        """Send the trigger an event now (for testing rules, or from scripts)."""
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
        out = _client().fire_trigger(trigger_id, value, event_id)
        click.echo(f"event {out['event_id']}" + (" (already recorded: nothing new fired)" if out["duplicate"] else ""))
        _show_firings(out["firings"])

    @trigger.group("rule")
    def rule_group() -> None:
        """Add and remove a trigger's rules."""

    @rule_group.command("add")
    @click.argument("trigger_id")
    @_rule_options
    def rule_add(trigger_id: str, function: str | None, endpoint: str | None, args: tuple[str, ...], kwargs: tuple[str, ...],
                 filters: tuple[str, ...], max_concurrency: int | None) -> None:
        """Bind a function on an endpoint to TRIGGER_ID; prints the rule id."""
        rule = _rule(function, endpoint, args, kwargs, filters, max_concurrency)
        if rule is None:
            raise click.UsageError("give --function and --endpoint")
        click.echo(_client().add_trigger_rule(trigger_id, rule)["rule_id"])

    @rule_group.command("delete")
    @click.argument("trigger_id")
    @click.argument("rule_id")
    def rule_delete(trigger_id: str, rule_id: str) -> None:
        """Remove rule RULE_ID from TRIGGER_ID."""
        _client().delete_trigger_rule(trigger_id, rule_id)
        click.echo(f"deleted rule {rule_id}")

    @trigger.command("share")
    @click.argument("trigger_id")
    @click.option("--user", "users", multiple=True, help="Username to share with (repeatable).")
    @click.option("--group", "groups", multiple=True, help="Group to share with (repeatable).")
    def share(trigger_id: str, users: tuple[str, ...], groups: tuple[str, ...]) -> None:
        """Let users / groups bind rules to a trigger you own (their tasks run as them)."""
        if not users and not groups:
            raise click.UsageError("give --user or --group")
        click.echo(json.dumps(_client().share("trigger", trigger_id, users=users, groups=groups), indent=2, sort_keys=True))

    @trigger.command("unshare")
    @click.argument("trigger_id")
    @click.option("--user", "users", multiple=True)
    @click.option("--group", "groups", multiple=True)
    def unshare(trigger_id: str, users: tuple[str, ...], groups: tuple[str, ...]) -> None:
        """Stop sharing a trigger: the rules those users bound fire no more (refused as ``forbidden``)."""
        click.echo(json.dumps(_client().unshare("trigger", trigger_id, users=users, groups=groups), indent=2, sort_keys=True))

    @trigger.command("sharing")
    @click.argument("trigger_id")
    def sharing(trigger_id: str) -> None:
        """Show who a trigger you own is shared with."""
        click.echo(json.dumps(_client().get_sharing("trigger", trigger_id), indent=2, sort_keys=True))
