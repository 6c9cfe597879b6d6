#!/usr/bin/env bash
# Runs the soak: the built tokenproxy binary as a sidecar and as 3 gateway
# replicas sharing a private redis-server (killed and restarted during the
# run), against one Banking Circle emulator (and a private Vault dev server
# when .ci/vault.sh build cached one) while faults play, then a SIGTERM
# drain. Loopback only. Needs redis-server unless -replicas 1.
#
#   scripts/soak.sh                      # 5 minutes, report and samples in a temporary directory
#   scripts/soak.sh -duration 30m -out /tmp/soak
#   scripts/soak.sh -replicas 1          # the sidecar alone, no Redis
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
