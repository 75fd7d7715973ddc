"""The block script: how a block (a batch job, or a local process) starts a runtime's worker pool.

Each runtime but ``host`` gets a small bash script in its run directory, written when its engine
starts; Parsl runs it in every block (through the launcher, on every node) as::

    bash RUN_DIR/block.sh BLOCK_ID WORKER_POOL_ARGS...

The script names where the pool runs (``FNSERVE_JOB_ID``, ``FNSERVE_CONTAINER``,
``FNSERVE_RUNTIME``: each task's record carries them, see node_manager.placement), then starts
``python -m node_manager.pool`` inside the runtime with the run directory bound at the same
path (Parsl's logs and the interchange's CurveZMQ keys live there). Container runtimes with a
daemon (podman, docker) get a named, labelled container that the script removes whatever way
it ends, so that killing the ``podman run`` client leaves no container serving behind it.

The script file is readable: an admin debugging a block reads exactly what ran. The run
directory must be visible from the compute nodes (a shared file system), as Parsl's own logs are.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from site_manager.runtimes.config import APPTAINER_TYPES, HOST, OCI_TYPES, POOL_MODULE, RuntimeConfig

# Variables the script sets for the worker (node_manager.placement reads them).
PLACEMENT_VARS = ("FNSERVE_RUNTIME", "FNSERVE_BLOCK_ID", "FNSERVE_JOB_ID", "FNSERVE_CONTAINER")


class Shell(str):
    """An argument the script writes as is (it holds a ``"$variable"``); every other is quoted."""


def sh_join(argv: list[str]) -> str:
    return " ".join(a if isinstance(a, Shell) else shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class BlockContext:
    """What a runtime's block script needs besides the runtime itself."""

    endpoint_id: str
    run_dir: Path  # the runtime's run directory: bound into containers at the same path
    local: bool = True  # blocks run on this host (the local provider): checks here mean something

    @property
    def name_prefix(self) -> str:
        return f"fnserve-{self.endpoint_id[:8]}"


def ended_dir(run_dir: Path) -> Path:
    """Where block scripts that supervise a container leave an exit note, ``<block id>`` holding
    the exit status, the moment the container ends (read by :meth:`site_manager.engine.Engine.ended_blocks`;
    batch providers poll job states only every minute)."""
    return run_dir / "ended"


def read_exit_notes(run_dir: Path) -> dict[str, str]:
    """``block id -> exit status`` of the exit notes under ``run_dir`` (missing folder: none)."""
    notes: dict[str, str] = {}
    try:
        entries = list(os.scandir(ended_dir(run_dir)))
    except OSError:
        return notes
    for entry in entries:
        try:
            with open(entry.path) as f:
                notes[entry.name] = f.read().strip()
        except OSError:
            continue
    return notes


def container_name(ctx: BlockContext, rt: RuntimeConfig) -> str:
    """The shell expression of a block's container name: endpoint, runtime, block and node."""
    return f"{ctx.name_prefix}-{rt.name}-b$block-$(hostname -s)"


def split_bind(spec: str) -> tuple[str, str, str]:
    """``src[:dst[:opts]]`` -> (src, dst, opts), dst defaulting to src.

    >>> split_bind("/scratch"), split_bind("/a:/b:ro")
    (('/scratch', '/scratch', ''), ('/a', '/b', 'ro'))
    """
    src, _, rest = spec.partition(":")
    dst, _, opts = rest.partition(":")
    return src, dst or src, opts


def pool_command(rt: RuntimeConfig) -> list[str]:
    """The worker pool's command inside the runtime (the script appends Parsl's arguments)."""
    if rt.type == "venv":
        # Isolated (-I): only the environment's own packages, not the endpoint's PYTHONPATH or
        # working directory, which would hide a venv that lacks fnserve.
        return [rt.python, "-I", "-m", POOL_MODULE]
    return [rt.python, "-m", POOL_MODULE]


def binary(rt: RuntimeConfig) -> str:
    """The container runtime's command as the block runs it (found on the node's PATH by default)."""
    return rt.command or ("ch-run" if rt.type == "charliecloud" else rt.type)


def _header(rt: RuntimeConfig, ctx: BlockContext) -> str:
    return f"""#!/bin/bash
# Written by the fnserve site manager for {rt.describe()} of endpoint {ctx.endpoint_id}.
# Parsl starts it in each block as: bash {ctx.run_dir}/block.sh BLOCK_ID WORKER_POOL_ARGS...
# It starts the worker pool inside the runtime; see site_manager/runtimes/blocks.py.
block=$1; shift
export FNSERVE_RUNTIME={shlex.quote(rt.name)} FNSERVE_BLOCK_ID="$block"
export FNSERVE_JOB_ID="${{SLURM_JOB_ID:-${{PBS_JOBID:-${{JOB_ID:-${{LSB_JOBID:-${{FLUX_JOB_ID:-}}}}}}}}}}"
export FNSERVE_CONTAINER="{container_name(ctx, rt)}"
"""


def block_script(rt: RuntimeConfig, ctx: BlockContext) -> str:
    """The text of ``rt``'s block script (pure)."""
    from site_manager.runtimes import apptainer, oci

    head = _header(rt, ctx)
    pool = sh_join(pool_command(rt)) + ' "$@"'
    if rt.type == "venv":
        sets = " ".join(f"{k}={shlex.quote(v)}" for k, v in rt.env.items())
        return head + f"exec {'env ' + sets + ' ' if sets else ''}{pool}\n"
    if rt.type == "charliecloud":
        binds = [f"--bind={src}:{dst}" for src, dst, _ in map(split_bind, [str(ctx.run_dir), *rt.binds])]
        envs = [f"--set-env={k}={v}" for k, v in rt.env.items()]
        argv = [binary(rt), "--unset-env=PYTHONPATH", *binds, *envs, *rt.run_options, rt.image, "--"]
        # ch-run refuses to start without $USER, which daemons and batch jobs often lack.
        return head + f'export USER="${{USER:-$(id -un)}}"\nexec {sh_join(argv)} {pool}\n'
    if rt.type in OCI_TYPES:
        return head + oci.script_body(rt, ctx, pool)
    if rt.type in APPTAINER_TYPES:
        return head + apptainer.script_body(rt, ctx, pool)
    raise ValueError(f"no block script for runtime type {rt.type!r}")


def write_block_script(rt: RuntimeConfig, ctx: BlockContext) -> Path:
    """Write ``rt``'s block script into its run directory; returns its path."""
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.run_dir / "block.sh"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(block_script(rt, ctx))
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    return path


def _pool_args(default_launch_cmd: str) -> str:
    """Parsl's default launch command without its leading ``process_worker_pool.py``."""
    head, _, rest = default_launch_cmd.partition(" ")
    assert head.endswith("process_worker_pool.py"), default_launch_cmd
    return rest


def launch_command(rt: RuntimeConfig, default_launch_cmd: str, script: Path) -> str | None:
    """The HighThroughputExecutor ``launch_cmd`` that runs ``rt``'s block script.

    ``default_launch_cmd`` is Parsl's (its ``{...}`` fields are filled in by Parsl later, the
    block id last). ``None`` for the host runtime: Parsl's own command as is.

    >>> launch_command(RuntimeConfig("sci", "podman", image="img"), "process_worker_pool.py -p {x}", Path("/run/sci/block.sh"))
    'bash /run/sci/block.sh {{block_id}} -p {x}'
    """
    if rt.type == HOST:
        return None
    # Braces in the path must survive Parsl's two str.format calls of the whole command.
    path = shlex.quote(str(script)).replace("{", "{{{{").replace("}", "}}}}")
    return f"bash {path} {{{{block_id}}}} {_pool_args(default_launch_cmd)}"
