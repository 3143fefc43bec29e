#!/usr/bin/env bash
# Data-plane benchmark: host-A -- xTR-A == underlay == xTR-B -- host-B in network namespaces,
# with a Map-Server/Map-Resolver in the underlay namespace. Measures, in the same run:
#   1. iperf3 TCP host-A -> host-B routed natively over the same veths (no LISP): the baseline;
#   2. the same through the xTR pair (LISP encapsulation, TUN devices);
#   3. 64-byte UDP datagrams, natively and through the xTR pair: packets per second delivered
#      and lost, with `loci bench udp-send`/`udp-recv` (paced sendmmsg batches from 4 source
#      ports, sequence numbers; iperf3 itself cannot offer more than ~55k pps here).
# Prints the figures and the LISP/native ratio, then removes everything it made.
#
# Usage: lab/bench-dataplane.sh [--rloc 4|6] [--eid 4|6] [--secs N] [--pps N] [--loci PATH]
#                                [--echo-nonce]   (the xTRs request and echo nonces: RFC 9300 §10.1)
# Needs root, iproute2, iperf3. Traffic stays inside the namespaces this script creates.
set -euo pipefail

RLOC=4 EID=4 SECS=5 PPS=200000 LOCI="" ECHO=false
while [ $# -gt 0 ]; do
  case "$1" in
    --rloc) RLOC=$2; shift 2 ;;
    --eid) EID=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    --loci) LOCI=$2; shift 2 ;;
    --echo-nonce) ECHO=true; shift ;;
    *) echo "usage: $0 [--rloc 4|6] [--eid 4|6] [--secs N] [--pps N] [--loci PATH] [--echo-nonce]" >&2; exit 2 ;;
  esac
done
case "$RLOC$EID" in 44|46|64|66) ;; *) echo "--rloc and --eid take 4 or 6" >&2; exit 2 ;; esac
[ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] || { echo "--secs: 1-60" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for t in ip iperf3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$LOCI" ]; then
  echo "building loci (release)..." >&2
  (cd "$ROOT" && cargo build -q --release -p loci)
  LOCI="${CARGO_TARGET_DIR:-$ROOT/target}/release/loci"
fi

P="lb$$"
NS=("${P}ha" "${P}xa" "${P}ul" "${P}xb" "${P}hb")
DIR=$(mktemp -d /tmp/loci-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
x() { local n=$1; shift; ip netns exec "$n" "$@"; }
# In the background, as the process itself (not a subshell), so that kill reaches it.
bg() { local n=$1; shift; exec ip netns exec "$n" "$@"; }

# Addresses. EIDs: site A 10.1.1.0/24 + 2001:db8:a::/64, site B 10.2.2.0/24 + 2001:db8:b::/64.
# RLOCs: A 192.0.2.1 / 2001:db8:1::1, B 198.51.100.1 / 2001:db8:2::1; MS 203.0.113.10.
for n in "${NS[@]}"; do
  ip netns add "$n"
  x "$n" ip link set lo up
  x "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
done
veth() { # ns1 if1 ns2 if2
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  x "$1" ip link set dev "$2" up
  x "$3" ip link set dev "$4" up
}
veth "${P}ha" eth0 "${P}xa" site
veth "${P}xa" underlay "${P}ul" to-xa
veth "${P}ul" to-xb "${P}xb" underlay
veth "${P}xb" site "${P}hb" eth0
addr() { x "$1" ip addr add "$3" dev "$2"; }
addr "${P}ha" eth0 10.1.1.2/24; addr "${P}ha" eth0 2001:db8:a::2/64
addr "${P}xa" site 10.1.1.1/24; addr "${P}xa" site 2001:db8:a::1/64
addr "${P}hb" eth0 10.2.2.2/24; addr "${P}hb" eth0 2001:db8:b::2/64
addr "${P}xb" site 10.2.2.1/24; addr "${P}xb" site 2001:db8:b::1/64
addr "${P}xa" underlay 192.0.2.1/24; addr "${P}xa" underlay 2001:db8:1::1/64
addr "${P}ul" to-xa 192.0.2.254/24; addr "${P}ul" to-xa 2001:db8:1::ff/64
addr "${P}xb" underlay 198.51.100.1/24; addr "${P}xb" underlay 2001:db8:2::1/64
addr "${P}ul" to-xb 198.51.100.254/24; addr "${P}ul" to-xb 2001:db8:2::ff/64
addr "${P}ul" lo 203.0.113.10/32; addr "${P}ul" lo 2001:db8:ffff::10/128
x "${P}ha" ip route add default via 10.1.1.1; x "${P}ha" ip -6 route add default via 2001:db8:a::1
x "${P}hb" ip route add default via 10.2.2.1; x "${P}hb" ip -6 route add default via 2001:db8:b::1
x "${P}xa" ip route add default via 192.0.2.254; x "${P}xa" ip -6 route add default via 2001:db8:1::ff
x "${P}xb" ip route add default via 198.51.100.254; x "${P}xb" ip -6 route add default via 2001:db8:2::ff

if [ "$EID" = 4 ]; then DST=10.2.2.2; else DST=2001:db8:b::2; fi

tcp() { # label: one iperf3 TCP run host-A -> host-B, prints Gbit/s
  (bg "${P}hb" iperf3 -s -1 -p 5201 >/dev/null 2>&1) &
  local srv=$!
  PIDS+=($srv)
  sleep 0.3
  local out
  out=$(x "${P}ha" timeout $((SECS + 10)) iperf3 -c "$DST" -p 5201 -t "$SECS" -J 2>/dev/null || true)
  kill $srv 2>/dev/null || true
  wait $srv 2>/dev/null || true
  echo "$out" | awk -F'[:,]' '/"sum_received"/{f=1} f&&/"bits_per_second"/{printf "%.2f\n", $2/1e9; exit}'
}

udp() { # offered pps -> "offered_pps delivered_pps lost_pct": loci bench udp-send/udp-recv,
  # 64-byte payloads with sequence numbers from 4 source ports (iperf3 tops out near 55k pps)
  local listen=0.0.0.0:5202 out_s out_r
  [ "$EID" = 6 ] && listen="[::]:5202"
  out_r="$DIR/udp-recv.json"
  (bg "${P}hb" "$LOCI" bench udp-recv --listen "$listen" --secs $((SECS + 5)) --json >"$out_r") &
  local srv=$!
  PIDS+=($srv)
  sleep 0.3
  out_s=$(x "${P}ha" "$LOCI" bench udp-send --to "$(addr_port "$DST" 5202)" --size 64 --pps "$1" \
    --secs "$SECS" --flows 4 --lab --json || true)
  wait $srv 2>/dev/null || true
  # Loss against the sender's count, so that datagrams lost at the very end count too.
  local sent got offered delivered
  sent=$(json_num "$out_s" packets); offered=$(json_num "$out_s" pps)
  got=$(json_num "$(cat "$out_r")" packets); delivered=$(json_num "$(cat "$out_r")" pps)
  awk -v s="$sent" -v g="$got" -v o="$offered" -v d="$delivered" \
    'BEGIN { if (s > 0) printf "%d %d %.2f\n", o, d, 100 * (s - g) / s; else print "0 0 100" }'
}
json_num() { echo "$1" | sed -n "s/.*\"$2\":\([0-9.e+]*\).*/\1/p" | grep . || echo 0; }
addr_port() { case "$1" in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac; }

# 1. Native baseline: plain routes along the same path.
x "${P}xa" ip route add 10.2.2.0/24 via 192.0.2.254; x "${P}xa" ip -6 route add 2001:db8:b::/64 via 2001:db8:1::ff
x "${P}ul" ip route add 10.1.1.0/24 via 192.0.2.1; x "${P}ul" ip -6 route add 2001:db8:a::/64 via 2001:db8:1::1
x "${P}ul" ip route add 10.2.2.0/24 via 198.51.100.1; x "${P}ul" ip -6 route add 2001:db8:b::/64 via 2001:db8:2::1
x "${P}xb" ip route add 10.1.1.0/24 via 198.51.100.254; x "${P}xb" ip -6 route add 2001:db8:a::/64 via 2001:db8:2::ff
x "${P}ha" ping -q -c 1 -W 2 "$DST" >/dev/null || { echo "native path does not work" >&2; exit 1; }
NATIVE=$(tcp)
read -r NOFF NPPS_OK NLOSS < <(udp "$PPS")
x "${P}xa" ip route del 10.2.2.0/24; x "${P}xa" ip -6 route del 2001:db8:b::/64
x "${P}xb" ip route del 10.1.1.0/24; x "${P}xb" ip -6 route del 2001:db8:a::/64
x "${P}ul" ip route del 10.1.1.0/24; x "${P}ul" ip -6 route del 2001:db8:a::/64
x "${P}ul" ip route del 10.2.2.0/24; x "${P}ul" ip -6 route del 2001:db8:b::/64

# 2. The LISP path.
cat >"$DIR/ms.toml" <<EOF
[node]
name = "ms"
listen = ["203.0.113.10", "2001:db8:ffff::10"]
api-socket = "ms.sock"
state-dir = "ms-state"
[map-server]
[[map-server.site]]
name = "a"
auth = { algorithm = "hmac-sha256-128", key = "ka" }
eid-prefixes = [{ prefix = "10.1.1.0/24" }, { prefix = "2001:db8:a::/64" }]
[[map-server.site]]
name = "b"
auth = { algorithm = "hmac-sha256-128", key = "kb" }
eid-prefixes = [{ prefix = "10.2.2.0/24" }, { prefix = "2001:db8:b::/64" }]
[map-resolver]
EOF
xtr() { # name key rloc4 rloc6 local4 local6 remote4 remote6
  local rloc=$3
  [ "$RLOC" = 6 ] && rloc=$4
  cat >"$DIR/$1.toml" <<EOF
[node]
name = "$1"
api-socket = "$1.sock"
state-dir = "$1-state"
[xtr]
roles = ["itr", "etr"]
map-servers = [{ address = "203.0.113.10", auth = { algorithm = "hmac-sha256-128", key = "$2" } }]
map-resolvers = ["203.0.113.10"]
rlocs = ["$3", "$4"]
[xtr.echo-nonce]
enabled = $ECHO
[[xtr.instance]]
iid = 0
tun = "lisp0"
routes = ["$7", "$8"]
database = [{ prefix = "$5", rlocs = [{ address = "$rloc" }] }, { prefix = "$6", rlocs = [{ address = "$rloc" }] }]
EOF
}
xtr xa ka 192.0.2.1 2001:db8:1::1 10.1.1.0/24 2001:db8:a::/64 10.2.2.0/24 2001:db8:b::/64
xtr xb kb 198.51.100.1 2001:db8:2::1 10.2.2.0/24 2001:db8:b::/64 10.1.1.0/24 2001:db8:a::/64
start() { # ns name
  (RUST_LOG=${RUST_LOG:-warn} bg "$1" "$LOCI" run -c "$DIR/$2.toml" >"$DIR/$2.log" 2>&1) &
  PIDS+=($!)
}
start "${P}ul" ms
sleep 0.3
start "${P}xa" xa
start "${P}xb" xb
# Traffic before both sites registered would get (and cache) a negative Map-Reply.
regs=0
for _ in $(seq 1 50); do
  regs=$(x "${P}ul" "$LOCI" show registrations --socket "$DIR/ms.sock" --json 2>/dev/null | grep -c '"prefix"' || true)
  [ "$regs" -ge 4 ] && break
  sleep 0.2
done
[ "$regs" -ge 4 ] || { echo "the xTRs did not register; logs:" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
ok=""
for _ in $(seq 1 50); do
  if x "${P}ha" ping -q -c 1 -W 0.2 "$DST" >/dev/null 2>&1; then ok=1; break; fi
done
[ -n "$ok" ] || { echo "LISP path does not work; logs:" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
# CPU time of both xTR daemons (user + system, in clock ticks) around the TCP run: what
# forwarding costs per byte, which other load on the machine does not change much.
ticks() { cat "/proc/${PIDS[1]}/stat" "/proc/${PIDS[2]}/stat" | awk '{ t += $14 + $15 } END { print t }'; }
T0=$(ticks)
LISP=$(tcp)
T1=$(ticks)
read -r OFF PPS_OK LOSS < <(udp "$PPS")
read -r OFF_MAX PPS_MAX LOSS_MAX < <(udp 2000000)

echo "data plane, IPv$EID EIDs over IPv$RLOC RLOCs, $(nproc) cores, ${SECS}s per run, echo-nonce $ECHO"
printf "  TCP native (no LISP)      %8s Gbit/s\n" "${NATIVE:-?}"
printf "  TCP through the xTRs      %8s Gbit/s\n" "${LISP:-?}"
awk -v a="${LISP:-0}" -v b="${NATIVE:-0}" 'BEGIN { if (b > 0) printf "  ratio LISP/native         %8.2f\n", a / b }'
awk -v g="${LISP:-0}" -v t=$((T1 - T0)) -v hz="$(getconf CLK_TCK)" -v s="$SECS" 'BEGIN {
  if (g > 0) printf "  xTR CPU (both daemons)    %8.2f s per GB through the pair\n", t / hz / (g * s / 8) }'
printf "  UDP 64 B offered %7d pps, native:       delivered %7d pps, lost %s %%\n" "$NOFF" "$NPPS_OK" "$NLOSS"
# Natively the sender's own system calls carry each datagram through every namespace (veth
# hands over within the sending CPU's softirq), so the generator, not the path, may be the limit.
[ "$NOFF" -ge $((PPS * 95 / 100)) ] || echo "    (native: the generator could offer only $NOFF of $PPS pps, so this is a lower bound of the native path)"
printf "  UDP 64 B offered %7d pps, through xTRs:  delivered %7d pps, lost %s %%\n" "$OFF" "$PPS_OK" "$LOSS"
printf "  UDP 64 B offered %7d pps (asked 2M), xTRs: delivered %7d pps, lost %s %%\n" "$OFF_MAX" "$PPS_MAX" "$LOSS_MAX"
for n in xa xb; do
  echo "  $n: $(x "${P}$n" "$LOCI" show stats --socket "$DIR/$n.sock" 2>/dev/null |
    grep -E '^data-plane' | tr -s ' ' | sed 's/^data-plane //' | tr '\n' ',' | sed 's/,$//')"
done
# Where the lost datagrams went: the TUN device's queue (the ITR did not keep up) or the ETR
# socket's receive buffer.
if [ "$ECHO" = true ]; then
  echo "  xa echo-nonce: $(x "${P}xa" "$LOCI" show stats --socket "$DIR/xa.sock" 2>/dev/null |
    grep -E 'echo-' | tr -s ' ' | tr '\n' ',' | sed 's/,$//')"
fi
tun_drops=$(x "${P}xa" ip -s link show lisp0 | awk '/TX:/{getline; print $4}')
rcvbuf() { # UDP receive-buffer overflows in a namespace, IPv4 and IPv6
  x "$1" awk '/^Udp:/ { if (h) n += $6; h = 1 } /^Udp6RcvbufErrors/ { n += $2 } END { print n + 0 }' \
    /proc/net/snmp /proc/net/snmp6
}
echo "  lost: ${tun_drops:-?} in xTR-A's TUN queue, $(rcvbuf "${P}xb") UDP receive-buffer overflows at xTR-B," \
  "$(rcvbuf "${P}hb") at host B (udp-recv)"
warnings=$(grep -h -i -E 'warn|error' "$DIR"/x?.log 2>/dev/null | head -n 5 || true)
[ -z "$warnings" ] || printf '  xTR warnings:\n%s\n' "$warnings"
