#!/usr/bin/python3 -IS
"""STAND-IN for the `apptainer` / `singularity` binary: neither can be installed on the test
machines (not in Debian, not on PyPI). The tests put it on PATH as `apptainer` and `singularity`.

It is faithful to the command-line grammar of Apptainer 1.3 for what spython and fnserve use:

    apptainer [--quiet|--debug|--silent|--verbose] COMMAND ...
    apptainer --version | version
    apptainer exec [FLAGS] IMAGE COMMAND [ARGS...]
    apptainer instance start [FLAGS] IMAGE NAME [ARGS...]
    apptainer instance stop [-t SECONDS] [-s SIGNAL] (--all | NAME)
    apptainer instance list [--json] [NAME]
    apptainer build [--force] [--fakeroot] [--sandbox] [--notest] IMAGE RECIPE

with flags as `--flag value` or `--flag=value`; `--bind`/`-B` and `--env` take comma-separated
lists, as Apptainer's do. It refuses what Apptainer refuses, with Apptainer's messages and exit
status 255: an unknown flag, a missing or unrecognised image (a SIF file must carry the SIF
magic), a bind whose source does not exist or whose destination is not absolute, an instance
name that is taken or unknown, a missing argument.

What it does instead of containing: it runs the command on the host, in the environment
Apptainer would give it (`--cleanenv`/`-C`: only HOME, LANG, TERM, USER; else the host's minus
PATH, PS1 and LD_LIBRARY_PATH; then APPTAINERENV_* and `--env`; PATH the container default
unless set; APPTAINER_CONTAINER / APPTAINER_NAME / APPTAINER_INSTANCE set). Binds are checked,
not mounted (the tests bind paths that exist at the same place on the host). `--nv` / `--rocm`
only warn when the host has no GPU driver, as Apptainer does. An instance is a detached process
that holds the instance's state; `exec instance://NAME` joins it, and `instance stop` ends the
processes that joined, as stopping a real instance ends its PID namespace. `build` checks the
definition file and its %files sources, then writes a stand-in SIF (the magic and the recipe):
no image is built.

Every invocation is appended as one JSON line to $APPTAINER_STANDIN_LOG (argv, cwd, pid, time),
so tests assert the exact command lines. Instances are kept under $APPTAINER_STANDIN_STATE.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

VERSION = "1.3.6"
SIF_MAGIC_OFFSET, SIF_MAGIC = 32, b"SIF_MAGIC"
SIF_LAUNCH = b"#!/usr/bin/env run-singularity\n"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
URI = re.compile(r"^(library|docker|oras|shub|http|https)://.+|^(docker-daemon|docker-archive|oci-archive|oci):.+")
INSTANCE_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")

# exec / instance start flags: name -> takes a value. Short forms map to long ones.
CONTAINER_FLAGS = {
    "--bind": True, "--mount": True, "--cleanenv": False, "--env": True, "--env-file": True, "--nv": False,
    "--nvccli": False, "--rocm": False, "--contain": False, "--containall": False, "--no-home": False,
    "--home": True, "--pwd": True, "--cwd": True, "--workdir": True, "--scratch": True, "--writable": False,
    "--writable-tmpfs": False, "--fakeroot": False, "--net": False, "--network": True, "--network-args": True,
    "--no-mount": True, "--no-privs": False, "--userns": False, "--app": True, "--ipc": False, "--pid": False,
    "--hostname": True, "--compat": False, "--overlay": True, "--security": True, "--disable-cache": False,
    "--no-init": False, "--no-eval": False, "--unsquash": False, "--cpus": True, "--memory": True,
    "--keep-privs": False, "--uts": False, "--boot": False, "--dns": True,
}
SHORT = {"-B": "--bind", "-e": "--cleanenv", "-c": "--contain", "-C": "--containall", "-H": "--home",
         "-W": "--workdir", "-S": "--scratch", "-w": "--writable", "-f": "--fakeroot", "-n": "--net",
         "-u": "--userns", "-i": "--ipc", "-p": "--pid", "-o": "--overlay"}
GLOBAL_FLAGS = {"--quiet", "-q", "--debug", "-d", "--silent", "-s", "--verbose", "-v", "--nocolor"}


class Refused(Exception):
    """What Apptainer would refuse: printed as it prints it, exit status 255."""


def fatal(message: str) -> Refused:
    return Refused(f"FATAL:   {message}")


def record(argv: list[str]) -> None:
    log = os.environ.get("APPTAINER_STANDIN_LOG")
    if not log:
        return
    line = json.dumps({"time": time.time(), "argv": argv, "cwd": os.getcwd(), "pid": os.getpid()})
    with open(log, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")


def state_dir() -> Path:
    path = Path(os.environ.get("APPTAINER_STANDIN_STATE") or Path.home() / ".apptainer-standin" / "instances")
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_flags(args: list[str], table: dict[str, bool], command: str) -> tuple[dict[str, list[str]], list[str]]:
    """Flags until the first positional argument (the image); the rest is positional."""
    flags: dict[str, list[str]] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        name, eq, value = arg.partition("=")
        name = SHORT.get(name, name)
        if name not in table:
            raise Refused(f"Error: unknown flag: {arg.split('=')[0]}\nRun 'apptainer {command} --help' for more detailed usage information.")
        if table[name]:
            if not eq:
                i += 1
                if i >= len(args):
                    raise Refused(f"Error: flag needs an argument: {arg}")
                value = args[i]
            flags.setdefault(name, []).append(value)
        else:
            if eq:
                raise Refused(f"Error: invalid argument \"{value}\" for \"{name}\" flag")
            flags.setdefault(name, []).append("")
        i += 1
    return flags, args[i:]


def csv_items(values: list[str]) -> list[str]:
    return [item for value in values for item in value.split(",") if item]


def check_image(image: str) -> str:
    if image.startswith("instance://"):
        return image
    if URI.match(image):
        return image  # the real binary pulls it into its cache; the stand-in cannot, and runs it as is
    path = Path(image)
    if not path.exists():
        raise fatal(f"could not open image {image}: failed to retrieve path for {image}: lstat {image}: no such file or directory")
    if path.is_dir():
        return str(path)  # a sandbox folder
    with open(path, "rb") as f:
        head = f.read(SIF_MAGIC_OFFSET + len(SIF_MAGIC))
    if head[SIF_MAGIC_OFFSET:] != SIF_MAGIC:
        raise fatal(f"could not open image {path.resolve()}: image format not recognized")
    return str(path.resolve())


def check_binds(flags: dict[str, list[str]]) -> list[str]:
    binds = csv_items(flags.get("--bind", []))
    for spec in binds:
        src, _, rest = spec.partition(":")
        dst, _, opts = rest.partition(":")
        dst = dst or src
        if not dst.startswith("/"):
            raise fatal(f"container creation failed: destination {dst} must be an absolute path")
        for opt in filter(None, opts.split(",")):
            if opt not in ("ro", "rw"):
                raise fatal(f"while parsing bind path: {spec}: {opt} is not a valid bind option")
        if not os.path.exists(src):
            raise fatal(f"container creation failed: mount hook function failure: mount {src}->{dst} error: "
                        f"while mounting {src}: mount source {src} doesn't exist")
    return binds


def container_env(flags: dict[str, list[str]], image: str) -> dict[str, str]:
    """The environment Apptainer gives the contained process."""
    host = dict(os.environ)
    clean = "--cleanenv" in flags or "--containall" in flags
    if clean:
        env = {k: host[k] for k in ("HOME", "LANG", "TERM", "USER") if k in host}
    else:
        env = {k: v for k, v in host.items() if k not in ("PATH", "PS1", "LD_LIBRARY_PATH") and not k.startswith(("APPTAINER", "SINGULARITY"))}
    for key, value in host.items():
        for prefix in ("APPTAINERENV_", "SINGULARITYENV_"):
            if key.startswith(prefix):
                env[key[len(prefix):]] = value
    for path in flags.get("--env-file", []):
        if not os.path.exists(path):
            raise fatal(f"while processing {path}: open {path}: no such file or directory")
        for line in Path(path).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"')
    for item in csv_items(flags.get("--env", [])):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise fatal(f"while processing --env: {item}: must be in the form KEY=VALUE")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({"APPTAINER_CONTAINER": image, "APPTAINER_NAME": os.path.basename(image.rstrip("/")),
                "SINGULARITY_CONTAINER": image, "SINGULARITY_NAME": os.path.basename(image.rstrip("/"))})
    return env


def gpu_warnings(flags: dict[str, list[str]]) -> None:
    if "--nv" in flags and not any(os.path.exists(p) for p in ("/usr/bin/nvidia-smi", "/proc/driver/nvidia")):
        sys.stderr.write("WARNING: Could not find any nv files on this host!\n")
    if "--rocm" in flags and not os.path.exists("/dev/kfd"):
        sys.stderr.write("WARNING: Could not find any rocm files on this host!\n")


def load_instance(name: str) -> dict:
    path = state_dir() / f"{name}.json"
    if not path.exists():
        raise fatal(f"no instance found with name {name}")
    data = json.loads(path.read_text())
    try:
        os.kill(data["pid"], 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        raise fatal(f"no instance found with name {name}") from None
    return data


def cmd_exec(args: list[str]) -> int:
    flags, rest = parse_flags(args, CONTAINER_FLAGS, "exec")
    if len(rest) < 2:
        raise Refused(f"Error: requires at least 2 arg(s), only received {len(rest)}")
    image, command = check_image(rest[0]), rest[1:]
    env = container_env(flags, image)
    if image.startswith("instance://"):
        name = image[len("instance://"):]
        inst = load_instance(name)
        env.update({"APPTAINER_INSTANCE": name, "APPTAINER_CONTAINER": inst["image"], "APPTAINER_NAME": os.path.basename(inst["image"])})
        joined = state_dir() / f"{name}.pids"
        with open(joined, "a") as f:
            f.write(f"{os.getpid()}\n")
    else:
        check_binds(flags)
        gpu_warnings(flags)
    if flags.get("--pwd"):
        os.chdir(flags["--pwd"][-1])
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise fatal(f"\"{command[0]}\": executable file not found in $PATH") from None


def cmd_instance(args: list[str]) -> int:
    if not args:
        raise Refused("Error: requires a subcommand: start, stop, list")
    sub, args = args[0], args[1:]
    if sub == "start":
        flags, rest = parse_flags(args, CONTAINER_FLAGS, "instance start")
        if len(rest) < 2:
            raise Refused(f"Error: requires at least 2 arg(s), only received {len(rest)}")
        image, name = check_image(rest[0]), rest[1]
        if not INSTANCE_NAME.match(name):
            raise fatal(f"instance name {name} is not valid: only letters, digits, '.', '_' and '-'")
        if (state_dir() / f"{name}.json").exists():
            try:
                load_instance(name)
                raise fatal(f"instance {name} already exists")
            except Refused as exc:
                if "already exists" in str(exc):
                    raise
        binds = check_binds(flags)
        gpu_warnings(flags)
        env = container_env(flags, image)
        daemon = subprocess.Popen([sys.executable, os.path.abspath(__file__), "__instance_daemon__"], start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = {"instance": name, "pid": daemon.pid, "img": image, "image": image, "ip": "", "binds": binds,
                 "env": sorted(env), "started": time.time(), "logErrPath": "", "logOutPath": ""}
        (state_dir() / f"{name}.json").write_text(json.dumps(state))
        sys.stderr.write("INFO:    instance started successfully\n")
        return 0
    if sub == "stop":
        flags, rest = _stop_flags(args)
        names = [p.stem for p in state_dir().glob("*.json")] if "--all" in flags else rest[:1]
        if not names:
            raise Refused("Error: requires 1 arg(s) or --all")
        timeout = float(flags.get("--timeout", ["10"])[-1])
        for name in names:
            inst = load_instance(name)
            _stop(name, inst, timeout)
            sys.stderr.write(f"INFO:    Stopping {name} instance of {inst['image']} (PID={inst['pid']})\n")
        return 0
    if sub == "list":
        flags, rest = parse_flags(args, {"--json": False, "--user": True, "--logs": False}, "instance list")
        found = []
        for path in sorted(state_dir().glob("*.json")):
            try:
                found.append(load_instance(path.stem))
            except Refused:
                continue
        if rest:
            found = [i for i in found if re.fullmatch(rest[0].replace("*", ".*"), i["instance"])]
        keys = ("instance", "pid", "img", "ip", "logErrPath", "logOutPath")
        if "--json" in flags:
            print(json.dumps({"instances": [{k: i[k] for k in keys} for i in found]}, indent=4))
        else:
            print(f"{'INSTANCE NAME':<16}{'PID':<8}{'IP':<5}IMAGE")
            for i in found:
                print(f"{i['instance']:<16}{i['pid']:<8}{'':<5}{i['img']}")
        return 0
    raise Refused(f"Error: unknown command \"{sub}\" for \"apptainer instance\"")


def _stop_flags(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    expanded = [{"-a": "--all", "-t": "--timeout", "-s": "--signal", "-F": "--force"}.get(a, a) for a in args]
    return parse_flags(expanded, {"--all": False, "--timeout": True, "--signal": True, "--force": False}, "instance stop")


def _stop(name: str, inst: dict, timeout: float) -> None:
    joined = state_dir() / f"{name}.pids"
    pids = [int(p) for p in joined.read_text().split()] if joined.exists() else []
    for pid in [*pids, inst["pid"]]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in [*pids, inst["pid"]]:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (state_dir() / f"{name}.json").unlink(missing_ok=True)
    joined.unlink(missing_ok=True)


def cmd_build(args: list[str]) -> int:
    flags, rest = parse_flags(args, {"--force": False, "--fakeroot": False, "--sandbox": False, "--notest": False,
                                     "--section": True, "--update": False, "--disable-cache": False, "--fix-perms": False},
                              "build")
    if len(rest) != 2:
        raise Refused(f"Error: accepts 2 arg(s), received {len(rest)}")
    image, recipe = rest
    if os.path.exists(image) and "--force" not in flags:
        raise fatal(f"While checking build target: build target '{image}' already exists. Use --force if you want to overwrite it")
    if not os.path.isfile(recipe):
        raise fatal(f"While checking build target: unable to open file {recipe}: no such file or directory")
    text = Path(recipe).read_text()
    if not re.search(r"^\s*Bootstrap:\s*\S+", text, re.MULTILINE | re.IGNORECASE):
        raise fatal(f"While parsing definition: {recipe}: invalid definition file: no Bootstrap header")
    files = re.search(r"^%files\s*\n(.*?)(?=^%|\Z)", text, re.MULTILINE | re.DOTALL)
    for line in (files.group(1).splitlines() if files else []):
        src = line.split()[0] if line.split() else ""
        if src and not src.startswith("#") and not os.path.exists(src):
            raise fatal(f"While performing build: unable to copy {src}: no such file or directory")
    sys.stderr.write("INFO:    Starting build... (stand-in: nothing is built)\n")
    if "--sandbox" in flags:
        os.makedirs(os.path.join(image, ".singularity.d"), exist_ok=True)
    else:
        with open(image, "wb") as f:
            f.write(SIF_LAUNCH.ljust(SIF_MAGIC_OFFSET, b"\0") + SIF_MAGIC + b"\0" + text.encode())
    print(f"INFO:    Build complete: {image}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["__instance_daemon__"]:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    prog = os.path.basename(sys.argv[0])
    record([prog, *argv])
    args = list(argv)
    while args and args[0] in GLOBAL_FLAGS:
        args.pop(0)
    if not args:
        raise Refused("Usage: apptainer [global options...] <command>")
    command, rest = args[0], args[1:]
    if command in ("--version", "version"):
        print(f"apptainer version {VERSION}")
        return 0
    handlers = {"exec": cmd_exec, "instance": cmd_instance, "build": cmd_build}
    if command not in handlers:
        raise Refused(f"Error: unknown command \"{command}\" for \"apptainer\"")
    return handlers[command](rest)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Refused as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(255)
