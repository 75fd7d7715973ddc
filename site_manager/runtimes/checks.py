"""What the site manager checks and cleans up on its own host, for runtimes whose blocks run there.

* Before a runtime's engine starts (its first task, or its hot spares): is the image there? A
  missing image is one line (``image not found: ...``) at once, instead of a block that starts,
  fails and is noticed at the provider's next poll. Only where blocks run on this host (the
  ``local`` provider); on a cluster the nodes' own image stores answer, through the block's
  output.
* Containers this endpoint left (a killed site manager, a SIGKILLed block script): removed
  when the endpoint starts, stops, or a block of theirs ends.
"""

from __future__ import annotations

import logging
import os
import shutil

from site_manager.runtimes import apptainer, oci
from site_manager.runtimes.blocks import binary
from site_manager.runtimes.config import APPTAINER_TYPES, OCI_TYPES, RuntimeConfig, start_failure

logger = logging.getLogger(__name__)


def problem(rt: RuntimeConfig) -> str:
    """Why ``rt`` cannot start on this host, in one line ("" when nothing is wrong that we can see)."""
    if rt.type == "venv":
        return "" if os.access(rt.python, os.X_OK) else f"{rt.describe()}: no interpreter at {rt.python}; create the environment or fix `python`"
    if rt.type in ("host",):
        return ""
    if rt.type in APPTAINER_TYPES:
        try:
            apptainer.find_binary(rt.command)
        except apptainer.NoApptainer as exc:
            return f"{rt.describe()}: {exc}"
        why = apptainer.image_problem(rt.image)
        return f"{rt.describe()}: {why}" if why else ""
    if shutil.which(binary(rt)) is None:
        return f"{rt.describe()}: {binary(rt)} is not installed on this host (not on PATH); install it or set the runtime's `command`"
    if rt.type == "charliecloud":
        return "" if os.path.isdir(rt.image) else start_failure(rt, f"can't find image: {rt.image}")
    if rt.type in OCI_TYPES and rt.pull == "never" and oci.image_exists(rt) is False:
        return start_failure(rt, f"{rt.image}: image not known")
    return ""


def remove_leftovers(rt: RuntimeConfig, endpoint_id: str, keep_blocks: set[str] | None, why: str) -> None:
    """Remove ``rt``'s containers (or Apptainer instances) of this endpoint on this host, but those of ``keep_blocks``."""
    try:
        if rt.type in OCI_TYPES:
            oci.remove_containers(rt, oci.leftover_containers(rt, endpoint_id, keep_blocks), why)
        elif rt.type in APPTAINER_TYPES and rt.instance:
            prefix = f"fnserve-{endpoint_id[:8]}-{rt.name}-b"
            exe = apptainer.find_binary(rt.command)
            for inst in apptainer.list_instances(exe):
                name = str(inst.get("instance", ""))
                block = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else None
                if block is not None and (keep_blocks is None or block not in keep_blocks):
                    apptainer.stop_instance(exe, name)
                    logger.warning("stopped apptainer instance %s: %s", name, why)
    except Exception as exc:  # noqa: BLE001 - cleaning up must never stop the endpoint
        logger.warning("cannot clean up %s: %s", rt.describe(), exc)
