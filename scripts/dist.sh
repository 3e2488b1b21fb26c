#!/usr/bin/env bash
# Builds a distribution folder: the release binaries, shell completions and the man page, all
# generated from the same clap definition as the flags. Usage: scripts/dist.sh [OUT_DIR]
# (default dist/). Install by copying: bin/ onto PATH, share/man/man1/chatbench.1 into a man
# path, and the completion for your shell where it looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bins
mkdir -p "$out/bin" "$out/share/man/man1" "$out/share/completions"
cp "$target/release/chatbench" "$target/release/chatbench-gate-workload" "$out/bin/"
"$out/bin/chatbench" man >"$out/share/man/man1/chatbench.1"
for shell in bash zsh fish elvish powershell; do
  "$out/bin/chatbench" completions "$shell" >"$out/share/completions/chatbench.$shell"
done
cp README.md CHANGELOG.md "$out/"
echo "dist: $out ($("$out/bin/chatbench" --version))"
