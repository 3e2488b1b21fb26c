#!/usr/bin/env bash
# The README's second command: every test, with everything the tests need installed first.
# Format and lint checks come first so that a failure names its cause early.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "error: cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 2
fi

# rustfmt and clippy ship with rustup's default profile; add them if this toolchain lacks them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if need rustup; then
      rustup component add "$component"
    else
      echo "error: cargo $component is missing and rustup is not available to add it" >&2
      exit 2
    fi
  fi
done

# Tools the tests run, as (command, Debian package, what needs it). Missing ones are installed
# from Debian's packages in one go (as root); otherwise the script stops and names them.
tools=(
  "chromium:chromium:the report.html check loads the page in headless Chromium"
  "redis-server:redis-server:the cluster and socketio-cluster tests start private Redis servers (none is left running)"
  "valgrind:valgrind:the deterministic regression gate counts instructions with callgrind"
  "node:nodejs:the protocol-profile tests run the Node.js ws and Socket.IO peer servers"
  "npm:npm:servers/peers installs its pinned ws and socket.io with npm ci"
  "ip:iproute2:the network-namespace test builds hosts with ip netns, veth and a bridge"
  "elixir:elixir:the conformance, profile and compare tests run the Elixir peer server (servers/peers/elixir)"
)
# Erlang libraries the Elixir peer loads from the OTP lib path, as (glob, Debian package, what
# needs it): they are not commands, so they are looked for where Debian installs them.
erlang_libs=(
  "/usr/lib/erlang/lib/cowlib-*:erlang-cowlib:the Elixir peer frames WebSocket messages with cowlib's cow_ws"
  "/usr/lib/erlang/lib/jiffy-*:erlang-jiffy:the Elixir peer parses JSON with jiffy"
)
missing=()
for t in "${tools[@]}"; do
  IFS=: read -r cmd pkg why <<<"$t"
  if [ "$cmd" = chromium ] && need chromium-browser; then continue; fi
  if ! need "$cmd"; then
    echo "== missing $cmd: $why"
    missing+=("$pkg")
  fi
done
for l in "${erlang_libs[@]}"; do
  IFS=: read -r glob pkg why <<<"$l"
  if ! compgen -G "$glob" >/dev/null; then
    echo "== missing $pkg: $why"
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing ${missing[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    echo "error: the tests need: ${missing[*]} (Debian packages): install them (apt-get install ${missing[*]}) and re-run" >&2
    exit 2
  fi
fi
# The Node peers' dependencies, at the versions pinned in servers/peers/package-lock.json; again
# when the lock is newer than what npm last installed (a dependency was added or bumped).
if [ ! -f servers/peers/node_modules/.package-lock.json ] \
  || [ servers/peers/package-lock.json -nt servers/peers/node_modules/.package-lock.json ]; then
  echo "== npm ci (servers/peers: pinned ws, socket.io, @socket.io/redis-adapter and redis)"
  npm ci --prefix servers/peers --no-audit --no-fund
fi

# Disk: CI machines can be short of it (a run once failed linking with "No space left on
# device"). Incremental compilation caches are useless on a fresh clone and were about 1.2 GB of
# the ~3.2 GB target dir: off unless the caller set CARGO_INCREMENTAL. Free space is printed so a
# disk failure is recognisable, and checked again after the tests (below).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_mib() { df -Pm "$target_dir" | awk 'NR==2 {print $4}'; }
echo "== disk: $(free_mib) MiB free where $target_dir is (the test command needs about 2.5 GiB)"
if [ "$(free_mib)" -lt 2560 ]; then
  echo "warning: less than 2.5 GiB free beside $target_dir: the build may fail with 'No space left on device'; free some space or set CARGO_TARGET_DIR to a roomier disk" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# Integration tests open thousands of sockets in one process: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo test --workspace

# The test executables have run and are the largest files left (~0.7 GB); the steps below build
# other binaries. When space is short they go (the next `cargo test` relinks them).
if [ "$(free_mib)" -lt 2048 ]; then
  echo "== disk: $(free_mib) MiB free: removing the test executables that have run"
  find "$target_dir/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' ! -name '*.rlib' ! -name '*.rmeta' ! -name '*.d' \
    ! -name 'chatbench-*' ! -name 'chatbench_gate_workload-*' -delete
  echo "== disk: $(free_mib) MiB free after"
fi

# The install story: `cargo install --path .` into a temporary root gives a working binary (the
# debug profile and this target dir, so nothing is compiled twice), with its completions and man page.
echo "== cargo install --path . (temporary root)"
install_root="$(mktemp -d)"
CARGO_TARGET_DIR="$target_dir" cargo install --path . --debug --locked --quiet --root "$install_root"
"$install_root/bin/chatbench" --version
"$install_root/bin/chatbench" completions bash | grep -q "_chatbench()" || { echo "error: the installed binary printed no bash completion" >&2; exit 1; }
"$install_root/bin/chatbench" man | grep -q '^.TH chatbench 1' || { echo "error: the installed binary printed no man page" >&2; exit 1; }
rm -rf "$install_root"

# The deterministic tier of the regression gate against the committed baseline: instruction and
# allocation counts per delivery of each architecture's fan-out path and per connection opened and
# closed, under callgrind, and heap bytes per idle connection (30–80 s).
# Exit 1 = regression, 2 = could not judge (e.g. the baseline is from another CPU or compiler):
# both fail the build. A change meant to cost more updates the baseline in the same commit:
#   cargo build --workspace --bins && target/debug/chatbench gate deterministic --update-baseline --repeat 3
echo "== chatbench gate deterministic"
cargo build --workspace --bins --quiet
# --allow-other-machine: CI runners differ in CPU model (AMD EPYC and Intel Xeon seen here), and
# under callgrind the counts did not move between them (every count +0.00 % against a baseline
# measured on the other model, 2026-12-06); a count that does move still fails, with the model
# difference named in the notes. Workload settings, profile and compiler must still match.
"$target_dir/debug/chatbench" gate deterministic --allow-other-machine --out "$target_dir/gate"
