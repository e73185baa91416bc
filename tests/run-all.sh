#!/usr/bin/env bash
# Every test, on both catalogs: the whole workspace with SQLite (the embedded default), then
# the end-to-end suite again with every test daemon on PostgreSQL. Installs what the tests
# need when it is missing: Debian's chromium and chromium-driver (the console's browser
# tests) and PostgreSQL (started on a loopback port by tests/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
PG_URL="$(tests/postgres.sh start)"
cargo test --workspace
KEYWARD_TEST_DATABASE="$PG_URL" cargo test -p keyward-tests
