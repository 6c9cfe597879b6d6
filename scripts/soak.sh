#!/usr/bin/env bash
# Runs the soak: the built tokenproxy binary against the Banking Circle
# emulator (and a private Vault dev server when .ci/vault.sh build cached one)
# while faults play, then a SIGTERM drain. Loopback only.
#
#   scripts/soak.sh                      # 5 minutes, report and samples in a temporary directory
#   scripts/soak.sh -duration 30m -out /tmp/soak
#
# Exit status: 0 pass; 1 a defect-class failure, token budget overrun, leak
# trend, secret in the log or metrics, or an unclean drain; 2 could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
go build -o "${TMPDIR:-/tmp}/tokenproxy-soak" ./tools/soak
has_duration=false
for a in "$@"; do [[ $a == -duration* || $a == --duration* ]] && has_duration=true; done
if ! $has_duration; then set -- -duration 5m "$@"; fi
exec "${TMPDIR:-/tmp}/tokenproxy-soak" "$@"
