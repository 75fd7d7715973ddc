#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine (as root), starts the
# services they use (PostgreSQL; Redis is started by the tests themselves) and runs the tests.
#   scripts/test.sh              all tests
#   scripts/test.sh -m "not integration"   pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log "system packages"
# python3-zmq, python3-redis: the system Python that the attack tests' unprivileged OS accounts run
# (tests/os_accounts.py; they cannot reach root's interpreter). redis-tools comes with redis-server.
# chromium + chromium-driver: the dashboard's browser tests (Playwright drives the system browser).
# systemd: only its systemd-analyze, which checks the unit files in deploy/systemd (systemd never runs here).
# openmpi-bin + libopenmpi-dev: MPI functions' tests (mpiexec, mpicc, and mpi4py's build).
APT_PACKAGES=(redis-server postgresql podman runc charliecloud-runtime docker.io python3-zmq python3-redis chromium chromium-driver systemd
              openmpi-bin libopenmpi-dev curl
              python3-venv)  # python3-venv: the multi-user endpoint test builds a Python every test account can run
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "python packages"
python3 -m pip install -q --disable-pip-version-check -e ".[service,site,test,examples,kubernetes,mpi]"

log "PostgreSQL"
PG_VERSION=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q online; then
  pg_lsclusters -h | grep -q "^$PG_VERSION main" || $SUDO pg_createcluster "$PG_VERSION" main >/dev/null
  $SUDO pg_ctlcluster "$PG_VERSION" main start
fi
as_postgres() { if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname='fnserve'" | grep -q 1 ||
  as_postgres psql -qc "CREATE ROLE fnserve LOGIN SUPERUSER PASSWORD 'fnserve'" >/dev/null
export FNSERVE_TEST_POSTGRES_URL="postgresql+psycopg://fnserve:fnserve@127.0.0.1:5432/postgres"

log "Slurm (single node, for tests/integration/test_slurm_*.py)"
scripts/start_slurm.sh

log "Docker daemon (tests/integration/test_runtimes_*.py run the Docker runtime for real)"
scripts/start_dockerd.sh

log "worker image (tests/integration/test_runtimes_*.py; cached)"
if [ ! -f /etc/containers/containers.conf ]; then  # podman 4.3 here: runc, and ulimits it can set
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n' |
    $SUDO tee /etc/containers/containers.conf >/dev/null
fi
scripts/build_worker_image.sh

log "lint (ruff, settings in pyproject.toml)"
python3 -m ruff check fnserve web_service site_manager node_manager

log "types (mypy, settings in pyproject.toml)"
python3 -m mypy

log "tests"
set +e
python3 -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose (exit code 5 must not pass silently)" >&2
  exit 1
fi
exit "$rc"
