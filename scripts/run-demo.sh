#!/usr/bin/env bash
# The embedded demo: SQLite, no Redis (Celery passes messages through files under var/celery), a local
# Stripe sandbox (the test suite's Stripe server, tests/stripe_server: nothing leaves this machine), a
# worker with an embedded beat, and Django's server on $HOST:$PORT. Each step says what it does.
#
# The sandbox is configured only here, through the environment of the processes this script starts
# (STRIPE_API_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET); settings never default to it, and
# `check --deploy` refuses a STRIPE_API_BASE on this machine. Its objects are kept in
# var/stripe-sandbox.pickle, so customers and subscriptions survive a restart like the database.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
PY=.venv/bin/python
mkdir -p var
started=$(date +%s)
step() { printf '[%3d s] %s\n' "$(($(date +%s) - started))" "$*"; }

children=()
stop_children() {
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_children EXIT
trap 'exit 130' INT TERM

step "1/5 Stripe sandbox: starting the local Stripe server (demo only; log var/stripe-sandbox.log)"
$PY -m tests.stripe_server --port 0 --state var/stripe-sandbox.pickle >var/stripe-sandbox.log 2>&1 &
children+=($!)
sandbox=""
for _ in $(seq 100); do
  sandbox="$(sed -n 's/^local Stripe listening on //p' var/stripe-sandbox.log)"
  [[ -n "$sandbox" ]] && break
  sleep 0.1
done
[[ -n "$sandbox" ]] || { cat var/stripe-sandbox.log; echo "the Stripe sandbox did not start" >&2; exit 1; }
export STRIPE_API_BASE="$sandbox"
export STRIPE_API_KEY="sk_test_DemoLocalSandboxNotStripe0001"
export STRIPE_WEBHOOK_SECRET="whsec_demo_local_sandbox"
# For manage.py commands run beside the demo in another terminal (`. var/demo.env`).
cat >var/demo.env <<ENV
# The demo's local Stripe sandbox (written by make run). Not Stripe: never use it elsewhere.
export STRIPE_API_BASE="$STRIPE_API_BASE"
export STRIPE_API_KEY="$STRIPE_API_KEY"
export STRIPE_WEBHOOK_SECRET="$STRIPE_WEBHOOK_SECRET"
ENV
step "      Stripe sandbox at $sandbox"

# The SaaS's own app, as far as the demo has one: it receives the outgoing webhooks (seed_demo points an
# endpoint at it) and verifies each signature with the standardwebhooks library.
$PY scripts/webhook_receiver.py --port 0 --secret-file var/demo-webhook-secret >var/webhook-receiver.log 2>&1 &
children+=($!)
receiver=""
for _ in $(seq 100); do
  receiver="$(sed -n 's/^webhook receiver listening on //p' var/webhook-receiver.log)"
  [[ -n "$receiver" ]] && break
  sleep 0.1
done
[[ -n "$receiver" ]] || { cat var/webhook-receiver.log; echo "the webhook receiver did not start" >&2; exit 1; }
export DEMO_WEBHOOK_URL="$receiver"
step "      webhook receiver (the SaaS's app stand-in) at $receiver (log var/webhook-receiver.log)"

step "2/5 database: db.sqlite3 (a new one takes 15 to 30 s)"
$PY manage.py migrate_demo

# The server answers while the demo data goes in (SQLite in WAL mode: readers never wait for the seed).
step "3/5 web server on http://$HOST:$PORT/ (log var/web.log)"
$PY manage.py runserver --noreload "$HOST:$PORT" >var/web.log 2>&1 &
web=$!
children+=($web)

step "4/5 demo data: tenants, usage, Stripe onboarding and reports, webhooks, reconciliation, AWS costs"
LOG_LEVEL=WARNING $PY manage.py seed_demo | tee var/seed-demo.log | sed 's/^/      /'
# Later changes at the sandbox (onboarding from admin, checkout) reach the app as Stripe's would.
curl -sf -o /dev/null "$sandbox/_test/webhook_endpoints" -H 'Content-Type: application/json' \
  -d "{\"url\": \"http://$HOST:$PORT/api/v1/stripe/webhook\", \"secret\": \"$STRIPE_WEBHOOK_SECRET\"}"

# After the seed: the worker's beat would otherwise write to SQLite while the seed does.
step "5/5 worker and beat (one process, right for a one-machine demo; log var/worker.log)"
.venv/bin/celery -A billing_platform worker -B --pool solo --without-gossip --without-mingle \
  --loglevel INFO --logfile var/worker.log --schedule var/celerybeat-schedule >>var/worker.log 2>&1 &
children+=($!)

cat <<MSG

  Billing platform (embedded demo) is ready.
  Admin:    http://$HOST:$PORT/admin/
  $(grep '^admin login' var/seed-demo.log)
  API docs: http://$HOST:$PORT/api/docs/
  Stripe:   a local sandbox at $sandbox (nothing is sent to Stripe);
            manage.py commands in another terminal reach it after \`. var/demo.env\`
$(grep '^tenant .*: new API key' var/seed-demo.log | sed 's/^/  /')
  Webhooks: every outgoing event goes to a local receiver at $receiver, which verifies and logs it
  Logs: var/web.log (below), var/worker.log (worker and beat), var/stripe-sandbox.log,
        var/webhook-receiver.log. Stop with Ctrl-C.

MSG
tail -n 0 -f var/web.log --pid="$web" &
children+=($!)
wait "$web"  # a builtin wait, so that Ctrl-C or a TERM to this script stops everything at once
