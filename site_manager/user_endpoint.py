"""One user endpoint of a multi-user endpoint: runs as its account, takes tasks on its stdin.

``python -m site_manager.user_endpoint FOLDER``, started by ``site_manager.user_processes`` as
the account: makes FOLDER (0700, its own), logs to ``FOLDER/user_endpoint.log``, reads its
rendered endpoint config as the first frame on stdin, starts its engine (Parsl blocks as the
account, on the template's provider), and answers each task frame with two frames on stdout:
the task id and its result. It stops on SIGTERM, or when stdin closes (the multi-user endpoint
stopped or died), taking its blocks with it.
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
from site_manager.config import EndpointConfig
from site_manager.failures import failure_result
from site_manager.inbox import Inbox
from site_manager.engine_submit import submit_task
from site_manager.resources import endpoint_offers
from site_manager.runtime_pool import RuntimePool
from site_manager.user_processes import read_frame, write_frame

logger = logging.getLogger("site_manager.user_endpoint")
SCALE_PERIOD = 1.0  # seconds between looks at the blocks (the site manager's heartbeat pace)
_END = b""  # on the task inbox: stdin closed


def _result_bytes(task_id: str, future: Future[bytes]) -> bytes:
    exc = future.exception()
    return encode_result(failure_result(task_id, exc)) if exc is not None else future.result()


def _finished(done: Inbox[tuple[str, bytes]], task_id: str, future: Future[bytes]) -> None:
    done.put((task_id, _result_bytes(task_id, future)))


def serve(folder: Path, config: EndpointConfig, engine: RuntimePool, tasks: Inbox[bytes], results: IO[bytes],
          stop: threading.Event) -> None:
    offers = endpoint_offers(config)
    done: Inbox[tuple[str, bytes]] = Inbox()
    scaled_at = 0.0
    while not stop.is_set():
        select.select([tasks.fileno(), done.fileno()], [], [], SCALE_PERIOD)
        for body in tasks.drain():
            if body == _END:
                stop.set()
                break
            task = decode_task(body)
            task.control_dir = str(folder / "control")  # its own, not the multi-user endpoint's
            tid = task.task_id
            try:
                future = submit_task(engine, task, config, offers)
            except Exception as exc:  # noqa: BLE001 - fail the task with its code, keep serving
                done.put((tid, encode_result(failure_result(tid, exc))))
                continue
            future.add_done_callback(functools.partial(_finished, done, tid))
        for tid, result in done.drain():
            write_frame(results, tid.encode(), result)
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
    tasks: Inbox[bytes] = Inbox()

    def read_tasks() -> None:
        while (frame := read_frame(stdin)) is not None:
            tasks.put(frame)
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
