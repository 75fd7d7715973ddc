"""What a task asks of an endpoint's resources (``resource_specification``), checked and placed.

MPI keys follow Parsl's MPI mode (and Globus Compute's ``MPIFunction``)::

    {"num_nodes": 2, "ranks_per_node": 4}          # num_ranks = 8
    {"num_ranks": 3}                               # on one node
    {"num_nodes": 1, "num_ranks": 2, "launcher_options": "--bind-to core"}

An endpoint with an ``mpi`` section runs such tasks in Parsl's MPI mode: each gets
``num_nodes`` nodes of one block, and its command the launcher prefix in ``$PARSL_MPI_PREFIX``.
Decisions only here (pure functions); the site manager routes, the node manager launches.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from fnserve.errors import BadRequest

MPI_KEYS = ("num_nodes", "ranks_per_node", "num_ranks", "launcher_options")
# Launchers an endpoint may name: Parsl's own, and OpenMPI's mpiexec (Parsl's "mpiexec" prefix is
# MPICH/Hydra syntax, -ppn and -hosts, which OpenMPI refuses).
LAUNCHERS = ("mpiexec", "srun", "aprun", "openmpi")
MAX_RANKS = 1_000_000


class ResourceSpecError(BadRequest):
    code = "invalid_resource_specification"


@dataclass(frozen=True)
class MpiRequest:
    """An MPI task's checked request: whole numbers, each derived from the others when left out."""

    num_nodes: int
    ranks_per_node: int
    num_ranks: int
    launcher_options: str = ""

    def parsl_spec(self) -> dict[str, Any]:
        """What Parsl's MPI task scheduler reads (it hands out nodes by ``num_nodes``)."""
        return {"num_nodes": self.num_nodes, "ranks_per_node": self.ranks_per_node, "num_ranks": self.num_ranks,
                "launcher_options": self.launcher_options}


def wants_mpi(spec: dict[str, Any] | None) -> bool:
    """Whether a task's ``resource_specification`` names any MPI key."""
    return bool(spec) and any(k in spec for k in MPI_KEYS)  # type: ignore[operator]


def _count(spec: dict[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RANKS:
        raise ResourceSpecError(f"resource_specification.{key} must be a whole number from 1 to {MAX_RANKS}, not {value!r}",
                                details={"field": f"resource_specification.{key}"})
    return value


def mpi_request(spec: dict[str, Any], default_options: str = "") -> MpiRequest:
    """The MPI request in ``spec``, each count derived from the others (Parsl's rules), checked.

    >>> mpi_request({"num_nodes": 2, "ranks_per_node": 4})
    MpiRequest(num_nodes=2, ranks_per_node=4, num_ranks=8, launcher_options='')
    >>> mpi_request({"num_ranks": 3}).ranks_per_node
    3
    """
    nodes, per_node, ranks = _count(spec, "num_nodes"), _count(spec, "ranks_per_node"), _count(spec, "num_ranks")
    options = spec.get("launcher_options", default_options)
    if not isinstance(options, str) or len(options) > 1024 or "\n" in options:
        raise ResourceSpecError("resource_specification.launcher_options must be one line of launcher arguments",
                                details={"field": "resource_specification.launcher_options"})
    nodes = nodes or 1
    if per_node is None and ranks is None:
        per_node, ranks = 1, nodes
    elif per_node is None:
        assert ranks is not None
        if ranks % nodes:
            raise ResourceSpecError(f"num_ranks {ranks} does not divide evenly over num_nodes {nodes}: give ranks_per_node",
                                    details={"field": "resource_specification.num_ranks"})
        per_node = ranks // nodes
    elif ranks is None:
        ranks = nodes * per_node
    if ranks > nodes * per_node:
        raise ResourceSpecError(f"num_ranks {ranks} is more than num_nodes x ranks_per_node = {nodes * per_node}",
                                details={"field": "resource_specification.num_ranks"})
    return MpiRequest(nodes, per_node, ranks, options)


def check_fit(request: MpiRequest, nodes_per_block: int) -> None:
    """Refuse a request no block of this endpoint can ever hold (``resources_never_fit``)."""
    if request.num_nodes > nodes_per_block:
        raise ResourceSpecError(
            f"the task asks for {request.num_nodes} nodes but this endpoint's MPI blocks have {nodes_per_block}; ask for "
            f"at most {nodes_per_block} (or the endpoint's admin raises mpi.nodes_per_block)",
            code="resources_never_fit", details={"field": "resource_specification.num_nodes", "limit": nodes_per_block})


def check_request(spec: dict[str, Any], mpi_nodes: int) -> MpiRequest | None:
    """What the service checks at submit, knowing only what the endpoint said when it connected:
    ``mpi_nodes`` nodes per MPI block, 0 for no MPI mode, -1 when not known (never connected,
    or an older endpoint: only the request's own form is checked then).

    >>> check_request({"num_ranks": 2}, -1)
    MpiRequest(num_nodes=1, ranks_per_node=2, num_ranks=2, launcher_options='')
    """
    if not wants_mpi(spec):
        return None
    request = mpi_request(spec)
    if mpi_nodes == 0 and (request.num_nodes > 1 or request.num_ranks > 1):
        raise ResourceSpecError(
            f"the task asks for {request.num_ranks} MPI ranks on {request.num_nodes} node(s), but the endpoint does not run "
            "MPI tasks (its config has no mpi section)", code="mpi_not_enabled", details={"field": "resource_specification"})
    if mpi_nodes > 0:
        check_fit(request, mpi_nodes)
    return request


def openmpi_prefix(num_ranks: int, ranks_per_node: int, nodes: list[str], options: str = "") -> str:
    """OpenMPI's launch prefix for ranks on ``nodes`` (what Parsl composes for MPICH's mpiexec).

    >>> openmpi_prefix(4, 2, ["n1", "n2"], "--oversubscribe")
    'mpiexec -n 4 --map-by ppr:2:node --host n1:2,n2:2 --oversubscribe'
    """
    hosts = ",".join(f"{n}:{ranks_per_node}" for n in nodes)
    words = ["mpiexec", "-n", str(num_ranks), "--map-by", f"ppr:{ranks_per_node}:node", "--host", hosts]
    return " ".join(shlex.quote(w) for w in words) + (f" {options}" if options else "")
