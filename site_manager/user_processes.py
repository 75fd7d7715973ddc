"""The multi-user endpoint's engine: start user endpoints as their accounts and relay tasks to them.

Each user endpoint (``python -m site_manager.user_endpoint FOLDER``) runs as its account:
``setgid``/``initgroups``/``setuid`` through :class:`subprocess.Popen` (``user``, ``group``,
``extra_groups``), umask 077, a clean environment with the account's own ``HOME``, working in
``USER_ENDPOINTS_DIR/ACCOUNT/NAME`` (0700, owned by the account). It reads its rendered config
as one JSON line on stdin and stops when stdin closes (this process died) or on SIGTERM. Tasks and
results move over a ZMQ ``ipc://`` socket in that folder: only the account (and root) can reach it.

Decisions are in ``site_manager.user_endpoints``; this module only does the I/O.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from fnserve.messages import decode_task, encode_task
from fnserve.user_endpoint_config import unstamp
from site_manager.config import EndpointConfig
from site_manager.failures import EngineLost
from site_manager.inbox import Inbox
from site_manager.status import EngineStatus
from site_manager.user_endpoints import Placement, place_task, render_user_config

logger = logging.getLogger(__name__)
SOCKET = "tasks.sock"
# A clean environment: nothing of root's leaks into the account's processes.
_PATH = "/usr/local/bin:/usr/bin:/bin"


def uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def run_mapping_command(argv: Sequence[str], stdin: str) -> str:
    """An external identity-mapping command's answer (its stdout); a failure maps to nothing."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.error("identity mapping command %s failed: %s", argv[0], exc)
        return ""
    if done.returncode != 0:
        logger.error("identity mapping command %s exited %d: %s", argv[0], done.returncode, done.stderr[-500:])
        return ""
    return done.stdout


def user_folder(base: Path, placement: Placement) -> Path:
    """``BASE/ACCOUNT/NAME``, each account's folder 0700 and owned by it (made here, as root)."""
    pw = pwd.getpwnam(placement.account)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o711)  # others may pass through to their own folder, not list the accounts
    folder = base / placement.account
    for path in (folder, folder / placement.name):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o700)
    return folder / placement.name


def spawn_user_endpoint(placement: Placement, folder: Path, python: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the user endpoint as its account (the only privileged step of a multi-user endpoint)."""
    pw = pwd.getpwnam(placement.account)
    home = pw.pw_dir if os.path.isdir(pw.pw_dir) else str(folder)
    env = {"HOME": home, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell or "/bin/sh", "PATH": _PATH,
           "LANG": "C.UTF-8"}
    log_path = folder / "user_endpoint.log"
    with open(log_path, "ab") as log:
        os.chown(log_path, pw.pw_uid, pw.pw_gid)
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            [python, "-m", "site_manager.user_endpoint", str(folder)], user=pw.pw_uid, group=pw.pw_gid,
            extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid), umask=0o077, env=env, cwd=folder,
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    proc.stdin.flush()  # kept open: the user endpoint stops when it closes (this process died)
    logger.info("started user endpoint %s as %s (uid %d), pid %d", placement.name, pw.pw_name, pw.pw_uid, proc.pid)
    return proc


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    socket: zmq.Socket[bytes]


class UserEndpoints:
    """Engine interface (``start``/``submit``/``status``/``scale``/``hold``/``shutdown``) that
    runs each task on its submitter's user endpoint, starting it on the first task."""

    def __init__(self, config: EndpointConfig) -> None:
        assert config.multi_user is not None
        self.config = config
        self.mu = config.multi_user
        self.base = Path(self.mu.user_endpoints_dir)
        self._configs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, Future[bytes]]] = {}  # task id -> (user endpoint, future)
        self._outbox: Inbox[tuple[Placement, bytes]] = Inbox()
        self._children: dict[str, _Child] = {}  # touched by the relay thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="user-endpoints", daemon=True)
        self._context = zmq.Context()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a multi-user endpoint runs as root: it starts each user endpoint as its account")
        self._thread.start()

    def submit(self, task_bytes: bytes, runtime: str | None = None, task_id: str = "") -> Future[bytes]:
        task = decode_task(task_bytes)
        own, stamp = unstamp(task.resource_specification)
        placement = place_task(stamp, self.mu.rules or [], self.mu.schema, uid_of=uid_of, run=run_mapping_command)
        if placement.name not in self._configs:  # rendered once per user endpoint (a bad value fails this task)
            folder = self.base / placement.account / placement.name
            self._configs[placement.name] = render_user_config(self.mu.template_text, placement.values, {
                # It talks to no forwarder: this process relays over its socket (named here for the record).
                "forwarder": f"ipc://{folder / SOCKET}", "endpoint_id": f"{self.config.endpoint_id}.{placement.name}", "secret": "-",
                "run_dir": str(folder / "run")})
        task.resource_specification = own
        future: Future[bytes] = Future()
        with self._lock:
            self._pending[task.task_id] = (placement.name, future)
        self._outbox.put((placement, encode_task(task)))
        return future

    def submit_mpi(self, task_bytes: bytes, resource_spec: dict[str, object], task_id: str = "") -> Future[bytes]:
        return self.submit(task_bytes, task_id=task_id)  # the user endpoint's own config decides

    def status(self) -> EngineStatus:
        with self._lock:
            return EngineStatus(workers=len(self._children), tasks_running=len(self._pending))

    def scale(self, now: float | None = None) -> int:
        return 0  # each user endpoint scales its own blocks

    def hold(self) -> None:
        pass

    def shutdown(self) -> None:
        self._stop.set()
        self._outbox.wake()
        if self._thread.is_alive():
            self._thread.join(self.mu.stop_timeout + 10)
        self._context.term()

    # -- the relay thread ---------------------------------------------------------------------

    def _relay(self) -> None:
        poller = zmq.Poller()
        poller.register(self._outbox.fileno(), zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(1000))
                for placement, body in self._outbox.drain():
                    self._send(poller, placement, body)
                for name, child in list(self._children.items()):
                    if child.socket in ready:
                        self._receive(child)
                    if child.proc.poll() is not None:
                        self._lost(poller, name, f"its process exited with status {child.proc.returncode}")
        finally:
            for name in list(self._children):
                self._stop_child(poller, name)

    def _send(self, poller: zmq.Poller, placement: Placement, body: bytes) -> None:
        child = self._children.get(placement.name)
        if child is None:
            try:
                folder = user_folder(self.base, placement)
                proc = spawn_user_endpoint(placement, folder, self.mu.python, self._configs[placement.name])
            except (OSError, KeyError, subprocess.SubprocessError) as exc:
                self._fail(placement.name, RuntimeError(f"cannot start the user endpoint of {placement.account}: {exc}"))
                return
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{folder / SOCKET}")
            poller.register(sock, zmq.POLLIN)
            child = self._children[placement.name] = _Child(proc, sock)
        child.socket.send(body)

    def _receive(self, child: _Child) -> None:
        while True:
            try:
                task_id, result = child.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._lock:
                entry = self._pending.pop(task_id.decode(), None)
            if entry is not None:
                with contextlib.suppress(Exception):
                    entry[1].set_result(result)

    def _fail(self, name: str, exc: BaseException) -> None:
        with self._lock:
            lost = [(t, f) for t, (n, f) in self._pending.items() if n == name]
            for t, _ in lost:
                self._pending.pop(t, None)
        for _, future in lost:
            with contextlib.suppress(Exception):
                future.set_exception(exc)

    def _lost(self, poller: zmq.Poller, name: str, why: str) -> None:
        logger.warning("user endpoint %s ended: %s", name, why)
        self._stop_child(poller, name)
        self._fail(name, EngineLost(f"the user endpoint {name} ended ({why})"))

    def _stop_child(self, poller: zmq.Poller, name: str) -> None:
        child = self._children.pop(name)
        poller.unregister(child.socket)
        child.socket.close()
        if child.proc.poll() is None:
            child.proc.terminate()
            try:
                child.proc.wait(self.mu.stop_timeout)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        if child.proc.stdin is not None:
            child.proc.stdin.close()
