"""One user endpoint of a multi-user endpoint: runs as its account, takes tasks on its stdin.

``python -m site_manager.user_endpoint FOLDER``, started by ``site_manager.user_processes`` as
the account: makes FOLDER (0700, its own), logs to ``FOLDER/user_endpoint.log``, reads its
rendered endpoint config as the first frame on stdin, starts its engine (Parsl blocks as the
account, on the template's provider), and answers each task frame with two frames on stdout:
the task id and its result. A cancel frame (a JSON list of task ids) stops those tasks as on an
ordinary endpoint: noted cancelled in its control dir (a worker that has not started one skips
it) and the workers running them killed. Walltime is enforced from outside here too
(``site_manager.walltime``): a task still running past walltime + grace has its worker killed and
fails ``walltime_exceeded``, never retried. It stops on SIGTERM, or when stdin closes (the
multi-user endpoint stopped, died, or found it idle), taking its blocks with it.
"""

from __future__ import annotations

import functools

import json
import logging
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from fnserve.messages import decode_task, encode_result
from node_manager import parent_watch
from node_manager.running import tasks_started
from site_manager.cancel import kill_tasks
from site_manager.config import EndpointConfig
from site_manager.failures import failure_result
from site_manager.inbox import Inbox
from site_manager.engine_submit import submit_task
from site_manager.resources import endpoint_offers
from site_manager.runtime_pool import RuntimePool
from site_manager.user_processes import CANCEL, TASK, read_frame, write_frame
from site_manager.walltime import DEFAULT_GRACE, lost_past_walltime, overdue, walltime_result

logger = logging.getLogger("site_manager.user_endpoint")
SCALE_PERIOD = 1.0  # seconds between looks at the blocks (the site manager's heartbeat pace)
_END = (b"", b"")  # on the task inbox: stdin closed
Done = tuple[str, bytes, bool]  # task id, encoded result, whether its worker was lost


def _finished(done: Inbox[Done], task_id: str, future: Future[bytes]) -> None:
    exc = future.exception()
    if exc is None:
        done.put((task_id, future.result(), False))
        return
    failure = failure_result(task_id, exc)
    done.put((task_id, encode_result(failure), failure.error is not None and failure.error.code == "worker_lost"))


class _Walltimes:
    """Tasks with a walltime running here: when each started (its worker's note), and which
    were already answered ``walltime_exceeded`` (their killed worker's report is dropped)."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.limits: dict[str, tuple[float, float]] = {}  # task id -> (walltime, grace)
        self.started: dict[str, float] = {}
        self.answered: set[str] = set()

    def overdue(self, now: float) -> list[tuple[str, bytes]]:
        """Kill the workers of tasks past walltime + grace; their results, to send now."""
        if not self.limits:
            return []
        self.started.update({t: at for t, (_, at) in tasks_started(self.control, set(self.limits)).items()})
        late = [t for t, (wall, grace) in self.limits.items() if overdue(self.started, {t: wall}, now, grace)]
        if not late:
            return []
        logger.warning("task(s) %s ran past walltime + grace: killing their workers", ", ".join(late))
        kill_tasks(self.control, tuple(late))
        self.answered.update(late)
        return [(t, encode_result(walltime_result(t, *self.limits.pop(t)))) for t in late]

    def finished(self, task_id: str, result: bytes, lost: bool, now: float) -> bytes | None:
        """The result to send for a task that ended (None: already answered); a lost worker
        of a task past walltime + grace (its watchdog killed it) is ``walltime_exceeded``."""
        if task_id in self.answered:
            self.answered.discard(task_id)
            return None
        limits, started = self.limits.pop(task_id, None), self.started.pop(task_id, None)
        if lost and limits is not None and lost_past_walltime(started, limits[0], limits[1], now):
            return encode_result(walltime_result(task_id, *limits))
        return result


def serve(folder: Path, config: EndpointConfig, engine: RuntimePool, tasks: Inbox[tuple[bytes, bytes]], results: IO[bytes],
          stop: threading.Event) -> None:
    offers = endpoint_offers(config)
    control = folder / "control"
    done: Inbox[Done] = Inbox()
    walltimes = _Walltimes(control)
    scaled_at = 0.0
    while not stop.is_set():
        select.select([tasks.fileno(), done.fileno()], [], [], SCALE_PERIOD)
        for kind, body in tasks.drain():
            if (kind, body) == _END:
                stop.set()
                break
            if kind == CANCEL:  # stopped as on an ordinary endpoint; the multi-user endpoint drops their results
                kill_tasks(control, tuple(json.loads(body)))
                continue
            if kind != TASK:
                logger.error("dropping a message of unknown kind %r from the multi-user endpoint", kind[:20])
                continue
            task = decode_task(body)
            task.control_dir = str(control)  # its own, not the multi-user endpoint's
            tid = task.task_id
            try:
                future = submit_task(engine, task, config, offers)
            except Exception as exc:  # noqa: BLE001 - fail the task with its code, keep serving
                done.put((tid, encode_result(failure_result(tid, exc)), False))
                continue
            if task.walltime:
                walltimes.limits[tid] = (task.walltime, DEFAULT_GRACE if task.walltime_grace is None else task.walltime_grace)
            future.add_done_callback(functools.partial(_finished, done, tid))
        for tid, result in walltimes.overdue(time.time()):
            write_frame(results, tid.encode(), result)
        for tid, result, lost in done.drain():
            answer = walltimes.finished(tid, result, lost, time.time())
            if answer is not None:
                write_frame(results, tid.encode(), answer)
        if time.monotonic() - scaled_at >= SCALE_PERIOD:
            scaled_at = time.monotonic()
            engine.status()
            engine.scale()


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / "control").mkdir(mode=0o700, exist_ok=True)
    os.chdir(folder)
    logging.basicConfig(level=logging.INFO, filename=str(folder / "user_endpoint.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Tasks come on the stdin and results go on the stdout we were given, through private
    # descriptors our blocks do not inherit; anything printed goes to stderr, nothing reads 0.
    results = os.fdopen(os.dup(1), "wb")
    stdin = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    first = read_frame(stdin)
    if first is None:
        return 1
    config = EndpointConfig.from_dict(json.loads(first))
    stop = threading.Event()
    tasks: Inbox[tuple[bytes, bytes]] = Inbox()

    def read_tasks() -> None:
        while (kind := read_frame(stdin)) is not None and (body := read_frame(stdin)) is not None:
            tasks.put((kind, body))
        tasks.put(_END)  # the multi-user endpoint closed our stdin, or died

    def end(*_: object) -> None:
        stop.set()
        tasks.wake()

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    os.environ[parent_watch.ENV] = parent_watch.identity()  # our worker pools end with us
    threading.Thread(target=read_tasks, daemon=True).start()  # now: the sender never waits on a full pipe
    engine = RuntimePool.from_config(config)
    engine.start()
    logger.info("user endpoint %s serving as uid %d in %s", config.endpoint_id, os.getuid(), folder)
    try:
        serve(folder, config, engine, tasks, results, stop)
    finally:
        engine.shutdown()
        logger.info("user endpoint %s stopped", config.endpoint_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
