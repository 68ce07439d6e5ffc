#!/usr/bin/env bash
# weft demo: builds and installs weft, then runs three "hosts" as network namespaces on a
# private underlay (a bridge inside its own namespace), one router and one container per
# host, and shows containers on different hosts talking over one virtual Ethernet: first
# with the kernel fast path, then encrypted over the sleeve. Everything it creates is
# removed on exit, also on failure or Ctrl-C. Needs root, iproute2 and ping.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)"; exit 1; }
for t in ip ping cargo; do
  command -v "$t" >/dev/null || { echo "demo: missing $t (apt-get install iproute2 iputils-ping)"; exit 1; }
done

echo "==> building weft (release) and installing it to /usr/local/bin/weft"
cargo build -q --release -p weft
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/weft" /usr/local/bin/weft

P="wdemo$$"
DIR=$(mktemp -d /tmp/weft-demo.XXXXXX)
PIDS=()
NSS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }

ns "$P-ul"
inns "$P-ul" ip link add br0 type bridge
inns "$P-ul" ip link set br0 up

start_routers() {  # $1: extra router flags
  local i=1 peers=""
  for h in a b c; do
    # shellcheck disable=SC2086 # $1 and $peers are lists of words
    ip netns exec "$P-$h" weft router --socket "$DIR/$h.sock" --state-dir "$DIR/$h" $1 $peers \
      >"$DIR/$h.log" 2>&1 &
    PIDS+=($!)
    peers="198.18.99.1"
    i=$((i + 1))
  done
  for h in a b c; do
    for _ in $(seq 50); do weft status --socket "$DIR/$h.sock" >/dev/null 2>&1 && break; sleep 0.1; done
  done
}

i=1
for h in a b c; do
  ns "$P-$h"
  inns "$P-$h" sysctl -qw net.ipv4.ip_forward=0
  ip link add "eth0" netns "$P-$h" type veth peer name "ul-$h" netns "$P-ul"
  inns "$P-ul" ip link set "ul-$h" master br0 up
  inns "$P-$h" ip addr add "198.18.99.$i/24" dev eth0
  inns "$P-$h" ip link set eth0 up
  ns "$P-c$h"
  i=$((i + 1))
done

echo "==> three hosts, fast datapath (no password)"
start_routers ""
i=1
for h in a b c; do
  weft attach "10.32.0.$i/12" --netns "/var/run/netns/$P-c$h" --socket "$DIR/$h.sock" >/dev/null
  i=$((i + 1))
done
sleep 3
inns "$P-ca" ping -c 3 -i 0.3 10.32.0.2
inns "$P-ca" ping -c 3 -i 0.3 10.32.0.3
echo; echo "--- weft status connections (host a)"
weft status connections --socket "$DIR/a.sock"

echo; echo "==> restart the routers with a password: encrypted sleeve; containers keep their addresses"
for pid in "${PIDS[@]}"; do kill "$pid"; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
start_routers "--password demo-secret"
sleep 3
inns "$P-cc" ping -c 3 -i 0.3 10.32.0.1 || { tail -n 20 "$DIR"/*.log; weft status connections --socket "$DIR/c.sock"; exit 1; }
echo; echo "--- weft status connections (host c)"
weft status connections --socket "$DIR/c.sock"
echo; echo "--- weft ps (host c)"
weft ps --socket "$DIR/c.sock"
[ -n "${WEFT_DEMO_DEBUG:-}" ] && tail -n 5 "$DIR"/*.log
echo; echo "demo done: cleaning up"
