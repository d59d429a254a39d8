#!/usr/bin/env bash
# Start a PostgreSQL and a Redis server for the test suite on this machine, installing the
# Debian packages first when they are missing. Idempotent: servers already running are reused.
# Prints the environment to use, as `export` lines (eval "$(scripts/services.sh)").
# `scripts/services.sh stop` stops this checkout's Redis, and PostgreSQL when no other checkout
# has a session open in it.
#
# Two checkouts on one machine share one PostgreSQL (port 55432) without colliding: each has its
# own databases, named after a short hash of the checkout's path (billing_<id>, test_billing_<id>,
# the drill's and benches' too), and its own Redis server (the drill restarts Redis), on a port
# derived from the same hash (56379 + id mod 600, the next free one if another checkout holds it).
#
# `scripts/services.sh replica` also starts a streaming replica of that PostgreSQL (a hot standby made
# by `pg_basebackup -R`, port 55433 or TEST_PG_REPLICA_PORT, data in the services folder) and prints
# its port; the replica routing test (core/tests/test_replica_streaming.py) runs it when it needs it.
# Like the primary it is shared by the checkouts; `stop` stops it with the primary.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHECKOUT_ID="$(printf '%s' "$ROOT" | sha1sum | cut -c1-6)"
PG_PORT="${TEST_PG_PORT:-55432}"
SERVICES_DIR="${SERVICES_DIR:-/tmp/billing-platform-services}"
PG_DATA="$SERVICES_DIR/pg"
REPLICA_PORT="${TEST_PG_REPLICA_PORT:-$((PG_PORT + 1))}"
REPLICA_DATA="$SERVICES_DIR/pg-replica"
REDIS_DIR="$SERVICES_DIR/redis-$CHECKOUT_ID"
DB_NAME="billing_$CHECKOUT_ID"
log() { echo "services: $*" >&2; }

# This checkout's Redis: the port it used before (REDIS_DIR/port), else the hash's, else the next
# port no other checkout's Redis holds.
redis_port_pick() {
  if [ -n "${TEST_REDIS_PORT:-}" ]; then echo "$TEST_REDIS_PORT"; return; fi
  if [ -s "$REDIS_DIR/port" ]; then
    local kept; kept="$(cat "$REDIS_DIR/port")"
    # Ours only if nothing answers there, or what answers keeps its data in our folder (a Redis
    # restarted by the drill must find its snapshot there).
    if ! redis-cli -p "$kept" ping >/dev/null 2>&1 \
      || [ "$(redis-cli -p "$kept" config get dir 2>/dev/null | tail -n 1)" = "$REDIS_DIR" ]; then
      echo "$kept"; return
    fi
  fi
  local port=$((56379 + 16#$CHECKOUT_ID % 600))
  while redis-cli -p "$port" ping >/dev/null 2>&1 \
    || [ -n "$(ls "$SERVICES_DIR"/redis-*/port 2>/dev/null | grep -v "^$REDIS_DIR/" | xargs -r grep -lx "$port")" ]; do
    port=$((port + 1))
  done
  echo "$port"
}

as_pg_stop() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
  if [ -s "$REDIS_DIR/port" ] && redis-cli -p "$(cat "$REDIS_DIR/port")" ping >/dev/null 2>&1; then
    redis-cli -p "$(cat "$REDIS_DIR/port")" shutdown nosave >/dev/null 2>&1 || true
    log "stopped Redis on port $(cat "$REDIS_DIR/port")"
  fi
  BIN_STOP="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  # The streaming replica first (only tests use it; a test of another checkout may be using it now).
  if [ -n "$BIN_STOP" ] && [ -s "$REPLICA_DATA/postmaster.pid" ] \
    && as_pg_stop "$BIN_STOP/pg_isready" -q -h 127.0.0.1 -p "$REPLICA_PORT"; then
    others="$(as_pg_stop "$BIN_STOP/psql" -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d postgres -tAc \
      "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL AND datname <> 'postgres' AND datname NOT LIKE '%$CHECKOUT_ID%'")"
    if [ "${others:-0}" -gt 0 ]; then
      log "PostgreSQL replica left running: $others session(s) of other checkouts"
    else
      as_pg_stop "$BIN_STOP/pg_ctl" -D "$REPLICA_DATA" -m fast stop >/dev/null && log "stopped the PostgreSQL replica"
    fi
  fi
  if [ -n "$BIN_STOP" ] && as_pg_stop "$BIN_STOP/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    others="$(as_pg_stop "$BIN_STOP/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
      "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL AND datname <> 'postgres' AND datname NOT LIKE '%$CHECKOUT_ID%'")"
    if [ "${others:-0}" -gt 0 ]; then
      log "PostgreSQL left running: $others session(s) of other checkouts"
    else
      as_pg_stop "$BIN_STOP/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null && log "stopped PostgreSQL"
    fi
  fi
  exit 0
fi

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

need_install=()
[ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ] || need_install+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
if [ "${#need_install[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${need_install[*]}; install them (sudo apt-get install ${need_install[*]}) or run as root"
    exit 1
  fi
  log "installing ${need_install[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # The packages' own init scripts may try to start default instances; that may fail in a
  # container and does not matter: we run our own instances on our own ports.
  apt-get install -y -qq --no-install-recommends "${need_install[@]}" >&2 || {
    log "apt-get install ${need_install[*]} failed"; exit 1; }
fi
BIN="$(pg_bindir)"

# PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$SERVICES_DIR"
chmod 755 "$SERVICES_DIR"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$SERVICES_DIR" 2>/dev/null || true; fi

if ! as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    log "initdb $PG_DATA"
    as_pg mkdir -p "$PG_DATA"
    as_pg "$BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  # fsync off: a test server that is thrown away after the run need not survive power loss.
  as_pg "$BIN/pg_ctl" -D "$PG_DATA" -l "$SERVICES_DIR/pg.log" -w -t 60 start \
    -o "-p $PG_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2 || {
    log "PostgreSQL did not start; its log:"; tail -n 30 "$SERVICES_DIR/pg.log" >&2; exit 1; }
fi
as_pg "$BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -c \
  "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing') THEN CREATE ROLE billing LOGIN SUPERUSER PASSWORD 'billing'; END IF; END \$\$;" >&2
if [ -z "$(as_pg "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
  as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres -O billing "$DB_NAME"
fi

# --- The streaming replica (`services.sh replica`) -------------------------------------------
replica_psql() {
  as_pg "$BIN/psql" -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d postgres -tAc "$1" 2>/dev/null
}

# True once the standby answers, is in recovery and its WAL receiver streams from the primary,
# waiting up to $1 seconds.
replica_streaming() {
  for _ in $(seq $(($1 * 5))); do
    [ "$(replica_psql "SELECT pg_is_in_recovery() AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')")" = "t" ] \
      && return 0
    sleep 0.2
  done
  return 1
}

replica_run() {
  # The primary runs with fsync off (see above) and so does its throwaway copy; max_connections may
  # not be below the primary's on a hot standby.
  as_pg "$BIN/pg_ctl" -D "$REPLICA_DATA" -l "$SERVICES_DIR/pg-replica.log" -w -t 120 start \
    -o "-p $REPLICA_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c hot_standby=on" \
    >&2 9>&-  # the server must not inherit (and hold forever) replica_start's lock
}

replica_stop() {
  as_pg "$BIN/pg_ctl" -D "$REPLICA_DATA" -m fast stop >/dev/null 2>&1 || true
}

replica_start() {
  # Checkouts starting it at the same moment take turns.
  exec 9>"$SERVICES_DIR/pg-replica.lock"
  flock 9
  if as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$REPLICA_PORT"; then
    replica_streaming 20 && return 0
    log "the PostgreSQL replica on port $REPLICA_PORT does not stream from the primary: making it again"
    replica_stop
  elif [ -s "$REPLICA_DATA/PG_VERSION" ]; then
    # A replica stopped earlier catches up, unless the primary recycled the WAL it still needs.
    log "starting the PostgreSQL replica on 127.0.0.1:$REPLICA_PORT"
    if replica_run && replica_streaming 20; then return 0; fi
    log "the PostgreSQL replica could not catch up with the primary: making it again"
    replica_stop
  fi
  rm -rf "$REPLICA_DATA"
  log "pg_basebackup of 127.0.0.1:$PG_PORT into $REPLICA_DATA"
  # -R writes the standby's primary_conninfo and standby.signal; -c fast: no wait for a checkpoint.
  # The primary's default pg_hba.conf (initdb) lets local `postgres` replicate.
  as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$REPLICA_DATA" -R -X stream -c fast >&2 || {
    log "pg_basebackup failed"; exit 1; }
  log "starting the PostgreSQL replica on 127.0.0.1:$REPLICA_PORT"
  replica_run && replica_streaming 60 || {
    log "the PostgreSQL replica did not start streaming; its log:"
    tail -n 30 "$SERVICES_DIR/pg-replica.log" >&2; exit 1; }
}

if [ "${1:-}" = "replica" ]; then
  replica_start
  echo "export TEST_PG_REPLICA_PORT=$REPLICA_PORT"
  exit 0
fi

REDIS_PORT="$(redis_port_pick)"
mkdir -p "$REDIS_DIR"
echo "$REDIS_PORT" > "$REDIS_DIR/port"
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --pidfile "$REDIS_DIR/redis.pid" >&2
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { log "Redis did not start"; exit 1; }
fi

echo "export CHECKOUT_ID=$CHECKOUT_ID"
echo "export DATABASE_URL=postgres://billing:billing@127.0.0.1:$PG_PORT/$DB_NAME"
echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
echo "export TEST_REDIS_PORT=$REDIS_PORT"
