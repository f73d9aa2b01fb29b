#!/bin/sh
# Backup and restore of Godel's PostgreSQL database (every service schema).
#
#   pg-backup.sh backup            DATABASE_URL, BACKUP_FILE[, BACKUP_SCHEMAS]
#   pg-backup.sh restore           DATABASE_URL (target), BACKUP_FILE
#
# backup: pg_dump in custom format (compressed, restorable per schema) of the schemas
#   in BACKUP_SCHEMAS (space-separated; all when empty), then `pg_restore --list` to
#   prove the file is readable, and BACKUP_FILE.sha256 beside it.
# restore: checks the checksum, then pg_restore into DATABASE_URL in one transaction
#   (all or nothing), dropping what the dump recreates. Stop the services (scale to 0)
#   before restoring into a live database.
# POSIX sh: runs in the postgres image of the backup CronJob and on an operator's machine.
set -eu

die() { echo "pg-backup: $*" >&2; exit 1; }
: "${DATABASE_URL:?set DATABASE_URL}"
: "${BACKUP_FILE:?set BACKUP_FILE}"

case "${1:-}" in
  backup)
    schema_flags=""
    for s in ${BACKUP_SCHEMAS:-}; do schema_flags="$schema_flags --schema=$s"; done
    tmp="$BACKUP_FILE.partial"
    # shellcheck disable=SC2086 # one flag per schema
    pg_dump --dbname="$DATABASE_URL" --format=custom --compress=6 --no-owner --no-privileges \
      $schema_flags --file="$tmp"
    pg_restore --list "$tmp" >/dev/null || die "the dump $tmp cannot be read back"
    mv "$tmp" "$BACKUP_FILE"
    (cd "$(dirname "$BACKUP_FILE")" && sha256sum "$(basename "$BACKUP_FILE")" > "$(basename "$BACKUP_FILE").sha256")
    echo "pg-backup: wrote $BACKUP_FILE ($(wc -c < "$BACKUP_FILE") bytes)"
    ;;
  restore)
    [ -f "$BACKUP_FILE" ] || die "no backup file $BACKUP_FILE"
    if [ -f "$BACKUP_FILE.sha256" ]; then
      (cd "$(dirname "$BACKUP_FILE")" && sha256sum -c "$(basename "$BACKUP_FILE").sha256" >/dev/null) \
        || die "checksum mismatch for $BACKUP_FILE"
    fi
    pg_restore --dbname="$DATABASE_URL" --clean --if-exists --no-owner --no-privileges \
      --single-transaction --exit-on-error "$BACKUP_FILE"
    echo "pg-backup: restored $BACKUP_FILE"
    ;;
  *)
    die "usage: pg-backup.sh backup|restore (see the header of this script)"
    ;;
esac
