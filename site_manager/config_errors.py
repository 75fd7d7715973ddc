"""The error an endpoint config that cannot run raises (stable code ``invalid_endpoint_config``).

Its own module so that ``site_manager.config`` and ``site_manager.runtimes`` (the runtimes
section it parses) both raise it without importing each other."""

from __future__ import annotations

from fnserve.errors import BadRequest


class ConfigError(BadRequest):
    code = "invalid_endpoint_config"
