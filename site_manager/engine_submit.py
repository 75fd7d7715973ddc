"""Handing one task to the engine, and its future back as a result message.

:func:`submit_task` sends a task to where it runs: Parsl's MPI mode, its runtime's warm pool, or
the default engine. :func:`result_of` turns the future an engine gave back into the
:class:`~fnserve.messages.ResultMessage` for the service (on Parsl's thread)."""

from __future__ import annotations

import time
from concurrent.futures import Future

from fnserve.errors import FnserveError
from fnserve.messages import ResultMessage, TaskMessage, decode_result, encode_task
from fnserve.serialize import narrow
from site_manager.config import EndpointConfig
from site_manager.engine_like import EngineLike
from site_manager.failures import failure_result
from fnserve.task_resources import Offer
from site_manager.resources import route_mpi, route_worker
from site_manager.runtime_pool import RuntimeNotSupported, RuntimePool


def submit_task(engine: EngineLike, task: TaskMessage, config: EndpointConfig,
                offers: dict[str, Offer] | None = None) -> Future[bytes]:
    """Submit ``task`` (its site fields already set) to the executor that runs it, once it is
    known to fit what one of its workers ``offers``; raises what the engine refuses it with
    (a request that never fits: with its code)."""
    # What the service asks (data only for a function-restricted endpoint) and what this
    # endpoint's admin allows, both: the worker loads nothing else.
    allowed = narrow(task.allowed_serializers, config.allowed_serializers)
    task.allowed_serializers = None if allowed is None else list(allowed)
    if config.multi_user is not None:  # its user endpoint routes it (site_manager.user_processes)
        return engine.submit(encode_task(task), task_id=task.task_id)
    if offers is not None:
        route_worker(task.resource_specification, offers, task.runtime)
    mpi = route_mpi(task.resource_specification, config.mpi)
    if mpi is not None:  # Parsl's MPI mode: the worker gets nodes and $PARSL_MPI_PREFIX
        assert config.mpi is not None
        task.mpi_launcher = config.mpi.launcher
        return _pool(engine).submit_mpi(encode_task(task), mpi.parsl_spec(), task_id=task.task_id)
    if task.runtime:  # its runtime's warm pool (an engine of another kind runs only the default)
        return _pool(engine).submit(encode_task(task), runtime=task.runtime, task_id=task.task_id)
    return engine.submit(encode_task(task), task_id=task.task_id)


def _pool(engine: EngineLike) -> RuntimePool:
    """The engine as the runtime pool (runtimes and MPI); a single engine runs neither."""
    if not isinstance(engine, RuntimePool):
        raise RuntimeNotSupported("this endpoint's engine runs only the default runtime")
    return engine


def result_of(task_id: str, future: Future[bytes], timings: dict[str, float]) -> ResultMessage:
    # Runs on a Parsl thread: build the message here, the loop only batches and sends it.
    exc = future.exception()
    if exc is not None:
        return failure_result(task_id, exc, timings)
    try:
        result = decode_result(future.result())
    except FnserveError as err:
        return failure_result(task_id, err, timings)
    result.task_id = task_id  # the worker may not have been able to read it
    result.timings["site_result"] = time.time()
    return result
