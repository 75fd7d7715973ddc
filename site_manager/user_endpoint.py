"""One user endpoint of a multi-user endpoint: runs as its account, serves tasks on a local socket.

``python -m site_manager.user_endpoint FOLDER``, started by ``site_manager.user_processes`` (as
the account, in FOLDER, 0700): reads its rendered endpoint config as one JSON line on stdin,
starts its engine (Parsl blocks as the account, on the template's provider), and answers each
task message on ``ipc://FOLDER/tasks.sock`` with its result. It stops on SIGTERM, or when stdin
closes (the multi-user endpoint died), taking its blocks with it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import zmq

from fnserve.messages import decode_task, encode_result
from node_manager import parent_watch
from site_manager.config import EndpointConfig
from site_manager.failures import failure_result
from site_manager.inbox import Inbox
from site_manager.resources import endpoint_offers, submit_routed
from site_manager.runtime_pool import RuntimePool
from site_manager.user_processes import SOCKET

logger = logging.getLogger("site_manager.user_endpoint")
SCALE_PERIOD = 1.0  # seconds between looks at the blocks (the site manager's heartbeat pace)


def _result_bytes(task_id: str, future: Future[bytes]) -> bytes:
    exc = future.exception()
    return encode_result(failure_result(task_id, exc)) if exc is not None else future.result()


def serve(folder: Path, config: EndpointConfig, engine: RuntimePool, stop: threading.Event, done: Inbox[tuple[bytes, str, bytes]]) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    path = folder / SOCKET
    path.unlink(missing_ok=True)
    sock.bind(f"ipc://{path}")
    os.chmod(path, 0o600)
    offers = endpoint_offers(config)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(done.fileno(), zmq.POLLIN)
    scaled_at = 0.0
    try:
        while not stop.is_set():
            ready = dict(poller.poll(SCALE_PERIOD * 1000))
            if sock in ready:
                while True:
                    try:
                        peer, body = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    task = decode_task(body)
                    task.control_dir = str(folder / "control")  # its own, not the multi-user endpoint's
                    tid = task.task_id
                    try:
                        future = submit_routed(engine, task, config, offers)
                    except Exception as exc:  # noqa: BLE001 - fail the task with its code, keep serving
                        done.put((peer, tid, encode_result(failure_result(tid, exc))))
                        continue
                    future.add_done_callback(lambda f, p=peer, t=tid: done.put((p, t, _result_bytes(t, f))))
            for peer, tid, result in done.drain():
                sock.send_multipart([peer, tid.encode(), result])
            if time.monotonic() - scaled_at >= SCALE_PERIOD:
                scaled_at = time.monotonic()
                engine.status()
                engine.scale()
    finally:
        sock.close()
        context.term()
        path.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = EndpointConfig.from_dict(json.loads(sys.stdin.readline()))
    stop = threading.Event()
    done: Inbox[tuple[bytes, str, bytes]] = Inbox()

    def on_stop(*_: object) -> None:
        stop.set()
        done.wake()

    def watch_parent() -> None:
        sys.stdin.read()  # returns at EOF: the multi-user endpoint closed our stdin or died
        on_stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    threading.Thread(target=watch_parent, daemon=True).start()
    os.environ[parent_watch.ENV] = parent_watch.identity()  # our worker pools end with us
    (folder / "control").mkdir(mode=0o700, exist_ok=True)
    engine = RuntimePool.from_config(config)
    engine.start()
    logger.info("user endpoint %s serving as uid %d in %s", config.endpoint_id, os.getuid(), folder)
    try:
        serve(folder, config, engine, stop, done)
    finally:
        engine.shutdown()
        logger.info("user endpoint %s stopped", config.endpoint_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
