#!/usr/bin/env bash
# Starts Debian's Docker daemon (docker.io) without systemd, for the Docker runtime's tests and
# benchmarks. Idempotent: a daemon that already answers is left alone.
#   scripts/start_dockerd.sh
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v dockerd >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
if docker info >/dev/null 2>&1; then
  echo "dockerd: already running"
  exit 0
fi
$SUDO mkdir -p /var/log/fnserve
# Its own session: it must outlive this script and the CI step that ran it.
$SUDO setsid dockerd >/var/log/fnserve/dockerd.log 2>&1 < /dev/null &
for _ in $(seq 150); do
  docker info >/dev/null 2>&1 && { echo "dockerd: running ($(docker version --format '{{.Server.Version}}'))"; exit 0; }
  sleep 0.2
done
echo "dockerd did not start; its log (/var/log/fnserve/dockerd.log) ends with:" >&2
tail -20 /var/log/fnserve/dockerd.log >&2
exit 1
