#!/usr/bin/env bash
# The whole test suite, with its own set-up. README.md names this command;
# .ci/run calls it. Environment:
#   TOKENPROXY_FUZZTIME  how long each fuzz target runs (default 10s; 0 skips)
#   TOKENPROXY_SKIP_SETUP=1  use what is already installed/running
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
FUZZTIME="${TOKENPROXY_FUZZTIME:-10s}"

step() { printf '\n==> %s\n' "$*"; }

if [[ "${TOKENPROXY_SKIP_SETUP:-}" != 1 ]]; then
  step "set-up: test dependencies"
  need=()
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "missing: ${need[*]} (install them, or run as root)" >&2; exit 1
    fi
  fi
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*'))
if [[ -n "$unformatted" ]]; then echo "not gofmt'ed:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "go test -race"
go test -race -count=1 -timeout 20m ./...

if [[ "$FUZZTIME" != 0 ]]; then
  step "fuzz targets, $FUZZTIME each"
  # Every Fuzz* function in the tree runs briefly; its corpus stays in testdata/.
  while read -r pkg fn; do
    echo "--- $pkg $fn"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/tokenproxy-fuzz.log 2>&1 || { cat /tmp/tokenproxy-fuzz.log; exit 1; }
  done < <(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./tools/' | while read -r f; do
             d=$(dirname "$f"); grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | sed "s|^|./${d#./} |"
           done | sort -u)
fi

step "all tests passed"
