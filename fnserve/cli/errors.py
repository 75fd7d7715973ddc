"""How the CLI fails: one line on stderr that says what went wrong and what to do, exit code 1
(2 for a command line that does not parse), never a Python traceback.

``FNSERVE_DEBUG=1`` shows the traceback of an unexpected error, for a bug report.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from fnserve.errors import FnserveError, RemoteExecutionError


def one_line(text: str) -> str:
    """``text`` on one line (messages that wrap keep their words)."""
    return " ".join(str(text).split())


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def remote_error_line(exc: RemoteExecutionError) -> str:
    where = f" (task {exc.task_id}; `fnserve result {exc.task_id} --traceback` shows where)" if exc.task_id else ""
    return f"remote error: {exc.remote_type}: {one_line(exc.remote_message)}{where}"


def use_utf8() -> None:
    """Print UTF-8 whatever the locale says (a C locale would print '\\u00e9' or fail)."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")
            except (ValueError, OSError):
                pass  # not a text stream we may reconfigure (e.g. already written to in binary)


class Group(click.Group):
    """The top-level group: turns every failure below it into one line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        use_utf8()
        kwargs.setdefault("prog_name", "fnserve")  # also when run as `python -m fnserve.cli.main`
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise  # `--help`, Ctrl-C: click's own handling
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{hint}", 2)
        except click.ClickException as exc:
            fail(exc.format_message())
        except RemoteExecutionError as exc:
            click.echo(remote_error_line(exc), err=True)
            sys.exit(1)
        except FnserveError as exc:
            fail(f"{exc}{_HINTS.get(exc.code, '')}")
        except (RuntimeError, OSError) as exc:  # start-up problems, files: say what, no traceback
            fail(_describe(exc))
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: still one line, with the way to learn more
            if os.environ.get("FNSERVE_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set FNSERVE_DEBUG=1 to see the traceback, and please report it)")


# What to do about errors whose message speaks to API callers rather than to a person at a shell.
_HINTS = {
    "missing_token": " (log in with `fnserve login`, or start a local service with `fnserve up`)",
    "invalid_token": " (log in again with `fnserve login`)",
    "function_not_found": " (`fnserve functions` lists yours)",
    "endpoint_not_found": " (`fnserve endpoints` lists yours)",
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


__all__ = ["Group", "fail", "one_line", "remote_error_line", "use_utf8"]
