"""``fnserve endpoint configure|start|stop|restart|list|delete``: an endpoint's lifecycle.

Everything for endpoint NAME lives in ``$FNSERVE_HOME/endpoints/NAME/``::

    config.yaml         what the site admin edits (no secret in it)
    credentials.yaml    endpoint id, secret and forwarder address from the first start (0600)
    site_manager.pid    the running site manager
    site_manager.log    its log
    run/                its state: unacked results, Parsl's submit scripts and logs

The site manager runs as ``python -m site_manager`` (this package never imports it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from fnserve.cli import stack
from fnserve.cli.endpoint_templates import TEMPLATES, render
from fnserve.cli.processes import python_module

# How long `stop` waits for a site manager to drain (its drain_timeout is 30 s by default).
STOP_TIMEOUT = 60.0


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def identity(name: str) -> dict[str, Any]:
    """Endpoint NAME's id/secret/forwarder: from credentials.yaml, or from a config that holds
    them itself (as `fnserve up` and `fnserve endpoint create` write); empty if never registered."""
    creds = _read(stack.endpoint_credentials_path(name))
    if creds.get("endpoint_id"):
        return creds
    config = _read(stack.endpoint_config_path(name))
    return {k: config[k] for k in ("endpoint_id", "secret", "forwarder", *stack.CURVE_KEYS) if config.get(k)}


def _known(name: str) -> None:
    if not stack.endpoint_config_path(name).exists():
        raise click.ClickException(
            f"no endpoint {name!r} in {stack.endpoint_dir(name).parent}: "
            f"write its config with `fnserve endpoint configure {name}`"
        )


def _client() -> Any:
    from fnserve.client import Client

    return Client()


def _register(name: str) -> dict[str, Any]:
    """Register NAME with the service (first start) and keep the identity it gets."""
    client = _client()
    reg = client.register_endpoint(name, f"endpoint {name} on {os.uname().nodename}")
    if not reg.get("forwarder_address"):
        raise click.ClickException("the service did not say where its forwarder is (forwarder_address)")
    creds = {
        "endpoint_id": reg["endpoint_id"],
        "secret": reg["secret"],
        "forwarder": reg["forwarder_address"],
        "service_url": client.service_url,
        **stack.curve_keys(reg),
    }
    _write_private(
        stack.endpoint_credentials_path(name),
        f"# identity of fnserve endpoint {name!r}: keep private; delete it to register anew\n"
        + yaml.safe_dump(creds, sort_keys=False),
    )
    return creds


def check_config(name: str) -> str:
    """Validate NAME's config the way the site manager reads it; returns Parsl's view of it."""
    out = subprocess.run(
        python_module("site_manager", *stack.site_manager_args(name), "--check"),
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        message = (out.stderr.strip().splitlines() or ["the site manager refused the config"])[-1]
        raise click.ClickException(f"{stack.endpoint_config_path(name)}: {message.removeprefix('fnserve site manager: ')}")
    return out.stdout.strip()


def start(name: str, wait: bool = True, timeout: float = 120.0, say: Any = click.echo) -> None:
    """Start NAME's site manager in the background (registering NAME on its first start)."""
    _known(name)
    proc = stack.endpoint_process(name)
    if proc.running():
        say(f"endpoint {name} is already running (pid {proc.pid()})")
        return
    ident = identity(name)
    if not ident.get("endpoint_id"):
        ident = _register(name)
        say(f"registered endpoint {name} = {ident['endpoint_id']}")
    check_config(name)
    stack.start_endpoint(name)
    say(f"endpoint {name} = {ident['endpoint_id']} started (pid {proc.pid()}, log {proc.log_file})")
    if wait:
        stack.wait_connected(_client(), ident["endpoint_id"], proc, timeout)
        say(f"endpoint {name} is connected")


def stop(name: str, say: Any = click.echo, jobs_timeout: float = stack.JOBS_TIMEOUT) -> bool:
    """Stop NAME gracefully: it takes no new task, finishes or hands back the running ones,
    cancels its blocks and exits. Then the batch jobs it left (a failed cancel, a killed site
    manager) are cancelled and waited for; raises :class:`click.ClickException` naming the jobs
    still in the queue after ``jobs_timeout`` s. Returns whether it was running."""
    proc = stack.endpoint_process(name)
    was_running = proc.stop(timeout=STOP_TIMEOUT, leader_first=True)
    problem = stack.reap_endpoint_jobs(name, jobs_timeout)
    if problem:
        raise click.ClickException(
            f"{problem}; the endpoint's process is {'stopped' if was_running else 'not running'}: "
            f"run `fnserve endpoint stop {name}` again, or cancel them with the batch system")
    say(f"endpoint {name} " + ("stopped" if was_running else "was not running") + ", no batch job left")
    return was_running


def rows() -> list[dict[str, Any]]:
    """One dict per configured endpoint: name, id, state, pid and the service's status."""
    root = stack.home() / "endpoints"
    names = sorted(p.name for p in root.iterdir() if (p / "config.yaml").exists()) if root.exists() else []
    statuses: dict[str, dict[str, Any]] = {}
    service_error = ""
    if names:
        try:
            statuses = {e["endpoint_id"]: e.get("status") or {} for e in _client().list_endpoints()}
        except Exception as exc:  # noqa: BLE001 - list what we know locally when the service is away
            service_error = str(exc)
    out = []
    for name in names:
        ident = identity(name)
        pid = stack.endpoint_process(name).pid()
        status = statuses.get(ident.get("endpoint_id", ""), {})
        if pid is None:
            state = "stopped"
        elif status.get("connected"):
            state = "running"
        else:
            state = "disconnected"
        out.append({
            "name": name, "endpoint_id": ident.get("endpoint_id"), "state": state, "pid": pid,
            "status": status, "service_error": service_error,
        })
    return out


def _unit_name(name: str) -> str:
    from fnserve.cli import systemd_units as units

    try:
        return units.unit_name(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def enable_on_boot(name: str, unit_dir: Path | None = None, run_as: str | None = None, say: Any = click.echo) -> Path:
    """Write the systemd unit of endpoint NAME; returns its path. The site manager runs in the
    foreground under systemd (not through `fnserve endpoint start`'s pid file)."""
    import getpass

    from fnserve.cli import systemd_units as units

    _known(name)
    unit = _unit_name(name)
    if not identity(name).get("endpoint_id"):
        ident = _register(name)
        say(f"registered endpoint {name} = {ident['endpoint_id']}")
    check_config(name)
    system = run_as is not None or os.geteuid() == 0
    user = (run_as or getpass.getuser()) if system else None
    argv = python_module("site_manager", *stack.site_manager_args(name))
    path_var = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    text = units.endpoint_unit(name, argv, str(stack.endpoint_dir(name).parents[1]), path_var, user,
                               python_path=os.environ.get("PYTHONPATH", ""))
    folder = unit_dir or units.unit_dir(system)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / unit
    path.write_text(text)
    ctl = "systemctl" if system else "systemctl --user"
    say(f"wrote {path}")
    say(f"enable it: {ctl} daemon-reload && {ctl} enable --now {unit.removesuffix('.service')}")
    if stack.endpoint_process(name).running():
        say(f"(endpoint {name} runs now from `fnserve endpoint start`: `fnserve endpoint stop {name}` before enabling the unit)")
    if not system:
        say(f"(a user unit runs at boot only with lingering on: loginctl enable-linger {getpass.getuser()})")
    return path


def add_commands(group: click.Group) -> None:
    """Attach the lifecycle commands to the ``fnserve endpoint`` group."""

    @group.command("configure")
    @click.argument("name")
    @click.option("--template", type=click.Choice(sorted(TEMPLATES)), default="local", show_default=True,
                  help="Starting point: workers on this host, a Slurm cluster (srun), a PBS Pro cluster (mpiexec).")
    @click.option("--force", is_flag=True, help="Overwrite an existing config (the identity is kept).")
    def configure_cmd(name: str, template: str, force: bool) -> None:
        """Write a documented config for endpoint NAME to edit before `fnserve endpoint start NAME`."""
        path = stack.endpoint_config_path(name)
        if path.exists() and not force:
            raise click.ClickException(f"{path} exists; edit it, or pass --force to start over from a template")
        worker_init = f"source {sys.prefix}/bin/activate" if sys.prefix != sys.base_prefix else ""
        text = render(template, str(stack.endpoint_dir(name) / "run"), worker_init)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"wrote {path} ({template} template); edit it, then: fnserve endpoint start {name}")

    @group.command("start")
    @click.argument("name")
    @click.option("--no-wait", is_flag=True, help="Return once started, without waiting for it to connect.")
    @click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for it to connect.")
    def start_cmd(name: str, no_wait: bool, timeout: float) -> None:
        """Start endpoint NAME in the background (registers it with the service on first start)."""
        start(name, wait=not no_wait, timeout=timeout)

    @group.command("stop")
    @click.argument("name")
    @click.option("--jobs-timeout", type=float, default=stack.JOBS_TIMEOUT, show_default=True,
                  help="Seconds to wait for its batch jobs to leave the queue before failing with their ids.")
    def stop_cmd(name: str, jobs_timeout: float) -> None:
        """Stop endpoint NAME: no new tasks, running ones finish or go back to the service, blocks
        cancelled and checked out of the batch queue (exit 1 naming the jobs that are not)."""
        _known(name)
        stop(name, jobs_timeout=jobs_timeout)

    @group.command("restart")
    @click.argument("name")
    @click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for it to connect.")
    def restart_cmd(name: str, timeout: float) -> None:
        """Stop endpoint NAME if it runs, then start it again (same identity)."""
        _known(name)
        stop(name)
        start(name, timeout=timeout)

    @group.command("list")
    def list_cmd() -> None:
        """List configured endpoints: running, stopped or disconnected, with their tasks and blocks."""
        listed = rows()
        if not listed:
            click.echo("no endpoints configured: `fnserve endpoint configure NAME`")
            return
        for r in listed:
            st = r["status"]
            site = st.get("site") or {}
            click.echo(
                f"{r['name']:<16} {r['state']:<12} {r['endpoint_id'] or '(not registered yet)':<36} "
                f"in-flight={st.get('tasks_in_flight', 0)} waiting={st.get('tasks_waiting', 0)} "
                f"blocks={site.get('blocks_running', 0)}+{site.get('blocks_pending', 0)} pending "
                f"workers={site.get('workers', 0)}"
            )
        if listed[0]["service_error"]:
            click.echo(f"(service not reachable, states are from local processes only: {listed[0]['service_error']})", err=True)

    @group.command("enable-on-boot")
    @click.argument("name")
    @click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where to write the unit (default: /etc/systemd/system as root, else ~/.config/systemd/user).")
    @click.option("--user", "run_as", default=None,
                  help="System unit: the account it runs as (default: the one running this command).")
    def enable_on_boot_cmd(name: str, unit_dir: Path | None, run_as: str | None) -> None:
        """Write a systemd unit that runs endpoint NAME at boot (registering NAME first if needed)."""
        enable_on_boot(name, unit_dir, run_as)

    @group.command("disable-on-boot")
    @click.argument("name")
    @click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where the unit was written (default as for enable-on-boot).")
    def disable_on_boot_cmd(name: str, unit_dir: Path | None) -> None:
        """Remove the systemd unit of endpoint NAME (stop and disable it with systemctl first)."""
        from fnserve.cli import systemd_units as units

        path = (unit_dir or units.unit_dir(os.geteuid() == 0)) / _unit_name(name)
        if not path.exists():
            raise click.ClickException(f"no unit {path}")
        path.unlink()
        click.echo(f"removed {path}; run `systemctl{'' if os.geteuid() == 0 else ' --user'} daemon-reload`")

    @group.command("delete")
    @click.argument("name")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.option("--jobs-timeout", type=float, default=stack.JOBS_TIMEOUT, show_default=True,
                  help="Seconds to wait for its batch jobs to leave the queue before failing with their ids.")
    def delete_cmd(name: str, yes: bool, jobs_timeout: float) -> None:
        """Stop endpoint NAME, delete it from the service (its unfinished tasks fail with
        endpoint_deleted) and remove its directory. Nothing is deleted while batch jobs of it
        are still in the queue (exit 1 naming them)."""
        _known(name)
        if not yes:
            click.confirm(f"delete endpoint {name} and its config?", abort=True)
        stop(name, jobs_timeout=jobs_timeout)
        endpoint_id = identity(name).get("endpoint_id")
        if endpoint_id:
            from fnserve.errors import NotFound

            try:
                _client().delete_endpoint(endpoint_id)
                click.echo(f"deleted endpoint {endpoint_id} from the service")
            except NotFound:
                click.echo(f"endpoint {endpoint_id} was already gone from the service")
        shutil.rmtree(stack.endpoint_dir(name))
        click.echo(f"removed {stack.endpoint_dir(name)}")
