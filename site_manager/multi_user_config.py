"""The ``multi_user`` section of a multi-user endpoint's config (run by root)::

    multi_user:
      identity_mapping:                      # site_manager.identity_mapping: first rule that maps wins
        - {source: "{username}", match: "(.*)@uni\\.edu", output: "{0}"}
        - {mapping_file: /etc/fnserve/identity-map}
      user_config_template: /etc/fnserve/mep/user_config_template.yaml.j2   # Jinja2, renders a user endpoint's config
      user_config_schema: /etc/fnserve/mep/user_config_schema.json          # JSON schema of what users may set
      python: /opt/fnserve/bin/python        # the interpreter user endpoints run (every mapped account can run it)
      user_endpoints_dir: /var/lib/fnserve/user-endpoints   # per-account folders (0700, owned by the account)
      stop_timeout: 30                       # seconds a user endpoint gets to stop before SIGKILL
      idle_timeout: 1800                     # seconds without a task before a user endpoint stops (restarted on the next)

The template and schema are read once, at start: an admin restarts the endpoint after editing them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from site_manager.config import ConfigError, _section
from site_manager.identity_mapping import Rule, parse_rules


@dataclass
class MultiUserConfig:
    identity_mapping: list[Any]
    user_config_template: str
    user_config_schema: str = ""
    python: str = sys.executable
    user_endpoints_dir: str = "/var/lib/fnserve/user-endpoints"
    stop_timeout: float = 30.0
    idle_timeout: float = 1800.0

    # Read at start (not config keys).
    rules: list[Rule] | None = None
    template_text: str = ""
    schema: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Any) -> MultiUserConfig:
        if not isinstance(data, dict):
            raise ConfigError("multi_user must be a mapping (see docs/site-admin.md)", details={"key": "multi_user"})
        for internal in ("rules", "template_text", "schema"):
            if internal in data:
                raise ConfigError(f"multi_user: unknown key {internal!r}", details={"key": f"multi_user.{internal}"})
        cfg: MultiUserConfig = _section(cls, "multi_user", dict(data))
        if not cfg.idle_timeout > 0:
            raise ConfigError("multi_user.idle_timeout must be a number of seconds > 0", details={"key": "multi_user.idle_timeout"})
        cfg.rules = parse_rules(cfg.identity_mapping)
        try:
            cfg.template_text = Path(cfg.user_config_template).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read multi_user.user_config_template {cfg.user_config_template}: {exc.strerror}",
                              details={"key": "multi_user.user_config_template"}) from exc
        if cfg.user_config_schema:
            cfg.schema = _read_schema(cfg.user_config_schema)
        return cfg

    def schema_text(self) -> str:
        """What the endpoint tells the service (it checks each task's values against it)."""
        return json.dumps(self.schema if self.schema is not None else {"type": "object"})


def _read_schema(path: str) -> dict[str, Any]:
    import jsonschema

    try:
        schema = json.loads(Path(path).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
    except (OSError, ValueError, jsonschema.exceptions.SchemaError) as exc:
        raise ConfigError(f"multi_user.user_config_schema {path} is not a JSON schema: {exc}",
                          details={"key": "multi_user.user_config_schema"}) from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"multi_user.user_config_schema {path} must be a JSON object", details={"key": "multi_user.user_config_schema"})
    return schema
