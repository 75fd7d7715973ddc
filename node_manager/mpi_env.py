"""The MPI launch prefix a task's command sees, for launchers Parsl does not compose.

In MPI mode Parsl's worker puts the task's nodes and counts in the environment
(``PARSL_MPI_NODELIST``, ``PARSL_NUM_RANKS``, ``PARSL_RANKS_PER_NODE``, ``PARSL_LAUNCHER_OPTIONS``)
and a prefix in ``PARSL_MPI_PREFIX`` for MPICH's mpiexec, srun or aprun. For OpenMPI
(``mpi.launcher: openmpi``) the prefix is composed here from the same variables.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from fnserve.resources import openmpi_prefix


def set_prefix(launcher: str | None, env: MutableMapping[str, str] = os.environ) -> None:
    """Set ``PARSL_MPI_PREFIX`` for ``launcher`` when Parsl did not compose it (OpenMPI)."""
    if launcher != "openmpi" or "PARSL_MPI_NODELIST" not in env:
        return
    nodes = [n for n in env["PARSL_MPI_NODELIST"].split(",") if n]
    prefix = openmpi_prefix(int(env["PARSL_NUM_RANKS"]), int(env["PARSL_RANKS_PER_NODE"]), nodes,
                            env.get("PARSL_LAUNCHER_OPTIONS", ""))
    env["PARSL_OPENMPI_PREFIX"] = env["PARSL_MPI_PREFIX"] = prefix
