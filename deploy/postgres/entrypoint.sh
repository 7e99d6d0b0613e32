#!/bin/sh
# On the first start (empty $PGDATA): initdb with UTF-8 and the C collation,
# the superuser $POSTGRES_USER with $POSTGRES_PASSWORD, database $POSTGRES_DB,
# then every /docker-entrypoint-initdb.d/*.sql in it, on a server that listens
# on its socket only. Then runs postgres as PID 1 on every interface; other
# hosts log in with a password (scram-sha-256). SIGINT (the STOPSIGNAL) is a
# fast shutdown that still writes a checkpoint.
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  pw=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pw" -E UTF8 --locale=C \
         --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -q -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    echo "postgres-entrypoint: running $f"
    psql -v ON_ERROR_STOP=1 -q -U "$user" -d "$db" -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
