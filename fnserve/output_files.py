"""Output files: a function writes files into its task's output folder, and each one appears on
the task (a live output naming the file and the object holding it) as soon as it is closed.

    def analyse(images):
        import fnserve
        out = fnserve.output_dir()
        for i, img in enumerate(images):
            plot(img).savefig(out / f"frame-{i:03d}.png")   # uploaded when closed
        return summary

    # client side, while it runs
    for f in fc.watch_files(task_id):
        fc.download_file(f, "frames/")

In a worker with an object store, ``output_dir()`` is a fresh folder for the running task; every
file closed in it is uploaded to the object store by a watcher thread (files still open, or
written again, are sent once more when the function returns). Outside a worker it is the local
folder ``fnserve-outputs`` (created), so the function runs unchanged on a laptop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Set by the node manager while a task with an object store runs.
_provider: Callable[[], Path] | None = None
LOCAL_FOLDER = "fnserve-outputs"


def output_dir() -> Path:
    """The folder whose files become the running task's output files."""
    if _provider is not None:
        return _provider()
    path = Path(LOCAL_FOLDER)
    path.mkdir(exist_ok=True)
    return path


def files_to_ship(listing: dict[str, tuple[int, int]], shipped: dict[str, tuple[int, int]]) -> list[str]:
    """Files in ``listing`` (relative name -> (size, mtime_ns)) not yet shipped as they are now.

    >>> files_to_ship({"a": (1, 5), "b": (2, 6), "c": (3, 7)}, {"a": (1, 5), "b": (2, 1)})
    ['b', 'c']
    """
    return sorted(name for name, sig in listing.items() if shipped.get(name) != sig)


def is_file_output(values: dict[str, object]) -> bool:
    """Whether a live output's values describe an output file."""
    return isinstance(values.get("file"), str) and isinstance(values.get("object_id"), str)
