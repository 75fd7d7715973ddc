"""The :class:`~fnserve.client.Client`'s methods for triggers: schedules and webhooks that run
registered functions (see docs/triggers.md). A mixin; each method is one REST call.

Example::

    trig = client.create_trigger("nightly-calibration", "schedule", {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
                                 rules=[client.rule(calibrate_id, endpoint_id)])
    hook = client.create_trigger("scan-done", "webhook",
                                 rules=[client.rule(analyse_id, endpoint_id, args=["$data.path"])])
    hook["secret"]          # shown once: the instrument signs its calls with it (fnserve.webhooks.sign)
    client.trigger_history(hook["trigger_id"])   # events, newest first, and the task each rule made
"""

from __future__ import annotations

from typing import Any

from fnserve.transport import Transport


class TriggerMethods:
    """Triggers, their rules and their history."""

    transport: Transport

    @staticmethod
    def rule(function_id: str, endpoint_id: str, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
             filters: list[dict[str, Any]] | None = None, max_concurrency: int | None = None) -> dict[str, Any]:
        """A rule for :meth:`create_trigger` / :meth:`add_trigger_rule`: run ``function_id`` on
        ``endpoint_id`` for each event whose ``filters`` all hold (``{"field": "data.path",
        "op": "glob", "value": "*.h5"}``), with ``args`` / ``kwargs`` whose ``"$field"`` strings are
        filled from the event (default: the whole event as the one argument)."""
        body: dict[str, Any] = {"function_id": function_id, "endpoint_id": endpoint_id}
        if args is not None or kwargs is not None:
            body["args_template"] = {"args": list(args or []), "kwargs": dict(kwargs or {})}
        if filters:
            body["filters"] = list(filters)
        if max_concurrency is not None:
            body["max_concurrency"] = max_concurrency
        return body

    def create_trigger(self, name: str, kind: str, config: dict[str, Any] | None = None,
                       rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Create a ``"schedule"`` (config: ``cron`` or ``every`` seconds, ``timezone``,
        ``catch_up``) or ``"webhook"`` trigger. A webhook's answer holds its ``secret``, shown once."""
        body: dict[str, Any] = {"name": name, "kind": kind, "rules": list(rules or [])}
        if config is not None:
            body["config"] = config
        return self.transport.post("/v1/triggers", body)  # type: ignore[no-any-return]

    def list_triggers(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your triggers; with ``shared``, also those shared with you (showing only your rules)."""
        return list(self.transport.get("/v1/triggers", **({"shared": "true"} if shared else {}))["triggers"])

    def get_trigger(self, trigger_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v1/triggers/{trigger_id}")  # type: ignore[no-any-return]

    def delete_trigger(self, trigger_id: str) -> None:
        self.transport.delete(f"/v1/triggers/{trigger_id}")

    def add_trigger_rule(self, trigger_id: str, rule: dict[str, Any]) -> dict[str, Any]:
        """Bind one more rule (see :meth:`rule`); returns it with its ``rule_id``."""
        return self.transport.post(f"/v1/triggers/{trigger_id}/rules", rule)  # type: ignore[no-any-return]

    def delete_trigger_rule(self, trigger_id: str, rule_id: str) -> None:
        self.transport.delete(f"/v1/triggers/{trigger_id}/rules/{rule_id}")

    def fire_trigger(self, trigger_id: str, data: Any = None, event_id: str | None = None) -> dict[str, Any]:
        """Send the trigger an event yourself; ``event_id`` makes a retry fire once. Returns
        ``{"event_id", "duplicate", "firings": [{"rule_id", "task_id", "state"}, ...]}``."""
        body: dict[str, Any] = {"data": {} if data is None else data}
        if event_id is not None:
            body["event_id"] = event_id
        return self.transport.post(f"/v1/triggers/{trigger_id}/fire", body)  # type: ignore[no-any-return]

    def trigger_history(self, trigger_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The trigger's latest events, newest first, each with its ``firings`` (rule, task, state)."""
        return list(self.transport.get(f"/v1/triggers/{trigger_id}/events", limit=limit)["events"])
