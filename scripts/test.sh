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

# The report.html test loads the page in headless Chromium (Debian's package).
if ! need chromium && ! need chromium-browser; then
  echo "== installing chromium (for the report.html browser check)"
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "error: the tests need headless Chromium: install Debian's chromium (apt-get install chromium) and re-run" >&2
    exit 2
  fi
fi

# The network-namespace test (tests/netns.rs) builds hosts with `ip netns`, veth and a bridge.
if ! need ip; then
  echo "== installing iproute2 (for the network-namespace test)"
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2
  else
    echo "error: the tests need \`ip\` from iproute2: apt-get install iproute2 (and run them as root) and re-run" >&2
    exit 2
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# Integration tests open thousands of sockets in one process: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo test --workspace
