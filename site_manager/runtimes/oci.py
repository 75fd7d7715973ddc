"""podman and Docker: the block script's `run` command, and the containers an endpoint left.

Every container is named ``fnserve-<endpoint>-<runtime>-b<block>-<node>`` and labelled
``fnserve.endpoint``, ``fnserve.runtime``, ``fnserve.block`` and ``fnserve.job``, so an admin can
tell whose it is (``podman ps --filter label=fnserve.endpoint=ID``) and the site manager can
remove what an earlier run, a killed client or a SIGKILLed batch job left behind.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess

from site_manager.runtimes.blocks import PLACEMENT_VARS, BlockContext, Shell, binary, ended_dir, sh_join, split_bind
from site_manager.runtimes.config import RuntimeConfig

logger = logging.getLogger(__name__)
LABEL = "fnserve"


def gpu_options(rt: RuntimeConfig) -> list[str]:
    """All of the node's GPUs into the container; Parsl's pool gives each worker its own
    (``CUDA_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES`` from ``engine.available_accelerators``),
    which index the devices as the node numbers them, so the container must see them all.

    >>> gpu_options(RuntimeConfig("g", "podman", image="i", gpus="nvidia")), gpu_options(RuntimeConfig("g", "docker", image="i", gpus="nvidia"))
    (['--device', 'nvidia.com/gpu=all'], ['--gpus', 'all'])
    """
    if rt.gpus == "nvidia":
        # podman uses the Container Device Interface (nvidia-ctk cdi generate); Docker its NVIDIA runtime hook.
        return ["--device", "nvidia.com/gpu=all"] if rt.type == "podman" else ["--gpus", "all"]
    if rt.gpus == "amd":
        return ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]
    return []


def run_argv(rt: RuntimeConfig, ctx: BlockContext) -> list[str]:
    """``podman run`` / ``docker run`` for one block's worker pool (the pool command follows)."""
    labels = [f"{LABEL}.endpoint={ctx.endpoint_id}", f"{LABEL}.runtime={rt.name}"]
    argv = [binary(rt), "run", "--rm", "--name", Shell('"$name"')]
    for label in labels:
        argv += ["--label", label]
    argv += ["--label", Shell(f'"{LABEL}.block=$block"'), "--label", Shell(f'"{LABEL}.job=$FNSERVE_JOB_ID"')]
    # Host network: workers connect to the interchange on the node's own addresses.
    argv += [f"--pull={rt.pull}", "--network", "host"]
    for src, dst, opts in map(split_bind, [str(ctx.run_dir), *rt.binds]):
        argv += ["-v", f"{src}:{dst}" + (f":{opts}" if opts else "")]
    for var in PLACEMENT_VARS:
        argv += ["-e", var]  # the value the script exported
    for key, value in rt.env.items():
        argv += ["-e", f"{key}={value}"]
    return [*argv, *gpu_options(rt), *rt.run_options, rt.image]


def remove_argv(rt: RuntimeConfig) -> list[str]:
    # podman waits 10 s for a stop by default; -t 0 kills at once (the pool holds no state).
    return [binary(rt), "rm", "-f", *(["-t", "0"] if rt.type == "podman" else [])]


def script_body(rt: RuntimeConfig, ctx: BlockContext, pool: str) -> str:
    """The part of the block script that runs the container and removes it however it ends."""
    rm = sh_join(remove_argv(rt)) + ' "$name" >/dev/null 2>&1'
    ended = shlex.quote(str(ended_dir(ctx.run_dir)))
    return f"""name=$FNSERVE_CONTAINER
pid=
{rm}  # a container left under this name by an earlier run
# However this script ends (the pool exits, the job is cancelled, the client is killed), the
# container goes with it: no container keeps serving without its block. The exit note tells
# the site manager at once that the block's tasks died with it (it re-runs them): written before
# the removal, which can take seconds on a loaded node.
trap 'rc=$?; mkdir -p {ended} && echo "$rc" > {ended}/"$block"; {rm}' EXIT
trap 'kill -TERM $pid 2>/dev/null; exit 143' TERM INT HUP
{sh_join(run_argv(rt, ctx))} {pool} &
pid=$!
wait "$pid"
"""


def image_exists(rt: RuntimeConfig) -> bool | None:
    """Whether the image is in this host's local store (None: no such binary here to ask)."""
    exe = shutil.which(binary(rt))
    if exe is None:
        return None
    args = [exe, "image", "exists", rt.image] if rt.type == "podman" else [exe, "image", "inspect", rt.image]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return out.returncode == 0


def leftover_containers(rt: RuntimeConfig, endpoint_id: str, keep_blocks: set[str] | None = None) -> list[str]:
    """Names of this endpoint's containers of ``rt`` on this host whose block is not in ``keep_blocks``."""
    exe = shutil.which(binary(rt))
    if exe is None:
        return []
    args = [exe, "ps", "-a", "--filter", f"label={LABEL}.endpoint={endpoint_id}", "--filter", f"label={LABEL}.runtime={rt.name}",
            "--format", "{{.Names}} " + ('{{index .Labels "fnserve.block"}}' if rt.type == "podman" else '{{.Label "fnserve.block"}}')]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        logger.warning("cannot list %s containers: %s", rt.type, out.stderr.strip()[-300:])
        return []
    names = []
    for line in out.stdout.splitlines():
        name, _, block = line.strip().partition(" ")
        if name and (keep_blocks is None or block not in keep_blocks):
            names.append(name)
    return names


def remove_containers(rt: RuntimeConfig, names: list[str], why: str) -> None:
    """Remove (kill first) the named containers, saying which and why."""
    if not names:
        return
    exe = shutil.which(binary(rt)) or binary(rt)
    out = subprocess.run([exe, *remove_argv(rt)[1:], *names], capture_output=True, text=True, timeout=120, check=False)
    logger.warning("removed %s container(s) %s: %s%s", rt.type, ", ".join(names), why,
                   f" ({out.stderr.strip()[-300:]})" if out.returncode else "")
