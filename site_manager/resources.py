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
from fnserve.task_resources import Offer, choose_executor, worker_request
from site_manager.config import EndpointConfig, MpiConfig


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


def _seconds(walltime: object) -> float:
    """A provider's walltime ("HH:MM:SS", "D-HH:MM:SS" or seconds) in seconds; 0 when not known."""
    if isinstance(walltime, (int, float)) and not isinstance(walltime, bool):
        return float(walltime)
    if not isinstance(walltime, str):
        return 0.0
    days, _, clock = walltime.rpartition("-")
    try:
        parts = [float(p) for p in clock.split(":")]
        seconds = float(sum(v * 60 ** i for i, v in enumerate(reversed(parts))))
        return seconds + (float(days) * 86400 if days else 0.0)
    except ValueError:
        return 0.0


def endpoint_offers(config: EndpointConfig) -> dict[str, Offer]:
    """What one worker of each executor offers, from the config (said to the service at connect).

    Every runtime's pool is sized like the host engine (``engine``); a GPU per worker when the
    engine has ``available_accelerators`` (Parsl pins one to each worker).

    >>> endpoint_offers(EndpointConfig.from_dict({"forwarder": "tcp://h:1", "endpoint_id": "e", "secret": "s",
    ...     "engine": {"cores_per_worker": 2, "mem_per_worker": 1}}))["host"]
    Offer(cores=2, memory=1024, gpus=0, walltime=0.0)
    """
    engine = config.engine
    gpus = 1 if engine.options.get("available_accelerators") else 0
    memory = engine.mem_per_worker * 1024 if engine.mem_per_worker else 0
    offer = Offer(cores=engine.cores_per_worker, memory=memory, gpus=gpus,
                  walltime=_seconds(config.provider.options.get("walltime")))
    return {name: offer for name in ("host", *getattr(config, "runtimes", {}))}


def route_worker(spec: dict[str, Any] | None, offers: dict[str, Offer], runtime: str | None) -> None:
    """Refuse a task no worker of its executor can hold (``resources_never_fit``): the runtime it
    names, or any executor when it names none."""
    request = worker_request(spec)
    if request is None:
        return
    choose_executor(request, {runtime: offers[runtime]} if runtime in offers else offers)
