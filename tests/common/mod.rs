//! Helpers shared by the end-to-end tests: starting the binary, describing its output, taking
//! turns, reading a run folder back and checking its summary against the published schema.

use std::path::{Path, PathBuf};

/// The only run folder under `root`.
#[allow(dead_code)] // not every test file reads run folders this way
pub fn only_run_dir(root: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(root)
        .expect("results root")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run folder, found {dirs:?}");
    dirs[0].clone()
}

/// `dir/summary.json`, parsed.
#[allow(dead_code)] // not every test file reads run folders this way
pub fn summary(dir: &Path) -> serde_json::Value {
    let bytes = std::fs::read(dir.join("summary.json")).expect("summary.json");
    serde_json::from_slice(&bytes).expect("summary.json is JSON")
}

/// Asserts that `summary` matches docs/summary.schema.json.
#[allow(dead_code)] // not every test file checks summaries
pub fn check_schema(summary: &serde_json::Value) {
    let schema_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json"),
    )
    .expect("docs/summary.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(summary)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json does not match docs/summary.schema.json:\n{}",
        errors.join("\n")
    );
}

/// The chatbench binary under test, run from the repository root (scenarios, peers and suites
/// are found relative to it).
#[allow(dead_code)] // not every test file starts the binary this way
pub fn chatbench() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chatbench"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The tests' runs do not belong on a CI job's page (`run` appends to it when it is set).
    c.env_remove("GITHUB_STEP_SUMMARY");
    c
}

/// The repository root.
#[allow(dead_code)]
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A finished command's status and output, for assertion messages.
#[allow(dead_code)]
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs that must not overlap (each pins or loads the machine) take turns through this lock;
/// a test that panicked while holding it does not poison the others.
#[allow(dead_code)]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A JSON count (a summary's counters), or a panic naming the value.
#[allow(dead_code)] // not every test file reads counters
pub fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs `chatbench ARGS` to its end, stdin closed, in its turn ([`serial`]); its status and
/// output.
#[allow(dead_code)] // not every test file starts the binary this way
pub fn run_chatbench(args: &[&str]) -> std::process::Output {
    let _turn = serial();
    chatbench()
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run chatbench")
}

/// The summary of the one run under `root`, after asserting that the run finished: exit 0
/// (valid), or 4 (invalid: the generator-bound self-check fired on a busy machine) with `valid`
/// false and its reasons. Tests assert counts, not timing, so both are accepted; any other exit
/// fails with the run's output. The summary is checked against the schema.
#[allow(dead_code)] // not every test file runs `chatbench run`
pub fn assert_finished(out: &std::process::Output, root: &Path) -> serde_json::Value {
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(4)),
        "run failed: {}",
        text(out)
    );
    let s = summary(&only_run_dir(root));
    check_schema(&s);
    if code == Some(0) {
        assert_eq!(s["valid"], true, "exit 0 but invalid: {s:#}");
    } else {
        assert_eq!(s["valid"], false, "exit 4 but valid: {s:#}");
        let reasons = s["invalid_reasons"].as_array().expect("reasons");
        assert!(!reasons.is_empty(), "invalid without a reason: {s:#}");
    }
    s
}

/// Runs `scenarios/smoke.toml` against `target` with `shape` then `extra` flags (an exit of 0
/// or 4, invalid, is accepted: the caller judges the summary); its summary, checked against the
/// schema, and the console summary.
#[allow(dead_code)] // not every test file runs the smoke scenario this way
pub fn run_smoke(target: &[&str], shape: &[&str], extra: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["run", "--scenario", "scenarios/smoke.toml"];
    args.extend_from_slice(target);
    args.extend_from_slice(shape);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--out", dir.path().to_str().expect("path")]);
    let out = run_chatbench(&args);
    let s = assert_finished(&out, dir.path());
    (s, String::from_utf8_lossy(&out.stdout).into_owned())
}
