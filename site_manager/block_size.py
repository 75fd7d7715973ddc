"""How many CPUs a block asks its batch system for (pure): the cores its workers use.

HighThroughputExecutor starts one worker pool per node and ``max_workers_per_node`` workers in
it, each meant to have ``cores_per_worker`` cores. Parsl's batch providers ask for one task per
node and, unless told, one CPU for it: two blocks of two workers then share two CPUs. The
endpoint fills in the provider's own "CPUs per node" option from the engine section, and refuses
a config that sets it below what the workers use.
"""

from __future__ import annotations

import math
from typing import Any

# Provider type -> the Parsl option that sets a block's CPUs per node (Slurm: --cpus-per-task
# for the one task per node; PBS Pro: ncpus in the select statement).
CPU_OPTIONS = {"slurm": "cores_per_node", "pbspro": "cpus_per_node"}
# Provider types whose Parsl class has no such option: what the admin is told instead.
NO_CPU_OPTION = {
    "torque": "Parsl's TorqueProvider asks for ppn=1 per node; add the CPUs the workers use to "
              "provider.scheduler_options (for example '#PBS -l naccesspolicy=singlejob') or run one "
              "worker per node",
}


def cores_needed(cores_per_worker: float, workers_per_node: int) -> int:
    """CPUs one node of a block uses: ``ceil(cores_per_worker * max_workers_per_node)``.

    >>> cores_needed(1, 2)
    2
    >>> cores_needed(0.5, 3)
    2
    """
    return max(1, math.ceil(cores_per_worker * workers_per_node - 1e-9))


def block_cpus(provider_type: str, options: dict[str, Any], cores_per_worker: float,
               workers_per_node: int) -> tuple[dict[str, Any], str | None]:
    """The provider options to add, and a problem to refuse the config with (or None).

    >>> block_cpus("slurm", {}, 1, 2)
    ({'cores_per_node': 2}, None)
    >>> block_cpus("slurm", {"cores_per_node": 4}, 1, 2)
    ({}, None)
    >>> block_cpus("local", {}, 1, 2)
    ({}, None)
    """
    key = CPU_OPTIONS.get(provider_type)
    if key is None:
        return {}, None
    needed = cores_needed(cores_per_worker, workers_per_node)
    given = options.get(key)
    if given is None:
        return {key: needed}, None
    if not isinstance(given, int) or isinstance(given, bool) or given < needed:
        return {}, (
            f"provider.{key} is {given!r}, but each node of a block runs engine.max_workers_per_node="
            f"{workers_per_node} workers of engine.cores_per_worker={cores_per_worker:g} cores, {needed} CPUs: "
            f"the batch system would give them fewer CPUs than they use. Set provider.{key} to {needed} or more "
            f"(or remove it: the endpoint fills it in), or lower engine.max_workers_per_node"
        )
    return {}, None


def cpu_note(provider_type: str) -> str | None:
    """What to tell the admin when this provider cannot ask for the workers' CPUs (or None)."""
    return NO_CPU_OPTION.get(provider_type)
