#!/usr/bin/env bash
# Load benchmark: tokenproxy against nginx doing the same job, and against a
# direct HTTPS call, with wrk, interleaved in one run. See bench/README.md.
#
# Environment (all optional):
#   ROUNDS=5 DURATION=6 CONNS=64 THREADS=2    wrk rounds, seconds per run, connections, threads
#   TARGETS="direct nginx ..."                which targets to load (default: all, see below)
#   LAT_ROUNDS=2 LAT_DURATION=5               the latency runs: one connection, direct/nginx/tokenproxy
#                                             (LAT_ROUNDS=0 skips them)
#   MEMORY=1                                  0 skips the 1,000-idle-connections memory test
#   IDLE_CONNS=1000                           connections held by the memory test
#   PROFILE=1                                 build with -tags pprof and save a CPU profile of
#                                             each tokenproxy target in round 1 to $OUT
#   TP_ENV="GOGC=200"                         extra environment for the tokenproxy processes
#   HOLD=0                                    seconds to keep everything up after the checks, before
#                                             the load, for manual profiling (ports and pids are printed)
#   OUT=bench/out                             where results and profiles are written
#   BASELINE=main                             also build tokenproxy at this git ref and load it as
#                                             tp-forward-base / tp-local-base, beside tp-forward / tp-local
#   BENCH_PORT_BASE=28400                     first of the 127.0.0.1 ports used
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
LAT_ROUNDS=${LAT_ROUNDS:-2}
LAT_DURATION=${LAT_DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
MEMORY=${MEMORY:-1}
IDLE_CONNS=${IDLE_CONNS:-1000}
PROFILE=${PROFILE:-0}
TP_ENV=${TP_ENV:-}
OUT=${OUT:-$ROOT/bench/out}
BASE=${BENCH_PORT_BASE:-28400}
TARGETS=${TARGETS:-"direct nginx tp-forward tp-local nginx-log tp-local-log"}
BASELINE=${BASELINE:-}
if [[ -n $BASELINE ]]; then # each tokenproxy target gets its baseline twin right after it
  with_base=""
  for t in $TARGETS; do
    with_base+=" $t"
    [[ $t == tp-forward || $t == tp-local ]] && [[ " $TARGETS " != *" $t-base "* ]] && with_base+=" $t-base"
  done
  TARGETS=${with_base# }
fi

P_API=$((BASE + 1))      # upstream nginx: the mTLS API (client certificate required)
P_AUTH=$((BASE + 2))     # upstream nginx: the mTLS authorization host
P_DIRECT=$((BASE + 3))   # upstream nginx: same TLS and content, no client certificate (for wrk)
P_NGX=$((BASE + 10))     # nginx doing tokenproxy's job, no access log
P_NGX_LOG=$((BASE + 11)) # the same with a JSON access log line per request
P_TP_PROXY=$((BASE + 20)) # tokenproxy (log.level warn): forward proxy
P_TP_LOCAL=$((BASE + 21)) # tokenproxy (log.level warn): the route's local port
P_TP_ADMIN=$((BASE + 22))
P_TPB_PROXY=$((BASE + 23)) # the BASELINE tokenproxy (log.level warn): forward proxy
P_TPB_LOCAL=$((BASE + 24))
P_TPB_ADMIN=$((BASE + 25))
P_TPL_PROXY=$((BASE + 30)) # tokenproxy (log.level info, a JSON line per request): forward proxy
P_TPL_LOCAL=$((BASE + 31))
P_TPL_ADMIN=$((BASE + 32))
P_MEM_PROXY=$((BASE + 40)) # the fresh tokenproxy of the memory test
P_MEM_LOCAL=$((BASE + 41))
P_MEM_ADMIN=$((BASE + 42))
P_PPROF=$((BASE + 50))

TOKEN=bench-access-token-0123456789abcdef
API_HOST=api.bench.test
PATH_ACCOUNTS=/api/v1/accounts

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'load.sh: %s\n' "$*" >&2
  local f
  for f in "${WORK:-/nonexistent}"/{up,ngx}/error.log "${WORK:-/nonexistent}"/tp*.log; do
    [[ -s $f ]] && { printf -- '--- %s\n' "${f#"$WORK"/}"; tail -n 5 "$f"; } >&2
  done
  exit 1
}

# --- set-up ------------------------------------------------------------------

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null || die "go is needed to build tokenproxy"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for port in $(seq $((BASE + 1)) $((BASE + 50))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use (another run?); pick other ports with BENCH_PORT_BASE"
  fi
done

WORK=$(mktemp -d /tmp/tokenproxy-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers may run as nobody and read the static files
mkdir -p "$OUT" "$WORK"/{pki,www,up,ngx}
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL [curl args...]: until it answers 200, for at most 15 s.
wait_http() {
  local url=$1; shift
  for _ in $(seq 150); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null) == 200 ]] && return 0
    sleep 0.1
  done
  die "$url did not answer 200 within 15 s"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at start: $LOAD_START on $(nproc) cores"

# --- certificates ------------------------------------------------------------

log "generating a test CA, a server certificate and a client certificate"
(
  cd "$WORK/pki"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=tokenproxy-bench-CA \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=$API_HOST" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:auth.bench.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$API_HOST" >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt 2>/dev/null
  openssl req "${ec[@]}" -keyout client.key -out client.csr -subj /CN=tokenproxy-bench-client 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >client.ext
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt 2>/dev/null
  chmod 644 ./*
)
PKI=$WORK/pki

# A static accounts answer of a realistic size (about 1.5 KB).
{
  printf '{"result":['
  for i in 1 2 3 4 5; do
    [[ $i == 1 ]] || printf ','
    printf '{"accountId":"3f6a1c2e-0000-4000-8000-00000000000%d","accountDescription":"Operating account %d","accountType":"CurrentAccount","iban":"DK50008900000000000%d","bic":"SXPYDKKK","currency":"EUR","status":"Active","openingDate":"2021-04-01T00:00:00Z"}' "$i" "$i" "$i"
  done
  printf '],"pageInfo":{"currentPage":1,"pageSize":25}}\n'
} >"$WORK/www/accounts.json"
chmod 644 "$WORK/www/accounts.json"

# --- the static mTLS upstream ------------------------------------------------

cat >"$WORK/up/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type application/json;
    keepalive_timeout 300s;
    keepalive_requests 100000000; # no reconnects (and TLS handshakes) during a run
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $PKI/server.crt;
    ssl_certificate_key $PKI/server.key;
    ssl_client_certificate $PKI/ca.crt;
    client_body_temp_path $WORK/up/tmp;

    server { # the API, client certificate required
        listen 127.0.0.1:$P_API ssl;
        ssl_verify_client on;
        location = $PATH_ACCOUNTS {
            if (\$http_authorization != "Bearer $TOKEN") { return 401 '{"error":"invalid_token"}'; }
            alias $WORK/www/accounts.json;
        }
    }
    server { # the authorization host, client certificate required
        listen 127.0.0.1:$P_AUTH ssl;
        ssl_verify_client on;
        location = /api/v1/authorizations/authorize {
            return 200 '{"access_token":"$TOKEN","expires_in":"3600","token_type":"Bearer"}';
        }
    }
    server { # the API again, same TLS and content, without client certificate: wrk cannot present one
        listen 127.0.0.1:$P_DIRECT ssl;
        location = $PATH_ACCOUNTS {
            if (\$http_authorization != "Bearer $TOKEN") { return 401 '{"error":"invalid_token"}'; }
            alias $WORK/www/accounts.json;
        }
    }
}
EOF

# --- nginx doing tokenproxy's job --------------------------------------------
# worker_processes 2: one per core, as tokenproxy runs with GOMAXPROCS=2.

proxy_location() {
  cat <<EOF
        location / {
            proxy_pass https://bank;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $TOKEN";
            proxy_ssl_certificate $PKI/client.crt;
            proxy_ssl_certificate_key $PKI/client.key;
            proxy_ssl_trusted_certificate $PKI/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name $API_HOST;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;
        }
EOF
}
cat >"$WORK/ngx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/ngx/tmp;
    proxy_temp_path $WORK/ngx/ptmp;
    log_format json escape=json '{"ts":"\$time_iso8601","method":"\$request_method","host":"\$host","path":"\$uri","status":\$status,"duration":\$request_time,"upstream":"\$upstream_response_time","bytes":\$body_bytes_sent}';
    upstream bank {
        server 127.0.0.1:$P_API;
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$P_NGX;
$(proxy_location)
    }
    server {
        listen 127.0.0.1:$P_NGX_LOG;
        access_log $WORK/ngx/access.log json;
$(proxy_location)
    }
}
EOF

log "starting nginx: static mTLS upstream, and nginx doing tokenproxy's job"
nginx -e "$WORK/up/error.log" -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' </dev/null >/dev/null 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
nginx -e "$WORK/ngx/error.log" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" -g 'daemon off;' </dev/null >/dev/null 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")

# --- tokenproxy ----------------------------------------------------------------

log "building tokenproxy"
tags=()
[[ $PROFILE == 1 ]] && tags=(-tags pprof)
(cd "$ROOT" && go build "${tags[@]}" -o "$WORK/tokenproxy" ./cmd/tokenproxy)
go build -C "$ROOT" -o "$WORK/idleconns" ./bench/idleconns
if [[ -n $BASELINE ]]; then
  log "building tokenproxy at $BASELINE ($(git -C "$ROOT" rev-parse --short "$BASELINE"))"
  mkdir -p "$WORK/base-src"
  git -C "$ROOT" archive "$BASELINE" | tar -x -C "$WORK/base-src"
  (cd "$WORK/base-src" && go build "${tags[@]}" -o "$WORK/tokenproxy-base" ./cmd/tokenproxy) || die "building $BASELINE failed"
fi

# tp_config LEVEL PROXY_PORT LOCAL_PORT ADMIN_PORT
tp_config() {
  cat <<EOF
listen:
  proxy: 127.0.0.1:$2
  admin: 127.0.0.1:$4
log:
  level: $1
  format: json
routes:
  - name: bench
    hosts: [$API_HOST]
    upstream: https://127.0.0.1:$P_API
    listen: 127.0.0.1:$3
    tls:
      ca_file: $PKI/ca.crt
    client_certificate:
      pem: {cert_file: $PKI/client.crt, key_file: $PKI/client.key}
    token:
      type: basic-get
      url: https://127.0.0.1:$P_AUTH/api/v1/authorizations/authorize
      username: {env: BENCH_TOKEN_USERNAME}
      password: {env: BENCH_TOKEN_PASSWORD}
EOF
}
tp_config warn "$P_TP_PROXY" "$P_TP_LOCAL" "$P_TP_ADMIN" >"$WORK/tp.yaml"
tp_config info "$P_TPL_PROXY" "$P_TPL_LOCAL" "$P_TPL_ADMIN" >"$WORK/tp-info.yaml"
tp_config warn "$P_MEM_PROXY" "$P_MEM_LOCAL" "$P_MEM_ADMIN" >"$WORK/tp-mem.yaml"
tp_config warn "$P_TPB_PROXY" "$P_TPB_LOCAL" "$P_TPB_ADMIN" >"$WORK/tp-base.yaml"
export BENCH_TOKEN_USERNAME=bench BENCH_TOKEN_PASSWORD=bench-password

# start_tp CONFIG LOGFILE [pprof port] [binary]: sets STARTED to the pid.
start_tp() {
  local extra=()
  [[ -n ${3:-} ]] && extra=("TOKENPROXY_PPROF=127.0.0.1:$3")
  # shellcheck disable=SC2086
  env $TP_ENV "${extra[@]}" "${4:-$WORK/tokenproxy}" run --config "$1" >/dev/null 2>"$2" &
  STARTED=$!
  PIDS+=("$STARTED")
}

log "starting tokenproxy (log.level warn) and tokenproxy (log.level info, logging to a file)"
start_tp "$WORK/tp.yaml" "$WORK/tp.log" "$([[ $PROFILE == 1 ]] && echo "$P_PPROF")"
TP_PID=$STARTED
start_tp "$WORK/tp-info.yaml" "$WORK/tp-info.log"
TPL_PID=$STARTED
TPB_PID=""
if [[ -n $BASELINE ]]; then
  log "starting tokenproxy $BASELINE (log.level warn)"
  start_tp "$WORK/tp-base.yaml" "$WORK/tp-base.log" "" "$WORK/tokenproxy-base"
  TPB_PID=$STARTED
fi

# --- checks: every target answers the accounts JSON ---------------------------

wait_http "https://127.0.0.1:$P_DIRECT$PATH_ACCOUNTS" --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN"
wait_http "http://127.0.0.1:$P_NGX$PATH_ACCOUNTS"
wait_http "http://127.0.0.1:$P_TP_ADMIN/readyz"
wait_http "http://127.0.0.1:$P_TPL_ADMIN/readyz"
[[ -n $BASELINE ]] && wait_http "http://127.0.0.1:$P_TPB_ADMIN/readyz"
want=$(cat "$WORK/www/accounts.json")
check() { # name, curl args...
  local name=$1 got; shift
  got=$(curl -sS --max-time 5 "$@") || die "$name: request failed"
  [[ $got == "$want" ]] || die "$name: unexpected answer: ${got:0:200}"
}
check "mTLS upstream with client certificate" --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
  -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$P_API$PATH_ACCOUNTS"
check direct --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$P_DIRECT$PATH_ACCOUNTS"
check nginx "http://127.0.0.1:$P_NGX$PATH_ACCOUNTS"
check nginx-log "http://127.0.0.1:$P_NGX_LOG$PATH_ACCOUNTS"
check tp-forward -x "http://127.0.0.1:$P_TP_PROXY" "http://$API_HOST$PATH_ACCOUNTS"
check tp-local "http://127.0.0.1:$P_TP_LOCAL$PATH_ACCOUNTS"
check tp-local-log "http://127.0.0.1:$P_TPL_LOCAL$PATH_ACCOUNTS"
check tp-forward-log -x "http://127.0.0.1:$P_TPL_PROXY" "http://$API_HOST$PATH_ACCOUNTS"
if [[ -n $BASELINE ]]; then
  check tp-forward-base -x "http://127.0.0.1:$P_TPB_PROXY" "http://$API_HOST$PATH_ACCOUNTS"
  check tp-local-base "http://127.0.0.1:$P_TPB_LOCAL$PATH_ACCOUNTS"
fi

# --- load ----------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
children() { pgrep -P "$1" | tr '\n' ' '; }
# ticks PID...: user+system CPU ticks of the processes, summed.
ticks() {
  local p t=0 s
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }     # drop "pid (comm) "; utime and stime are then fields 12 and 13
    set -- $s
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
NGX_WORKERS=$(children "$NGX_PID")
UP_WORKERS=$(children "$UP_PID")

# target NAME: sets URL, PROC (pids charged as the proxy) and wrk's extra env/args.
target() {
  ABS="" ARGS=()
  case $1 in
    direct)       URL="https://127.0.0.1:$P_DIRECT$PATH_ACCOUNTS"; PROC=""; ARGS=(-H "Authorization: Bearer $TOKEN") ;;
    nginx)        URL="http://127.0.0.1:$P_NGX$PATH_ACCOUNTS"; PROC="$NGX_PID $NGX_WORKERS" ;;
    nginx-log)    URL="http://127.0.0.1:$P_NGX_LOG$PATH_ACCOUNTS"; PROC="$NGX_PID $NGX_WORKERS" ;;
    tp-forward)   URL="http://127.0.0.1:$P_TP_PROXY/"; PROC=$TP_PID; ABS="http://$API_HOST$PATH_ACCOUNTS" ;;
    tp-local)     URL="http://127.0.0.1:$P_TP_LOCAL$PATH_ACCOUNTS"; PROC=$TP_PID ;;
    tp-forward-base) URL="http://127.0.0.1:$P_TPB_PROXY/"; PROC=$TPB_PID; ABS="http://$API_HOST$PATH_ACCOUNTS" ;;
    tp-local-base) URL="http://127.0.0.1:$P_TPB_LOCAL$PATH_ACCOUNTS"; PROC=$TPB_PID ;;
    tp-forward-log) URL="http://127.0.0.1:$P_TPL_PROXY/"; PROC=$TPL_PID; ABS="http://$API_HOST$PATH_ACCOUNTS" ;;
    tp-local-log) URL="http://127.0.0.1:$P_TPL_LOCAL$PATH_ACCOUNTS"; PROC=$TPL_PID ;;
    *) die "unknown target $1" ;;
  esac
}

run_wrk() { # seconds [threads connections]
  WRK_ABS_URL=$ABS WRK_HOST=$API_HOST timeout $(($1 + 30)) \
    wrk -t "${2:-$THREADS}" -c "${3:-$CONNS}" -d "${1}s" --latency -s "$ROOT/bench/wrk.lua" "${ARGS[@]}" "$URL"
}

if ((${HOLD:-0} > 0)); then
  log "holding for ${HOLD}s: tokenproxy pid $TP_PID (forward 127.0.0.1:$P_TP_PROXY, local 127.0.0.1:$P_TP_LOCAL)," \
    "nginx proxy pid $NGX_PID (127.0.0.1:$P_NGX), direct https://127.0.0.1:$P_DIRECT, work dir $WORK"
  sleep "$HOLD"
fi

log "warm-up: 2 s per target"
for t in $TARGETS; do
  target "$t"
  run_wrk 2 >/dev/null
done

RESULTS=$OUT/results.tsv
printf 'target\tround\treq_s\tp50_us\tp99_us\tproxy_cpu_us_req\tupstream_cpu_us_req\trequests\terrors\n' >"$RESULTS"
total=$(($(wc -w <<<"$TARGETS") * ROUNDS * DURATION))
log "load: $ROUNDS rounds x [$TARGETS] x ${DURATION}s, $CONNS connections, $THREADS threads (~${total}s)"
for r in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    target "$t"
    prof_pid=""
    if [[ $PROFILE == 1 && $r == 1 && $PROC == "$TP_PID" ]]; then
      curl -s --max-time $((DURATION + 10)) -o "$OUT/cpu-$t.pprof" \
        "http://127.0.0.1:$P_PPROF/debug/pprof/profile?seconds=$((DURATION - 2))" &
      prof_pid=$!
    fi
    # shellcheck disable=SC2086
    c0=$(ticks $PROC); u0=$(ticks $UP_WORKERS)
    res=$(run_wrk "$DURATION" | grep '^RESULT') || die "wrk failed on $t"
    # shellcheck disable=SC2086
    c1=$(ticks $PROC); u1=$(ticks $UP_WORKERS)
    [[ -n $prof_pid ]] && wait "$prof_pid"
    eval "${res#RESULT }" # requests= duration_us= p50_us= p99_us= status_errors= socket_errors=
    errors=$((status_errors + socket_errors))
    ((requests > 0)) || die "$t served no request"
    awk -v t="$t" -v r="$r" -v n="$requests" -v d="$duration_us" -v p50="$p50_us" -v p99="$p99_us" \
      -v c="$((c1 - c0))" -v u="$((u1 - u0))" -v hz="$CLK_TCK" -v e="$errors" -v proc="$PROC" 'BEGIN {
        cpu = (proc == "") ? "-" : sprintf("%.1f", c * 1e6 / hz / n)
        printf "%s\t%d\t%.0f\t%d\t%d\t%s\t%.1f\t%d\t%d\n", t, r, n / (d / 1e6), p50, p99, cpu, u * 1e6 / hz / n, n, e }' >>"$RESULTS"
    tail -n 1 "$RESULTS" | awk -F'\t' '{ printf "    round %s  %-14s %8s req/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %6s us/req  errors %s\n", $2, $1, $3, $4/1000, $5/1000, $6, $9 }' >&2
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- latency with one connection: the time each hop adds, without queueing ---

LATENCY=$OUT/latency.tsv
printf 'target\tround\treq_s\tp50_us\tp99_us\n' >"$LATENCY"
lat_targets=""
for t in direct nginx tp-forward tp-local; do [[ " $TARGETS " == *" $t "* ]] && lat_targets+=" $t"; done
if ((LAT_ROUNDS > 0)) && [[ -n $lat_targets ]]; then
  log "latency: $LAT_ROUNDS rounds x [$lat_targets ] x ${LAT_DURATION}s, 1 connection"
  for r in $(seq "$LAT_ROUNDS"); do
    for t in $lat_targets; do
      target "$t"
      res=$(run_wrk "$LAT_DURATION" 1 1 | grep '^RESULT') || die "wrk failed on $t"
      eval "${res#RESULT }"
      ((status_errors + socket_errors == 0)) || die "$t: $((status_errors + socket_errors)) errors"
      printf '%s\t%d\t%.0f\t%d\t%d\n' "$t" "$r" "$(awk -v n="$requests" -v d="$duration_us" 'BEGIN { print n / (d / 1e6) }')" \
        "$p50_us" "$p99_us" >>"$LATENCY"
    done
  done
fi

# --- memory: 1,000 idle keep-alive client connections -----------------------

MEMFILE=$OUT/memory.txt
: >"$MEMFILE"
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
if [[ $MEMORY == 1 ]]; then
  log "memory: a fresh tokenproxy holding $IDLE_CONNS idle keep-alive connections (forward-proxy port)"
  start_tp "$WORK/tp-mem.yaml" "$WORK/tp-mem.log"
  MEM_PID=$STARTED
  wait_http "http://127.0.0.1:$P_MEM_ADMIN/readyz"
  check tp-mem -x "http://127.0.0.1:$P_MEM_PROXY" "http://$API_HOST$PATH_ACCOUNTS"
  sleep 1
  rss0=$(rss_kib "$MEM_PID")
  "$WORK/idleconns" -addr "127.0.0.1:$P_MEM_PROXY" -url "http://$API_HOST$PATH_ACCOUNTS" -host "$API_HOST" \
    -n "$IDLE_CONNS" -hold 120s >"$WORK/idle.out" 2>&1 &
  IDLE_PID=$!
  PIDS+=("$IDLE_PID")
  for _ in $(seq 600); do # at most 60 s
    grep -q '^ready' "$WORK/idle.out" && break
    kill -0 "$IDLE_PID" 2>/dev/null || die "idle-connections helper: $(cat "$WORK/idle.out")"
    sleep 0.1
  done
  grep -q '^ready' "$WORK/idle.out" || die "the idle-connections helper did not get ready within 60 s"
  sleep 3 # settle
  rss1=$(rss_kib "$MEM_PID")
  fds=$(ls "/proc/$MEM_PID/fd" | wc -l)
  kill "$IDLE_PID" 2>/dev/null || true
  {
    echo "tokenproxy RSS after one request:              $((rss0 / 1024)) MiB ($rss0 KiB)"
    echo "tokenproxy RSS holding $IDLE_CONNS idle client conns: $((rss1 / 1024)) MiB ($rss1 KiB), $(((rss1 - rss0) * 1024 / IDLE_CONNS)) bytes per connection, $fds open fds"
    [[ -n $TP_ENV ]] && echo "tokenproxy environment: $TP_ENV"
  } >"$MEMFILE"
fi

# --- the cached-token lookup (a Go benchmark) --------------------------------

GOBENCH=$OUT/gobench.txt
log "go benchmark: cached-token lookup"
(cd "$ROOT" && timeout 120 go test -run '^$' -bench '^BenchmarkGetCached$' -benchmem -count 3 ./tokencache) |
  grep '^Benchmark' >"$GOBENCH" || echo "the Go benchmark failed" >"$GOBENCH"

# --- report --------------------------------------------------------------------

{
  echo
  echo "tokenproxy load benchmark  $(date -u +%Y-%m-%dT%H:%MZ)  $(nproc) cores  $(nginx -v 2>&1 | sed 's/.*: //')  $(go version | cut -d' ' -f3)"
  echo "load average (1, 5, 15 min): at start $LOAD_START, after the load $LOAD_END"
  echo "wrk: $ROUNDS rounds x ${DURATION}s per target, interleaved, $CONNS connections, $THREADS threads; medians over rounds"
  [[ -n $BASELINE ]] && echo "*-base: tokenproxy built at $BASELINE ($(git -C "$ROOT" rev-parse --short "$BASELINE")); the others: the work tree"
  [[ -n $TP_ENV ]] && echo "tokenproxy environment: $TP_ENV"
  echo
  awk -F'\t' -v targets="$TARGETS" '
    function median(list,   a, n, i, j, x) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
      if (n % 2) return a[(n + 1) / 2]
      return (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 {
      rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5
      cpu[$1] = cpu[$1] " " $6; ucpu[$1] = ucpu[$1] " " $7; err[$1] += $9
      R[$1, $2] = $3; C[$1, $2] = $6; P[$1, $2] = $5; rounds[$2] = 1
    }
    END {
      printf "%-15s %9s %9s %9s %14s %14s %7s\n", "target", "req/s", "p50 ms", "p99 ms", "proxy CPU", "upstream CPU", "errors"
      printf "%-15s %9s %9s %9s %14s %14s %7s\n", "", "", "", "", "us/req", "us/req", ""
      n = split(targets, T, " ")
      for (i = 1; i <= n; i++) {
        t = T[i]
        c = (cpu[t] ~ /-/) ? "-" : sprintf("%.1f", median(cpu[t]))
        printf "%-15s %9.0f %9.2f %9.2f %14s %14.1f %7d\n", t, median(rps[t]), median(p50[t]) / 1000, median(p99[t]) / 1000, c, median(ucpu[t]), err[t]
      }
      print ""
      print "ratios (per round, then the median over rounds)                 target"
      split("tp-forward tp-local tp-local-log", TP, " ")
      for (i = 1; i <= 3; i++) {
        t = TP[i]; ref = (t ~ /-log$/) ? "nginx-log" : "nginx"
        if (!((t, 1) in R) || !((ref, 1) in R)) continue
        th = ""; cp = ""; lat = ""
        for (r in rounds) {
          th = th " " R[t, r] / R[ref, r]
          if (C[ref, r] > 0) cp = cp " " C[t, r] / C[ref, r]
          if ((("direct", r) in P)) lat = lat " " (P[t, r] - P["direct", r]) / 1000
        }
        printf "  %-13s throughput / %-9s  %5.2f                           >= 0.75\n", t, ref, median(th)
        if (cp != "") printf "  %-13s CPU per req / %-9s %5.2f                           <= 1.5\n", t, ref, median(cp)
        if (lat != "") printf "  %-13s p99 - direct p99          %+6.2f ms                       <= 1 ms\n", t, median(lat)
      }
      split("tp-forward tp-local", TB, " ")
      for (i = 1; i <= 2; i++) {
        t = TB[i]; b = t "-base"
        if (!((t, 1) in R) || !((b, 1) in R)) continue
        th = ""; cp = ""
        for (r in rounds) { th = th " " R[t, r] / R[b, r]; if (C[b, r] > 0) cp = cp " " C[t, r] / C[b, r] }
        printf "  %-13s throughput / %-15s %5.2f   CPU per req / %-15s %5.2f\n", t, b, median(th), b, median(cp)
      }
      if ((("nginx", 1) in R) && (("direct", 1) in R)) {
        lat = ""
        for (r in rounds) lat = lat " " (P["nginx", r] - P["direct", r]) / 1000
        printf "  %-13s p99 - direct p99          %+6.2f ms   (for reference)\n", "nginx", median(lat)
      }
    }' "$RESULTS"
  echo
  awk -F'\t' '
    function median(list,   a, n, i, j, x) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
      if (n % 2) return a[(n + 1) / 2]
      return (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }; rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5 }
    END {
      if (n == 0) exit
      print "latency with 1 connection (no queueing), medians:"
      printf "%-15s %9s %9s %9s %16s\n", "target", "req/s", "p50 ms", "p99 ms", "p99 - direct ms"
      for (i = 1; i <= n; i++) {
        t = order[i]
        d = ("direct" in p99) ? sprintf("%+.2f", (median(p99[t]) - median(p99["direct"])) / 1000) : "-"
        printf "%-15s %9.0f %9.2f %9.2f %16s\n", t, median(rps[t]), median(p50[t]) / 1000, median(p99[t]) / 1000, d
      }
    }' "$LATENCY"
  echo
  cat "$MEMFILE"
  echo
  echo "cached-token lookup (go test -bench GetCached ./tokencache, parallel):"
  sed 's/^/  /' "$GOBENCH"
  echo
  echo "per-round figures: $RESULTS, $LATENCY"
} | tee "$OUT/report.txt"
