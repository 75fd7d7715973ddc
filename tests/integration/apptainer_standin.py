#!/usr/bin/env python3
"""STAND-IN for the `apptainer` / `singularity` binary (neither can be installed here).

Understands only what fnserve's launch command uses: `apptainer exec [--cleanenv] [--bind DIR]...
[--env K=V]... IMAGE CMD...`. Like the real binary it refuses a missing image; then it runs
CMD directly on the host (no container), so the tests check fnserve's side of the contract:
the command line it builds and how it reports a runtime that cannot start.
"""

import os
import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "exec":
        sys.stderr.write("apptainer stand-in: only `exec` is supported\n")
        return 255
    args, env = argv[1:], {}
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt in ("--bind", "-B"):
            args.pop(0)
        elif opt == "--env":
            key, _, value = args.pop(0).partition("=")
            env[key] = value
    image, cmd = args[0], args[1:]
    if not os.path.isfile(image):
        sys.stderr.write(f"FATAL:   could not open image {image}: failed to retrieve path for {image}: no such file or directory\n")
        return 255
    os.environ.update(env)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
