#!/bin/sh
# Start again every service of a compose project whose container died (exited with a non-zero
# status: kill -9, the OOM killer, a crash). For podman without systemd, where the compose file's
# `restart: always` is not carried out reliably (docs/operations.md, "Restarts"); run it from
# cron every minute or in a loop:
#
#   deploy/compose/restart-exited.sh PROJECT --env-file /etc/fnserve/compose.env -f deploy/compose.yaml
#
# PROJECT is the compose project (podman-compose -p; by default the compose file's folder name).
# The arguments after it are passed to podman-compose. `migrate` exits 0 by design and a
# container stopped on purpose (`podman-compose stop`) exits 0 too: both are left alone.
set -eu
project=$1
shift
podman ps -a --filter "label=com.docker.compose.project=$project" --filter status=exited \
    --format '{{index .Labels "com.docker.compose.service"}} {{.ExitCode}}' |
while read -r service code; do
    [ "$code" != 0 ] || continue
    echo "restarting $service (exited with status $code)"
    podman-compose -p "$project" "$@" up -d --no-deps "$service"
done
