#!/usr/bin/env bash
# Start a throwaway PostgreSQL owned by this run: its own data dir in a temp dir, 127.0.0.1 and a
# free port. Prints "export OPENIMDS_TEST_DATABASE_URL=... PG_TEST_DIR=..." for eval.
# Stop it with: scripts/pg-test-server.sh stop "$PG_TEST_DIR"
set -euo pipefail
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
if [ "${1:-start}" = stop ]; then
    dir=$2
    runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    exit 0
fi
dir=$(mktemp -d /tmp/openimds-pg.XXXXXX)
chown postgres: "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-k $dir -h 127.0.0.1 -p $port -c fsync=off -c max_connections=200" start >/dev/null
runuser -u postgres -- "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres openimds_test
echo "export OPENIMDS_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$port/openimds_test PG_TEST_DIR=$dir"
