"""The embedded default: Redis, the web service, the forwarder and a local endpoint on this
machine, started as background processes under ``$FNSERVE_HOME/service`` (``fnserve up``).

Service pieces are started by module name (``python -m web_service.server`` ...) so that the
``fnserve`` package never imports the service or the site manager.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from fnserve.cli.processes import Managed, kill_and_wait, python_module, recorded_pid, tagged_processes
from fnserve.config import ClientConfig, home
from fnserve.errors import FnserveError
from fnserve.private_files import check_private, private_dir


@dataclass
class StackPorts:
    web: int = 8780
    forwarder: int = 8781
    redis: int = 8782


def service_dir() -> Path:
    return home() / "service"


def endpoint_dir(name: str) -> Path:
    return home() / "endpoints" / name


def service_env(ports: StackPorts, redis_url: str | None = None) -> dict[str, str]:
    root = service_dir()
    return {
        "FNSERVE_DATABASE_URL": os.environ.get("FNSERVE_DATABASE_URL", f"sqlite:///{root / 'registry.db'}"),
        "FNSERVE_REDIS_URL": redis_url or f"redis://127.0.0.1:{ports.redis}/0",
        "FNSERVE_FORWARDER_ADDRESS": f"tcp://127.0.0.1:{ports.forwarder}",
        "FNSERVE_FORWARDER_BIND": f"tcp://127.0.0.1:{ports.forwarder}",
        # Workers reach the object store here (large arguments and results by reference).
        "FNSERVE_PUBLIC_URL": os.environ.get("FNSERVE_PUBLIC_URL", f"http://127.0.0.1:{ports.web}"),
    }


# Stopped in this order (the trigger runner submits into Redis: before Redis goes).
SERVICE_PROCESSES = ("web", "forwarder", "triggers", "redis")


def processes() -> dict[str, Managed]:
    run = service_dir() / "run"
    return {name: Managed(name, run) for name in SERVICE_PROCESSES}


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Managed | None = None) -> None:
    """Start-up wait: retry ``check`` until it holds (never used on a task's path)."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.running():
            raise RuntimeError(f"{what}: the {proc.name} process exited; its log ({proc.log_file}) ends with:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f}s" + (f"; see {proc.log_file}" if proc else ""))
        time.sleep(0.1)


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _check_ports(procs: dict[str, Managed], wanted: dict[str, int], say: Callable[[str], None] = print) -> None:
    """Refuse to start next to a foreign process on our ports (we would talk to it instead).

    A port held by a leftover of our own (a gunicorn worker whose master was killed) is freed
    by removing that leftover.
    """
    for name, port in wanted.items():
        if not procs[name].running() and _port_taken(port) and procs[name].clean_leftovers(say):
            deadline = time.monotonic() + 5  # the kernel releases the socket with its last holder
            while _port_taken(port) and time.monotonic() < deadline:
                time.sleep(0.05)
        if not procs[name].running() and _port_taken(port):
            raise RuntimeError(
                f"port {port} (for {name}) is already in use by a process fnserve did not start; "
                "stop it or choose other ports with --port"
            )


def start_service(ports: StackPorts, embedded_redis: bool = True, say: Callable[[str], None] = print) -> dict[str, str]:
    """Start (or find running) Redis, the web service and the forwarder; returns their env."""
    procs = processes()
    wanted = {"web": ports.web, "forwarder": ports.forwarder}
    if embedded_redis:
        wanted["redis"] = ports.redis
    _check_ports(procs, wanted, say)
    redis_url = None
    for problem in check_private([service_dir()]):
        say(f"  warning: {problem}")
    if embedded_redis:
        from fnserve._redis_server import redis_args, redis_auth, wait_for_port

        data = private_dir(service_dir() / "redis")
        # A password (ACL user) and a unix socket only this account can open; the service
        # processes on this host use the socket.
        auth = redis_auth(service_dir())
        procs["redis"].start(redis_args(data, ports.redis, auth))
        wait_for_port("127.0.0.1", ports.redis, 15)
        redis_url = auth.socket_url()
        say(f"  redis      {auth.socket} and 127.0.0.1:{ports.redis}, user {auth.username}, password in "
            f"{service_dir() / 'secrets' / 'redis.password'}  (data in {data})")
    else:
        redis_url = os.environ.get("FNSERVE_REDIS_URL")
    env = service_env(ports, redis_url)
    server = os.environ.get("FNSERVE_WEB_SERVER", "gunicorn")
    procs["web"].start(python_module("web_service.server", "--bind", f"127.0.0.1:{ports.web}", "--server", server), env)
    procs["forwarder"].start(python_module("web_service.forwarder"), env)
    # Schedules come due and recorded events are retried here (docs/triggers.md).
    procs["triggers"].start(python_module("web_service.triggers.runner"), env)
    url = f"http://127.0.0.1:{ports.web}"
    wait_until(lambda: _healthy(url), 60, "web service", procs["web"])
    say(f"  web        {url}")
    say(f"  dashboard  {url}/dashboard/  (log in with the token in client.yaml)")
    say(f"  forwarder  {env['FNSERVE_FORWARDER_ADDRESS']}")
    return env


def _healthy(url: str) -> bool:
    import urllib3

    try:
        return urllib3.request("GET", url + "/v1/health", timeout=1.0, retries=False).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def ensure_user(env: dict[str, str], url: str, username: str | None = None) -> ClientConfig:
    """Make sure the client config holds a working token for this service (creating a user)."""
    from fnserve.client import Client
    from fnserve.errors import FnserveError

    cfg = ClientConfig.load()
    if cfg.token and cfg.service_url.rstrip("/") == url:
        try:
            Client(url, cfg.token).list_endpoints()
            return cfg
        except FnserveError:
            pass
    username = username or getpass.getuser()
    out = subprocess.run(
        python_module("web_service.admin", "add-user", username, "--reuse"), env={**os.environ, **env},
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"could not create the local user: {out.stderr.strip()}")
    cfg = ClientConfig(service_url=url, token=out.stdout.strip().splitlines()[-1])
    cfg.save()
    return cfg


def endpoint_config_path(name: str) -> Path:
    return endpoint_dir(name) / "config.yaml"


def create_endpoint(name: str, forwarder: str, client: Any, provider: dict[str, Any] | None = None,
                    engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register endpoint ``name`` with the service and write its config (kept secret: 0600)."""
    path = endpoint_config_path(name)
    if path.exists():
        data = yaml.safe_load(path.read_text())
        try:
            client.get_endpoint(data["endpoint_id"])
            if data.get("curve_public_key"):  # configs from before CurveZMQ: register anew
                return dict(data)
        except (FnserveError, KeyError, TypeError):
            pass  # registered with another service (or deleted): register again
    reg = client.register_endpoint(name, f"endpoint {name} on {os.uname().nodename}")
    data = {
        "forwarder": reg.get("forwarder_address") or forwarder,
        "endpoint_id": reg["endpoint_id"],
        "secret": reg["secret"],
        **curve_keys(reg),
        "run_dir": str(endpoint_dir(name) / "run"),
        # The local block costs nothing idle: keep it (min_blocks 1) so calls stay warm.
        "engine": engine or {"max_workers_per_node": 2, "init_blocks": 1, "min_blocks": 1, "max_blocks": 1},
        "provider": provider or {"type": "local"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# fnserve endpoint {name!r}; holds its secret: keep this file private\n")
        yaml.safe_dump(data, f, sort_keys=False)
    return data


# CurveZMQ keys a registration answer carries and an endpoint config keeps.
CURVE_KEYS = ("forwarder_public_key", "curve_public_key", "curve_secret_key")


def curve_keys(reg: dict[str, Any]) -> dict[str, str]:
    """The CurveZMQ keys of a registration answer (none when the forwarder runs plaintext)."""
    return {k: reg[k] for k in CURVE_KEYS if reg.get(k)} if reg.get("forwarder_public_key") else {}


def endpoint_process(name: str) -> Managed:
    return Managed("site_manager", endpoint_dir(name))


def endpoint_credentials_path(name: str) -> Path:
    """Where ``fnserve endpoint start`` keeps the identity it got at registration (0600)."""
    return endpoint_dir(name) / "credentials.yaml"


def site_manager_args(name: str) -> list[str]:
    args = ["--config", str(endpoint_config_path(name))]
    if endpoint_credentials_path(name).exists():
        args += ["--credentials", str(endpoint_credentials_path(name))]
    return args


def start_endpoint(name: str) -> Managed:
    proc = endpoint_process(name)
    # Parsl starts its interchange and worker pool by name: keep this Python's bin on PATH.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    proc.start(python_module("site_manager", *site_manager_args(name)), {"PATH": path})
    return proc


def wait_connected(client: Any, endpoint_id: str, proc: Managed, timeout: float = 90) -> None:
    wait_until(lambda: bool(client.get_endpoint_status(endpoint_id).get("connected")), timeout,
               "endpoint", proc)


def up(ports: StackPorts, endpoint_name: str = "local", engine: dict[str, Any] | None = None,
       say: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the service and a local endpoint (``fnserve up``); returns the endpoint's config.

    ``engine``: that endpoint's engine section (default: 2 workers, one block kept warm).
    """
    from fnserve.client import Client

    env = start_service(ports, embedded_redis=True, say=say)
    url = f"http://127.0.0.1:{ports.web}"
    cfg = ensure_user(env, url)
    client = Client(url, cfg.token)
    ep = create_endpoint(endpoint_name, env["FNSERVE_FORWARDER_ADDRESS"], client, engine=engine)
    proc = start_endpoint(endpoint_name)
    wait_connected(client, ep["endpoint_id"], proc)
    return ep


# Seconds `endpoint stop` / `delete` / `fnserve down` wait for an endpoint's batch jobs to leave the
# queue once its site manager is gone (they retry the cancel meanwhile).
JOBS_TIMEOUT = 30.0


def reap_endpoint_jobs(name: str, timeout: float = JOBS_TIMEOUT) -> str | None:
    """Cancel the batch jobs a stopped endpoint NAME left in the queue and wait for them to leave it.

    Returns None when none is left, else the message naming the jobs still queued (for a non-zero
    exit). Runs ``python -m site_manager --reap-jobs`` (this package never imports the site
    manager); a quick no-op when the endpoint recorded no batch job.
    """
    run_dir = endpoint_dir(name) / "run"
    if not run_dir.exists() or not any(run_dir.rglob("batch_jobs.json")):
        return None
    argv = python_module("site_manager", *site_manager_args(name), "--reap-jobs", str(timeout))
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        return f"endpoint {name}: checking its batch jobs did not finish in {timeout + 60:g} s; see {run_dir}"
    if out.returncode == 0:
        return None
    message = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
    return f"endpoint {name}: {message.removeprefix('fnserve site manager: ')}"


def stop_all(say: Callable[[str], None] = print) -> list[str]:
    """Stop every endpoint and the service; returns problems (batch jobs left in the queue)."""
    problems = []
    sessions = {pid for f in home().glob("**/*.pid") if (pid := recorded_pid(f))}
    root = home() / "endpoints"
    if root.exists():
        for ep in sorted(root.iterdir()):
            if endpoint_process(ep.name).stop(timeout=40, leader_first=True):
                say(f"  stopped endpoint {ep.name}")
            problem = reap_endpoint_jobs(ep.name)
            if problem:
                problems.append(problem)
    procs = processes()
    for name in SERVICE_PROCESSES:
        if procs[name].stop():
            say(f"  stopped {name}")
    left = tagged_processes(f"{home()}{os.sep}", prefix=True, sessions=sessions)
    if left:  # started by a process whose pid file is gone: ours all the same
        say(f"  removing {len(left)} leftover process(es): {', '.join(map(str, left))}")
        left = kill_and_wait(left)
    if left:
        raise RuntimeError(f"processes of this stack would not stop: {', '.join(map(str, left))}")
    say("  no fnserve process left")
    return problems
