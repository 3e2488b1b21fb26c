#!/usr/bin/env bash
# The runtime benchmark behind claims/elixir-vs-node.toml (issue 14): the same three scenarios
# against each runtime, each run REPEATS times (a fresh server every time), then one Markdown
# table of medians with every run's value beside it. This is a benchmark, not a test: it takes
# 30–40 minutes on a 2-core machine and its figures belong in notes with their conditions.
#
#   scripts/bench-runtimes.sh [OUT_DIR]        # default results/bench-runtimes/<UTC time>
#   REPEATS=3 BIN=target/release/chatbench scripts/bench-runtimes.sh
#   ONLY=idle,broadcast scripts/bench-runtimes.sh   # a subset of: idle, broadcast, node-loss
#
# - idle-15k: user-space and kernel bytes per idle connection at 15,000 connections.
# - broadcast-10k: 100 rooms × 100, 99,000 deliveries/s offered: p50/p99/p99.9 latency, server
#   CPU per delivery, loss, and whether the run was valid (a generator-limited run is marked
#   invalid by chatbench and its latency is not the server's).
# - node-loss-10k: a node SIGKILLed 8 s into the window of a 3-node cluster: messages lost while
#   its clients were away, time until all were back, p99 during the failover.
#
# Needs what scripts/test.sh installs (Node.js peers' node_modules, elixir, redis-server).
# Runs only on loopback; every run is bounded by its scenario.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${BIN:-target/release/chatbench}"
REPEATS="${REPEATS:-3}"
ONLY="${ONLY:-idle,broadcast,node-loss}"
OUT="${1:-results/bench-runtimes/$(date -u +%Y%m%dT%H%M%SZ)}"
if [ ! -x "$BIN" ]; then
  echo "error: $BIN not found: build it (cargo build --release) or set BIN=path/to/chatbench" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "error: python3 is needed for the table (apt-get install python3)" >&2; exit 2; }
mkdir -p "$OUT"

# Each line: step, label, scenario, then chatbench run's target flags.
plan=(
  "idle|task-per-conn|idle-15k|--serve task-per-conn"
  "idle|epoll|idle-15k|--serve epoll"
  "idle|elixir|idle-15k|--serve-peer elixir"
  "idle|node-ws|idle-15k|--serve-peer node-ws"
  "idle|socketio|idle-15k|--serve-peer socketio --set protocol=\"socketio\""
  "broadcast|task-per-conn|broadcast-10k|--serve task-per-conn"
  "broadcast|epoll|broadcast-10k|--serve epoll"
  "broadcast|elixir|broadcast-10k|--serve-peer elixir"
  "broadcast|node-ws|broadcast-10k|--serve-peer node-ws"
  "broadcast|socketio|broadcast-10k|--serve-peer socketio --set protocol=\"socketio\""
  "node-loss|cluster-mesh|node-loss-10k|--serve cluster --nodes 3 --backplane mesh"
  "node-loss|elixir-cluster|node-loss-10k|--serve-peer elixir-cluster --nodes 3"
  "node-loss|socketio-cluster|node-loss-10k|--serve-peer socketio-cluster --nodes 3 --set protocol=\"socketio\""
)

for line in "${plan[@]}"; do
  IFS='|' read -r step label scenario flags <<<"$line"
  case ",$ONLY," in *",$step,"*) ;; *) continue ;; esac
  for i in $(seq 1 "$REPEATS"); do
    dir="$OUT/$step/$label"
    mkdir -p "$dir"
    echo "== $step $label run $i/$REPEATS ($(date -u +%T))"
    rc=0
    # shellcheck disable=SC2086 # the flags are words on purpose
    "$BIN" run --scenario "scenarios/$scenario.toml" $flags --out "$dir" --progress lines \
      >"$dir/run-$i.log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
      echo "   exit $rc: see $dir/run-$i.log (a run folder it wrote is still counted below)"
    fi
  done
done

python3 - "$OUT" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
def runs(step, label):
    base = os.path.join(out, step, label)
    if not os.path.isdir(base):
        return []
    found = []
    for d in sorted(os.listdir(base)):
        p = os.path.join(base, d, "summary.json")
        if os.path.isfile(p):
            with open(p) as f:
                found.append(json.load(f))
    return found
def get(s, path):
    for k in path.split("."):
        if not isinstance(s, dict) or s.get(k) is None:
            return None
        s = s[k]
    return s
def cell(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    each = ", ".join(fmt(v) for v in vals)
    return f"**{fmt(statistics.median(vals))}** ({each})"
kib = lambda v: f"{v / 1024:.2f}"
ms = lambda v: f"{v / 1000:.2f}"
us = lambda v: f"{v:.2f}"
num = lambda v: f"{v:,.0f}"
def table(step, cols):
    labels = sorted(os.listdir(os.path.join(out, step))) if os.path.isdir(os.path.join(out, step)) else []
    if not labels:
        return
    print(f"\n### {step} (median in bold, then each run)\n")
    print("| server | runs valid | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for label in labels:
        rs = runs(step, label)
        valid = sum(1 for r in rs if r.get("valid") and r.get("status") == "complete")
        row = [label, f"{valid} of {len(rs)}"]
        row += [cell([get(r, path) for r in rs], fmt) for _, path, fmt in cols]
        print("| " + " | ".join(row) + " |")
        notes = {n for r in rs for n in (r.get("invalid_reasons") or r.get("notes") or []) if isinstance(n, str)}
        for n in sorted(notes)[:3]:
            print(f"|  | note: {n[:160]} |" + " |" * len(cols))
table("idle", [
    ("user KiB/conn", "target_resources.memory_per_conn.user_bytes_per_conn", kib),
    ("kernel slab KiB/conn", "target_resources.memory_per_conn.kernel_slab_bytes_per_conn", kib),
    ("connected", "connections.ready", num),
])
table("broadcast", [
    ("p50 ms", "latency_us.p50", ms),
    ("p99 ms", "latency_us.p99", ms),
    ("p99.9 ms", "latency_us.p999", ms),
    ("server CPU µs/delivery", "target_resources.cpu_us_per_delivery", us),
    ("lost", "messages.lost", num),
    ("delivered/s", "messages.delivered_per_s", num),
    ("generator pacer p99 µs", "generator.pacer_lag_us.p99", num),
])
table("node-loss", [
    ("lost during", "failover.during.lost", num),
    ("expected during", "failover.during.expected", num),
    ("lost outside", "failover.outside.lost", num),
    ("all back ms", "failover.all_back_ms", num),
    ("p99 during ms", "failover.p99_during_us", ms),
    ("p99 after ms", "failover.p99_after_us", ms),
])
PY
