"""``fnserve up|down|demo`` (the embedded stack on this machine) and ``fnserve service ...``
(the web service, forwarder and local users, for operators)."""

from __future__ import annotations

from typing import Any

import click


def _ports(port: int) -> Any:
    from fnserve.cli.stack import StackPorts

    return StackPorts(web=port, forwarder=port + 1, redis=port + 2)


def _service_admin(*args: str) -> None:
    import subprocess

    from fnserve.cli.processes import python_module

    code = subprocess.call(python_module("web_service.admin", *args))
    if code:
        raise SystemExit(code)


def add_commands(main: click.Group) -> click.Group:
    """Add the stack and service commands to ``main``; returns the ``service`` group (others
    add commands to it)."""
    # -- the embedded stack ---------------------------------------------------------------------

    @main.command()
    @click.option("--port", type=int, default=8780, show_default=True, help="Web port; the forwarder and Redis use the next two.")
    @click.option("--endpoint-name", default="local", show_default=True)
    def up(port: int, endpoint_name: str) -> None:
        """Start the embedded stack: Redis, web service, forwarder, and a local endpoint.

        Creates a local user whose token goes to the client config, so the SDK and CLI work at once.
        """
        from fnserve.cli import stack

        click.echo("starting fnserve on this machine:")
        ep = stack.up(_ports(port), endpoint_name, say=click.echo)
        click.echo(f"  endpoint   {endpoint_name} = {ep['endpoint_id']} (connected)")
        click.echo(f"ready. client config: {stack.home() / 'client.yaml'}; stop with `fnserve down`")

    @main.command()
    def down() -> None:
        """Stop everything `fnserve up` started."""
        from fnserve.cli import stack

        problems = stack.stop_all(say=click.echo)
        if problems:  # batch jobs still in the queue: say which, and fail
            raise click.ClickException("; ".join(problems))

    @main.command()
    @click.option("--endpoint-name", default="local", show_default=True)
    def demo(endpoint_name: str) -> None:
        """Register example functions and run them on the local endpoint (after `fnserve up`)."""
        from fnserve.cli.demo import run_demo

        run_demo(endpoint_name, click.echo)

    # -- the service ----------------------------------------------------------------------------

    @main.group()
    def service() -> None:
        """Run the web service and forwarder (for operators)."""

    @service.command("start")
    @click.option("--port", type=int, default=8780, show_default=True)
    @click.option("--embedded-redis/--external-redis", default=True, help="Start a Redis here, or use FNSERVE_REDIS_URL.")
    def service_start(port: int, embedded_redis: bool) -> None:
        """Start the web service, the forwarder and the trigger runner in the background."""
        from fnserve.cli import stack

        stack.start_service(_ports(port), embedded_redis=embedded_redis, say=click.echo)

    @service.command("stop")
    def service_stop() -> None:
        from fnserve.cli import stack

        procs = stack.processes()
        for name in stack.SERVICE_PROCESSES:
            if procs[name].stop():
                click.echo(f"stopped {name}")

    @service.group("user")
    def service_user() -> None:
        """Manage local users (local token mode)."""

    @service_user.command("add")
    @click.argument("username")
    @click.option("--expires-in", type=float, metavar="DAYS", help="The token expires after DAYS days.")
    def service_user_add(username: str, expires_in: float | None) -> None:
        """Create a user and print a token for it (shown once)."""
        import subprocess

        from fnserve.cli.processes import python_module

        extra = ["--expires-in", str(expires_in)] if expires_in else []
        raise SystemExit(subprocess.call(python_module("web_service.admin", "add-user", username, *extra)))

    @service_user.command("disable")
    @click.argument("username")
    def service_user_disable(username: str) -> None:
        """Refuse USERNAME's requests (403 user_disabled) within the token cache time; `enable` undoes it."""
        _service_admin("disable-user", username)

    @service_user.command("enable")
    @click.argument("username")
    def service_user_enable(username: str) -> None:
        """Let a disabled USERNAME in again."""
        _service_admin("enable-user", username)

    @service_user.command("delete")
    @click.argument("username")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def service_user_delete(username: str, yes: bool) -> None:
        """Delete USERNAME: revoke their tokens, delete their functions, endpoints, runtimes and
        groups, and cancel their unfinished tasks (docs/security.md)."""
        if not yes:
            click.confirm(f"delete user {username} and everything they own? This cannot be undone", abort=True)
        _service_admin("delete-user", username, "--yes")

    @service_user.command("operator")
    @click.argument("username")
    @click.option("--off", is_flag=True, help="Take the operator flag away.")
    def service_user_operator(username: str, off: bool) -> None:
        """Let USERNAME see the dashboard's Operators page (service-wide health, queues, errors)."""
        _service_admin("set-operator", username, *(["--off"] if off else []))

    return service
