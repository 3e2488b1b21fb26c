#!/usr/bin/env bash
# Fuzz campaigns of chatbench's parsers with AFL++ on stable Rust (afl.rs; issue 19 item 7).
#
#   scripts/fuzz.sh TARGET SECONDS [OUT]   one campaign of TARGET for SECONDS (wall clock) under
#                                          nice -n 19, findings in OUT (default
#                                          target/fuzz/TARGET); exits 1 if it found a crash
#   scripts/fuzz.sh minimize TARGET OUT    OUT's queue entries that found new edges into
#                                          fuzz/corpus/TARGET as min-* (seed-*, crash-* kept)
#   scripts/fuzz.sh stats OUT              executions, corpus, edges and crashes of a campaign
#   scripts/fuzz.sh build                  only build the instrumented driver
#
# Targets: protocol frame http wire control scenario (fuzz/src/lib.rs). `cargo test -p
# chatbench-fuzz` replays fuzz/corpus/ through the same functions without AFL. Needs cargo-afl
# (`cargo install cargo-afl`, then `cargo afl config --build` once). The driver is built into
# its own target directory (FUZZ_TARGET_DIR, default ${CARGO_TARGET_DIR:-target}/afl) because
# its instrumentation flags differ from every other build's; FUZZ_BIN=PATH uses an already
# built driver instead (e.g. to minimize the queue of a campaign still running on it).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
targets="protocol frame http wire control scenario"
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/afl}"
bin="${FUZZ_BIN:-$target_dir/release/chatbench-fuzz}"

die() {
  echo "error: $*" >&2
  exit 2
}

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

known() {
  case " $targets " in *" $1 "*) ;; *) die "unknown target '$1' (one of: $targets)" ;; esac
}

build() {
  [[ -z "${FUZZ_BIN:-}" ]] || { [[ -x "$FUZZ_BIN" ]] || die "FUZZ_BIN=$FUZZ_BIN: not an executable"; return 0; }
  cargo afl --version >/dev/null 2>&1 ||
    die "cargo-afl is missing: cargo install cargo-afl && cargo afl config --build"
  (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo afl build --release --quiet \
    --features afl -p chatbench-fuzz)
}

# The value of KEY in a campaign's fuzzer_stats.
stat_of() {
  sed -n "s/^$2 *: *//p" "$1/default/fuzzer_stats" 2>/dev/null | head -n1
}

stats() {
  local out="$1"
  [[ -f "$out/default/fuzzer_stats" ]] || die "$out/default/fuzzer_stats: no campaign there"
  local crashes
  crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
  echo "run_time_s=$(stat_of "$out" run_time) execs=$(stat_of "$out" execs_done)" \
    "execs_per_sec=$(stat_of "$out" execs_per_sec) corpus=$(stat_of "$out" corpus_count)" \
    "edges=$(stat_of "$out" edges_found)/$(stat_of "$out" total_edges)" \
    "coverage=$(stat_of "$out" bitmap_cvg) crashes=$crashes hangs=$(stat_of "$out" saved_hangs)"
  [[ "$crashes" -eq 0 ]]
}

campaign() {
  local target="$1" seconds="$2" out="${3:-$root/target/fuzz/$1}"
  known "$target"
  [[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || die "SECONDS must be a positive integer"
  build
  mkdir -p "$out"
  # No UI (logs), no CPU binding (campaigns share the cores), crashes kept even when the
  # system's core_pattern pipes cores elsewhere, no CPU-governor check.
  AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_AUTORESUME=1 nice -n 19 cargo afl fuzz -V "$seconds" -t 1000 \
    -x "$root/fuzz/dict/$target.dict" -i "$root/fuzz/corpus/$target" -o "$out" \
    -- "$bin" "$target" >"$out/afl.log" 2>&1 ||
    { tail -n 20 "$out/afl.log" >&2; die "afl-fuzz failed (log: $out/afl.log)"; }
  echo "$target: $(stats "$out" || true)"
  stats "$out" >/dev/null || {
    echo "crashes of $target (replay: $bin $target < FILE):" >&2
    find "$out/default/crashes" -type f -name 'id:*' >&2
    exit 1
  }
}

minimize() {
  local target="$1" out="$2" corpus="$root/fuzz/corpus/$1"
  known "$target"
  [[ -d "$out/default/queue" ]] || die "$out/default/queue: no campaign there"
  # The queue entries that each found a new edge (AFL names them `+cov`) and the inputs the
  # campaign started from (`orig:`, the committed corpus when it resumed from it): together they
  # cover every edge the campaign and the corpus before it reached. (afl-cmin would cut further, but its afl-showmap cannot run
  # afl.rs's shared-memory persistent driver outside afl-fuzz: it stops itself, SIGSTOP.)
  # Inputs named by content, so re-minimizing gives stable names and git diffs; seed-* and
  # crash-* inputs stay as they are, and are not copied twice.
  find "$corpus" -type f -name 'min-*' -delete
  local kept sum f
  kept=$(find "$corpus" -type f -exec sha1sum {} + | cut -c1-40)
  for f in "$out"/default/queue/id:*+cov* "$out"/default/queue/id:*orig:*; do
    [[ -f "$f" ]] || continue
    sum=$(sha1sum "$f" | cut -c1-40)
    grep -qx "$sum" <<<"$kept" || cp "$f" "$corpus/min-${sum:0:16}"
  done
  echo "$target: $(find "$corpus" -type f | wc -l) inputs in $corpus"
}

case "${1:-}" in
  build) build ;;
  stats) [[ $# -eq 2 ]] || usage; stats "$2" ;;
  minimize) [[ $# -eq 3 ]] || usage; minimize "$2" "$3" ;;
  "" | -h | --help) usage ;;
  *) [[ $# -ge 2 && $# -le 3 ]] || usage; campaign "$@" ;;
esac
