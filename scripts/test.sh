#!/usr/bin/env bash
# The whole test suite: lint, migration check, then pytest on real PostgreSQL and Redis (started
# here, installed from Debian's packages when missing, as is the browser tests' Chromium), then the
# non-PostgreSQL parts on SQLite.
# Extra arguments go to both pytest runs.
# `scripts/test.sh --fast [pytest arguments]` (make test-fast ARGS=...): a developer's quick loop,
# pytest on PostgreSQL only, keeping the test database between runs, with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p test-output

if [ "${1:-}" = "--fast" ]; then
  shift
  eval "$(scripts/services.sh)"
  export DJANGO_SETTINGS_MODULE=billing_platform.settings
  set +e
  $BIN/pytest --reuse-db "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
  exit "$rc"
fi

echo "== ruff"
$BIN/ruff check .

eval "$(scripts/services.sh)"
scripts/browser.sh  # Debian's chromium for tests/browser, installed when missing
export DJANGO_SETTINGS_MODULE=billing_platform.settings
echo "== makemigrations --check"
$BIN/python manage.py makemigrations --check --dry-run --no-input >/dev/null \
  || { echo "missing migrations: run manage.py makemigrations"; exit 1; }

run_pytest() {
  # pytest exit code 5 means it collected no test: that is a failure, never a pass.
  set +e
  "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing"; return 1; fi
  return "$rc"
}

# The test databases are built fresh here, once (scripts/test_databases.py: the PostgreSQL history
# migrated once into a template the pass and the drill clone; SQLite as the demo builds it), and
# pytest reuses them rather than migrating again in each pass.
echo "== test databases"
$BIN/python scripts/test_databases.py postgres
SQLITE_TEST_DB="$PWD/test-output/sqlite-test.db"
$BIN/python scripts/test_databases.py sqlite "$SQLITE_TEST_DB"

echo "== pytest on PostgreSQL ($DATABASE_URL) and Redis ($REDIS_URL)"
run_pytest $BIN/pytest --reuse-db --junitxml=test-output/postgres.xml "$@"

echo "== pytest on SQLite (the demo's database), PostgreSQL-only tests deselected"
DATABASE_URL="sqlite:///$PWD/test-output/sqlite.db" TEST_SQLITE_DATABASE="$SQLITE_TEST_DB" \
  run_pytest $BIN/pytest --reuse-db -m "not postgres" --junitxml=test-output/sqlite.xml "$@"

echo "== reliability drill (scripts/drill.py: kills, Redis restart, Stripe faults, webhook replays)"
$BIN/python scripts/drill.py
