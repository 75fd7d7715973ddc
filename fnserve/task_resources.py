"""Per-task resources: what one task asks of a worker, what an endpoint offers, and where it fits.

A task's ``resource_specification`` may ask for a worker's share of a node::

    {"cores": 2, "memory": 4096, "gpus": 1, "walltime": 600}   # memory in MB, walltime in s

An endpoint offers one :class:`Offer` per executor it runs (its host engine, each runtime): the
cores, memory and GPUs of one worker, and its blocks' walltime. It says them when it connects
(``Register.offers``); the service refuses at submit a request no executor can ever hold
(``resources_never_fit``) and the site manager sends the task to the smallest executor that
holds it (:func:`choose_executor`). The worker then narrows what the task sees to what it asked
for (``node_manager.allowance``: CPU affinity and ``OMP_NUM_THREADS``).

Decisions only here (pure functions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fnserve.resources import ResourceSpecError

WORKER_KEYS = ("cores", "memory", "gpus", "walltime")
_LIMITS = {"cores": 100_000, "memory": 1 << 40, "gpus": 1024, "walltime": 10 * 365 * 86400}
_UNITS = {"cores": "cores", "memory": "MB", "gpus": "GPUs", "walltime": "s"}


@dataclass(frozen=True)
class WorkerRequest:
    """A task's checked request; 0 means "not asked" (any worker will do for that resource)."""

    cores: float = 0
    memory: float = 0  # MB
    gpus: int = 0
    walltime: float = 0  # seconds


@dataclass(frozen=True)
class Offer:
    """One worker of an executor; 0 for memory or walltime means "not limited / not known"."""

    cores: float = 1
    memory: float = 0  # MB
    gpus: int = 0
    walltime: float = 0  # seconds, the block's

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Offer:
        return cls(**{k: data[k] for k in WORKER_KEYS if k in data})


def worker_request(spec: dict[str, Any] | None) -> WorkerRequest | None:
    """The worker request in ``spec`` (None when it names none of :data:`WORKER_KEYS`), checked.

    >>> worker_request({"cores": 2, "memory": 512})
    WorkerRequest(cores=2, memory=512, gpus=0, walltime=0)
    >>> worker_request({"num_ranks": 2}) is None
    True
    """
    if not spec or not any(k in spec for k in WORKER_KEYS):
        return None
    values: dict[str, Any] = {}
    for key in WORKER_KEYS:
        value = spec.get(key)
        if value is None:
            continue
        whole = key == "gpus"
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not 0 < value <= _LIMITS[key] or (whole and not isinstance(value, int))):
            kind = "a whole number" if whole else "a number"
            raise ResourceSpecError(
                f"resource_specification.{key} must be {kind} above 0 and at most {_LIMITS[key]} ({_UNITS[key]}), "
                f"not {value!r}", details={"field": f"resource_specification.{key}"})
        values[key] = value
    return WorkerRequest(**values)


def shortfall(request: WorkerRequest, offer: Offer) -> list[str]:
    """What ``offer`` lacks for ``request``, one phrase per resource (empty: it fits)."""
    short = []
    if request.cores > offer.cores:
        short.append(f"{request.cores:g} cores (a worker has {offer.cores:g})")
    if request.memory and offer.memory and request.memory > offer.memory:
        short.append(f"{request.memory:g} MB of memory (a worker has {offer.memory:g} MB)")
    if request.gpus > offer.gpus:
        short.append(f"{request.gpus} GPUs (a worker has {offer.gpus})")
    if request.walltime and offer.walltime and request.walltime > offer.walltime:
        short.append(f"a walltime of {request.walltime:g} s (blocks last {offer.walltime:g} s)")
    return short


def choose_executor(request: WorkerRequest | None, offers: dict[str, Offer]) -> str | None:
    """The executor a task runs on: the smallest offer that holds ``request`` (fewest GPUs, then
    cores, then memory; ties by name), None when nothing was asked (the caller's default).

    Raises ``resources_never_fit`` naming what is missing when no offer holds it.

    >>> choose_executor(WorkerRequest(cores=2), {"small": Offer(cores=1), "big": Offer(cores=4)})
    'big'
    """
    if request is None:
        return None
    fitting = [name for name, offer in offers.items() if not shortfall(request, offer)]
    if fitting:
        return min(fitting, key=lambda n: (offers[n].gpus, offers[n].cores, offers[n].memory or math.inf, n))
    raise never_fits(request, offers)


def never_fits(request: WorkerRequest, offers: dict[str, Offer]) -> ResourceSpecError:
    """The error for a request no offer holds: what is missing, and the largest it may ask for."""
    if not offers:
        why = "the endpoint runs no executor"
    else:
        closest = min(offers, key=lambda n: (len(shortfall(request, offers[n])), n))
        why = f"it asks for {', '.join(shortfall(request, offers[closest]))} on executor {closest!r}"
    largest = {k: max(getattr(o, k) for o in offers.values()) for k in WORKER_KEYS} if offers else {}
    hint = ", ".join(f"{k} {v:g}" for k, v in largest.items() if v)
    return ResourceSpecError(
        f"the task can never run on this endpoint: {why}; ask for at most {hint or 'nothing'} "
        "(or the endpoint's admin offers bigger workers: engine.cores_per_worker / mem_per_worker)",
        code="resources_never_fit", details={"field": "resource_specification", "offers": {n: o.to_dict() for n, o in offers.items()}})


def check_offers(spec: dict[str, Any] | None, offers: dict[str, dict[str, Any]] | None) -> None:
    """What the service checks at submit: ``offers`` as the endpoint said them when it connected
    (None: not said, only the request's own form is checked)."""
    request = worker_request(spec)
    if request is None or offers is None:
        return
    choose_executor(request, {n: Offer.from_dict(o) for n, o in offers.items()})
