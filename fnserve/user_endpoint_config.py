"""``user_endpoint_config``: the values a task gives a multi-user endpoint's config template.

The endpoint's admin writes a Jinja2 template of a user endpoint's config and a JSON schema of
the values users may set (partition, account, walltime, runtime, worker count...). A task names
its values (``Client.submit(..., user_endpoint_config={"partition": "debug"})``); the service
checks them against the schema the endpoint said when it connected, and the endpoint checks
them again before rendering. The same values (in any key order) mean the same user endpoint.

The service stamps the submitter's identity beside the values in the task's
``resource_specification`` under :data:`ROUTING_KEY` (a client cannot set it): that is what the
multi-user endpoint maps to a local account.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fnserve.errors import BadRequest

ROUTING_KEY = "_fnserve_user_endpoint"  # {"identity": {...}, "config": {...}} in resource_specification
MAX_CONFIG_BYTES = 4096


class InvalidUserEndpointConfig(BadRequest):
    code = "invalid_user_endpoint_config"


def check_values(values: Any, schema: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` checked against the admin's ``schema`` (None: only their form), or
    ``invalid_user_endpoint_config`` naming the first bad value and what the schema allows."""
    if values is None:
        values = {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise InvalidUserEndpointConfig("user_endpoint_config must be a JSON object", details={"field": "user_endpoint_config"})
    if len(json.dumps(values)) > MAX_CONFIG_BYTES:
        raise InvalidUserEndpointConfig(f"user_endpoint_config must be at most {MAX_CONFIG_BYTES} bytes as JSON",
                                        details={"field": "user_endpoint_config"})
    if schema is not None:
        import jsonschema

        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(values))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            field = "user_endpoint_config" + (f".{where}" if where else "")
            raise InvalidUserEndpointConfig(
                f"{field}: {error.message} (the endpoint's admin allows: {json.dumps(error.schema)[:300]})",
                details={"field": field})
    return values


def config_hash(values: dict[str, Any]) -> str:
    """Names one user endpoint of an account: the same values in any order, the same hash."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def stamp(spec: dict[str, Any] | None, identity: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """The resource specification a multi-user endpoint gets: the task's own, plus who submitted
    it and its config values (what the service adds; a client cannot)."""
    return {**(spec or {}), ROUTING_KEY: {"identity": identity, "config": values}}


def unstamp(spec: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(the task's own resource specification, the stamp or None)``."""
    if not spec or ROUTING_KEY not in spec:
        return spec, None
    own = {k: v for k, v in spec.items() if k != ROUTING_KEY}
    return own or None, spec[ROUTING_KEY]
