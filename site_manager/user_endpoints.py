"""Multi-user endpoints: which user endpoint a task goes to, and the config it runs (pure).

A multi-user endpoint is one registered endpoint run by root. The service stamps each task with
its submitter's identity and ``user_endpoint_config`` values (``fnserve.user_endpoint_config``);
here the identity is mapped to a local account (``site_manager.identity_mapping``), the values
are checked against the admin's schema, and the task goes to the user endpoint of that
``(account, values)`` pair: a child process running as the account, started on the first task
(``site_manager.user_processes``), whose config is the admin's template rendered with the values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.user_endpoint_config import InvalidUserEndpointConfig, check_values, config_hash
from site_manager.identity_mapping import IdentityNotMapped, map_identity

# Set by the multi-user endpoint, never by the template (who the user endpoint is, where it keeps state).
_FORCED = ("forwarder", "endpoint_id", "secret", "run_dir", "multi_user", "forwarder_public_key", "curve_public_key",
           "curve_secret_key", "metrics")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Placement:
    """Where a task runs: the account, the checked values, and the user endpoint's name."""

    account: str
    values: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.account}.{config_hash(self.values)}"


def _no_control_characters(values: Any, where: str = "user_endpoint_config") -> None:
    # A newline in a value could add keys to the rendered YAML whatever the schema's author forgot.
    if isinstance(values, dict):
        for k, v in values.items():
            _no_control_characters(k, where)
            _no_control_characters(v, f"{where}.{k}")
    elif isinstance(values, list):
        for i, v in enumerate(values):
            _no_control_characters(v, f"{where}[{i}]")
    elif isinstance(values, str) and _CONTROL.search(values):
        raise InvalidUserEndpointConfig(f"{where} may not hold control characters (newlines, tabs...)", details={"field": where})


def place_task(stamp: dict[str, Any] | None, rules: Sequence[Any], schema: dict[str, Any] | None, *,
               uid_of: Callable[[str], int | None], read: Callable[[str], str] = lambda p: Path(p).read_text(),
               run: Callable[[Sequence[str], str], str] | None = None) -> Placement:
    """The account and config values a stamped task runs with; ``identity_not_mapped`` or
    ``invalid_user_endpoint_config`` when it cannot run here."""
    if not isinstance(stamp, dict) or not isinstance(stamp.get("identity"), dict):
        raise IdentityNotMapped("the task reached a multi-user endpoint without its submitter's identity (a service older "
                                "than the endpoint?); submit it again through the fnserve service")
    account = map_identity(stamp["identity"], rules, read=read, run=run, uid_of=uid_of)
    values = check_values(stamp.get("config"), schema)
    _no_control_characters(values)
    return Placement(account, values)


def render_user_config(template_text: str, values: dict[str, Any], forced: dict[str, Any]) -> dict[str, Any]:
    """The user endpoint's config: the admin's Jinja2 template rendered (sandboxed, every name
    defined) with ``values``, read as YAML, with ``forced`` keys set by the multi-user endpoint."""
    import jinja2
    import jinja2.sandbox
    import yaml

    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        text = env.from_string(template_text).render(**values)
        data = yaml.safe_load(text) or {}
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise InvalidUserEndpointConfig(f"the endpoint's config template cannot be rendered with these values: {exc} "
                                        "(give every value the template uses; see the endpoint's schema)",
                                        details={"field": "user_endpoint_config"}) from exc
    if not isinstance(data, dict):
        raise InvalidUserEndpointConfig("the endpoint's config template did not render to a YAML mapping (an admin's error)")
    return {**{k: v for k, v in data.items() if k not in _FORCED}, **forced}


def idle_children(last_used: Mapping[str, float], now: float, timeout: float) -> tuple[list[str], float | None]:
    """The user endpoints to stop for idleness, and when the next one would be: ``last_used``
    holds, for each user endpoint running no task, when it last sent or got one.

    >>> idle_children({"a.1": 100.0, "b.2": 150.0}, now=200.0, timeout=60.0)
    (['a.1'], 210.0)
    >>> idle_children({}, now=200.0, timeout=60.0)
    ([], None)
    """
    idle = sorted(n for n, at in last_used.items() if now - at >= timeout)
    left = [at + timeout for n, at in last_used.items() if n not in idle]
    return idle, (min(left) if left else None)
