"""What the site manager needs of the thing that runs its tasks: :class:`EngineLike`.

Two classes satisfy it: :class:`~site_manager.engine.Engine` (one Parsl executor and its
blocks) and :class:`~site_manager.runtime_pool.RuntimePool` (one engine per runtime, plus the
MPI one), which the site manager runs by default. mypy checks both against it (below).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

from site_manager.status import EngineStatus


class EngineLike(Protocol):
    # Which of some task ids a worker started (set by the site manager; used when an engine restarts).
    started_probe: Callable[[set[str]], set[str]] | None

    def start(self) -> None:
        """Start the interchange (and any hot-spare blocks)."""

    def submit(self, task_bytes: bytes, *, task_id: str = "") -> Future[bytes]:
        """Run one encoded task on the default runtime; the future holds its encoded result."""
        ...

    def status(self) -> EngineStatus:
        """Blocks, workers and tasks now (asked at heartbeat pace)."""
        ...

    def scale(self, now: float | None = None) -> int:
        """Start or cancel blocks as the load asks; returns the change in blocks."""
        ...

    def saw_blocks(self, where: set[tuple[str, str]]) -> None:
        """``(runtime, block)`` pairs whose workers started tasks: those blocks had workers."""

    def hold(self) -> None:
        """Stopping: send no further task to a worker."""

    def shutdown(self) -> None:
        """Stop the interchange and cancel every block."""


if TYPE_CHECKING:
    from site_manager.engine import Engine
    from site_manager.runtime_pool import RuntimePool

    def _both_are_engine_like(engine: Engine, pool: RuntimePool) -> tuple[EngineLike, EngineLike]:
        return engine, pool  # mypy: both satisfy the protocol
