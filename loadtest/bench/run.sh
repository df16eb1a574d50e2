#!/usr/bin/env bash
# Side-by-side benchmark, one command: builds dynakv and the load tool, starts on this
# machine a 3-node dynakv cluster (N=3 R=2 W=2, last-writer-wins: YCSB updates are blind
# overwrites, as in etcd and Redis; in mv mode each would add a sibling), a second one in
# mv mode for YCSB F (read-modify-write with the read's context), a 3-member etcd cluster,
# a Redis server
# and a bare HTTP server, drives each with the same tool (YCSB A and C, 100-byte values,
# 64 connections), measures dynakv's open-loop latency at half its peak, read staleness
# for (R,W) = (1,1) (1,2) (2,2) (1,3), agreement with wrk, and node memory at 1M keys,
# stops everything, and writes loadtest/bench/RESULTS.md with the plots.
#
# The open-loop runs (25%, 40% and 50% of the peak, then 50% right after a reload and
# 50% while anti-entropy repairs a node that missed 10,000 keys) are judged against the
# tail targets: p99 < 5 ms, p99.9 < 15 ms, no second with p99 over 20 ms.
#
# Knobs (environment): DURATION=30s OPEN_DURATION=60s RECORDS=100000 CONCURRENCY=64
# MEMORY_KEYS=1000000 STALENESS_TRIALS=200 WORKERS=1 (each node's request threads). Everything runs on loopback; every run is
# bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-30s}
OPEN_DURATION=${OPEN_DURATION:-60s}
# Three nodes share this machine's cores: one request thread each (measured cheaper per
# request than one per core each; see docs/benchmarks/2026-11-26-to-12-04-tail-targets.md).
WORKERS=${WORKERS:-1}
RECORDS=${RECORDS:-100000}
CONCURRENCY=${CONCURRENCY:-64}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
STALENESS_TRIALS=${STALENESS_TRIALS:-200}
OUT=loadtest/bench/results
REPORT=loadtest/bench/RESULTS.md

scripts/deps
. scripts/env.sh
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system services; this benchmark runs its own instances.
  $sudo systemctl stop etcd redis-server 2>/dev/null || true
  pkill -x etcd 2>/dev/null || true
  pkill -x redis-server 2>/dev/null || true
fi

cargo build --release --bin dynakv --bin dynakv-loadtest
BIN="$CARGO_TARGET_DIR/release"
LT="$BIN/dynakv-loadtest"

work=$(mktemp -d)
pids=()
cleanup() {
  {
    for p in "${pids[@]}"; do kill "$p" || true; done
    sleep 1
    for p in "${pids[@]}"; do kill -9 "$p" || true; wait "$p" || true; done
  } 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "nothing answers at $1" >&2; return 1
}

rm -rf "$OUT"; mkdir -p "$OUT/plots"
# When the measurements were taken, for the report (which can be regenerated later).
date -u "+%Y-%m-%d %H:%M UTC" >"$OUT/run-date"

for port in 17001 17002 17003 17011 17012 17013 18001 18002 18003 18011 18012 18013 12371 12372 12373 12381 12382 12383 16379 17100; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: stop whatever listens there first" >&2
    exit 1
  fi
done

echo "== starting dynakv (3 nodes lww, 3 nodes mv), etcd (3 members), redis, bare HTTP"
DK="127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
# Nodes find each other on their cluster ports (the client port + 1000), with a shared
# secret.
DK_SEEDS="127.0.0.1:18001,127.0.0.1:18002,127.0.0.1:18003"
MV_SEEDS="127.0.0.1:18011,127.0.0.1:18012,127.0.0.1:18013"
"$BIN/dynakv" certs secret --out "$work/cluster.secret" >/dev/null
start_dk() { # i: starts lww node i (again, after a stop, on the same data)
  "$BIN/dynakv" node --id "n$1" --listen "127.0.0.1:1700$1" --data-dir "$work/n$1" --seeds "$DK_SEEDS" \
    --cluster-secret-file "$work/cluster.secret" \
    --conflict lww --workers "$WORKERS" >>"$work/n$1.log" 2>&1 &
  pids+=($!)
  dk_pid[$1]=$!
}
declare -A dk_pid
for i in 1 2 3; do start_dk "$i"; done
MV="127.0.0.1:17011,127.0.0.1:17012,127.0.0.1:17013"
for i in 1 2 3; do
  "$BIN/dynakv" node --id "m$i" --listen "127.0.0.1:1701$i" --data-dir "$work/m$i" --seeds "$MV_SEEDS" \
    --cluster-secret-file "$work/cluster.secret" \
    --conflict mv --cluster-name dynakv-mv --workers "$WORKERS" >"$work/m$i.log" 2>&1 &
  pids+=($!)
done
ETCD_CLUSTER="e1=http://127.0.0.1:12381,e2=http://127.0.0.1:12382,e3=http://127.0.0.1:12383"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/e$i" \
    --listen-client-urls "http://127.0.0.1:1237$i" --advertise-client-urls "http://127.0.0.1:1237$i" \
    --listen-peer-urls "http://127.0.0.1:1238$i" --initial-advertise-peer-urls "http://127.0.0.1:1238$i" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new --log-level warn >"$work/e$i.log" 2>&1 &
  pids+=($!)
done
ETCD="127.0.0.1:12371,127.0.0.1:12372,127.0.0.1:12373"
redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
"$LT" serve --listen 127.0.0.1:17100 >"$work/bare.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  wait_http "http://127.0.0.1:1700$i/health"; wait_http "http://127.0.0.1:1701$i/health"; wait_http "http://127.0.0.1:1237$i/health"
done
wait_http "http://127.0.0.1:17100/"
# A new cluster takes its first layout once every member has staged itself.
wait_layout() { # client port of a node
  for _ in $(seq 1 120); do
    layout=$(curl -fsS "http://127.0.0.1:$1/admin/layout" 2>/dev/null || true)
    [ "$(printf '%s' "$layout" | grep -o '"state":"active"' | wc -l)" -ge 3 ] \
      && printf '%s' "$layout" | grep -q '"settled":true' && return 0
    sleep 0.5
  done
  echo "the cluster at port $1 did not settle its first layout" >&2; return 1
}
for port in 17001 17002 17003 17011 17012 17013; do wait_layout "$port"; done
for _ in $(seq 1 50); do redis-cli -p 16379 ping >/dev/null 2>&1 && break; sleep 0.2; done
sleep 2 # let gossip settle
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a server exited at start-up; logs in $work" >&2; trap - EXIT; exit 1; }
done

run() { # label target nodes workload extra...
  local label=$1 target=$2 nodes=$3 workload=$4; shift 4
  echo "== $label"
  "$LT" run --target "$target" --nodes "$nodes" --workload "$workload" --records "$RECORDS" \
    --value-size 100 --concurrency "${RUN_CONCURRENCY:-$CONCURRENCY}" --duration "$DURATION" --quiet \
    --label "$label" --json "$OUT/$label.json" --plot "$OUT/plots" "$@" | tee "$OUT/$label.txt"
}

# YCSB A (50/50 read/update) then C (read only) on each; C reuses A's records.
run dynakv-a dynakv "$DK" a
run dynakv-c dynakv "$DK" c --no-load
run etcd-a etcd "$ETCD" a
run etcd-c etcd "$ETCD" c --no-load
run redis-a redis 127.0.0.1:16379 a
run redis-c redis 127.0.0.1:16379 c --no-load
run bare-a bare 127.0.0.1:17100 a --no-load
run bare-c bare 127.0.0.1:17100 c --no-load
run dynakv-mv-f dynakv "$MV" f

peak=$(python3 -c "import json;print(int(json.load(open('$OUT/dynakv-a.json'))['summary']['total']['throughput']))")
half=$((peak / 2))
# Open loop: requests at a fixed rate, up to 512 in flight, latency from when each was due.
# The target is at half the closed-loop peak; a quarter and 40% show where the tail starts.
open_run() { # label rate
  # One thread for the tool's requests (its pacer has its own): less of the CPU it shares
  # with the nodes, and how late it started each request is reported on its own.
  DYNAKV_LOADTEST_THREADS=1 RUN_CONCURRENCY=512 DURATION="$OPEN_DURATION" run "$1" dynakv "$DK" a --no-load --rate "$2"
}
# RocksDB flushes and compactions that ran during a run, from each node's event log.
rocks_events() { # label
  python3 - "$OUT/$1.json" "$work" <<'PY'
import glob, json, sys
run = json.load(open(sys.argv[1]))["summary"]
t0 = run["started_unix_ms"] * 1000
t1 = t0 + run["duration_s"] * 1e6
parts = []
for node in ("n1", "n2", "n3"):
    counts = {"flush_finished": 0, "compaction_finished": 0}
    for path in glob.glob(f"{sys.argv[2]}/{node}/db/LOG*"):
        for line in open(path, errors="replace"):
            if "EVENT_LOG_v1" not in line:
                continue
            try:
                ev = json.loads(line.split("EVENT_LOG_v1", 1)[1])
            except ValueError:
                continue
            if ev.get("event") in counts and t0 <= ev.get("time_micros", 0) <= t1:
                counts[ev["event"]] += 1
    f, c = counts["flush_finished"], counts["compaction_finished"]
    parts.append(f"{node} {f} flush{'es' if f != 1 else ''} and {c} compaction{'s' if c != 1 else ''}")
print("RocksDB finished " + ", ".join(parts) + ".")
PY
}
# Keys anti-entropy pushed or pulled, summed over the nodes.
ae_keys() {
  for i in 1 2 3; do
    curl -fsS "http://127.0.0.1:1700$i/metrics" | awk '/^dynakv_antientropy_keys_(pushed|pulled)_total/ {s += $2} END {print s + 0}'
  done | awk '{s += $1} END {print s + 0}'
}
open_run dynakv-a-open-25 "$((peak / 4))"
open_run dynakv-a-open-40 "$((peak * 2 / 5))"
open_run dynakv-a-open "$half"
rocks_events dynakv-a-open >"$OUT/dynakv-a-open.context"

echo "== reload of every record, then the open loop at half the peak while RocksDB flushes and compacts"
"$LT" run --target dynakv --nodes "$DK" --workload a --records "$RECORDS" --operations 1 --quiet >/dev/null
open_run dynakv-a-open-compaction "$half"
rocks_events dynakv-a-open-compaction >"$OUT/dynakv-a-open-compaction.context"

echo "== n3 stopped while 10,000 keys are written, restarted, then the open loop while anti-entropy repairs it"
kill "${dk_pid[3]}"; wait "${dk_pid[3]}" 2>/dev/null || true
"$LT" run --target dynakv --nodes "127.0.0.1:17001,127.0.0.1:17002" --workload a --records 10000 \
  --operations 1 --quiet >/dev/null
start_dk 3
wait_http "http://127.0.0.1:17003/health"
sleep 2
before=$(ae_keys)
open_run dynakv-a-open-antientropy "$half"
after=$(ae_keys)
echo "anti-entropy pushed or pulled $((after - before)) keys during the run, summed over the nodes" \
  "(10,000 were missed; reads repair some first, and writes during an exchange add differences)." \
  "$(rocks_events dynakv-a-open-antientropy)" >"$OUT/dynakv-a-open-antientropy.context"
cat "$OUT"/*.context

echo "== staleness (mv cluster: each experiment overwrites with the context of its first write)"
for rw in "1 1" "1 2" "2 2" "1 3"; do
  set -- $rw
  "$LT" staleness --nodes "$MV" --n 3 --r "$1" --w "$2" --trials "$STALENESS_TRIALS" \
    --json "$OUT/staleness-r$1-w$2.json" | tee "$OUT/staleness-r$1-w$2.txt"
done

echo "== sanity: this tool against wrk, plain GET of one key through one node"
wrk -t2 -c"$CONCURRENCY" -d10s --latency "http://127.0.0.1:17001/kv/user0000000000" | tee "$OUT/wrk.txt"
"$LT" run --target dynakv --nodes 127.0.0.1:17001 --pin --workload c --distribution uniform --records 1 --no-load \
  --concurrency "$CONCURRENCY" --duration 10s --quiet --label sanity --json "$OUT/sanity.json" | tee "$OUT/sanity.txt"

echo "== memory at $MEMORY_KEYS keys"
"$LT" run --target dynakv --nodes "$DK" --workload c --records "$MEMORY_KEYS" --operations 1 --quiet \
  --label memory-load --json "$OUT/memory-load.json" >/dev/null
sleep 3
{
  echo "{\"keys\": $MEMORY_KEYS, \"nodes\": ["
  for i in 1 2 3; do
    pid=$(pgrep -f "dynakv node --id n$i " | head -1)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    disk=$(du -sk "$work/n$i" | cut -f1)
    sep=","; [ "$i" = 3 ] && sep=""
    echo "{\"id\": \"n$i\", \"rss_kib\": $rss, \"disk_kib\": $disk}$sep"
  done
  echo "]}"
} >"$OUT/memory.json"
cat "$OUT/memory.json"

"$LT" plot --out "$OUT/plots" --label compare-a "$OUT/dynakv-a.json" "$OUT/etcd-a.json" "$OUT/redis-a.json" "$OUT/bare-a.json" >/dev/null
"$LT" plot --out "$OUT/plots" --label tail "$OUT"/dynakv-a-open-25.json "$OUT"/dynakv-a-open-40.json \
  "$OUT"/dynakv-a-open.json "$OUT"/dynakv-a-open-compaction.json "$OUT"/dynakv-a-open-antientropy.json >/dev/null
"$LT" plot --out "$OUT/plots" --label compare-c "$OUT/dynakv-c.json" "$OUT/etcd-c.json" "$OUT/redis-c.json" "$OUT/bare-c.json" >/dev/null
"$LT" bench-report --dir "$OUT" --out "$REPORT" --machine "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
echo "report: $REPORT"
