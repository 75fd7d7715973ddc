#!/usr/bin/env bash
# Builds a small worker image offline from this machine's own Python, for the runtime tests and
# benchmarks: a root filesystem holding the interpreter, its standard library, the packages a
# worker imports (Parsl's worker pool, fnserve core, node_manager) and the shared libraries they
# link, then `podman import`s it. Real sites build containers/Dockerfile or containers/fnserve-worker.def.
#
#   scripts/build_worker_image.sh [OUT_DIR]     (default: /var/cache/fnserve/worker-image)
#
# Prints the image name. Cached: rebuilt only when fnserve's sources or the Python change.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/var/cache/fnserve/worker-image}
IMAGE=${FNSERVE_WORKER_IMAGE:-localhost/fnserve-worker:test}
PY=$(python3 -c 'import sys; print(sys.executable)')
DOCKER_IMAGE=${FNSERVE_DOCKER_WORKER_IMAGE:-$IMAGE}

key=$( { "$PY" -c 'import sys, parsl; print(sys.version, parsl.__version__)'; cat fnserve/*.py node_manager/*.py "$0"; } | sha256sum | cut -c1-16)
# (fnserve's sources are in the key: the image carries its own copy of the core and node manager)
# Docker gets the same image when its daemon runs here (the Docker runtime's tests).
docker_up() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
docker_has() { ! docker_up || docker image inspect "$DOCKER_IMAGE" >/dev/null 2>&1; }
if [ -f "$OUT/key" ] && [ "$(cat "$OUT/key")" = "$key" ] && podman image exists "$IMAGE" && [ -x "$OUT/rootfs/opt/python/bin/python3" ] && docker_has; then
  echo "$IMAGE"
  exit 0
fi

rm -rf "$OUT/rootfs" && mkdir -p "$OUT/rootfs"
"$PY" - "$OUT/rootfs" <<'PY'
"""Copy the interpreter, the stdlib and the worker's packages into a root filesystem."""
import importlib, os, shutil, subprocess, sys, sysconfig

root = sys.argv[1]
prefix = "/opt/python"
dest = lambda p: os.path.join(root, p.lstrip("/"))
for m in ("parsl.executors.high_throughput.process_worker_pool", "node_manager.execute", "fnserve.serialize",
          "fnserve.outputs", "dill", "msgspec", "zmq"):
    importlib.import_module(m)
stdlib, purelib = sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]
skip = shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3")
lib = f"{prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}"  # this Python's own layout
shutil.copytree(stdlib, dest(lib), ignore=skip, symlinks=True)
tops = set()
for mod in list(sys.modules.values()):
    f = getattr(mod, "__file__", None) or ""
    if f.startswith(purelib + os.sep):
        tops.add(os.path.relpath(f, purelib).split(os.sep)[0])
tops |= {d for d in ("pyzmq.libs", "psutil.libs") if os.path.isdir(os.path.join(purelib, d))}  # bundled shared libraries
site = dest(lib + "/site-packages")
os.makedirs(site, exist_ok=True)
for top in sorted(tops):
    # Editable-install hooks, and AWS clients Parsl imports only when present (100 MB a worker never uses).
    if top.startswith("__editable__") or top in ("boto3", "botocore", "s3transfer", "jmespath", "sqlalchemy", "_distutils_hack"):
        continue
    src = os.path.join(purelib, top)
    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(site, top))
# fnserve itself (an editable install here): the core and the node manager, as the real image has.
here = os.getcwd()
for pkg in ("fnserve", "node_manager"):
    shutil.copytree(os.path.join(here, pkg), os.path.join(site, pkg), ignore=shutil.ignore_patterns("__pycache__"))
# The interpreter, libpython, and every shared library any of it links (ldd).
binary = os.path.realpath(sys.executable)
os.makedirs(dest(prefix + "/bin"), exist_ok=True)
shutil.copy2(binary, dest(prefix + "/bin/python3"))
libpython = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
objects = [binary, libpython]
for top, _, files in os.walk(root):
    objects += [os.path.join(top, f) for f in files if ".so" in f]
libs = set()
for obj in objects:
    out = subprocess.run(["ldd", obj], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/") and os.path.exists(path) and not path.startswith(root):
            libs.add(path)
for lib in sorted(libs):
    target = dest(lib)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
# Debian's /lib is a symlink to /usr/lib: keep that layout so ld.so finds things either way.
for d in ("bin", "tmp", "etc", "dev", "proc", "sys", "usr/bin"):
    os.makedirs(dest("/" + d), exist_ok=True)
os.chmod(dest("/tmp"), 0o1777)
os.symlink(prefix + "/bin/python3", dest("/usr/bin/python3"))
os.symlink("python3", dest("/usr/bin/python"))
shutil.copy2("/bin/sh", dest("/bin/sh"))  # Parsl's worker pool runs no shell, but `podman run IMAGE sh` helps debugging
with open(dest("/etc/passwd"), "w") as f:
    f.write("root:x:0:0:root:/root:/bin/sh\n")
with open(dest("/etc/group"), "w") as f:
    f.write("root:x:0:\n")
# The worker pool is started by name (Parsl's launch command): a tiny entry point on PATH.
with open(dest("/usr/bin/process_worker_pool.py"), "w") as f:
    f.write("#!/usr/bin/python3\nimport runpy\nrunpy.run_module('parsl.executors.high_throughput.process_worker_pool', run_name='__main__')\n")
os.chmod(dest("/usr/bin/process_worker_pool.py"), 0o755)
PY
# /bin/sh links libc (already copied for Python); a fresh Python in the image compiles nothing.
"$OUT/rootfs/usr/bin/python3" -c 'pass' 2>/dev/null || true
tar -C "$OUT/rootfs" -cf "$OUT/rootfs.tar" .
podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
podman import --change 'ENV PATH=/opt/python/bin:/usr/bin:/bin' --change 'ENV PYTHONHOME=/opt/python' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' "$OUT/rootfs.tar" "$IMAGE" >/dev/null
if docker_up; then
  docker rmi -f "$DOCKER_IMAGE" >/dev/null 2>&1 || true
  docker import --change 'ENV PATH=/opt/python/bin:/usr/bin:/bin' --change 'ENV PYTHONHOME=/opt/python' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' "$OUT/rootfs.tar" "$DOCKER_IMAGE" >/dev/null
  docker run --rm "$DOCKER_IMAGE" python3 -c 'import node_manager.execute' >/dev/null
fi
rm -f "$OUT/rootfs.tar"
podman run --rm "$IMAGE" python3 -c 'import node_manager.execute, parsl.executors.high_throughput.process_worker_pool' 
echo "$key" > "$OUT/key"
echo "$IMAGE"
