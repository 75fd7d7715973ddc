"""Shell functions: a command line registered once as a template, run with arguments.

A shell function is a function buffer of strategy ``shell`` whose body is a JSON object
(:class:`ShellSpec`): no code of the caller's is loaded anywhere, so the service can read and
check it. Its tasks take keyword arguments only, one per ``{placeholder}`` of the template::

    from fnserve import Client, ShellFunction

    count = ShellFunction("wc -l {path}", walltime=30)
    fid = Client().register_function(count)
    Client().get_result(Client().run(fid, endpoint_id, path="/etc/passwd"))
    # -> {"returncode": 0, "stdout": "54 /etc/passwd\\n", "stderr": "", ...}

Each argument is quoted for the shell (``shlex.quote``): a value is one word, never more
command. A list gives one quoted word per item. The decisions (placeholders, rendering, the
output cut) are pure functions here; the node manager's :mod:`node_manager.shell` runs them.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from typing import Any

import msgspec

from fnserve.errors import BadRequest, SerializationError

SHELL = "shell"  # the serialization strategy (fnserve.serialize)
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024  # kept of each of stdout and stderr
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_COMMAND_CHARS = 64 * 1024
WALLTIME_RETURNCODE = 124  # as coreutils' `timeout` exits


class ShellTemplateError(BadRequest):
    code = "invalid_shell_template"


class ShellArgumentError(BadRequest):
    code = "invalid_shell_arguments"


class ShellSpec(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What a shell function is: the template and how it runs."""

    command: str
    sandbox: bool = False  # run in a fresh folder per task (kept afterwards, named in the result)
    walltime: float | None = None  # seconds; past it the command is killed, returncode 124
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES  # of each stream; the rest is cut (stated)


def placeholders(command: str) -> list[str]:
    """The names of ``command``'s ``{placeholders}``, in first-use order (``{{`` is a brace).

    >>> placeholders("cp {src} {dst} && ls {dst}")
    ['src', 'dst']
    """
    try:
        parts = list(string.Formatter().parse(command))
    except ValueError as exc:
        raise ShellTemplateError(f"command template is malformed: {exc} (write a literal brace as {{{{ or }}}})",
                                 details={"field": "command"}) from None
    names: dict[str, None] = {}
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier():
            raise ShellTemplateError(
                f"placeholder {{{name}}} is not a plain name: use names like {{input_file}} (no positions, "
                "attributes or indexes)", details={"field": "command", "placeholder": name})
        if spec or conversion:
            raise ShellTemplateError(f"placeholder {{{name}}} takes no format spec or conversion",
                                     details={"field": "command", "placeholder": name})
        names[name] = None
    return list(names)


def check_spec(spec: ShellSpec) -> ShellSpec:
    """``spec`` if it is a valid shell function, else :class:`ShellTemplateError` naming the field."""
    if not isinstance(spec.command, str) or not spec.command.strip():
        raise ShellTemplateError("command must be a non-empty command line", details={"field": "command"})
    if len(spec.command) > MAX_COMMAND_CHARS:
        raise ShellTemplateError(f"command must be at most {MAX_COMMAND_CHARS} characters", details={"field": "command"})
    if "\x00" in spec.command:
        raise ShellTemplateError("command must not contain NUL characters", details={"field": "command"})
    placeholders(spec.command)
    if spec.walltime is not None and (isinstance(spec.walltime, bool) or not 0 < spec.walltime <= 30 * 24 * 3600):
        raise ShellTemplateError("walltime must be a number of seconds in (0, 2592000]", details={"field": "walltime"})
    if isinstance(spec.max_output_bytes, bool) or not 0 <= spec.max_output_bytes <= MAX_OUTPUT_BYTES:
        raise ShellTemplateError(f"max_output_bytes must be an integer from 0 to {MAX_OUTPUT_BYTES}",
                                 details={"field": "max_output_bytes"})
    return spec


def spec_from_json(value: Any) -> ShellSpec:
    """A checked :class:`ShellSpec` from a REST body's ``shell`` object."""
    if not isinstance(value, dict):
        raise ShellTemplateError('shell must be an object like {"command": "wc -l {path}"}', details={"field": "shell"})
    try:
        spec = msgspec.convert(value, ShellSpec)
    except msgspec.ValidationError as exc:
        raise ShellTemplateError(f"shell: {exc}", details={"field": "shell"}) from None
    return check_spec(spec)


# -- buffers -------------------------------------------------------------------------------------


def spec_buffer_body(spec: ShellSpec) -> bytes:
    return msgspec.json.encode(check_spec(spec))


def load_spec(body: bytes) -> ShellSpec:
    """The spec in a shell buffer's body (after the header)."""
    try:
        spec = msgspec.json.decode(body, type=ShellSpec)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SerializationError(f"shell function body is not valid: {exc}", code="corrupt_buffer") from None
    return check_spec(spec)


# -- arguments and rendering ---------------------------------------------------------------------


def _word(name: str, value: Any) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise ShellArgumentError(
            f"argument {name!r} must be a string or a number (or a list of them), not {type(value).__name__}",
            details={"placeholder": name})
    text = str(value)
    if "\x00" in text:
        raise ShellArgumentError(f"argument {name!r} must not contain NUL characters", details={"placeholder": name})
    return shlex.quote(text)


def check_arguments(command: str, args: list[Any] | tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Each placeholder's shell-quoted text, or an error with a stable code naming the argument.

    Codes: ``missing_placeholder`` (a placeholder has no argument), ``unknown_placeholder`` (an
    argument names no placeholder), ``invalid_shell_arguments`` (positional arguments, or a
    value that is not a string, number or list of them).
    """
    if args:
        raise ShellArgumentError(
            f"a shell function takes keyword arguments only, one per placeholder ({', '.join(placeholders(command)) or 'none'})",
            details={"placeholders": placeholders(command)})
    names = placeholders(command)
    missing = [n for n in names if n not in kwargs]
    if missing:
        raise ShellArgumentError(f"placeholder {{{missing[0]}}} has no argument: pass {missing[0]}=...",
                                 code="missing_placeholder", details={"placeholder": missing[0], "missing": missing})
    extra = sorted(k for k in kwargs if k not in names)
    if extra:
        raise ShellArgumentError(
            f"argument {extra[0]!r} names no placeholder of the command; its placeholders: {', '.join(names) or 'none'}",
            code="unknown_placeholder", details={"placeholder": extra[0], "placeholders": names})
    words = {}
    for name in names:
        value = kwargs[name]
        if isinstance(value, (list, tuple)):
            words[name] = " ".join(_word(name, v) for v in value)
        else:
            words[name] = _word(name, value)
    return words


def render(command: str, kwargs: Mapping[str, Any]) -> str:
    """The command line to run: ``command`` with each placeholder replaced by its quoted argument.

    >>> render("grep -c {pattern} {files}", {"pattern": "a b", "files": ["x", "y z"]})
    "grep -c 'a b' x 'y z'"
    """
    return command.format(**check_arguments(command, (), kwargs))


# -- the output cut --------------------------------------------------------------------------------


def cut_output(tail: bytes, total: int) -> tuple[str, int]:
    """A stream's text from its last bytes ``tail`` (of ``total`` written), and how many bytes
    were cut from its start.

    The end of an output is where errors and summaries are; what was cut is stated in a first
    line, so that no reader takes a partial output for the whole one.

    >>> cut_output(b"6789", 10)
    ('[fnserve: first 6 bytes cut]\\n6789', 6)
    """
    cut = max(0, total - len(tail))
    text = tail.decode("utf-8", "replace")
    if cut:
        text = f"[fnserve: first {cut} bytes cut]\n" + text
    return text, cut


def result(returncode: int, stdout: tuple[bytes, int], stderr: tuple[bytes, int], *, command: str,
           sandbox: str | None, timed_out: bool) -> dict[str, Any]:
    """What a shell task returns (plain JSON, the same through the SDK, the CLI and REST).

    ``stdout``/``stderr``: each stream's last bytes and its whole size (see :func:`cut_output`).
    A command killed at its walltime gives 124, as ``timeout`` does.
    """
    out, out_cut = cut_output(*stdout)
    err, err_cut = cut_output(*stderr)
    return {
        "returncode": WALLTIME_RETURNCODE if timed_out else returncode,
        "stdout": out, "stderr": err,
        "stdout_cut_bytes": out_cut, "stderr_cut_bytes": err_cut,
        "command": command, "sandbox": sandbox, "timed_out": timed_out,
    }


# -- the SDK object --------------------------------------------------------------------------------


class ShellFunction:
    """A command line to register as a function (:meth:`fnserve.Client.register_function`, or
    :meth:`fnserve.Executor.submit`, which registers it on first use).

    ``command``: a template with ``{placeholders}``, filled from each task's keyword arguments
    (shell-quoted). ``sandbox``: run each task in a fresh folder of its own (its path is in the
    result's ``sandbox``). ``walltime``: seconds before the command is killed (return code 124,
    as ``timeout`` gives). ``max_output_bytes``: how much of each of stdout and stderr comes back
    (the end of it; what was cut is stated).

    The task's result is a dict: ``returncode``, ``stdout``, ``stderr``, ``stdout_cut_bytes``,
    ``stderr_cut_bytes``, ``command`` (as run), ``sandbox``, ``timed_out``.
    """

    def __init__(self, command: str, *, sandbox: bool = False, walltime: float | None = None,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, name: str | None = None) -> None:
        self.spec = check_spec(ShellSpec(command=command, sandbox=sandbox, walltime=walltime,
                                         max_output_bytes=max_output_bytes))
        self.__name__ = name or (command.split()[0].rsplit("/", 1)[-1] if command.split() else "shell")

    @classmethod
    def from_spec(cls, spec: ShellSpec) -> ShellFunction:
        return cls(spec.command, sandbox=spec.sandbox, walltime=spec.walltime, max_output_bytes=spec.max_output_bytes)

    @property
    def command(self) -> str:
        return self.spec.command

    @property
    def placeholders(self) -> list[str]:
        return placeholders(self.spec.command)

    def render(self, *args: Any, **kwargs: Any) -> str:
        """The command line a task with these arguments runs (checked as the endpoint checks it)."""
        return self.spec.command.format(**check_arguments(self.spec.command, args, kwargs))

    def __fnserve_buffer__(self) -> bytes:
        from fnserve import serialize

        return serialize.serialize_shell(self.spec)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a ShellFunction runs on an endpoint: register it (Client.register_function) or submit it "
                        f"(Executor.submit); locally, run: {self.command}")

    def __repr__(self) -> str:
        return f"ShellFunction({self.spec.command!r}, sandbox={self.spec.sandbox!r}, walltime={self.spec.walltime!r}, " \
               f"max_output_bytes={self.spec.max_output_bytes!r})"


class MPIFunction(ShellFunction):
    """A :class:`ShellFunction` whose command runs under the endpoint's MPI launcher: the command
    is prefixed with ``$PARSL_MPI_PREFIX`` (``mpiexec -n 4 ...``, ``srun ...``). Submit its tasks
    with a ``resource_specification`` (``num_nodes``, ``ranks_per_node``, ``num_ranks``) to an
    endpoint with an ``mpi`` section::

        hello = MPIFunction("python3 hello_mpi.py {greeting}")
        Executor(endpoint_id, resource_specification={"num_ranks": 2}).submit(hello, greeting="hi")
    """

    def __init__(self, command: str, **options: Any) -> None:
        if not command.lstrip().startswith("$PARSL_MPI_PREFIX"):
            command = f"$PARSL_MPI_PREFIX {command}"
        super().__init__(command, **options)
        if "name" not in options:
            words = command.split()
            self.__name__ = words[1].rsplit("/", 1)[-1] if len(words) > 1 else "mpi"
