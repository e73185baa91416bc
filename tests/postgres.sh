#!/usr/bin/env bash
# A PostgreSQL cluster for the test suite, from Debian's packages, on a loopback port.
#
#   tests/postgres.sh start   installs PostgreSQL when missing, makes a cluster (once) and
#                             starts it; prints its admin URL
#   tests/postgres.sh stop    stops it
#
# The suite runs against it with KEYWARD_TEST_DATABASE=<the URL>: each test daemon gets a
# database of its own. Tests that stop, start or promote PostgreSQL make clusters of their
# own with the same binaries (tests/support/postgres.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${KEYWARD_TEST_PG_PORT:-55432}"
DIR="$PWD/target/postgres"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
else
    # As root the cluster runs as Debian's `postgres` user, who may not be let into the
    # checkout (under a private home or temporary directory): it lives under /tmp instead,
    # one per checkout.
    DIR="/tmp/keyward-postgres-$(printf %s "$PWD" | sha256sum | cut -c1-12)"
fi

bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user
# that Debian's package creates.
as_owner() {
    # (from `/`: the checkout may be closed to `postgres`)
    if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

case "${1:-start}" in
start)
    if [ -z "$(bindir)" ]; then
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends postgresql
    fi
    BIN="$(bindir)"
    mkdir -p "$DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DIR"; fi
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
        cat >>"$DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 400
shared_buffers = 128MB
fsync = on
EOF
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -o "-p $PORT" -w start >/dev/null
    fi
    # The port it runs on, which is $PORT unless it was started earlier with another.
    echo "postgres://postgres@127.0.0.1:$(sed -n 4p "$DIR/data/postmaster.pid")/postgres"
    ;;
stop)
    BIN="$(bindir)"
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
