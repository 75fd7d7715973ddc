"""Which rules an event fires, with which arguments, under which task id (pure).

An event is a JSON object::

    {"trigger_id": ..., "event_id": ..., "kind": "schedule" | "webhook" | "manual",
     "time": "2026-12-01T23:00:00+00:00", "data": {...}}

``data`` is the webhook's JSON body, ``{"scheduled_at": ...}`` for a schedule, or what a manual
``fire`` sent. Filters and templates name fields by dotted paths into it (``data.path``).
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass
from typing import Any

#: Namespace of the task ids that firings make: uuid5(namespace, "<event_id>/<rule_id>").
FIRING_NAMESPACE = uuid.UUID("6f1c2a8e-7d0b-4f7e-9a51-2b3c4d5e6f70")
_MISSING = object()


class TemplateError(ValueError):
    """A rule's template names a field the event does not have."""

    code = "template_field_missing"


def firing_task_id(event_id: str, rule_id: str) -> str:
    """The id of the one task that ``rule_id`` makes for ``event_id``: fixed before it is
    submitted, so a second submit after a crash finds it instead of making another."""
    return str(uuid.uuid5(FIRING_NAMESPACE, f"{event_id}/{rule_id}"))


def lookup(event: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``event`` (list items by index), or ``_MISSING``."""
    node = event
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def matches(filters: list[dict[str, Any]] | tuple[dict[str, Any], ...], event: dict[str, Any]) -> bool:
    """Whether every filter holds for ``event`` (no filters: always)."""
    return all(_holds(f, event) for f in filters)


def _holds(f: dict[str, Any], event: dict[str, Any]) -> bool:
    value = lookup(event, f["field"])
    op = f["op"]
    if op == "exists":
        return value is not _MISSING
    if value is _MISSING:
        return False
    want = f.get("value")
    if op == "eq":
        return bool(value == want)
    if op == "ne":
        return bool(value != want)
    if op == "in":  # (the config check made it a list, and a glob's pattern a str)
        return isinstance(want, list) and value in want
    if op == "glob":
        return isinstance(value, str) and isinstance(want, str) and fnmatch.fnmatchcase(value, want)
    try:
        if op == "gt":
            return bool(value > want)
        if op == "ge":
            return bool(value >= want)
        if op == "lt":
            return bool(value < want)
        if op == "le":
            return bool(value <= want)
    except TypeError:
        return False  # comparing a number to a string: the filter does not hold
    raise ValueError(f"unknown filter op {op!r}")


def render(template: dict[str, Any], event: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The task's ``(args, kwargs)``: the template with each ``"$path"`` string replaced by that
    field of the event (its JSON value, not text), ``"$"`` by the whole event and ``"$$..."``
    by the literal ``"$..."``. Raises :class:`TemplateError` for a field the event lacks."""
    return _fill(template.get("args", []), event), _fill(template.get("kwargs", {}), event)


def _fill(node: Any, event: dict[str, Any]) -> Any:
    if isinstance(node, str) and node.startswith("$"):
        if node.startswith("$$"):
            return node[1:]
        if node == "$":
            return event
        value = lookup(event, node[1:])
        if value is _MISSING:
            raise TemplateError(f"the argument template names {node!r}, which this event does not have")
        return value
    if isinstance(node, list):
        return [_fill(v, event) for v in node]
    if isinstance(node, dict):
        return {k: _fill(v, event) for k, v in node.items()}
    return node


@dataclass(frozen=True)
class Firing:
    """What one rule makes of one event: a task's arguments, or the reason it cannot."""

    rule_id: str
    task_id: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    error: str | None = None  # a TemplateError's message


def fire(event: dict[str, Any], rules: list[tuple[str, dict[str, Any], list[dict[str, Any]]]]) -> list[Firing]:
    """The firings of ``event`` over ``rules`` (``(rule_id, template, filters)`` each): one per
    rule whose filters hold, in rule order."""
    out = []
    for rule_id, template, filters in rules:
        if not matches(filters, event):
            continue
        task_id = firing_task_id(event["event_id"], rule_id)
        try:
            args, kwargs = render(template, event)
        except TemplateError as exc:
            out.append(Firing(rule_id, task_id, error=str(exc)))
            continue
        out.append(Firing(rule_id, task_id, args, kwargs))
    return out


def admit(pending: int, active: int, limit: int | None) -> int:
    """How many of a rule's ``pending`` firings may be submitted now, with ``active`` of its
    tasks unfinished and at most ``limit`` allowed at once (None: all of them)."""
    if limit is None:
        return pending
    return max(0, min(pending, limit - active))


def next_pass(tick: float, idle_max: float, last_wait: float, watching: bool) -> float:
    """Seconds until the trigger runner's next pass. ``tick`` while it has anything to watch (a
    schedule trigger, a rule with a concurrency limit, a pending firing); with nothing, the wait
    doubles up to ``idle_max`` (an idle runner opened a database connection every ``tick``).

    >>> next_pass(0.25, 2.0, 0.25, False), next_pass(0.25, 2.0, 2.0, False), next_pass(0.25, 2.0, 2.0, True)
    (0.5, 2.0, 0.25)
    """
    if watching:
        return tick
    return min(idle_max, max(tick, last_wait * 2))
