"""Endpoint configuration: where the forwarder is, who we are, and how to run workers.

Reads like Parsl's own composition, in YAML for site admins::

    forwarder: tcp://fnserve.example.org:55001
    endpoint_id: 5f1c...            # from `fnserve endpoint create`
    secret: ...                     # never logged
    heartbeat_period: 2
    heartbeat_threshold: 10
    run_dir: ~/.fnserve/endpoints/mysite
    engine:
      max_workers_per_node: 4
      init_blocks: 1
      min_blocks: 0
      max_blocks: 1
    provider:
      type: local                   # mapped onto parsl.providers.LocalProvider
      worker_init: "source ~/venv/bin/activate"

Every key of ``provider`` except ``type`` is passed to the Parsl provider class unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnserve.errors import BadRequest


class ConfigError(BadRequest):
    code = "invalid_endpoint_config"


# Provider names a config may use, and the Parsl class each one means.
PROVIDERS: dict[str, str] = {
    "local": "parsl.providers.LocalProvider",
}


@dataclass
class ProviderConfig:
    """Where worker blocks come from: a Parsl provider named by ``type`` and its options."""

    type: str = "local"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProviderConfig:
        data = dict(data or {})
        kind = str(data.pop("type", "local"))
        if kind not in PROVIDERS:
            raise ConfigError(
                f"unknown provider type {kind!r}; known: {', '.join(sorted(PROVIDERS))}"
            )
        return cls(type=kind, options=data)


@dataclass
class EngineConfig:
    """How tasks run: options of the HighThroughputExecutor and its block counts."""

    max_workers_per_node: int = 1
    init_blocks: int = 1
    min_blocks: int = 0
    max_blocks: int = 1
    # Seconds between Parsl's worker-manager heartbeats, and silence before a manager is lost.
    worker_heartbeat_period: int = 30
    worker_heartbeat_threshold: int = 120

    def __post_init__(self) -> None:
        if self.max_workers_per_node < 1:
            raise ConfigError("engine.max_workers_per_node must be at least 1")
        if not 0 <= self.min_blocks <= self.max_blocks:
            raise ConfigError(
                "engine blocks must satisfy 0 <= min_blocks <= max_blocks"
            )
        if not self.min_blocks <= self.init_blocks <= self.max_blocks:
            raise ConfigError(
                "engine.init_blocks must lie between min_blocks and max_blocks"
            )


@dataclass
class EndpointConfig:
    """Everything a site manager needs to run. Build with :meth:`from_dict` or :func:`load_config`."""

    forwarder: str
    endpoint_id: str
    secret: str = field(repr=False)
    heartbeat_period: float = 2.0
    heartbeat_threshold: float = 10.0
    run_dir: str = "~/.fnserve/endpoint"
    # Reconnect backoff: first delay, and the cap it doubles up to.
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    # On SIGTERM: how long to wait for running tasks and for the forwarder's acks.
    drain_timeout: float = 30.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    provider: ProviderConfig = field(default_factory=ProviderConfig)

    def __post_init__(self) -> None:
        if not self.forwarder.startswith(("tcp://", "ipc://")):
            raise ConfigError(
                f"forwarder must be a ZMQ address like tcp://host:port, got {self.forwarder!r}"
            )
        if not self.endpoint_id:
            raise ConfigError("endpoint_id is required")
        if (
            self.heartbeat_period <= 0
            or self.heartbeat_threshold <= self.heartbeat_period
        ):
            raise ConfigError("need 0 < heartbeat_period < heartbeat_threshold")

    @property
    def run_path(self) -> Path:
        return Path(os.path.expandvars(self.run_dir)).expanduser()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointConfig:
        """Build a config from plain data (as parsed from YAML), checking every key."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown endpoint config keys: {', '.join(unknown)}")
        missing = [k for k in ("forwarder", "endpoint_id", "secret") if k not in data]
        if missing:
            raise ConfigError(f"endpoint config is missing: {', '.join(missing)}")
        engine = data.pop("engine", None) or {}
        try:
            data["engine"] = EngineConfig(**engine)
        except TypeError as exc:
            raise ConfigError(f"bad engine section: {exc}") from exc
        data["provider"] = ProviderConfig.from_dict(data.pop("provider", None))
        return cls(**data)


def load_config(path: str | os.PathLike[str]) -> EndpointConfig:
    """Read an endpoint config from a YAML file."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read endpoint config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"endpoint config {path} must be a YAML mapping")
    return EndpointConfig.from_dict(data)
