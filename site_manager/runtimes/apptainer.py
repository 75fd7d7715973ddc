"""Apptainer / Singularity through spython (singularity-cli).

spython's client builds the command lines (``exec``, ``instance start``, ``instance stop``,
``build``) the way it drives Singularity; it names the binary ``singularity``, which Apptainer
installs as a compatibility link. fnserve puts the runtime's own binary in its place: the
runtime's ``command``, else ``apptainer`` on PATH, else ``singularity``.

Two ways to run a block's worker pool:

* ``exec`` (default): one ``apptainer exec`` per pool; the pool is the container's process and
  ends with the block; nothing outlives the batch job.
* ``instance: true``: ``apptainer instance start IMAGE NAME`` once per block, then
  ``apptainer exec instance://NAME`` for the pool; the instance has the block's name (listable
  with ``apptainer instance list``) and is stopped when the block script ends.

The worker always runs with ``--cleanenv`` (the job's environment does not leak into the
container), with what it needs passed explicitly with ``--env``, the run directory bound
(Parsl's logs and the interchange's keys), and ``--nv`` / ``--rocm`` for ``gpus: nvidia|amd``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from site_manager.runtimes.blocks import PLACEMENT_VARS, BlockContext, Shell, binary, pool_command, sh_join, split_bind
from site_manager.runtimes.config import RuntimeConfig

URI_SCHEMES = ("library://", "docker://", "docker-archive:", "oras://", "shub://", "oci://", "oci-archive:", "http://", "https://", "instance://")
_lock = threading.Lock()  # spython reads PATH from the process environment


class NoApptainer(Exception):
    """Neither apptainer nor singularity can be found."""


def find_binary(command: str = "") -> str:
    """The Apptainer-compatible binary to use: ``command``, else apptainer, else singularity."""
    for candidate in ([command] if command else ["apptainer", "singularity"]):
        found = shutil.which(candidate)
        if found:
            return found
    raise NoApptainer(
        f"no {command or 'apptainer or singularity'} binary on PATH ({os.environ.get('PATH', '')}): "
        "install Apptainer (https://apptainer.org/docs/admin/main/installation.html) or set the runtime's `command`")


def client() -> Any:
    """A fresh spython client (quiet)."""
    from spython.main import get_client

    return get_client(quiet=True)


@contextlib.contextmanager
def pointed_at(binary_path: str) -> Iterator[Any]:
    """A spython client whose ``singularity`` is ``binary_path`` (for commands spython runs here)."""
    with _lock, tempfile.TemporaryDirectory(prefix="fnserve-spython-") as shim:
        os.symlink(binary_path, os.path.join(shim, "singularity"))
        old = os.environ.get("PATH", "")
        os.environ["PATH"] = shim + os.pathsep + old
        try:
            yield client()
        finally:
            os.environ["PATH"] = old


def _recorded(call: Any) -> list[str]:
    """The command line a spython client call builds, without running it."""
    cli = client()
    seen: list[list[str]] = []
    cli._run_command = lambda cmd, **_kw: seen.append(list(cmd))
    call(cli)
    if not seen:
        raise RuntimeError("spython built no command")
    return seen[0]


def _with_binary(argv: list[str], rt: RuntimeConfig) -> list[str]:
    assert argv[0] == "singularity", argv
    return [binary(rt), *argv[1:]]


def env_options(rt: RuntimeConfig) -> list[str]:
    """``--cleanenv`` and what the worker needs, passed explicitly."""
    opts: list[str] = ["--cleanenv"]
    for var in PLACEMENT_VARS:
        opts += ["--env", Shell(f'"{var}=${var}"')]
    for key, value in rt.env.items():
        opts += ["--env", f"{key}={value}"]
    return opts


def _binds(rt: RuntimeConfig, ctx: BlockContext) -> list[str]:
    out = []
    for spec in [str(ctx.run_dir), *rt.binds]:
        src, dst, opts = split_bind(spec)
        out.append(src if dst == src and not opts else f"{src}:{dst}" + (f":{opts}" if opts else ""))
    return out


def _gpu(rt: RuntimeConfig) -> list[str]:
    return ["--rocm"] if rt.gpus == "amd" else []  # --nv is spython's own flag


def exec_argv(rt: RuntimeConfig, ctx: BlockContext, image: str, with_container_options: bool = True) -> list[str]:
    """``apptainer exec ...`` for the worker pool, as spython's ``execute`` builds it."""
    options = env_options(rt) + (_gpu(rt) + list(rt.run_options) if with_container_options else [])
    binds = _binds(rt, ctx) if with_container_options else None
    nv = rt.gpus == "nvidia" and with_container_options
    # Bind sources are checked on this host by spython: only meaningful where blocks run here.
    def call(cli: Any) -> Any:
        if ctx.local:
            return cli.execute(image=image, command=pool_command(rt), bind=binds, nv=nv, options=options, quiet=True)
        extra = [a for b in (binds or []) for a in ("--bind", b)]
        return cli.execute(image=image, command=pool_command(rt), nv=nv, options=extra + options, quiet=True)

    try:
        return _with_binary(_recorded(call), rt)
    except SystemExit as exc:  # spython exits when a bind source is missing
        raise FileNotFoundError(f"{rt.describe()}: a bind source does not exist on this host: {', '.join(_binds(rt, ctx))}") from exc


def instance_start_argv(rt: RuntimeConfig, ctx: BlockContext, name: str) -> list[str]:
    """``apptainer instance start [--nv] --bind ... --cleanenv --env ... IMAGE NAME`` (spython's grammar)."""
    cli = client()
    binds = [a for b in _binds(rt, ctx) for a in ("--bind", b)]
    options = (["--nv"] if rt.gpus == "nvidia" else []) + binds + env_options(rt) + _gpu(rt) + list(rt.run_options)
    argv = cli._init_command(["instance", "start"]) + options + [rt.image, name]
    return _with_binary(argv, rt)


def instance_stop_argv(rt: RuntimeConfig, name: str) -> list[str]:
    return _with_binary(client()._init_command(["instance", "stop"]) + [name], rt)


def script_body(rt: RuntimeConfig, ctx: BlockContext, pool: str) -> str:
    """The part of the block script that runs the pool in Apptainer."""
    if not rt.instance:
        argv = exec_argv(rt, ctx, rt.image)
        return f"exec {sh_join(argv[:-len(pool_command(rt))])} {pool}\n"
    name = Shell('"$name"')
    start = sh_join(instance_start_argv(rt, ctx, name))
    stop = sh_join(instance_stop_argv(rt, name)) + " >/dev/null 2>&1"
    exec_pool = exec_argv(rt, ctx, Shell('"instance://$name"'), with_container_options=False)
    return f"""name=$FNSERVE_CONTAINER
pid=
{start} || exit $?
# The instance goes with the block however the script ends.
trap '{stop}' EXIT
trap 'kill -TERM $pid 2>/dev/null; exit 143' TERM INT HUP
{sh_join(exec_pool[:-len(pool_command(rt))])} {pool} &
pid=$!
wait "$pid"
"""


def image_problem(image: str) -> str:
    """Why ``image`` cannot be used from this host ("" if it can, or if only the node can tell)."""
    if image.startswith(URI_SCHEMES):
        return ""  # pulled by apptainer itself on first use
    path = Path(image)
    if not path.exists():
        return f"image not found: {image} (no such SIF file or sandbox folder)"
    return ""


def list_instances(binary_path: str) -> list[dict[str, Any]]:
    """``apptainer instance list --json`` through spython: name, pid, image of each instance."""
    with pointed_at(binary_path) as cli:
        found = cli.instances(return_json=True, quiet=True)
    return [dict(i) for i in (found or [])] if isinstance(found, list) else []


def stop_instance(binary_path: str, name: str) -> None:
    """``apptainer instance stop NAME`` through spython's Instance object."""
    with pointed_at(binary_path) as cli:
        found = cli.instances(name=name, quiet=True)
        for inst in found if isinstance(found, list) else [found]:
            inst.stop(quiet=True)


def build(recipe: str, image: str, binary_path: str, fakeroot: bool = True, force: bool = False) -> Iterator[str]:
    """Build ``image`` (a .sif path) from a definition file through spython's ``build``, yielding
    its output lines; raises ``subprocess.CalledProcessError`` when the build fails."""
    with pointed_at(binary_path) as cli:
        _, lines = cli.build(recipe=recipe, image=image, sudo=False, force=force, stream=True, quiet=True,
                             options=["--fakeroot"] if fakeroot else [])
        yield from lines
