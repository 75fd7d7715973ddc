#!/usr/bin/env bash
# Builds, offline, the stand-in images deploy/compose.yaml runs in the tests: no container
# registry is reachable where they run (only PyPI, Debian's apt archive and npm), so each image is
# this host's own Debian build of the program, copied with the shared libraries it links into an
# otherwise empty root filesystem and `podman import`ed:
#
#   postgres  Debian's postgresql-15 (installed for the tests), with an entrypoint that does what
#             the official image's does for the variables compose.yaml uses (POSTGRES_USER,
#             POSTGRES_PASSWORD, POSTGRES_DB, PGDATA: initdb once, then run as uid 999)
#   redis     Debian's redis-server 7 (installed for the tests): primary, replicas and sentinels
#   haproxy   Debian's haproxy 2.6 (`apt-get download`ed and unpacked here, not installed: no
#             haproxy service starts on the host)
#   service   scripts/build_service_image.sh (deploy/Containerfile on a stand-in Python base)
#
# Copying binaries beats debootstrapping a Debian base: no root filesystem of ~200 MB to
# build and store, and a cold build of all four images takes about 25 s, not minutes.
# A facility pulls the official images instead (the defaults in deploy/compose.env).
#
#   scripts/build_compose_images.sh [OUT_DIR]     (default: /var/cache/fnserve/compose-images)
#
# Prints the settings that name the images, for `podman-compose --env-file`. Cached by content
# key (scripts/image_cache.sh): rebuilt only when a package version or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
. scripts/image_cache.sh
OUT=${1:-/var/cache/fnserve/compose-images}
TAG=${FNSERVE_COMPOSE_TAG:-test}
POSTGRES=localhost/fnserve-postgres:$TAG REDIS=localhost/fnserve-redis:$TAG HAPROXY=localhost/fnserve-haproxy:$TAG
PG=15

key=$( { dpkg-query -W "postgresql-$PG" redis-server; apt-cache policy haproxy | sed -n 3p; cat "$0" scripts/standin_rootfs.py; } | cache_key )
if ! cache_fresh "$OUT" "$key" "$POSTGRES" "$REDIS" "$HAPROXY"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  common() {  # what every image has: a shell for the RUN-less entrypoints and health checks
    local root=$1
    mkdir -p "$root"/{tmp,data,etc,run} && chmod 1777 "$root/tmp" "$root/run" && chmod 0777 "$root/data"
    printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\nredis:x:999:999::/data:/bin/sh\nhaproxy:x:99:99::/var/lib/haproxy:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\npostgres:x:999:\nhaproxy:x:99:\n' > "$root/etc/group"
  }
  import() {  # ROOT IMAGE CHANGE...
    local root=$1 image=$2
    shift 2
    local changes=()
    for c in "$@"; do changes+=(--change "$c"); done
    tar -C "$root" -cf "$root.tar" .
    podman rmi -f "$image" >/dev/null 2>&1 || true
    podman import -q "${changes[@]}" "$root.tar" "$image" >/dev/null
  }

  # PostgreSQL
  r=$work/postgres; common "$r"
  python3 scripts/standin_rootfs.py "$r" /bin/sh /usr/bin/setpriv /usr/bin/chown /usr/bin/mkdir /usr/bin/rm /usr/bin/id \
    "/usr/lib/postgresql/$PG" "/usr/share/postgresql/$PG" /usr/share/zoneinfo/UTC /usr/share/zoneinfo/Etc/UTC
  mkdir -p "$r/usr/local/bin" "$r/var/run/postgresql" && chmod 2777 "$r/var/run/postgresql"
  cat > "$r/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
# Stand-in for the official postgres image's entrypoint (scripts/build_compose_images.sh).
set -e
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" && chown -R 999:999 "$PGDATA"
  exec setpriv --reuid 999 --regid 999 --clear-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile=/tmp/pwfile --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$@"
SH
  chmod 755 "$r/usr/local/bin/docker-entrypoint.sh"
  import "$r" "$POSTGRES" "ENV PATH=/usr/lib/postgresql/$PG/bin:/usr/local/bin:/usr/bin:/bin" "ENV PGDATA=/var/lib/postgresql/data" \
    "ENV TZ=UTC" 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["postgres"]'

  # Redis (server, sentinel, client for health checks)
  r=$work/redis; common "$r"
  python3 scripts/standin_rootfs.py "$r" /bin/sh /usr/bin/redis-server /usr/bin/redis-cli
  ln -s redis-server "$r/usr/bin/redis-sentinel"
  import "$r" "$REDIS" "ENV PATH=/usr/local/bin:/usr/bin:/bin" "WORKDIR /data" 'CMD ["redis-server"]'

  # HAProxy, from its .deb and those of the two libraries this host lacks
  debs=$work/debs; mkdir -p "$debs"
  get_debs() { (cd "$debs" && apt-get download -q haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 >/dev/null 2>&1); }
  get_debs || { apt-get update -qq && get_debs; }  # a machine whose package lists were never fetched
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$debs/x"; done
  r=$work/haproxy; common "$r"
  python3 scripts/standin_rootfs.py "$r" /bin/sh /usr/sbin/haproxy="$debs/x/usr/sbin/haproxy" \
    --libpath "$debs/x/usr/lib/x86_64-linux-gnu"
  mkdir -p "$r/usr/local/etc/haproxy" "$r/var/lib/haproxy"
  import "$r" "$HAPROXY" "ENV PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/bin" \
    'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
  cache_store "$OUT" "$key"
fi
SERVICE=$(scripts/build_service_image.sh)
printf 'DEPLOY_POSTGRES_IMAGE=%s\nDEPLOY_REDIS_IMAGE=%s\nDEPLOY_HAPROXY_IMAGE=%s\nDEPLOY_SERVICE_IMAGE=%s\n' \
  "$POSTGRES" "$REDIS" "$HAPROXY" "$SERVICE"
