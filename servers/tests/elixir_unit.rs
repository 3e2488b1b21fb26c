//! The Elixir peer's own unit tests (`servers/peers/elixir/test/`, ExUnit: flag parsing, the
//! slow-consumer rule, room names, JSON decoding), run with `mix test --no-start` into a
//! temporary build folder so that `cargo test` covers them. Fails (never skips) with what to
//! install when Elixir is missing.

use std::process::{Command, Stdio};

#[test]
fn elixir_peer_unit_tests_pass() {
    let project = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/elixir");
    let build = tempfile::tempdir().expect("tempdir");
    let out = Command::new("mix")
        .args(["test", "--no-start"])
        .current_dir(&project)
        .env("MIX_BUILD_PATH", build.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run mix ({e}): the Elixir peer's tests need Elixir with cowlib and \
                 jiffy: apt-get install elixir erlang-cowlib erlang-jiffy (scripts/test.sh does it)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mix test failed:\n{text}");
    assert!(text.contains(" 0 failures"), "{text}");
}
