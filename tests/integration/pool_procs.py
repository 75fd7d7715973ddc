"""Processes for the several-forwarders tests, each killable by pid.

``python -m tests.integration.pool_procs forwarder CONFIG_JSON``: a real forwarder (real Redis,
real ZMQ) in its forwarder pool, with endpoint secrets from the config instead of a registry.

``python -m tests.integration.pool_procs site CONFIG_JSON``: a real site manager (its session,
loop, ledger and reconnection logic) whose engine is a stand-in for Parsl: each task appends its
id to a file (the side effect the tests count) and returns an empty success. Parsl is not what
these tests are about, and a real HTEX per endpoint would not fit the 2-core CI machine.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any


def forwarder(cfg: dict[str, Any]) -> None:
    from web_service.forwarder import Forwarder
    from web_service.forwarder_pool import ForwarderPool
    from web_service.redis_client import redis_from_settings
    from web_service.settings import Settings

    settings = Settings.from_env()
    store_client = redis_from_settings(settings)
    from web_service.task_store import TaskStore

    store = TaskStore(store_client)
    secrets = cfg["secrets"]
    fwd = Forwarder(store, lambda e, s: secrets.get(e) == s, cfg["bind"], heartbeat_period=cfg["period"],
                    heartbeat_threshold=cfg["threshold"], pool=ForwarderPool(store_client, cfg["bind"]),
                    replicas_ack=settings.redis_replicas_ack, replicas_timeout=settings.redis_wait_ms)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fwd.stop())
    fwd.run()


class StandInEngine:
    """Runs a task by appending its id to ``effects`` (one line per run), after ``seconds``."""

    def __init__(self, effects: str, seconds: float):
        self.effects = effects
        self.seconds = seconds
        self.pool = ThreadPoolExecutor(4)

    def start(self) -> None:
        pass

    def _run(self, task_bytes: bytes) -> bytes:
        from fnserve import messages as m

        task = m.decode_task(task_bytes)
        time.sleep(self.seconds)  # the work itself (a stand-in's), off the loop's thread
        with open(self.effects, "a") as f:
            f.write(task.task_id + "\n")
        return m.encode_result(m.ResultMessage(task_id=task.task_id, ok=True, data=b"ok", timings=task.timings))

    def submit(self, task_bytes: bytes, runtime: str | None = None, task_id: str = "") -> Future[bytes]:
        return self.pool.submit(self._run, task_bytes)

    def status(self) -> Any:
        from site_manager.status import EngineStatus

        return EngineStatus(workers=4)

    def scale(self) -> bool:
        return False

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def site(cfg: dict[str, Any]) -> None:
    from site_manager.config import EndpointConfig
    from site_manager.manager import SiteManager

    config = EndpointConfig.from_dict(cfg["config"])
    sys.exit(SiteManager(config, engine=StandInEngine(cfg["effects"], cfg.get("seconds", 0.05))).run())  # type: ignore[arg-type]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s")
    os.chdir(Path(__file__).resolve().parents[2])
    {"forwarder": forwarder, "site": site}[sys.argv[1]](json.loads(sys.argv[2]))
