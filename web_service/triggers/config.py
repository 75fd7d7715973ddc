"""What a trigger and a rule may say: request bodies checked into small frozen values (pure).

Every refusal is a ``400 invalid_request`` naming the field, so a bad trigger config is said
at ``create`` time and never surfaces later as a trigger that silently does nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from web_service.rest_bodies.requests import FilterOp, TriggerKind
from web_service.validation import invalid

KINDS: tuple[str, ...] = get_args(TriggerKind)
MAX_SETTLE = 3600.0
FILTER_OPS: tuple[str, ...] = get_args(FilterOp)
MIN_EVERY = 1.0  # seconds
MAX_EVERY = 366 * 86400.0
MAX_CATCH_UP = 100
DEFAULT_CATCH_UP = 10
MAX_FILTERS = 16
MAX_CONCURRENCY = 100_000
MAX_TEMPLATE_BYTES = 16 * 1024
#: The template of a rule that gives none: the whole event as the function's one argument.
DEFAULT_TEMPLATE: dict[str, Any] = {"args": ["$"], "kwargs": {}}


@dataclass(frozen=True)
class Schedule:
    """A cron expression (5 fields, or 6 with seconds last) in a time zone, or an interval in
    seconds. ``catch_up``: missed times fired after downtime (the most recent ones)."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    catch_up: int = DEFAULT_CATCH_UP

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timezone": self.timezone, "catch_up": self.catch_up}
        if self.cron is not None:
            out["cron"] = self.cron
        if self.every is not None:
            out["every"] = self.every
        return out


@dataclass(frozen=True)
class RuleSpec:
    function_id: str
    endpoint_id: str
    template: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    filters: tuple[dict[str, Any], ...] = ()
    max_concurrency: int | None = None


def parse_kind(value: Any) -> str:
    if value not in KINDS:
        raise invalid("kind", f"must be one of {', '.join(KINDS)}", allowed=list(KINDS))
    return str(value)


def parse_config(kind: str, value: Any) -> dict[str, Any]:
    """The stored config of a trigger of ``kind`` (JSON-ready)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise invalid("config", "must be an object")
    if kind == "webhook":
        if value:
            raise invalid("config", f"a webhook trigger takes no settings (got {', '.join(sorted(value))})")
        return {}
    if kind == "file":
        return parse_file_watch(value)
    return parse_schedule(value).to_json()


def parse_file_watch(value: dict[str, Any]) -> dict[str, Any]:
    """A file trigger: ``endpoint_id`` (where the folder is), absolute ``folder``, ``pattern``
    (glob on file names, default ``*``), ``recursive``, ``settle`` (seconds a file must be
    unchanged, default 1), ``poll`` (stat polling instead of inotify, for network filesystems)."""
    unknown = set(value) - {"endpoint_id", "folder", "pattern", "recursive", "settle", "poll"}
    if unknown:
        raise invalid("config", f"has unknown settings {', '.join(sorted(unknown))}; a file trigger takes endpoint_id, "
                      "folder, pattern, recursive, settle, poll")
    endpoint_id, folder = value.get("endpoint_id"), value.get("folder")
    if not isinstance(endpoint_id, str) or not 0 < len(endpoint_id) <= 64:
        raise invalid("config.endpoint_id", "is required: the endpoint whose folder is watched")
    if not isinstance(folder, str) or not folder.startswith("/") or len(folder) > 1024 or "\0" in folder:
        raise invalid("config.folder", "must be an absolute path on the endpoint's host, e.g. /data/beamline/scans")
    norm = "/" + "/".join(p for p in folder.split("/") if p and p != ".")
    if "/../" in norm + "/":
        raise invalid("config.folder", "must not contain '..'")
    pattern = value.get("pattern", "*")
    if not isinstance(pattern, str) or not 0 < len(pattern) <= 255 or "/" in pattern:
        raise invalid("config.pattern", "must be a glob on file names such as '*.h5' (no '/')")
    settle = value.get("settle", 1.0)
    if isinstance(settle, bool) or not isinstance(settle, (int, float)) or not 0 <= settle <= MAX_SETTLE:
        raise invalid("config.settle", f"must be a number of seconds from 0 to {MAX_SETTLE:g}")
    flags = {}
    for key in ("recursive", "poll"):
        v = value.get(key, False)
        if not isinstance(v, bool):
            raise invalid(f"config.{key}", "must be true or false")
        flags[key] = v
    return {"endpoint_id": endpoint_id, "folder": norm, "pattern": pattern, "settle": float(settle), **flags}



def parse_schedule(value: dict[str, Any]) -> Schedule:
    unknown = set(value) - {"cron", "every", "timezone", "catch_up"}
    if unknown:
        raise invalid("config", f"has unknown settings {', '.join(sorted(unknown))}; a schedule takes cron or every, "
                      "timezone, catch_up")
    cron, every = value.get("cron"), value.get("every")
    if (cron is None) == (every is None):
        raise invalid("config", "needs exactly one of cron (e.g. '0 3 * * *') or every (seconds)")
    tz = value.get("timezone", "UTC")
    if not isinstance(tz, str) or not tz:
        raise invalid("config.timezone", "must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("config.timezone", f"{tz!r} is not a known time zone (IANA names such as 'America/Chicago')") from None
    catch_up = value.get("catch_up", DEFAULT_CATCH_UP)
    if type(catch_up) is not int or not 0 <= catch_up <= MAX_CATCH_UP:
        raise invalid("config.catch_up", f"must be an integer from 0 to {MAX_CATCH_UP}")
    if cron is not None:
        if not isinstance(cron, str) or len(cron) > 200 or len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
            raise invalid("config.cron", f"{cron!r} is not a cron expression: five fields 'minute hour day month weekday' "
                          "(a sixth, seconds, may follow), e.g. '*/15 * * * *'")
        return Schedule(cron=cron, timezone=tz, catch_up=catch_up)
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not MIN_EVERY <= every <= MAX_EVERY:
        raise invalid("config.every", f"must be a number of seconds from {MIN_EVERY:g} to {MAX_EVERY:g}")
    return Schedule(every=float(every), timezone=tz, catch_up=catch_up)


def schedule_of(config_text: str) -> Schedule:
    """The schedule of a stored config (already validated)."""
    return Schedule(**json.loads(config_text))


def parse_rule(body: Any, field_prefix: str = "") -> RuleSpec:
    p = field_prefix
    if not isinstance(body, dict):
        raise invalid(p.rstrip(".") or "(body)", "must be an object")
    unknown = set(body) - {"function_id", "endpoint_id", "args_template", "filters", "max_concurrency"}
    if unknown:
        raise invalid(f"{p}{sorted(unknown)[0]}", "is not a rule setting (function_id, endpoint_id, args_template, filters, "
                      "max_concurrency)")
    ids = {}
    for key in ("function_id", "endpoint_id"):
        v = body.get(key)
        if not isinstance(v, str) or not 0 < len(v) <= 64:
            raise invalid(f"{p}{key}", "is required (an id)")
        ids[key] = v
    return RuleSpec(ids["function_id"], ids["endpoint_id"], parse_template(body.get("args_template"), f"{p}args_template"),
                    parse_filters(body.get("filters"), f"{p}filters"), parse_concurrency(body.get("max_concurrency"), f"{p}max_concurrency"))


def parse_template(value: Any, field: str = "args_template") -> dict[str, Any]:
    """``{"args": [...], "kwargs": {...}}`` whose strings ``"$field.sub"`` are filled from the
    event (``"$"``: the whole event; ``"$$text"``: the literal ``"$text"``)."""
    if value is None:
        return dict(DEFAULT_TEMPLATE)
    if not isinstance(value, dict) or set(value) - {"args", "kwargs"}:
        raise invalid(field, "must be an object with args (a list) and/or kwargs (an object)")
    args, kwargs = value.get("args", []), value.get("kwargs", {})
    if not isinstance(args, list):
        raise invalid(f"{field}.args", "must be a list")
    if not isinstance(kwargs, dict):
        raise invalid(f"{field}.kwargs", "must be an object")
    if len(json.dumps(value)) > MAX_TEMPLATE_BYTES:
        raise invalid(field, f"must be at most {MAX_TEMPLATE_BYTES} bytes as JSON")
    return {"args": args, "kwargs": kwargs}


def parse_filters(value: Any, field: str = "filters") -> tuple[dict[str, Any], ...]:
    """A list of ``{"field": "data.path", "op": "glob", "value": "*.h5"}``; all must hold."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_FILTERS:
        raise invalid(field, f"must be a list of at most {MAX_FILTERS} filters")
    out = []
    for i, f in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(f, dict) or set(f) - {"field", "op", "value"}:
            raise invalid(where, "must be an object {field, op, value}")
        if not isinstance(f.get("field"), str) or not f["field"]:
            raise invalid(f"{where}.field", "must name a field of the event, e.g. 'data.path'")
        op = f.get("op", "eq")
        if op not in FILTER_OPS:
            raise invalid(f"{where}.op", f"must be one of {', '.join(FILTER_OPS)}")
        if op != "exists" and "value" not in f:
            raise invalid(f"{where}.value", "is required")
        if op == "in" and not isinstance(f["value"], list):
            raise invalid(f"{where}.value", "must be a list for op 'in'")
        if op == "glob" and not isinstance(f["value"], str):
            raise invalid(f"{where}.value", "must be a string pattern for op 'glob'")
        out.append({"field": f["field"], "op": op, **({"value": f["value"]} if "value" in f else {})})
    return tuple(out)


def parse_concurrency(value: Any, field: str = "max_concurrency") -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_CONCURRENCY:
        raise invalid(field, f"must be an integer from 1 to {MAX_CONCURRENCY}, or null for no limit")
    return value
