#!/usr/bin/env bash
# Scale benchmark of the Postgres consent store: a private PostgreSQL cluster
# (Debian's binaries, PostgreSQL's default settings: fsync on,
# synchronous_commit on, shared_buffers 128MB) on this machine, filled with
# CONSENTS sealed consents, then BenchmarkPostgresScale (refreshes by 1-32
# writers, listing p50/p99, census) and bench/pgrss (RSS of a tokenproxy
# process with 0 and CONSENTS stored consents, then with active subjects).
# See docs/performance.md#postgres-consent-store.
#
# Environment (all optional):
#   CONSENTS=1000000        consents in the store
#   BENCHTIME=20s           go test -benchtime of each measurement
#   WRITERS=1,8,16,32       concurrent writers of the refresh runs
#   ACTIVE=1000,10000       bench/pgrss: active subjects served, cumulative steps
#   RSS=1                   0 skips bench/pgrss
#   DIR=/tmp/tokenproxy-pgscale   the cluster (kept: a second run reuses the filled database;
#                                 rm -rf it to start again)
#   PG_PORT=28500           the cluster's port (127.0.0.1 and a unix socket in DIR)
#   OUT=bench/out           where the results are written
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONSENTS=${CONSENTS:-1000000}
BENCHTIME=${BENCHTIME:-20s}
WRITERS=${WRITERS:-1,8,16,32}
ACTIVE=${ACTIVE:-1000,10000}
RSS=${RSS:-1}
DIR=${DIR:-/tmp/tokenproxy-pgscale}
PG_PORT=${PG_PORT:-28500}
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
RESULT="$OUT/pgscale-$CONSENTS.txt"

BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[[ -x $BIN/initdb ]] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg=()
if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); fi # postgres refuses root

mkdir -p "$DIR"
[[ ${#as_pg[@]} == 0 ]] || chown postgres: "$DIR"
if [[ ! -f $DIR/data/PG_VERSION ]]; then
  "${as_pg[@]}" "$BIN/initdb" -D "$DIR/data" -U tokenproxy --auth-local=trust --auth-host=reject -E UTF8 --no-instructions >/dev/null
fi
"${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w \
  -o "-p $PG_PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null
trap '"${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null' EXIT
for db in bench empty; do
  "$BIN/psql" -h "$DIR" -p "$PG_PORT" -U tokenproxy -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
    "$BIN/createdb" -h "$DIR" -p "$PG_PORT" -U tokenproxy "$db"
done
DSN="host=$DIR port=$PG_PORT user=tokenproxy dbname=bench sslmode=disable"

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uptime)"
  cd "$ROOT"
  TOKENPROXY_BENCH_CONSENTS=$CONSENTS TOKENPROXY_BENCH_PG_DSN=$DSN TOKENPROXY_BENCH_WRITERS=$WRITERS \
    go test -run '^$' -bench PostgresScale -benchtime "$BENCHTIME" -timeout 3h -v ./oauth/consentstore/
  echo "# after the benchmark: $(uptime)"
  if [[ $RSS == 1 ]]; then
    # a copy, so that the benchmark's database keeps exactly CONSENTS consents
    "$BIN/dropdb" -h "$DIR" -p "$PG_PORT" -U tokenproxy --if-exists rss
    "$BIN/createdb" -h "$DIR" -p "$PG_PORT" -U tokenproxy -T bench rss
    go run ./bench/pgrss -dsn "host=$DIR port=$PG_PORT user=tokenproxy dbname=rss sslmode=disable" \
      -empty-dsn "host=$DIR port=$PG_PORT user=tokenproxy dbname=empty sslmode=disable" \
      -stored "$CONSENTS" -active "$ACTIVE"
    echo "# after pgrss: $(uptime)"
  fi
} 2>&1 | tee "$RESULT"
echo "results in $RESULT"
