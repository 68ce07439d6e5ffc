#!/usr/bin/env bash
# The soak: the chaos end-to-end test (host/tests/chaos.rs) for SECONDS (default 1800,
# 30 minutes) instead of CI's 90: four routers in a ring under SIGKILL restarts, link cuts,
# loss and IPAM attach/detach, with a TCP stream and a ping train. Prints the figures:
# events, worst restart, worst ping-train outage and what was going on, time to heal,
# routers' RSS high-water mark, the stream's totals. Needs root; `WEFT_CHAOS_SEED=N`
# replays a run.  Usage: host/tests/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-1800}
[[ $secs =~ ^[0-9]+$ ]] || { echo "soak.sh: SECONDS must be a whole number, not '$secs'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespaces)" >&2; exit 1; }
WEFT_TESTNET_REQUIRED=1 WEFT_CHAOS_SECS=$secs \
  cargo test -q -p weft --test chaos -- --include-ignored --nocapture 2>&1 |
  grep -E '^(chaos:|\[|test result|thread|  )' || true
test "${PIPESTATUS[0]}" -eq 0
