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

# The deterministic tier of the regression gate counts instructions under valgrind (callgrind).
if ! need valgrind; then
  echo "== installing valgrind (for the deterministic regression gate)"
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind
  else
    echo "error: the regression gate needs valgrind: install Debian's valgrind (apt-get install valgrind) and re-run" >&2
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

# The deterministic tier of the regression gate against the committed baseline: instruction and
# allocation counts per delivery of each architecture's fan-out path under callgrind (10–45 s).
# Exit 1 = regression, 2 = could not judge (e.g. the baseline is from another CPU or compiler):
# both fail the build. A change meant to cost more updates the baseline in the same commit:
#   cargo build --workspace --bins && target/debug/chatbench gate deterministic --update-baseline --repeat 3
echo "== chatbench gate deterministic"
cargo build --workspace --bins --quiet
"${CARGO_TARGET_DIR:-target}/debug/chatbench" gate deterministic --out "${CARGO_TARGET_DIR:-target}/gate"
