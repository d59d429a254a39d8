#!/usr/bin/env bash
# The embedded demo: SQLite, no Redis (Celery passes messages through files under var/celery),
# a worker with an embedded beat, and Django's server on $HOST:$PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
PY=.venv/bin/python
mkdir -p var

$PY manage.py migrate --no-input -v 0
seed_out="$($PY manage.py seed_demo)"

# One process for worker and beat (-B) is right for a one-machine demo; production runs them apart.
.venv/bin/celery -A billing_platform worker -B --pool solo --without-gossip --without-mingle \
  --loglevel INFO --logfile var/worker.log --schedule var/celerybeat-schedule &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true' EXIT INT TERM

cat <<MSG

  Billing platform (embedded demo) is starting.
  Admin:    http://$HOST:$PORT/admin/
  $(grep '^admin login' <<<"$seed_out")
  API docs: http://$HOST:$PORT/api/docs/
$(grep -v '^admin login' <<<"$seed_out" | sed 's/^/  /')
  Worker and beat log: var/worker.log. Stop with Ctrl-C.

MSG
$PY manage.py runserver --noreload "$HOST:$PORT"
