#!/usr/bin/env bash
# Makes sure PostgreSQL, NATS (with JetStream) and Redis are reachable on their
# standard loopback ports. Uses the ones already running; otherwise installs the
# Debian packages (if missing) and starts private instances under $GODEL_SERVICES_DIR.
#
#   scripts/services.sh          # ensure all three are up
#
# Environment: GODEL_SERVICES_DIR (default: ~/.cache/godel-services).
set -euo pipefail

DATA="${GODEL_SERVICES_DIR:-${HOME:-/root}/.cache/godel-services}"
mkdir -p "$DATA"

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.1
  done
  log "$2 did not open port $1; see $DATA/$2.log"
  return 1
}

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need root to install $*; install them yourself (Debian: apt-get install $*)"
    exit 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then log "PostgreSQL already listening on 5432"; return; fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    apt_install postgresql
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  # A cluster created by the Debian package: start it if it exists.
  if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    local ver
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    if pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 && wait_port 5432 postgres; then
      log "started the Debian cluster $ver/main"
      return
    fi
  fi
  local pgdata="$DATA/pg"
  mkdir -p "$pgdata"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$pgdata"
    as=(runuser -u postgres --)
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $pgdata"
    "${as[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  fi
  mkdir -p /var/run/postgresql 2>/dev/null && chown postgres:postgres /var/run/postgresql 2>/dev/null || true
  "${as[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" \
    -o "-h 127.0.0.1 -p 5432 -c max_connections=500 -c unix_socket_directories=$pgdata" -w start >/dev/null
  wait_port 5432 postgres
  log "started PostgreSQL from $pgdata"
}

ensure_redis() {
  if port_open 6379; then log "Redis already listening on 6379"; return; fi
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes \
    --dir "$DATA" --logfile "$DATA/redis.log" >/dev/null
  wait_port 6379 redis
  log "started Redis"
}

ensure_nats() {
  if port_open 4222; then log "NATS already listening on 4222"; return; fi
  command -v nats-server >/dev/null || { log "installing nats-server"; apt_install nats-server; }
  mkdir -p "$DATA/nats"
  nohup setsid nats-server -a 127.0.0.1 -p 4222 -js -sd "$DATA/nats" >"$DATA/nats.log" 2>&1 &
  wait_port 4222 nats
  log "started NATS with JetStream"
}

ensure_postgres
ensure_redis
ensure_nats
