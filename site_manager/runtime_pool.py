"""Warm pools: one engine (HighThroughputExecutor) per runtime, started inside that runtime.

The endpoint's own engine is the runtime ``host``; each runtime of the ``runtimes:`` config gets
an :class:`~site_manager.engine.Engine` whose worker pool is launched inside its container or
Python env (:func:`site_manager.runtimes.launch_command`). A runtime's engine starts with its
first task (a cold start: the block scales out at once), or with the site manager when it keeps
hot spares (``min_warm_workers``). Each engine scales and reaps its own blocks with
:func:`site_manager.scaling.decide` and the runtime's ``max_idletime``.

A runtime whose workers die before connecting is shut down and not restarted in a tight loop:
its tasks fail at once, naming the runtime and the cause in one line, until :class:`PoolHealth`
says retry; a runtime that keeps hot spares comes back on its own then. Where blocks run on this
host, a missing image is found before any block starts (:mod:`site_manager.runtimes.checks`),
and containers left by earlier runs or dead blocks are removed. Other runtimes are not affected.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from site_manager.config import EndpointConfig, ScalingConfig
from site_manager.engine import Engine
from site_manager.runtimes import (
    CONTAINER_TYPES,
    HOST,
    BlockContext,
    PoolHealth,
    RuntimeConfig,
    launch_command,
    route,
    spares_to_restart,
    start_failure,
    write_block_script,
)
from site_manager.runtimes import checks
from site_manager.status import EngineStatus

logger = logging.getLogger(__name__)


class RuntimeNotSupported(Exception):
    """The task names a runtime this endpoint does not run."""


class RuntimeUnavailable(Exception):
    """The task's runtime cannot start workers right now (image missing, no fnserve in it...)."""


class RuntimePool:
    """Runs each task on its runtime's engine; quacks like :class:`Engine` for the site manager.

    Example::

        pool = RuntimePool.from_config(config)
        pool.start()
        result = pool.submit(encode_task(task), runtime="sci").result()
    """

    def __init__(self, host: Engine, runtimes: dict[str, RuntimeConfig], make_engine: Callable[[RuntimeConfig], Engine],
                 clock: Callable[[], float] = time.monotonic, endpoint_id: str = "", local: bool = False,
                 mpi: Engine | None = None) -> None:
        self.host = host
        # Parsl's MPI mode (the config's `mpi:` section): tasks that ask for MPI ranks run there.
        self.mpi = mpi
        self.runtimes = dict(runtimes)
        self._make_engine = make_engine
        self._clock = clock
        self.engines: dict[str, Engine] = {}
        self.health: dict[str, PoolHealth] = {name: PoolHealth() for name in self.runtimes}
        self._pending: dict[str, set[Future[bytes]]] = {name: set() for name in self.runtimes}
        self._workers: dict[str, int] = {}
        self.endpoint_id = endpoint_id
        self.local = local  # blocks run on this host: images are checked and containers cleaned here
        self._ended: dict[str, set[str]] = {name: set() for name in self.runtimes}  # blocks already cleaned up
        self._lock = threading.Lock()  # engines and pending futures are also touched from Parsl's threads

    @classmethod
    def from_config(cls, config: EndpointConfig) -> RuntimePool:
        """The host engine as configured, plus one engine per entry of ``config.runtimes``."""
        host = Engine(config.engine, config.provider, config.run_path / "engine", launcher=config.launcher,
                      scaling=config.scaling, worker_init=config.worker_init)

        def make(rt: RuntimeConfig) -> Engine:
            run_dir = config.run_path / "runtimes" / rt.name
            min_blocks = rt.min_blocks(config.engine.max_workers_per_node * config.scaling.nodes_per_block)
            scaling = ScalingConfig(init_blocks=min_blocks, min_blocks=min_blocks, max_blocks=rt.max_blocks,
                                    nodes_per_block=config.scaling.nodes_per_block, max_idletime=rt.max_idletime)
            from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

            ctx = BlockContext(config.endpoint_id, run_dir, local=config.provider.type == "local")
            cmd = launch_command(rt, DEFAULT_LAUNCH_CMD, write_block_script(rt, ctx))
            return Engine(config.engine, config.provider, run_dir, label=f"fnserve-{rt.name}", launcher=config.launcher,
                          scaling=scaling, worker_init=config.worker_init, launch_cmd=cmd)

        mpi = None
        if config.mpi is not None:
            mpi = Engine(config.engine, config.provider, config.run_path / "mpi", label="fnserve-mpi",
                         scaling=config.mpi.scaling, worker_init=config.worker_init, mpi=config.mpi)
        return cls(host, getattr(config, "runtimes", {}) or {}, make, endpoint_id=config.endpoint_id,
                   local=config.provider.type == "local", mpi=mpi)

    # -- the Engine interface ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the host engine, and the runtimes that keep hot spares."""
        self.host.start()
        if self.mpi is not None:
            self.mpi.start()  # its interchange only: blocks start with the first MPI task (init_blocks: 0)
        if self.local:
            for rt in self.runtimes.values():
                if rt.type in CONTAINER_TYPES:
                    checks.remove_leftovers(rt, self.endpoint_id, None, "left by an earlier run of this endpoint")
        for rt in self.runtimes.values():
            if rt.min_warm_workers > 0:
                self._start_or_fail(rt)

    @property
    def started_probe(self) -> Callable[[set[str]], set[str]] | None:
        return self.host.started_probe

    @started_probe.setter
    def started_probe(self, probe: Callable[[set[str]], set[str]] | None) -> None:
        """Which tasks a worker started, for every engine (see :meth:`Engine.restart`)."""
        self.host.started_probe = probe
        for engine in list(self.engines.values()):
            engine.started_probe = probe

    def submit(self, task_bytes: bytes, runtime: str | None = None, task_id: str = "") -> Future[bytes]:
        """Run an encoded task on its runtime (``None``: the host engine)."""
        with self._lock:
            warm = {n for n, w in self._workers.items() if w > 0}
        fallbacks = {n: rt.fallbacks for n, rt in self.runtimes.items() if rt.fallbacks}
        name = route(runtime, {HOST, *self.runtimes}, warm | {HOST}, fallbacks)
        if name is None:
            raise RuntimeNotSupported(
                f"this endpoint does not run runtime {runtime!r}; it runs: {', '.join(sorted({HOST, *self.runtimes}))}")
        if name == HOST:
            return self.host.submit(task_bytes, task_id)
        rt = self.runtimes[name]
        health = self.health[name]
        if not health.usable(self._clock()):
            raise RuntimeUnavailable(
                f"{health.error} (retrying in {max(0.0, health.retry_at - self._clock()):.0f} s)")
        engine = self.engines.get(name) or self._start_or_fail(rt)
        if engine is None:
            raise RuntimeUnavailable(health.error)
        future = engine.submit(task_bytes, task_id)
        with self._lock:
            self._pending[name].add(future)
        future.add_done_callback(lambda f: self._discard(name, f))
        return future

    def submit_mpi(self, task_bytes: bytes, resource_spec: dict[str, object], task_id: str = "") -> Future[bytes]:
        """Run an encoded MPI task in Parsl's MPI mode with its checked ``resource_spec``."""
        if self.mpi is None:
            raise RuntimeNotSupported("this endpoint does not run MPI tasks (its config has no mpi section)")
        return self.mpi.submit(task_bytes, task_id, resource_spec=resource_spec)

    def status(self) -> EngineStatus:
        """Everything summed, with per-runtime figures in ``runtimes`` (heartbeat pace)."""
        host = self.host.status()
        per = {HOST: _figures(host)}
        total = [host.blocks_pending, host.blocks_running, host.workers, host.tasks_queued, host.tasks_running, host.workers_ready]
        if self.mpi is not None:
            st = self.mpi.status()
            per["mpi"] = _figures(st)
            for i, v in enumerate((st.blocks_pending, st.blocks_running, st.workers, st.tasks_queued, st.tasks_running, st.workers_ready)):
                total[i] += v
        for name, rt in self.runtimes.items():
            engine = self.engines.get(name)
            if engine is None:
                per[name] = {"workers": 0, "ready": 0, "blocks": 0, "tasks": 0, "failures": self.health[name].failures}
                continue
            st = engine.status()
            with self._lock:
                self._workers[name] = st.workers
            if st.workers:
                self.health[name].started()
            else:
                failed = engine.failed_starts()
                if failed:
                    self._start_failed(rt, start_failure(rt, failed[-1][1]))
                    st = EngineStatus()
            self._clean_ended_blocks(rt, engine)
            per[name] = {**_figures(st), "failures": self.health[name].failures}
            for i, v in enumerate((st.blocks_pending, st.blocks_running, st.workers, st.tasks_queued, st.tasks_running, st.workers_ready)):
                total[i] += v
        blocks_pending, blocks_running, workers, tasks_queued, tasks_running, ready = total
        return EngineStatus(blocks_pending=blocks_pending, blocks_running=blocks_running, workers=workers,
                            tasks_queued=tasks_queued, tasks_running=tasks_running, workers_ready=ready, runtimes=per)

    def saw_blocks(self, where: set[tuple[str, str]]) -> None:
        """``(runtime, block)`` pairs whose workers started tasks (see :meth:`Engine.note_seen`)."""
        for runtime in {r for r, _ in where}:
            engine = self.host if runtime == HOST else self.engines.get(runtime)
            if engine is not None:
                engine.note_seen({b for r, b in where if r == runtime})

    def ended_blocks(self) -> dict[tuple[str, str], str]:
        """``(runtime, block) -> how it ended`` for every engine's ended blocks (see :meth:`Engine.ended_blocks`)."""
        ended = {(HOST, b): why for b, why in self.host.ended_blocks().items()}
        for name, engine in list(self.engines.items()):
            ended.update(((name, b), why) for b, why in engine.ended_blocks().items())
        return ended

    def job_of(self, runtime: str, block: str) -> object:
        """The batch job id of a runtime's block (None when unknown)."""
        engine = self.host if runtime == HOST else self.engines.get(runtime)
        ex = getattr(engine, "_executor", None)
        return ex.blocks_to_job_id.get(block) if ex is not None else None

    def scale(self, now: float | None = None) -> int:
        """Scale every engine (each within its runtime's blocks and idle time)."""
        change = self.host.scale(now)
        if self.mpi is not None:
            change += self.mpi.scale(now)
        for engine in list(self.engines.values()):
            change += engine.scale(now)
        # Hot spares whose start failed come back on their own once their backoff has passed.
        for name in spares_to_restart(self.runtimes, set(self.engines), self.health, self._clock()):
            self._start_or_fail(self.runtimes[name])
        return change

    def hold(self) -> None:
        """Stopping: no engine sends another task to a worker (see :meth:`Engine.hold`)."""
        with self._lock:
            engines = list(self.engines.values())
        for engine in [self.host, *engines]:
            engine.hold()

    def shutdown(self) -> None:
        with self._lock:
            engines = list(self.engines.values())
            self.engines.clear()
        for engine in engines:
            engine.shutdown()
        if self.mpi is not None:
            self.mpi.shutdown()
        self.host.shutdown()
        if self.local:
            for rt in self.runtimes.values():
                if rt.type in CONTAINER_TYPES:
                    checks.remove_leftovers(rt, self.endpoint_id, None, "the endpoint is stopping")

    # -- helpers ---------------------------------------------------------------------------------------

    def _engine(self, rt: RuntimeConfig) -> Engine:
        engine = self.engines.get(rt.name)
        if engine is None:
            if self.local:
                problem = checks.problem(rt)
                if problem:
                    raise RuntimeUnavailable(problem)
            logger.info("starting %s", rt.describe())
            engine = self._make_engine(rt)
            engine.started_probe = self.host.started_probe
            engine.start()
            self.engines[rt.name] = engine
        return engine

    def _start_or_fail(self, rt: RuntimeConfig) -> Engine | None:
        """The runtime's engine, started now if need be; None (and the runtime backed off) if it cannot start."""
        try:
            return self._engine(rt)
        except RuntimeUnavailable as exc:
            self._start_failed(rt, str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken runtime must not stop the endpoint
            self._start_failed(rt, f"{rt.describe()}: its engine did not start: {exc}")
        return None

    def _discard(self, name: str, future: Future[bytes]) -> None:
        with self._lock:
            self._pending[name].discard(future)

    def _start_failed(self, rt: RuntimeConfig, cause: str) -> None:
        """Stop a runtime whose workers cannot start; fail its waiting tasks with the cause."""
        health = self.health[rt.name]
        message = cause
        health.start_failed(self._clock(), message)
        logger.error("%s; not retried for %.0f s", message, health.retry_at - self._clock())
        with self._lock:
            engine = self.engines.pop(rt.name, None)
            pending = list(self._pending[rt.name])
            self._pending[rt.name].clear()
            self._workers[rt.name] = 0
        for future in pending:
            if not future.done():
                with contextlib.suppress(InvalidStateError):  # settled meanwhile by Parsl's thread
                    future.set_exception(RuntimeUnavailable(message))
        if engine is not None:
            try:
                engine.shutdown()
            except Exception as exc:  # noqa: BLE001
                logger.warning("stopping %s: %s", rt.describe(), exc)

    def _clean_ended_blocks(self, rt: RuntimeConfig, engine: Engine) -> None:
        """Remove the containers of blocks that ended (a block script killed before its cleanup)."""
        if not self.local or rt.type not in CONTAINER_TYPES:
            return
        states = engine.block_states()
        ended = {b for b, st in states.items() if st in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "MISSING", "SCALED_IN")}
        if ended - self._ended[rt.name]:
            self._ended[rt.name] |= ended
            checks.remove_leftovers(rt, self.endpoint_id, set(states) - ended, "its block ended")

    def runtime_names(self) -> list[str]:
        """Runtimes this endpoint runs (reported to the service, checked at submit)."""
        return sorted({HOST, *self.runtimes})


def _figures(st: EngineStatus) -> dict[str, int]:
    return {"workers": st.workers, "ready": st.workers_ready, "blocks": st.blocks_pending + st.blocks_running,
            "tasks": st.tasks_queued + st.tasks_running}


__all__ = ["RuntimeNotSupported", "RuntimePool", "RuntimeUnavailable"]

