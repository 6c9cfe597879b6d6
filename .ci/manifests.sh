#!/usr/bin/env bash
# Checks deploy/k8s: every manifest decodes strictly into the Kubernetes API
# types, every kustomization renders (kubectl kustomize) and decodes strictly,
# and the rendered workloads keep their security posture. The checks are a Go
# module of their own (deploy/k8s/test), so k8s.io/api stays out of the
# product's go.mod.
#
# Environment:
#   TOKENPROXY_BIN  a built tokenproxy; the shipped ConfigMaps are run through
#                   `tokenproxy validate --skip-credentials`. Unset: built here.
set -euo pipefail

start=$(date +%s)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'manifests.sh: %s\n' "$*" >&2; }

# kubectl renders the kustomizations; without it, the standalone kustomize
# (a Go module) does the same job.
if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
    log "kubectl not found; installing kustomize with go install"
    GOFLAGS= go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
    export PATH=$PATH:$(go env GOPATH)/bin
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -z ${TOKENPROXY_BIN:-} ]]; then
    (cd "$repo" && go build -o "$tmp/tokenproxy" ./cmd/tokenproxy)
    export TOKENPROXY_BIN=$tmp/tokenproxy
fi

cd "$repo/deploy/k8s/test"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
    log "not gofmt'ed: $unformatted"
    exit 1
fi
go vet ./...
go test -count=1 ./...
log "done in $(( $(date +%s) - start ))s"
