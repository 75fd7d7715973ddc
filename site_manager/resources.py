"""Where a task runs given its ``resource_specification`` (pure): the host engine, or Parsl's MPI
mode with a checked request; a request this endpoint can never serve fails at once, with a code.
"""

from __future__ import annotations

from typing import Any

from fnserve.resources import (
    MpiRequest,
    ResourceSpecError,
    check_fit,
    mpi_request,
    wants_mpi,
)
from site_manager.config import MpiConfig


def route_mpi(spec: dict[str, Any] | None, mpi: MpiConfig | None) -> MpiRequest | None:
    """The task's MPI request if it runs in MPI mode, None for the host engine.

    A task asking for one rank on one node runs anywhere (on an endpoint without MPI mode, on
    the host engine). More than that on an endpoint without an ``mpi`` section is
    ``mpi_not_enabled``; more nodes than an MPI block holds is ``resources_never_fit``.

    >>> route_mpi({"priority": 1}, None) is None
    True
    >>> route_mpi({"num_ranks": 2}, MpiConfig(launcher_options="--oversubscribe")).launcher_options
    '--oversubscribe'
    """
    if not wants_mpi(spec):
        return None
    assert spec is not None
    if mpi is None:
        request = mpi_request(spec)
        if request.num_nodes == 1 and request.num_ranks == 1:
            return None
        raise ResourceSpecError(
            f"the task asks for {request.num_ranks} MPI ranks on {request.num_nodes} node(s), but this endpoint does not "
            "run MPI tasks: its config has no mpi section (see docs/site-admin.md)", code="mpi_not_enabled",
            details={"field": "resource_specification"})
    request = mpi_request(spec, mpi.launcher_options)
    check_fit(request, mpi.nodes_per_block)
    return request
