"""Runtimes an endpoint runs: containers and Python environments with warm worker pools.

Each runtime gets its own HighThroughputExecutor whose worker pool starts *inside* the runtime
(see :mod:`site_manager.runtime_pool`): Parsl runs the runtime's block script
(:mod:`.blocks`) in each block, which starts ``python -m node_manager.pool`` in the container
(:mod:`.oci` for podman and Docker, :mod:`.apptainer` for Apptainer/Singularity through spython,
Charliecloud's ``ch-run``) or in another interpreter (``venv``).

Modules: :mod:`.config` (the ``runtimes:`` section and the pure decisions), :mod:`.blocks`
(block scripts and Parsl's launch command), :mod:`.oci`, :mod:`.apptainer`, :mod:`.checks`
(what the site manager checks and cleans on its own host).
"""

from site_manager.runtimes.blocks import BlockContext, _pool_args, block_script, launch_command, write_block_script
from site_manager.runtimes.config import (
    APPTAINER_TYPES,
    CONTAINER_TYPES,
    HOST,
    OCI_TYPES,
    POOL_MODULE,
    RUNTIME_TYPES,
    PoolHealth,
    RuntimeConfig,
    parse_runtimes,
    route,
    spares_to_restart,
    start_failure,
)

__all__ = [
    "APPTAINER_TYPES", "BlockContext", "CONTAINER_TYPES", "HOST", "OCI_TYPES", "POOL_MODULE", "PoolHealth", "RUNTIME_TYPES",
    "RuntimeConfig", "_pool_args", "block_script", "launch_command", "parse_runtimes", "route", "spares_to_restart",
    "start_failure", "write_block_script",
]
