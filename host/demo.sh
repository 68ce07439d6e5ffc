#!/usr/bin/env bash
# weft demo: builds and installs weft, then runs three "hosts" as network namespaces on a
# private underlay (a bridge inside its own namespace), one router and one container per
# host, and shows containers on different hosts talking over one virtual Ethernet: first
# with the kernel fast path, then encrypted over the sleeve. Where a Docker Engine answers
# (and busybox-static gives a test image without a registry), real Docker containers on
# hosts a and b join in, on the Docker network each router makes, and talk by name.
# Everything it creates is removed on exit, also on failure or Ctrl-C. Needs root,
# iproute2 and ping.
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
DOCKER_CS=()
DOCKER_NETS=()
DOCKER_IMAGE=""
cleanup() {
  # Docker's objects first: removing a network needs its plugin (the router) alive.
  for c in "${DOCKER_CS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  for n in "${DOCKER_NETS[@]}"; do docker network rm "$n" >/dev/null 2>&1 || true; done
  [ -n "$DOCKER_IMAGE" ] && docker image rm "$DOCKER_IMAGE" >/dev/null 2>&1 || true
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

# Docker: an engine that answers and busybox for an image made here, no registry.
DOCKER=""
if command -v docker >/dev/null && docker version >/dev/null 2>&1 && [ -x /bin/busybox ]; then
  DOCKER=1
fi

start_routers() {  # $1: extra router flags; $2: "docker" to serve the plugin on a and b
  local i=1 peers="" plugin
  for h in a b c; do
    # The Docker plugin (driver $P$h) only where asked: the default socket is the machine's.
    plugin="--no-plugin"
    if [ "${2:-}" = docker ] && [ "$h" != c ]; then plugin="--plugin-socket /run/docker/plugins/$P$h.sock"; fi
    # shellcheck disable=SC2086 # $1, $plugin and $peers are lists of words
    ip netns exec "$P-$h" weft router --socket "$DIR/$h.sock" --state-dir "$DIR/$h" $1 $plugin $peers \
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
start_routers "" ""
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
# With Docker, routers a and b each make a Docker network at start, removed at exit.
[ -n "$DOCKER" ] && DOCKER_NETS+=("$P"a "$P"b)
start_routers "--password demo-secret" "${DOCKER:+docker}"
sleep 3
inns "$P-cc" ping -c 3 -i 0.3 10.32.0.1 || { tail -n 20 "$DIR"/*.log; weft status connections --socket "$DIR/c.sock"; exit 1; }
echo; echo "--- weft status connections (host c)"
weft status connections --socket "$DIR/c.sock"
echo; echo "--- weft ps (host c)"
weft ps --socket "$DIR/c.sock"

if [ -n "$DOCKER" ]; then
  echo; echo "==> Docker: a container on host a and one on host b, on the network each router made"
  mkdir -p "$DIR/rootfs/bin" "$DIR/rootfs/etc" "$DIR/rootfs/tmp"
  cp /bin/busybox "$DIR/rootfs/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$DIR/rootfs/bin/$a"; done
  DOCKER_IMAGE="weft-demo-busybox:$P"
  tar -C "$DIR/rootfs" -cf "$DIR/rootfs.tar" .
  docker import "$DIR/rootfs.tar" "$DOCKER_IMAGE" >/dev/null
  for h in a b; do
    # Made once the router's IPAM has the gateway's address (the ring may still be forming).
    for _ in $(seq 300); do docker network inspect "$P$h" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  echo "\$ docker run -d --name $P-web --network $P""a $DOCKER_IMAGE sleep 600"
  docker run -d --name "$P-web" --network "$P"a "$DOCKER_IMAGE" sleep 600 >/dev/null
  DOCKER_CS+=("$P-web")
  for _ in $(seq 100); do weft dns-args --socket "$DIR/b.sock" >/dev/null 2>&1 && break; sleep 0.1; done
  DNS_ARGS=$(weft dns-args --socket "$DIR/b.sock") || { tail -n 30 "$DIR"/*.log; exit 1; }
  echo "\$ weft dns-args   # on host b"
  echo "$DNS_ARGS"
  sleep 1
  echo "\$ docker run --rm --network $P""b $DNS_ARGS $DOCKER_IMAGE ping -c 3 $P-web.weave.local"
  DOCKER_CS+=("$P-client")
  # shellcheck disable=SC2086 # $DNS_ARGS is a list of flags
  docker run --rm --name "$P-client" --network "$P"b $DNS_ARGS "$DOCKER_IMAGE" \
    ping -c 3 -w 10 "$P-web.weave.local" || { tail -n 20 "$DIR"/*.log; exit 1; }
  echo "\$ docker exec $P-web ping -c 2 10.32.0.3   # the namespace container on host c"
  docker exec "$P-web" ping -c 2 -w 10 10.32.0.3
  echo; echo "--- weft status (host a)"
  weft status --socket "$DIR/a.sock" | grep -E "Docker plugin|Bridge"
else
  echo; echo "(no Docker Engine answers here, or no /bin/busybox: the Docker part is skipped)"
fi
[ -n "${WEFT_DEMO_DEBUG:-}" ] && tail -n 5 "$DIR"/*.log
echo; echo "demo done: cleaning up"
