"""The site manager: the endpoint daemon that connects out to the forwarder and runs tasks.

Run it from a config dict (as the CLI does)::

    from site_manager import run
    exit_status = run({
        "forwarder": "tcp://127.0.0.1:55001",
        "endpoint_id": "...",
        "secret": "...",
        "engine": {"max_workers_per_node": 2},
    })

or from a YAML file: ``python -m site_manager --config endpoint.yaml``.
"""

from site_manager.config import (
    ConfigError,
    EndpointConfig,
    EngineConfig,
    LauncherConfig,
    ProviderConfig,
    ScalingConfig,
    load_config,
)
from site_manager.main import run

__all__ = [
    "ConfigError",
    "EndpointConfig",
    "EngineConfig",
    "LauncherConfig",
    "ProviderConfig",
    "ScalingConfig",
    "load_config",
    "run",
]
