//! Helpers shared by the end-to-end tests: reading a run folder back and checking its
//! summary against the published schema.

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
