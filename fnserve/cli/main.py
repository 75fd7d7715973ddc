"""The ``fnserve`` command line.

    fnserve up                         bring up the embedded stack on this machine
    fnserve register FILE.py:FUNC      register a function, print its id
    fnserve run FUNCTION_ID --endpoint ENDPOINT_ID [ARGS...]
    fnserve status|result|watch|cancel TASK_ID
    fnserve functions | endpoints
    fnserve token                      print the token the SDK sends (for curl)
    fnserve service start|stop|user add ...
    fnserve endpoint configure|start|stop|restart|list|delete NAME
    fnserve trigger create|list|show|delete|history|fire|rule   schedules and webhooks
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from fnserve.cli.errors import Group, fail, remote_error_line
from fnserve.errors import RemoteExecutionError


def _client() -> Any:
    from fnserve.client import Client

    return Client()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def _parse_arg(text: str) -> Any:
    """A CLI argument is a JSON value; anything that is not valid JSON is taken as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.group(cls=Group)
@click.version_option(package_name="fnserve")
def main() -> None:
    """fnserve: function serving for science."""
    from fnserve.private_files import private_umask

    private_umask()  # state, logs and every process started from here: private (0600 / 0700)


# -- functions and tasks ------------------------------------------------------------------------


@main.command()
@click.argument("target", metavar="FILE.py:FUNC")
@click.option("--name", help="Name to register under (default: FUNC).")
@click.option("--description", default="", help="A line saying what the function does.")
@click.option("--runtime", help="Runtime (id or name) its tasks run in by default.")
def register(target: str, name: str | None, description: str, runtime: str | None = None) -> None:
    """Register function FUNC defined in FILE.py; prints its function id.

    The whole file travels as source, so the function may use the file's imports and helpers.
    """
    path_text, sep, func = target.rpartition(":")
    if not sep or not func:
        raise click.BadParameter("expected FILE.py:FUNC", param_hint="TARGET")
    source = _read_source(Path(path_text))
    import ast

    try:
        tree = ast.parse(source, filename=path_text)
    except SyntaxError as exc:
        fail(f"{path_text} line {exc.lineno}: {exc.msg}; fix the file and register again")
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if func not in defined:
        raise click.BadParameter(f"{path_text} defines no top-level function {func!r} (it has: {', '.join(sorted(defined)) or 'none'})")
    click.echo(_client().register_source(source, func, name=name, description=description, runtime=runtime))


@main.command("register-shell")
@click.argument("command")
@click.option("--name", help="Name to register under (default: the command's program).")
@click.option("--description", default="", help="A line saying what the command does.")
@click.option("--sandbox", is_flag=True, help="Run each task in a fresh folder of its own.")
@click.option("--walltime", type=float, default=None, help="Seconds before the command is killed (return code 124).")
@click.option("--max-output-bytes", type=int, default=None, help="Bytes kept of the end of each of stdout and stderr.")
@click.option("--runtime", help="Runtime (id or name) its tasks run in by default.")
def register_shell(command: str, name: str | None, description: str, sandbox: bool, walltime: float | None,
                   max_output_bytes: int | None, runtime: str | None) -> None:
    """Register COMMAND, a command line with {placeholders}, as a shell function; prints its id.

    Each task passes one keyword argument per placeholder (shell-quoted when run), e.g.

        fnserve register-shell 'wc -l {path}' --walltime 30

        fnserve run FUNCTION_ID -e ENDPOINT --kwargs '{"path": "/etc/passwd"}'
    """
    click.echo(_client().register_shell(command, name=name, description=description, sandbox=sandbox, walltime=walltime,
                                        max_output_bytes=max_output_bytes, runtime=runtime))


def _read_source(path: Path) -> str:
    if not path.is_file():
        raise click.BadParameter(f"{path} is not a file", param_hint="TARGET")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        fail(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8 and register again")


@main.command()
@click.argument("function_id")
@click.argument("args", nargs=-1)
@click.option("--endpoint", "-e", "endpoint_id", required=True, help="Endpoint to run on.")
@click.option("--kwargs", "kwargs_json", default=None, help='Keyword arguments as a JSON object, e.g. \'{"n": 3}\'.')
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the result (default: until done).")
@click.option("--no-wait", is_flag=True, help="Print the task id and return at once.")
@click.option("--walltime", type=float, default=None, help="Seconds the function may run.")
@click.option("--runtime", default=None, help="Runtime (id or name) to run in; default: the function's own, else the endpoint's host.")
@click.option("--traceback", "show_traceback", is_flag=True, help="If the function raised, also print the remote traceback.")
@click.option("--resource-spec", "resource_json", default=None,
              help='What the task asks of the endpoint, as a JSON object, e.g. \'{"num_nodes": 2, "ranks_per_node": 4}\'.')
@click.option("--user-endpoint-config", "user_config_json", default=None,
              help='Values for a multi-user endpoint\'s template, as a JSON object, e.g. \'{"partition": "debug"}\'.')
def run(function_id: str, args: tuple[str, ...], endpoint_id: str, kwargs_json: str | None, timeout: float | None,
        no_wait: bool, walltime: float | None, runtime: str | None = None, show_traceback: bool = False,
        resource_json: str | None = None, user_config_json: str | None = None) -> None:
    """Run FUNCTION_ID on an endpoint with ARGS (each a JSON value); waits and prints the result
    (with --no-wait: prints the task id at once).

    Example: fnserve run 1f0c... --endpoint 9a2b... 2 3 '"text"' --kwargs '{"scale": 2}' --runtime sci
    """
    from fnserve import serialize

    kwargs = _parse_arg(kwargs_json) if kwargs_json else {}
    if not isinstance(kwargs, dict):
        raise click.BadParameter("--kwargs must be a JSON object")
    resources = _parse_arg(resource_json) if resource_json else None
    if resources is not None and not isinstance(resources, dict):
        raise click.BadParameter("--resource-spec must be a JSON object")
    user_config = _parse_arg(user_config_json) if user_config_json else None
    if user_config is not None and not isinstance(user_config, dict):
        raise click.BadParameter("--user-endpoint-config must be a JSON object")
    client = _client()
    task_id = client.submit(function_id, endpoint_id, [_parse_arg(a) for a in args], kwargs,
                            walltime=walltime, serializer=serialize.JSON_DATA, runtime=runtime,
                            resource_specification=resources, user_endpoint_config=user_config)
    if no_wait:
        click.echo(task_id)
        return
    task = client.wait([task_id], timeout)[0]
    _print_outcome(task, show_traceback)


def _print_outcome(task: dict[str, Any], show_traceback: bool = False) -> None:
    from fnserve.task_results import result_of

    if task.get("stdout"):
        click.echo(task["stdout"], nl=False, err=True)
    if task["state"] not in ("success", "failed", "cancelled"):
        fail(f"task {task['task_id']} is still {task['state']}: wait longer with `fnserve result {task['task_id']}`", 2)
    try:
        value = result_of(task, fetch=_client().fetch_result)  # a large result comes by reference
    except RemoteExecutionError as exc:
        if show_traceback:
            click.echo(exc.remote_traceback.rstrip(), err=True)
        click.echo(remote_error_line(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps(value, ensure_ascii=False) if _is_json(value) else repr(value))


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


@main.command()
@click.argument("task_id")
def status(task_id: str) -> None:
    """Show a task's state and timestamps."""
    task = _client().get_task(task_id)
    _echo_json({k: task.get(k) for k in ("task_id", "state", "function_id", "endpoint_id", "timestamps", "error")})


@main.command()
@click.argument("task_id")
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default: until done).")
@click.option("--traceback", "show_traceback", is_flag=True, help="If the function raised, also print the remote traceback.")
def result(task_id: str, timeout: float | None, show_traceback: bool) -> None:
    """Wait for a task and print its result (or its remote error)."""
    _print_outcome(_client().wait([task_id], timeout)[0], show_traceback)


@main.command()
@click.argument("task_id")
@click.option("--timeout", type=float, default=None, help="Seconds to watch (default: until the task ends).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per output (for scripts).")
def watch(task_id: str, timeout: float | None, as_json: bool) -> None:
    """Print a task's live outputs (fnserve.report) as they arrive, until it finishes."""
    client = _client()
    for out in client.watch_outputs(task_id, timeout=timeout):
        if as_json:
            click.echo(json.dumps(out, separators=(",", ":"), ensure_ascii=False))
        else:
            values = "  ".join(f"{k}={_short(v)}" for k, v in out["values"].items())
            click.echo(f"[{out['seq']}] {values}")
    task = client.get_task(task_id)
    error = task.get("error") or {}
    if task["state"] == "failed":
        what = f"{error.get('type')}: {error.get('message')}" if error.get("code") == "user_exception" else \
            f"[{error.get('code')}] {error.get('message')}"
        click.echo(f"task {task_id}: failed: {' '.join(what.split())} (`fnserve result {task_id} --traceback` shows more)", err=True)
    else:
        click.echo(f"task {task_id}: {task['state']}", err=True)
    if task["state"] != "success":
        sys.exit(1)


@main.command()
@click.argument("task_id")
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to download into (created).")
@click.option("--watch", "live", is_flag=True, help="Download each file as it appears, until the task ends.")
@click.option("--timeout", type=float, default=None, help="With --watch: seconds to watch.")
def get(task_id: str, folder: str, live: bool, timeout: float | None) -> None:
    """Download a task's output files (those its function wrote in fnserve.output_dir())."""
    client = _client()
    os.makedirs(folder, exist_ok=True)
    entries = client.watch_files(task_id, timeout=timeout) if live else client.list_files(task_id)
    n = 0
    for entry in entries:
        path = client.download_file(entry, folder + os.sep)
        click.echo(f"{path}  {entry['size']} bytes")
        n += 1
    if n == 0:
        click.echo(f"task {task_id} has no output files (yet)", err=True)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


@main.command()
def token() -> None:
    """Print the token the SDK and CLI send, for scripts: curl -H "Authorization: Bearer $(fnserve token)"."""
    click.echo(_client().token())


@main.command()
@click.argument("task_id")
def cancel(task_id: str) -> None:
    """Cancel a task that has not finished."""
    task = _client().cancel(task_id)
    click.echo(f"{task['task_id']}: {task['state']}")


@main.command()
def functions() -> None:
    """List your registered functions."""
    rows = _client().list_functions()
    for f in rows:
        click.echo(f"{f['function_id']}  {f['name']:<24} {f.get('description') or ''}")
    if not rows:
        click.echo("no functions registered yet: `fnserve register FILE.py:FUNC`")


@main.command()
def endpoints() -> None:
    """List your endpoints and whether they are connected."""
    rows = _client().list_endpoints()
    for e in rows:
        st = e.get("status") or {}
        state = "connected" if st.get("connected") else "disconnected"
        site = st.get("site") or {}  # what the site manager last reported
        click.echo(f"{e['endpoint_id']}  {e['name']:<16} {state:<12} waiting={st.get('tasks_waiting', 0)} in-flight={st.get('tasks_in_flight', 0)}"
                   f" blocks={site.get('blocks_running', 0)} pending={site.get('blocks_pending', 0)} workers={site.get('workers', 0)}")
    if not rows:
        click.echo("no endpoints yet: `fnserve up` starts a local one")


from fnserve.cli import service_cmds  # noqa: E402 - up, down, demo; service start|stop|user ...

service = service_cmds.add_commands(main)


@main.group()
def endpoint() -> None:
    """Configure, start, stop, list and delete endpoints (for site admins)."""


@endpoint.command("create")
@click.argument("name")
def endpoint_create(name: str) -> None:
    """Register endpoint NAME with the service and write its config."""
    from fnserve.cli import stack

    data = stack.create_endpoint(name, "", _client())
    click.echo(f"endpoint {name} = {data['endpoint_id']}; config: {stack.endpoint_config_path(name)}")


from fnserve.cli import endpoint_cmds  # noqa: E402 - after the group it extends

# configure, start, stop, restart, list, delete
endpoint_cmds.add_commands(endpoint)

from fnserve.cli import access_cmds  # noqa: E402 - login/whoami/usage/share, allowlists, tokens, quotas

access_cmds.add_user_commands(main)
access_cmds.add_endpoint_commands(endpoint)
access_cmds.add_service_commands(service)

from fnserve.cli import runtime_cmds  # noqa: E402 - fnserve runtime register|list|show|delete

runtime_cmds.add_commands(main)

from fnserve.cli import trigger_cmds  # noqa: E402 - fnserve trigger create|list|show|delete|history|fire|rule

trigger_cmds.add_commands(main)


if __name__ == "__main__":
    main()
