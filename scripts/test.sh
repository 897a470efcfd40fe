#!/usr/bin/env bash
# Run the whole test suite: lint, then pytest. Starts a throwaway PostgreSQL when
# OPENIMDS_TEST_DATABASE_URL is not already set (CI sets it), and stops it at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY
if [ -z "${OPENIMDS_TEST_DATABASE_URL:-}" ] && [ "$(id -u)" = 0 ] && command -v runuser >/dev/null \
        && ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    eval "$(bash scripts/pg-test-server.sh)"
    trap 'bash scripts/pg-test-server.sh stop "$PG_TEST_DIR"' EXIT
fi
.venv/bin/ruff check openimds tests bench
.venv/bin/mypy openimds
.venv/bin/python -m pytest "$@"
