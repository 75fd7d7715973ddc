"""Where a worker runs: its block, the block's batch job, its node, its container.

Read once per worker process from the environment the block set up (the runtime's block script
exports ``FNSERVE_JOB_ID``, ``FNSERVE_CONTAINER``, ``FNSERVE_RUNTIME``; see
site_manager/runtimes/blocks.py), falling back to the batch system's own variables for the host
runtime, whose workers start with Parsl's plain command. Each result carries it, so a task's
record says where it ran (``placement`` in the REST task and ``Client.get_task``).
"""

from __future__ import annotations

import os
import socket

_JOB_VARS = ("FNSERVE_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID", "JOB_ID", "LSB_JOBID", "FLUX_JOB_ID")
_cached: dict[str, str] | None = None


def placement() -> dict[str, str]:
    """``{"block", "job_id", "node", "runtime", "container"}`` for this worker (only what is known)."""
    global _cached
    if _cached is None:
        env = os.environ
        found = {
            "block": env.get("PARSL_WORKER_BLOCK_ID") or env.get("FNSERVE_BLOCK_ID", ""),
            "job_id": next((env[v] for v in _JOB_VARS if env.get(v)), ""),
            "node": socket.gethostname(),
            "runtime": env.get("FNSERVE_RUNTIME", ""),
            "container": env.get("FNSERVE_CONTAINER", ""),
        }
        _cached = {k: v for k, v in found.items() if v}
    return _cached
