#!/usr/bin/env bash
# Mapping-system benchmark: a release `loci run` Map-Server on loopback, loaded by `loci bench`.
#
# Registers EIDS host EIDs (half IPv4 /32, half IPv6 /128) with HMAC-SHA-256 Map-Registers,
# then measures Map-Request -> proxy Map-Reply at the highest rate and p99 at half that rate,
# the Map-Register -> Map-Notify rate, and the daemon's RSS per EID. Next to each rate: the
# load generator against a plain UDP echo in this same run (its ceiling) and the ratio, and the
# daemon's CPU time per message (what one dedicated core would sustain; on a shared machine the
# wall-clock rates move with the other load).
#
# Traffic stays on 127.0.42.0/24; every load is bounded in count and time. Environment:
#   EIDS (1000000), DURATION (seconds per request load, 15), LOCI (a built binary; default:
#   cargo build --release), KEEP=1 (keep the work directory).
set -euo pipefail

EIDS=${EIDS:-1000000}
DURATION=${DURATION:-15}
MS=127.0.42.1      # the Map-Server
SRC=127.0.42.2     # first generator address (Map-Notify comes to port 4342, so not the MS's)
KEY=bench-key

root=$(cd "$(dirname "$0")/.." && pwd)
command -v python3 >/dev/null || { echo "bench-mapping: python3 is needed to read the JSON figures" >&2; exit 1; }
if [ -z "${LOCI:-}" ]; then
    (cd "$root" && cargo build --release -q -p loci)
    LOCI=${CARGO_TARGET_DIR:-$root/target}/release/loci
fi

dir=$(mktemp -d /tmp/loci-bench.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

"$LOCI" bench config --key "$KEY" --listen "$MS" --dir "$dir" >"$dir/ms.toml"
LOCI_LOG=warn "$LOCI" run -c "$dir/ms.toml" 2>"$dir/daemon.log" &
pid=$!
for _ in $(seq 100); do
    [ -S "$dir/bench-ms.sock" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "loci run failed:" >&2; cat "$dir/daemon.log" >&2; exit 1; }
    sleep 0.1
done
[ -S "$dir/bench-ms.sock" ] || { echo "loci run did not come up" >&2; exit 1; }

rss() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$pid/status"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }   # user + system clock ticks
# Runs one load; saves its JSON as $dir/NAME.json and the daemon CPU ticks it took as NAME.cpu.
load() {
    local name=$1; shift
    local before; before=$(cpu)
    "$LOCI" bench "$@" --json >"$dir/$name.json"
    echo $(( $(cpu) - before )) >"$dir/$name.cpu"
}

echo "loci mapping benchmark: $EIDS EIDs, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  config: $dir/ms.toml (per-source rate limits raised to 4e9/s for the generator,"
echo "  Map-Reply repeat limit off, proxy reply); daemon log level warn"

load echo-request request --baseline --count 2000000 --duration "$DURATION"
load echo-register register --baseline --key "$KEY" --count 500000 --duration "$DURATION"

rss0=$(rss)
load register register --to "$MS" --source "$SRC" --key "$KEY" --count "$EIDS" --duration 300 --window 512
sleep 1   # let the event queue drain before reading RSS
rss1=$(rss)
"$LOCI" show stats --socket "$dir/bench-ms.sock" --json >"$dir/stats.json"

load request-max request --to "$MS" --eids "$EIDS" --count $((EIDS * 4)) --duration "$DURATION" --window 512
half=$(python3 -c "import json; print(int(json.load(open('$dir/request-max.json'))['result']['rate_per_s'] / 2))")
load request-half request --to "$MS" --eids "$EIDS" --rate "$half" --count $((half * DURATION)) --duration $((DURATION + 5))
load request-ecm request --to "$MS" --eids "$EIDS" --encapsulated --count $((EIDS * 4)) --duration "$DURATION" --window 512

python3 - "$dir" "$EIDS" "$rss0" "$rss1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d, eids, rss0, rss1, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def j(name): return json.load(open(f"{d}/{name}.json"))
def cpu_us(name, msgs): return int(open(f"{d}/{name}.cpu").read()) / hz * 1e6 / max(msgs, 1)
echo_req, echo_reg = j("echo-request")["baseline"], j("echo-register")["baseline"]
stats = json.load(open(f"{d}/stats.json"))
ok = lambda c: "met" if c else "NOT met"
print(f"generator ceiling against a UDP echo (same run): Map-Request {echo_req['rate_per_s']:,.0f}/s, "
      f"Map-Register {echo_reg['rate_per_s']:,.0f}/s")
print()
print(f"{'load':<34}{'answers/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>9}{'lost':>7}{'vs echo':>9}{'CPU us/msg':>12}")
rows = [("register", f"Map-Register -> Map-Notify", echo_reg, 1),
        ("request-max", "Map-Request -> Map-Reply, max", echo_req, 1),
        ("request-half", "Map-Request at half rate", echo_req, 1),
        ("request-ecm", "ECM Map-Request -> Map-Reply, max", echo_req, 1)]
res = {}
for name, title, echo, _ in rows:
    r = j(name)["result"]; res[name] = r
    l = r["latency_ms"]
    f = lambda v: "-" if v is None else f"{v:.3f}"
    print(f"{title:<34}{r['rate_per_s']:>11,.0f}{f(l['p50']):>9}{f(l['p99']):>9}{f(l['p99.9']):>9}{r['lost']:>7}"
          f"{r['rate_per_s'] / echo['rate_per_s']:>9.2f}{cpu_us(name, r['answered'] + r['lost']):>12.2f}")
print()
reg = res["register"]
regs = stats.get("registrations")
per_eid = (rss1 - rss0) / eids
print(f"registrations held: {regs:,} ({reg['map_notifies']:,} Map-Notify for {eids:,} EIDs, "
      f"{reg['positive_replies'] + reg['negative_replies']} other answers)")
print(f"daemon RSS: {rss0 / 2**20:.1f} MiB before, {rss1 / 2**20:.1f} MiB after: {per_eid:.0f} bytes per EID")
neg = res["request-max"]["negative_replies"] + res["request-half"]["negative_replies"]
print(f"negative replies during the request loads: {neg} (every EID asked for is registered)")
print()
mx, hf = res["request-max"], res["request-half"]
print(f"target >= 100,000 requests/s: {ok(mx['rate_per_s'] >= 100_000)} ({mx['rate_per_s']:,.0f}/s; "
      f"one dedicated core at the measured CPU cost: {1e6 / cpu_us('request-max', mx['answered'] + mx['lost']):,.0f}/s)")
print(f"target p99 < 1 ms at half rate: {ok((hf['latency_ms']['p99'] or 9e9) < 1)} "
      f"({hf['latency_ms']['p99']} ms at {hf['rate_per_s']:,.0f}/s)")
print(f"target >= 50,000 registers/s: {ok(reg['rate_per_s'] >= 50_000)} ({reg['rate_per_s']:,.0f}/s; one dedicated core: "
      f"{1e6 / cpu_us('register', reg['answered'] + reg['lost']):,.0f}/s)")
print(f"target <= 400 bytes per EID: {ok(per_eid <= 400)} ({per_eid:.0f})")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
