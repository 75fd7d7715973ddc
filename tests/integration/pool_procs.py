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
import subprocess
import sys
import time
from contextlib import contextmanager
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

from fnserve._redis_server import free_port, redis_auth, start_redis

from web_service.forwarder_pool import ForwarderPool, owner_key
from web_service.task_store import TaskStore

REPO = Path(__file__).resolve().parents[2]
PERIOD, THRESHOLD = 0.5, 3.0  # what forwarders tell endpoints: heartbeat every 0.5 s, lost after 3 s


def wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Pool:
    """Forwarder and site manager processes for one test module, over one Redis (``r``)."""

    def __init__(self, tmp: Path, url: str, env: dict[str, str] | None = None, r: redis.Redis | None = None):
        self.tmp = tmp
        self.env = {**os.environ, "FNSERVE_REDIS_URL": url, "PYTHONPATH": str(REPO), **(env or {})}
        self.r = r if r is not None else redis.Redis.from_url(url)
        self.store = TaskStore(self.r)
        self.forwarders: dict[str, subprocess.Popen[bytes]] = {}
        self.sites: dict[str, subprocess.Popen[bytes]] = {}
        self.secrets: dict[str, str] = {}

    def _spawn(self, kind: str, cfg: dict[str, object], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "tests.integration.pool_procs", kind, json.dumps(cfg)],
                                    env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def start_forwarder(self) -> str:
        address = f"tcp://127.0.0.1:{free_port()}"
        # Secrets of the endpoints (the registry's job in production) as known when it starts.
        self.forwarders[address] = self._spawn(
            "forwarder", {"bind": address, "secrets": self.secrets, "period": PERIOD, "threshold": THRESHOLD},
            f"forwarder-{address.rsplit(':', 1)[1]}.log")
        wait(lambda: address in ForwarderPool(self.r).live(), 30, f"forwarder {address} to join the pool")
        return address

    def start_site(self, endpoint_id: str, forwarder: str, seconds: float = 0.1) -> None:
        run = self.tmp / endpoint_id
        config = {"forwarder": forwarder, "endpoint_id": endpoint_id, "secret": self.secrets[endpoint_id],
                  "run_dir": str(run), "heartbeat_period": PERIOD, "heartbeat_threshold": THRESHOLD,
                  "reconnect_delay": 0.2, "reconnect_max_delay": 1.0}
        self.sites[endpoint_id] = self._spawn("site", {"config": config, "effects": str(self.tmp / "effects.log"),
                                                       "seconds": seconds}, f"site-{endpoint_id}.log")

    def owner(self, endpoint_id: str) -> str | None:
        raw = self.r.get(owner_key(endpoint_id))
        return raw.decode() if raw else None

    def connected(self, endpoint_id: str) -> bool:
        return bool(self.store.endpoint_status(endpoint_id).get("connected"))

    def effects(self) -> Counter[str]:
        path = self.tmp / "effects.log"
        return Counter(path.read_text().split()) if path.exists() else Counter()

    def stop(self) -> None:
        for proc in [*self.sites.values(), *self.forwarders.values()]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.sites.values(), *self.forwarders.values()]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def running_pool(state: Path, endpoints: int) -> Iterator[Pool]:
    """A Pool on its own password-protected Redis in ``state``, knowing the secrets of endpoints
    ep-0 .. ep-<endpoints - 1>; its processes and Redis stopped afterwards."""
    proc, url = start_redis(state / "redis", auth=redis_auth(state))
    p = Pool(state, url)
    p.secrets.update({f"ep-{i}": f"secret-{i}" for i in range(endpoints)})
    try:
        yield p
    finally:
        p.stop()
        proc.terminate()
        proc.wait(10)


def forwarder(cfg: dict[str, Any]) -> None:
    from web_service.forwarder import Forwarder
    from web_service.redis_client import redis_from_settings
    from web_service.settings import Settings

    settings = Settings.from_env()
    store_client = redis_from_settings(settings)
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
