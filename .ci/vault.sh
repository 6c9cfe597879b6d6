#!/usr/bin/env bash
# Builds, starts and stops a Vault dev server for tokenproxy's integration tests.
#
#   .ci/vault.sh build   build tools/vaultdev once per go.mod/go.sum; prints the binary's path
#   .ci/vault.sh path    print the cached binary's path (exit 1 when not built)
#   .ci/vault.sh start   start "server -dev" on 127.0.0.1 in the background, wait until
#                        GET /v1/sys/health answers 200, then print export lines:
#                            eval "$(.ci/vault.sh start)"
#   .ci/vault.sh stop    stop the server started by "start"
#   .ci/vault.sh env     print the export lines again
#
# Environment (all optional):
#   TOKENPROXY_CACHE     cache root (default $HOME/.cache/tokenproxy); the binary lives in
#                        $TOKENPROXY_CACHE/vaultdev-<sha256 of go.mod+go.sum>/vault
#   VAULT_DEV_PORT       listen port (default 8200; Vault also binds port+1)
#   VAULT_DEV_TOKEN      root token (default "root")
#   VAULT_DEV_STATE      directory for the pid and log files (default $TOKENPROXY_CACHE/vaultdev-run)
#
# The dev server keeps everything in memory; nothing it holds outlives "stop".
# Vault is BUSL-1.1: it is a test tool here and never goes into a release image.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tooldir="$root/tools/vaultdev"
cache="${TOKENPROXY_CACHE:-$HOME/.cache/tokenproxy}"
port="${VAULT_DEV_PORT:-8200}"
token="${VAULT_DEV_TOKEN:-root}"
state="${VAULT_DEV_STATE:-$cache/vaultdev-run}"
addr="http://127.0.0.1:$port"

log() { echo "vault.sh: $*" >&2; }

key() {
	cat "$tooldir/go.mod" "$tooldir/go.sum" | sha256sum | cut -c1-16
}

binpath() {
	echo "$cache/vaultdev-$(key)/vault"
}

build() {
	local bin dir tmp start
	bin="$(binpath)"
	if [[ -x "$bin" ]]; then
		log "using cached $bin"
		echo "$bin"
		return 0
	fi
	dir="$(dirname "$bin")"
	mkdir -p "$dir"
	tmp="$(mktemp "$dir/vault.XXXXXX")"
	log "building Vault from tools/vaultdev (cold: ~1 min of downloads, 7-8 min of compile)"
	start=$SECONDS
	# -trimpath and -ldflags keep the binary smaller; the build is never shipped.
	if ! (cd "$tooldir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp" .); then
		rm -f "$tmp"
		log "build failed"
		return 1
	fi
	mv -f "$tmp" "$bin"
	log "built $bin in $((SECONDS - start)) s"
	echo "$bin"
}

print_env() {
	echo "export VAULT_ADDR=$addr"
	echo "export VAULT_TOKEN=$token"
}

healthy() {
	local code
	code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$addr/v1/sys/health" || true)"
	[[ "$code" == "200" ]]
}

start() {
	local bin pid i
	bin="$(binpath)"
	if [[ ! -x "$bin" ]]; then
		bin="$(build)"
	fi
	mkdir -p "$state"
	if [[ -f "$state/vault.pid" ]] && kill -0 "$(cat "$state/vault.pid")" 2>/dev/null; then
		if healthy; then
			log "already running (pid $(cat "$state/vault.pid"))"
			print_env
			return 0
		fi
		stop
	fi
	if healthy; then
		log "something already answers on $addr; refusing to start a second server"
		return 1
	fi
	# VAULT_* from the caller's environment must not reconfigure the server.
	env -u VAULT_ADDR -u VAULT_TOKEN -u VAULT_NAMESPACE \
		nohup "$bin" server -dev \
		-dev-root-token-id="$token" \
		-dev-listen-address="127.0.0.1:$port" \
		-dev-no-store-token \
		>"$state/vault.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$state/vault.pid"
	for i in $(seq 1 150); do # 15 s at most
		if healthy; then
			log "ready at $addr (pid $pid)"
			print_env
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			log "server exited; last lines of $state/vault.log:"
			tail -20 "$state/vault.log" >&2
			return 1
		fi
		sleep 0.1
	done
	log "not healthy after 15 s; last lines of $state/vault.log:"
	tail -20 "$state/vault.log" >&2
	stop
	return 1
}

stop() {
	local pid i
	if [[ ! -f "$state/vault.pid" ]]; then
		return 0
	fi
	pid="$(cat "$state/vault.pid")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$state/vault.pid"
	log "stopped (pid $pid)"
}

case "${1:-}" in
build) build ;;
path)
	bin="$(binpath)"
	[[ -x "$bin" ]] || { log "not built: run .ci/vault.sh build"; exit 1; }
	echo "$bin"
	;;
start) start ;;
stop) stop ;;
env) print_env ;;
*)
	echo "usage: $0 build|path|start|stop|env" >&2
	exit 2
	;;
esac
