#!/usr/bin/env bash
# Backup → restore round trip on the real PostgreSQL (127.0.0.1:5432 unless
# PGHOST/PGPORT say otherwise) with deploy/backup/pg-backup.sh, the script the
# backup CronJob runs. Fills a fresh database with service-shaped data (one schema
# per service; jsonb, bytea, timestamptz, NULLs, identities, foreign keys), backs it
# up, restores into a second fresh database and compares every table's rows
# (count and digest of all rows) and every sequence. Prints the drill's timings,
# the numbers behind the RPO/RTO in docs/operations/backup-restore.md.
# Usage: backup_roundtrip.sh [ROWS]  (default 200000 tasks)
set -euo pipefail
cd "$(dirname "$0")/../.."

rows=${1:-200000}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
suffix="$(date +%s)_$$"
src="godel_backup_src_$suffix"
dst="godel_backup_dst_$suffix"
work=$(mktemp -d)
cleanup() {
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst"
base="postgresql://$PGUSER@$PGHOST:$PGPORT"

psql -q -v ON_ERROR_STOP=1 -d "$src" <<SQL
CREATE SCHEMA scheduler;
CREATE SCHEMA audit;
CREATE SCHEMA auth;
CREATE TABLE auth.teams (id text PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE scheduler.tasks (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE, team_id text NOT NULL, state text NOT NULL, epoch bigint NOT NULL,
  payload jsonb NOT NULL, result bytea, created_at timestamptz NOT NULL, leased_until timestamptz);
CREATE INDEX tasks_queue ON scheduler.tasks (team_id, state, created_at);
CREATE TABLE scheduler.task_events (
  id bigserial PRIMARY KEY, task_seq bigint NOT NULL REFERENCES scheduler.tasks(seq), kind text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE audit.records (sequence bigint PRIMARY KEY, prev_hash bytea NOT NULL, hash bytea NOT NULL,
  payload jsonb, erased boolean NOT NULL DEFAULT false);
INSERT INTO auth.teams SELECT 'team_' || g, 'Team ' || g || ' — ünïcødé ''quoted'' ' || chr(10) || 'line', now() - g * interval '1 day'
  FROM generate_series(1, 50) g;
INSERT INTO scheduler.tasks (id, team_id, state, epoch, payload, result, created_at, leased_until)
  SELECT 'tsk_' || md5(g::text), 'team_' || (g % 50 + 1), (ARRAY['queued','leased','running','succeeded','dead_lettered'])[g % 5 + 1],
         g % 7, jsonb_build_object('prompt', repeat('fix the bug ', g % 20), 'n', g, 'tags', jsonb_build_array('a', g % 3)),
         CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
         timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
         CASE WHEN g % 5 = 1 THEN timestamptz '2026-06-01 00:00:00+00' + g * interval '1 ms' END
  FROM generate_series(1, $rows) g;
INSERT INTO scheduler.task_events (task_seq, kind, at)
  SELECT (g % $rows) + 1, 'state_changed', timestamptz '2026-01-01 00:00:00+00' + g * interval '1 ms' FROM generate_series(1, $rows / 2) g;
INSERT INTO audit.records SELECT g, sha256(int8send(g - 1)), sha256(int8send(g)),
  CASE WHEN g % 11 = 0 THEN NULL ELSE jsonb_build_object('action', 'task.submit', 'actor', 'usr_' || g % 97) END, g % 11 = 0
  FROM generate_series(1, $rows / 4) g;
SQL

# Digest of every table (row count + md5 over all rows in a fixed order) and of
# every sequence's position: equal digests mean the restored data is the same.
digest() {
  local tables
  tables=$(psql -At -d "$1" -c "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
     WHERE table_schema IN ('auth','scheduler','audit') AND table_type = 'BASE TABLE' ORDER BY 1")
  for t in $tables; do
    psql -At -v ON_ERROR_STOP=1 -d "$1" -c "SELECT '$t', count(*), md5(coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '')) FROM $t x"
  done
  psql -At -v ON_ERROR_STOP=1 -d "$1" -c "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences
     WHERE schemaname IN ('auth','scheduler','audit') ORDER BY 1"
}

now_ms() { date +%s%3N; }
t0=$(now_ms)
DATABASE_URL="$base/$src" BACKUP_FILE="$work/godel.dump" BACKUP_SCHEMAS="auth scheduler audit" \
  deploy/backup/pg-backup.sh backup
t1=$(now_ms)
DATABASE_URL="$base/$dst" BACKUP_FILE="$work/godel.dump" deploy/backup/pg-backup.sh restore
t2=$(now_ms)

digest "$src" > "$work/src.digest"
digest "$dst" > "$work/dst.digest"
if ! diff -u "$work/src.digest" "$work/dst.digest"; then
  echo "FAIL backup round trip: restored data differs (diff above)"
  exit 1
fi
tables=$(grep -c '^[a-z_]*\.[a-z_]*|[0-9]*|' "$work/src.digest" || true)
if [ "$tables" -lt 4 ]; then
  echo "FAIL backup round trip: expected at least 4 tables compared, got $tables"
  exit 1
fi
db_bytes=$(psql -At -d "$src" -c "SELECT pg_database_size(current_database())")
dump_bytes=$(wc -c < "$work/godel.dump")
echo "ok   backup round trip: $tables tables and their sequences identical after restore"
echo "     drill: database ${db_bytes} bytes, dump ${dump_bytes} bytes, backup $((t1 - t0)) ms, restore $((t2 - t1)) ms"
