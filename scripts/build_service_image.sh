#!/usr/bin/env bash
# Builds the service image (deploy/Containerfile) offline, for the tests: there is no registry to
# pull python:3.11-slim from here, so a stand-in base image is made first from this machine's own
# Python (interpreter, standard library, and the packages the web service, the forwarder and the
# admin CLI import, with the shared libraries they link), `podman import`ed, and the Containerfile
# is built on it with PIP_INSTALL=0. A facility builds deploy/Containerfile on python:3.11-slim.
#
#   scripts/build_service_image.sh [OUT_DIR]     (default: /var/cache/fnserve/service-image)
#
# Prints the image name. Cached: the base is rebuilt only when the Python or its packages
# change; the image itself is podman's layer cache (a source change rebuilds the last layers).
set -euo pipefail
cd "$(dirname "$0")/.."
# The image runs as an unprivileged user: its files must be readable whatever umask the caller has
# (a test process that started a private stack had 077, and the base came out unreadable).
umask 022
. scripts/image_cache.sh
OUT=${1:-/var/cache/fnserve/service-image}
BASE=${FNSERVE_SERVICE_BASE_IMAGE:-localhost/fnserve-python-base:test}
IMAGE=${FNSERVE_SERVICE_IMAGE:-localhost/fnserve-service:test}
PY=$(python3 -c 'import sys; print(sys.executable)')

key=$( { "$PY" -c 'import sys; print(sys.version)'; "$PY" -m pip freeze 2>/dev/null | grep -v -i '^-e\|fnserve'; cat "$0" scripts/standin_rootfs.py; } | cache_key )
if ! cache_fresh "$OUT" "$key" "$BASE"; then
  rm -rf "$OUT/rootfs" && mkdir -p "$OUT/rootfs"
  "$PY" - "$OUT/rootfs" <<'PY'
"""Copy the interpreter, the stdlib and the service's packages into a root filesystem."""
import importlib, os, shutil, sys, sysconfig

sys.path.insert(0, "scripts")
from standin_rootfs import copy_libraries

root = sys.argv[1]
prefix = "/opt/python"
dest = lambda p: os.path.join(root, p.lstrip("/"))
for m in ("web_service.app", "web_service.server", "web_service.forwarder", "web_service.admin", "web_service.metrics",
          "web_service.forwarder_metrics", "fnserve.cli.main", "gunicorn.app.base", "gunicorn.workers.ggevent",
          "gunicorn.workers.gthread", "gunicorn.glogging", "gevent", "gevent.monkey", "psycopg", "sqlalchemy.dialects.postgresql.psycopg",
          "sqlalchemy.dialects.sqlite", "alembic.command", "alembic.runtime.migration", "prometheus_client.multiprocess",
          "zmq.auth.thread", "redis", "globus_sdk", "msgspec", "dill", "yaml", "click", "jinja2", "markupsafe",
          "croniter", "web_service.triggers.runner", "jsonschema", "redis.sentinel"):
    importlib.import_module(m)
stdlib, purelib = sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]
# config-3.x holds the static libpython (tens of MB) that only C extension builds need.
skip = shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3",
                              "__pycache__", "config-3.*", "pydoc_data", "*.a")
lib = f"{prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}"
shutil.copytree(stdlib, dest(lib), ignore=skip, symlinks=True)
tops = set()
for mod in list(sys.modules.values()):
    f = getattr(mod, "__file__", None) or ""
    if f.startswith(purelib + os.sep):
        tops.add(os.path.relpath(f, purelib).split(os.sep)[0])
# Bundled shared libraries (auditwheel puts them beside the package, named for the distribution).
tops |= {d for d in ("pyzmq.libs", "psycopg_binary.libs") if os.path.isdir(os.path.join(purelib, d))}
site = dest(lib + "/site-packages")
os.makedirs(site, exist_ok=True)
for top in sorted(tops):
    # fnserve itself comes from the Containerfile's COPY; editable-install hooks are host paths.
    if top.startswith(("__editable__", "fnserve", "web_service", "site_manager", "node_manager", "_distutils_hack")):
        continue
    src = os.path.join(purelib, top)
    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(site, top),
                                                              **({"ignore": skip} if os.path.isdir(src) else {}))
# Package metadata (entry points, versions some packages read about themselves); small.
for d in os.listdir(purelib):
    if d.endswith(".dist-info") and not d.lower().startswith("fnserve"):
        shutil.copytree(os.path.join(purelib, d), os.path.join(site, d))
binary = os.path.realpath(sys.executable)
os.makedirs(dest(prefix + "/bin"), exist_ok=True)
shutil.copy2(binary, dest(prefix + "/bin/python3"))
libpython = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
objects = [binary, libpython, "/bin/sh"]
for top, _, files in os.walk(root):
    objects += [os.path.join(top, f) for f in files if ".so" in f]
copy_libraries(root, objects)
for d in ("bin", "tmp", "etc", "usr/bin", "var/lib", "etc/ssl/certs"):
    os.makedirs(dest("/" + d), exist_ok=True)
os.chmod(dest("/tmp"), 0o1777)
os.symlink(prefix + "/bin/python3", dest("/usr/bin/python3"))
os.symlink("python3", dest("/usr/bin/python"))
shutil.copy2("/bin/sh", dest("/bin/sh"))  # RUN lines of the Containerfile
if os.path.exists("/etc/ssl/certs/ca-certificates.crt"):  # TLS to Redis / PostgreSQL / Globus Auth
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", dest("/etc/ssl/certs/ca-certificates.crt"))
with open(dest("/etc/passwd"), "w") as f:
    f.write("root:x:0:0:root:/root:/bin/sh\nfnserve:x:10001:10001:fnserve:/var/lib/fnserve:/bin/sh\n")
with open(dest("/etc/group"), "w") as f:
    f.write("root:x:0:\nfnserve:x:10001:\n")
PY
  tar -C "$OUT/rootfs" -cf "$OUT/rootfs.tar" .
  podman rmi -f "$BASE" >/dev/null 2>&1 || true
  podman import --change 'ENV PATH=/opt/python/bin:/usr/bin:/bin' --change 'ENV PYTHONHOME=/opt/python' \
    "$OUT/rootfs.tar" "$BASE" >/dev/null
  rm -rf "$OUT/rootfs.tar" "$OUT/rootfs"
  cache_store "$OUT" "$key"
fi
podman build -q --format docker -f deploy/Containerfile --build-arg BASE="$BASE" --build-arg PIP_INSTALL=0 -t "$IMAGE" . >/dev/null
echo "$IMAGE"
