"""Copy programs and the shared libraries they link into a root filesystem (stand-in images).

    python3 scripts/standin_rootfs.py ROOT FILE... [--libpath DIR:DIR]

Each FILE is copied to the same path under ROOT (a directory with everything in it), and every
shared library that ``ldd`` resolves for the copied ELF files (``--libpath`` adds folders, for
programs extracted from a .deb that is not installed) is copied beside them. Used by
scripts/build_compose_images.sh and scripts/build_service_image.sh: there is no registry to pull
base images from where the tests run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def _dest(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def copy_tree(root: str, path: str, source: str | None = None) -> None:
    """Copy a file or a folder (``source``, default ``path``) to ``path`` under ``root``."""
    src, target = source or path, _dest(root, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(os.path.realpath(src), target)


def copy_libraries(root: str, objects: list[str], libpath: str = "") -> None:
    """Copy what ``ldd`` resolves for ``objects`` (paths on this host) into ``root``."""
    env = {**os.environ, **({"LD_LIBRARY_PATH": libpath} if libpath else {})}
    libs: set[str] = set()
    for obj in objects:
        out = subprocess.run(["ldd", obj], capture_output=True, text=True, env=env, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else (parts[0] if parts else "")
            if path.startswith("/") and os.path.exists(path) and not path.startswith(root):
                libs.add(path)
    for so in sorted(libs):
        # A library from an extracted .deb keeps its place under /usr/lib of the image.
        dest_path = so
        for folder in filter(None, libpath.split(":")):
            if so.startswith(folder.rstrip("/") + "/"):
                dest_path = "/usr/lib/x86_64-linux-gnu/" + os.path.basename(so)
        if not os.path.exists(_dest(root, dest_path)):
            copy_tree(root, dest_path, os.path.realpath(so))


def elf_files(root: str) -> list[str]:
    """Every file under ``root`` that may link shared libraries (programs and .so files)."""
    found = []
    for top, _, files in os.walk(root):
        for f in files:
            p = os.path.join(top, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    if fh.read(4) == b"\x7fELF":
                        found.append(p)
    return found


def main(argv: list[str]) -> None:
    libpath = ""
    if "--libpath" in argv:
        i = argv.index("--libpath")
        libpath = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    root, files = argv[0], argv[1:]
    for spec in files:  # PATH or PATH=SOURCE (copied from SOURCE to PATH in the image)
        path, _, source = spec.partition("=")
        copy_tree(root, path, source or None)
    copy_libraries(root, elf_files(root), libpath)


if __name__ == "__main__":
    main(sys.argv[1:])
