"""Another account on the same host attacks the embedded stack (`fnserve up`), as a hostile user
of a shared login node would: through the HTEX interchange's worker port, through Redis (its TCP
port and its unix socket), and by reading state files. The account is a real one (useradd) and
runs its attacks with runuser; the stack lives in a 0755 folder under /tmp, like a home folder
that others may look into.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest
import redis
from stack_support import running_stack

from tests.os_accounts import shared_host_dir

pytestmark = pytest.mark.integration

# Sent by the attacker to the interchange's worker port: a pickle that runs a shell command
# when unpickled. argv: port, marker file, [server public key, client public, client secret].
PICKLE_ATTACK = r'''
import os, pickle, sys, zmq
port, marker = sys.argv[1], sys.argv[2]

class Attack:
    def __reduce__(self):
        return (os.system, ("echo pwned-by-$(id -un) >> " + marker,))

sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 2000)
if len(sys.argv) > 3:  # CurveZMQ with the server's public key but a keypair of our own
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (k.encode() for k in sys.argv[3:6])
sock.connect("tcp://127.0.0.1:" + port)
sock.send(pickle.dumps(Attack()))
sock.poll(1500)
sock.close()
print("sent")
'''

REDIS_READ = r'''
import sys, redis
r = redis.Redis.from_url(sys.argv[1], socket_timeout=3)
try:
    print("payload:", r.hget("fns:task:" + sys.argv[2], "payload"))
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
'''


@pytest.fixture(scope="module")
def stack():
    with shared_host_dir() as base, running_stack(base / "home") as st:
        yield st


def _interchange_port(stack) -> int:
    log = stack.home / "endpoints/local/run/engine/fnserve/interchange.log"
    deadline = time.monotonic() + 30
    while True:
        found = re.findall(r"Bound to port (\d+) for incoming worker connections", log.read_text() if log.exists() else "")
        if found:
            return int(found[-1])
        assert time.monotonic() < deadline, f"no worker port in {log}"
        time.sleep(0.2)


def _service_redis(stack) -> redis.Redis:
    """The service's own Redis connection: the URL the forwarder runs with."""
    pid = int((stack.home / "service/run/forwarder.pid").read_text())  # (gunicorn's proctitle clobbers its environ)
    env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
    return redis.Redis.from_url(env[b"FNSERVE_REDIS_URL"].decode())


def _slow_task(stack) -> tuple[str, str]:
    """A task whose payload sits in Redis while the attacks run: (task id, its function id)."""
    fc = stack.client()
    fid = fc.register_source("def nap(s):\n    import time\n    time.sleep(s)\n    return s\n", "nap")
    return fc.run(fid, stack.endpoint_id, 0.05), fid


def test_interchange_runs_no_pickle_from_another_account_and_real_tasks_still_run(stack, attacker):
    port = _interchange_port(stack)
    marker = stack.tmp / "interchange-marker"
    # The interchange listens on loopback only (local blocks): not on the host's other interfaces.
    bound = (stack.home / "endpoints/local/run/engine/fnserve/interchange.log").read_text()
    assert f"tcp://*:{port}" not in bound
    out = attacker.python(PICKLE_ATTACK, str(port), str(marker))
    assert out.returncode == 0 and "sent" in out.stdout, out.stderr
    time.sleep(1.0)  # the interchange would have unpickled it at once
    assert not marker.exists(), f"the interchange ran the attacker's pickle: {marker.read_text()}"
    # Even holding the server's public key (it is not secret in principle), an account with a
    # keypair of its own is refused by the interchange's authenticator.
    cert_dir = stack.home / "endpoints/local/run/engine/fnserve/certificates"
    import zmq.auth

    server_public = zmq.auth.load_certificate(str(cert_dir / "server.key"))[0].decode()
    own_public, own_secret = zmq.curve_keypair()
    out = attacker.python(PICKLE_ATTACK, str(port), str(marker), server_public, own_public.decode(), own_secret.decode())
    assert out.returncode == 0, out.stderr
    time.sleep(1.0)  # the interchange would have unpickled at once
    assert not marker.exists(), f"the interchange ran the attacker's pickle: {marker.read_text()}"
    # The keys are where only the endpoint's account can read them.
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o700
    assert not attacker.can_list(cert_dir)
    # Real tasks still run through the encrypted interchange.
    fc = stack.client()
    fid = fc.register_source("def double(x):\n    return 2 * x\n", "double")
    assert fc.call(fid, stack.endpoint_id, 21) == 42


def test_redis_gives_another_account_neither_payloads_nor_a_queue(stack, attacker):
    task_id, _ = _slow_task(stack)
    r = _service_redis(stack)
    port = _redis_port(stack)
    # Over TCP, with no password: refused.
    out = attacker.python(REDIS_READ, f"redis://127.0.0.1:{port}/0", task_id)
    assert "refused:" in out.stdout and "payload:" not in out.stdout, out.stdout + out.stderr
    out = attacker.run("redis-cli", "-p", str(port), "KEYS", "fns:*")
    assert "fns:task:" not in out.stdout and ("NOAUTH" in out.stdout + out.stderr or "Authentication" in out.stdout + out.stderr)
    # Redis's default user needs the password: an empty or guessed one gets nowhere either.
    out = attacker.run("redis-cli", "-p", str(port), "--user", "default", "--pass", "", "--no-auth-warning", "KEYS", "*")
    assert "fns:task:" not in out.stdout
    # Pushing a task into the endpoint's queue (it would run as the endpoint's account): refused.
    queue = f"fns:ep:{stack.endpoint_id}:queue"
    before = r.llen(queue)
    attacker.run("redis-cli", "-p", str(port), "RPUSH", queue, task_id)
    attacker.run("redis-cli", "-p", str(port), "HSET", f"fns:task:{task_id}", "payload", "forged")
    assert r.llen(queue) == before
    assert r.hget(f"fns:task:{task_id}", "payload") != b"forged"
    # The unix socket the service uses sits in a folder only the owner may enter.
    from fnserve._redis_server import redis_auth

    sock = redis_auth(stack.home / "service").socket
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    out = attacker.run("redis-cli", "-s", str(sock), "PING")
    assert "PONG" not in out.stdout
    out = attacker.python(REDIS_READ, f"unix://{sock}?db=0", task_id)
    assert "payload:" not in out.stdout, out.stdout
    # The service itself works through it: the task ran.
    assert stack.client().get_result(task_id, timeout=60) == 0.05


def _redis_port(stack) -> int:
    return int(stack.url.rsplit(":", 1)[1]) + 2  # `fnserve up --port P`: Redis on P + 2


def test_no_state_file_is_readable_by_another_account(stack, attacker):
    # Let results, the append-only file and the usage writer all have written something.
    task_id, _ = _slow_task(stack)
    stack.client().get_result(task_id, timeout=60)
    loose, readable = [], []
    for folder, dirs, files in os.walk(stack.home):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o700:
                loose.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
            elif stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                loose.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    assert not loose, "state readable by others:\n" + "\n".join(loose)
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    wanted = ["service/registry.db", "service/secrets/redis.password", "service/run/web.log", "service/run/redis.pid",
              "endpoints/local/config.yaml", "endpoints/local/run/unacked_results.sqlite",
              "endpoints/local/site_manager.log"]
    aof = sorted((stack.home / "service/redis").rglob("*.aof"))
    assert aof, "Redis wrote no append-only file"
    for rel in [*wanted, str(aof[0].relative_to(stack.home))]:
        path = stack.home / rel
        assert path.exists(), f"expected state file {path}"
        if attacker.can_read(path):
            readable.append(rel)
    assert not readable, f"another account read: {readable}"
    # The Redis password is in its file only: not in any log, not on any command line.
    password = (stack.home / "service/secrets/redis.password").read_text().strip()
    for log in stack.home.rglob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    pid = int((stack.home / "service/run/redis.pid").read_text())
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_loosened_state_folder_is_named_in_a_warning_at_start(stack):
    run = stack.home / "service/run"
    os.chmod(run, 0o755)
    try:
        out = stack.cli("up", "--port", stack.url.rsplit(":", 1)[1])
        assert f"folder {run} is mode 0755" in out.stdout and "chmod -R go-rwx" in out.stdout, out.stdout
    finally:
        os.chmod(run, 0o700)


# Sent by the attacker to every port the site manager listens on (one is its live-output
# socket): frames that claim to come from the worker running a victim's task (argv: ports
# joined by commas, then hex-encoded frames).
OUTPUT_FORGERY = r'''
import sys, zmq
for port in sys.argv[1].split(","):
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect("tcp://127.0.0.1:" + port)
    for frame in sys.argv[2:]:
        sock.send(bytes.fromhex(frame))
    sock.close()
print("sent")
'''


WAIT_FOR_FILE = """
def wait_for_file(path):
    import os, time
    end = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.05)
    return "released"
"""


def _site_manager_ports(stack) -> str:
    """The TCP ports the site manager process listens on: its live-output socket and Parsl's own
    (an attacker tries them all: `ss -ltn` lists every listening port on the host)."""
    import psutil

    pid = int((stack.home / "endpoints/local/site_manager.pid").read_text())
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert ports
    return ",".join(map(str, sorted(ports)))


def test_live_output_socket_takes_no_forged_outputs_from_another_account(stack, attacker):
    """Before: any account could push outputs (and start markers) for a running task of the
    endpoint, and the service showed them to the task's owner as the function's own."""
    from fnserve.messages import TaskOutput, encode_output

    fc = stack.client()
    release = stack.tmp / "release-forgery-victim"
    fid = fc.register_source(WAIT_FOR_FILE, "wait_for_file")
    task_id = fc.run(fid, stack.endpoint_id, str(release))
    deadline = time.monotonic() + 120
    while fc.get_task(task_id)["state"] != "running":  # in flight on the endpoint: outputs would count
        assert time.monotonic() < deadline, fc.get_task(task_id)
        time.sleep(0.1)
    # The attacker knows the task id (they leak: URLs, notebooks, logs); what stops them must be the socket.
    frames = [encode_output(TaskOutput(task_id=task_id, seq=i, time=time.time(), values={"forged": True, "i": i})).hex()
              for i in range(3)]
    out = attacker.python(OUTPUT_FORGERY, _site_manager_ports(stack), *frames)
    assert out.returncode == 0 and "sent" in out.stdout, out.stderr
    time.sleep(1.0)  # the site manager relays what its socket reads at once
    release.touch()
    assert fc.get_result(task_id, timeout=60) == "released"
    time.sleep(0.5)  # a forged output would trail by milliseconds
    outs = fc.get_outputs(task_id)["outputs"]
    assert not [o for o in outs if (o.get("values") or {}).get("forged")], outs
    # The endpoint's own workers still report through it.
    src = "def tell(n):\n    import fnserve\n    for i in range(n):\n        fnserve.report(i=i)\n    return n\n"
    tell = fc.register_source(src, "tell")
    task_id = fc.run(tell, stack.endpoint_id, 3)
    assert fc.get_result(task_id, timeout=60) == 3
    assert [o["values"]["i"] for o in fc.get_outputs(task_id)["outputs"] if o.get("values")] == [0, 1, 2]
