"""Results for tasks that failed outside the user's function (pure logic)."""

from __future__ import annotations

from fnserve.messages import RemoteError, ResultMessage

# Parsl exception class names, and the stable code a task failed by them gets.
_CODES = {
    "BlockLost": "worker_lost",
    "ManagerLost": "worker_lost",
    "WorkerLost": "worker_lost",
    "EngineLost": "worker_lost",
    "BadStateException": "engine_failed",
    "ScalingFailed": "engine_failed",
    "SerializationError": "engine_error",
    "RuntimeNotSupported": "runtime_not_supported",
    "RuntimeUnavailable": "runtime_unavailable",
}


class BlockLost(Exception):
    """A task's block went away (``scancel``, node failure, walltime) before the task finished."""

    def __init__(self, block: str | None, job_id: object, host: str, threshold: float, why: str = "") -> None:
        self.block = block
        self.job_id = job_id
        self.host = host
        where = f"block {block} (batch job {job_id})" if block is not None else "its block"
        why = why or f"its workers sent no heartbeat for {threshold:g} s (cancelled, node failure or walltime reached)"
        super().__init__(f"{where} on {host} was lost: {why}")


class EngineLost(Exception):
    """A task's engine (its interchange or its local worker pool) died after the task started."""


def failure_result(
    task_id: str, exc: BaseException, timings: dict[str, float] | None = None
) -> ResultMessage:
    """A failed result for ``task_id`` whose execution raised ``exc`` in the engine.

    Matched by class name so that this module does not import Parsl.
    """
    name = type(exc).__name__
    code = _CODES.get(name, "engine_error")
    stated = getattr(exc, "code", None)
    if isinstance(stated, str) and hasattr(exc, "message"):  # an fnserve error: its own code and message
        code = stated
    if code == stated:
        message = str(exc.message)  # type: ignore[attr-defined]
    elif code == "worker_lost":
        message = f"the worker running this task was lost before it finished: {exc}"
    elif code.startswith("runtime_"):
        message = str(exc)  # names the runtime and the cause (site_manager.runtime_pool)
    elif code == "engine_failed":
        message = f"the endpoint's engine cannot run tasks: {exc}"
    else:
        message = f"the endpoint could not run this task: {name}: {exc}"
    return ResultMessage(
        task_id=task_id,
        ok=False,
        error=RemoteError(
            code=code,
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=message,
        ),
        timings=dict(timings or {}),
    )
