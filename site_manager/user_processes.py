"""The multi-user endpoint's engine: start user endpoints as their accounts and relay tasks to them.

Each user endpoint (``python -m site_manager.user_endpoint FOLDER``) runs as its account:
``setgid``/``initgroups``/``setuid`` through :class:`subprocess.Popen` (``user``, ``group``,
``extra_groups``), umask 077, a clean environment with the account's own ``HOME``, working in
``USER_ENDPOINTS_DIR/ACCOUNT`` (0700, owned by the account; root makes only that folder, inside
its own 0711 one, and never touches what the account keeps in it). Tasks and results move over
the child's stdin and stdout (length-prefixed frames, :func:`write_frame`; on stdin each message is
two frames, its kind, :data:`TASK` or :data:`CANCEL`, then its body): pipes no other
account can open, with no path in the file system that root would follow. The user endpoint
stops when its stdin closes (this process stopped or died, or the user endpoint was idle for
``idle_timeout``: the next task starts it again) or on SIGTERM. A cancel is sent as a frame: the
user endpoint stops the task as the account (root writes nothing into the account's folders).

Decisions are in ``site_manager.user_endpoints``; this module only does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable

import contextlib
import json
import logging
import time
import os
import pwd
import stat
import struct
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from fnserve.messages import decode_task, encode_task
from fnserve.user_endpoint_config import unstamp
from site_manager.config import EndpointConfig
from site_manager.failures import EngineLost
from site_manager.status import EngineStatus
from site_manager.user_endpoints import Placement, idle_children, place_task, render_user_config

logger = logging.getLogger(__name__)
# A clean environment: nothing of root's leaks into the account's processes.
_PATH = "/usr/local/bin:/usr/bin:/bin"
_LENGTH = struct.Struct(">I")
MAX_FRAME = 1 << 31
# Kinds of the messages on a user endpoint's stdin (the body follows in a frame of its own).
TASK = b"task"  # an encoded task
CANCEL = b"cancel"  # a JSON list of task ids to stop (not run if not started; kill the worker if running)


def write_frame(out: IO[bytes], *parts: bytes) -> None:
    """Write ``parts`` as one frame each (4-byte big-endian length, then the bytes) and flush."""
    out.write(b"".join(_LENGTH.pack(len(p)) + p for p in parts))
    out.flush()


def read_frame(inp: IO[bytes]) -> bytes | None:
    """The next frame, or None at the end of the stream."""
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = inp.read(size) if size < MAX_FRAME else b""
    return body if len(body) == size else None


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


def account_folder(base: Path, account: str) -> Path:
    """``BASE/ACCOUNT``, 0700 and owned by the account, in root's 0711 ``BASE`` (only root can
    put anything there, so the folder is what root made: no symlink to follow)."""
    pw = pwd.getpwnam(account)
    base.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(base, 0o711)  # others may pass through to their own folder, not list the accounts
    folder = base / account
    folder.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or os.lstat(base).st_uid != 0:
        raise PermissionError(f"{folder} is not a folder root made (check {base}: root's, mode 0711)")
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    os.chmod(folder, 0o700)
    return folder


def spawn_user_endpoint(placement: Placement, folder: Path, python: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the user endpoint as its account (the only privileged step of a multi-user endpoint)."""
    pw = pwd.getpwnam(placement.account)
    home = pw.pw_dir if os.path.isdir(pw.pw_dir) else str(folder)
    env = {"HOME": home, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell or "/bin/sh", "PATH": _PATH,
           "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [python, "-m", "site_manager.user_endpoint", str(folder / placement.name)], user=pw.pw_uid, group=pw.pw_gid,
        extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid), umask=0o077, env=env, cwd=folder,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, close_fds=True)
    assert proc.stdin is not None
    write_frame(proc.stdin, json.dumps(config).encode())
    logger.info("started user endpoint %s as %s (uid %d), pid %d", placement.name, pw.pw_name, pw.pw_uid, proc.pid)
    return proc


class _Child:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lock = threading.Lock()  # one writer at a time on its stdin
        self.last_used = time.monotonic()  # a task sent or a result received (idle shutdown)


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
        self._pending: dict[str, tuple[_Child, Future[bytes]]] = {}  # task id -> (the process running it, future)
        self._children: dict[str, _Child] = {}
        # The site manager's probe of which tasks a worker started: each user endpoint keeps its own.
        self.started_probe: Callable[[set[str]], set[str]] | None = None
        self._stopping = threading.Event()
        self._idle_wake = threading.Event()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a multi-user endpoint runs as root: it starts each user endpoint as its account")
        threading.Thread(target=self._idle_loop, name="user-endpoints-idle", daemon=True).start()

    def submit(self, task_bytes: bytes, runtime: str | None = None, task_id: str = "") -> Future[bytes]:
        task = decode_task(task_bytes)
        own, stamp = unstamp(task.resource_specification)
        placement = place_task(stamp, self.mu.rules or [], self.mu.schema, uid_of=uid_of, run=run_mapping_command)
        if placement.name not in self._configs:  # rendered once per user endpoint (a bad value fails this task)
            folder = self.base / placement.account / placement.name
            self._configs[placement.name] = render_user_config(self.mu.template_text, placement.values, {
                # It talks to no forwarder (this process relays); named for the record only.
                "forwarder": "ipc://relayed-by-the-multi-user-endpoint", "secret": "-",
                "endpoint_id": f"{self.config.endpoint_id}.{placement.name}", "run_dir": str(folder / "run")})
        task.resource_specification = own
        future: Future[bytes] = Future()
        try:
            child = self._child(placement)
        except (OSError, subprocess.SubprocessError) as exc:
            future.set_exception(EngineLost(f"cannot start the user endpoint of {placement.account}: {exc}"))
            return future
        with self._lock:
            self._pending[task.task_id] = (child, future)
        try:
            with child.lock:
                assert child.proc.stdin is not None
                write_frame(child.proc.stdin, TASK, encode_task(task))
        except (OSError, ValueError) as exc:  # it died meanwhile (its reader may have failed the rest already)
            with self._lock:
                mine = self._pending.pop(task.task_id, None)
            if mine is not None:
                future.set_exception(EngineLost(f"the user endpoint {placement.name} does not take tasks: {exc}"))
        return future

    def cancel(self, task_ids: tuple[str, ...]) -> None:
        """Stop these (cancelled, or past their walltime) tasks: each user endpoint holding one
        gets a cancel frame and stops it as its account (not run if not started, worker killed
        if running). Their results come back as usual; the session drops them."""
        by_child: dict[int, tuple[_Child, list[str]]] = {}
        with self._lock:
            for t in task_ids:
                entry = self._pending.get(t)
                if entry is not None:
                    by_child.setdefault(id(entry[0]), (entry[0], []))[1].append(t)
        for child, ids in by_child.values():
            try:
                with child.lock:
                    assert child.proc.stdin is not None
                    write_frame(child.proc.stdin, CANCEL, json.dumps(ids).encode())
                logger.info("cancel of %s sent to user endpoint pid %d", ", ".join(ids), child.proc.pid)
            except (OSError, ValueError) as exc:  # it ended: its tasks fail as lost, and are dropped
                logger.warning("cannot send the cancel of %s to user endpoint pid %d: %s", ", ".join(ids), child.proc.pid, exc)

    def submit_mpi(self, task_bytes: bytes, resource_spec: dict[str, object], task_id: str = "") -> Future[bytes]:
        return self.submit(task_bytes, task_id=task_id)  # the user endpoint's own config decides

    def status(self) -> EngineStatus:
        with self._lock:
            return EngineStatus(workers=len(self._children), tasks_running=len(self._pending))

    def scale(self, now: float | None = None) -> int:
        return 0  # each user endpoint scales its own blocks

    def saw_blocks(self, where: set[tuple[str, str]]) -> None:
        pass  # the user endpoints' own site managers track their blocks

    def hold(self) -> None:
        pass

    def shutdown(self) -> None:
        self._stopping.set()
        self._idle_wake.set()
        with self._lock:
            children = list(self._children.items())
        for name, child in children:
            self._stop_child(name, child)

    # -- children -------------------------------------------------------------------------------

    def _child(self, placement: Placement) -> _Child:
        with self._lock:  # (under the lock: the idle loop stops it before, or sees it used)
            child = self._children.get(placement.name)
            if child is not None:
                child.last_used = time.monotonic()  # not idle: a task goes to it now
        if child is not None and child.proc.poll() is None:
            return child
        folder = account_folder(self.base, placement.account)
        child = _Child(spawn_user_endpoint(placement, folder, self.mu.python, self._configs[placement.name]))
        with self._lock:
            self._children[placement.name] = child
        threading.Thread(target=self._read_results, args=(placement.name, child), name=f"user-endpoint-{placement.name}",
                         daemon=True).start()
        self._idle_wake.set()  # its idle deadline counts from now
        return child

    def _read_results(self, name: str, child: _Child) -> None:
        """Resolve each task's future as its result comes; at the end of the stream, the child
        is gone: fail what it held (worker_lost, so run again within max_retries)."""
        assert child.proc.stdout is not None
        while True:
            task_id, result = read_frame(child.proc.stdout), read_frame(child.proc.stdout)
            if task_id is None or result is None:
                break
            child.last_used = time.monotonic()
            with self._lock:
                entry = self._pending.pop(task_id.decode(), None)
                idle = not any(c is child for c, _ in self._pending.values())
            if idle:
                self._idle_wake.set()  # idle from now: the idle loop sets its deadline
            if entry is not None:
                with contextlib.suppress(Exception):
                    entry[1].set_result(result)
        status = child.proc.wait()
        logger.warning("user endpoint %s ended (exit status %s)", name, status)
        with self._lock:
            if self._children.get(name) is child:
                self._children.pop(name)
        self._fail(child, EngineLost(f"the user endpoint {name} ended (exit status {status})"))

    def _fail(self, child: _Child, exc: BaseException) -> None:
        with self._lock:
            lost = [(t, f) for t, (c, f) in self._pending.items() if c is child]
            for t, _ in lost:
                self._pending.pop(t, None)
        for _, future in lost:
            with contextlib.suppress(Exception):
                future.set_exception(exc)

    def _idle_loop(self) -> None:
        """Close the stdin of user endpoints idle for ``idle_timeout`` (they exit cleanly; the
        next task for them starts them again)."""
        timeout = self.mu.idle_timeout
        while not self._stopping.is_set():
            self._idle_wake.clear()  # before looking: a wake-up from now on is not lost
            with self._lock:
                busy = {id(c) for c, _ in self._pending.values()}
                last = {name: c.last_used for name, c in self._children.items() if id(c) not in busy}
            idle, next_at = idle_children(last, time.monotonic(), timeout)
            for name in idle:
                with self._lock:
                    child = self._children.get(name)
                    if child is None or any(c is child for c, _ in self._pending.values()) or \
                            time.monotonic() - child.last_used < timeout:  # a task came meanwhile
                        continue
                    self._children.pop(name)  # a new task starts another
                logger.info("user endpoint %s idle for %g s: stopping it", name, timeout)
                with child.lock, contextlib.suppress(OSError):
                    assert child.proc.stdin is not None
                    child.proc.stdin.close()
            self._idle_wake.wait(None if next_at is None else max(0.0, next_at - time.monotonic()))

    def _stop_child(self, name: str, child: _Child) -> None:
        if child.proc.poll() is None:
            child.proc.terminate()
            try:
                child.proc.wait(self.mu.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("user endpoint %s did not stop in %g s: killing it", name, self.mu.stop_timeout)
                child.proc.kill()
                child.proc.wait()
        with contextlib.suppress(OSError):
            if child.proc.stdin is not None:
                child.proc.stdin.close()
