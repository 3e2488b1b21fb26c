//! End-to-end tests of `chatbench gate --baseline FILE --current RUN…`: one real short run
//! (`chatbench run --serve epoll`, smoke scenario with a 1 s window) gives a genuine
//! summary.json; copies of it with known changes play the baseline and current runs. Checks
//! the exit codes (0 pass, 1 regression, 2 could not judge: missing metric, another machine,
//! too few samples, bad arguments), the labelled fixed-threshold mode, the written report, and
//! that the tier subcommands still parse.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn chatbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatbench"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    c
}

/// One real run's summary.json.
fn real_summary(dir: &Path) -> Value {
    let out = dir.join("real");
    let o = chatbench()
        .args([
            "run",
            "--serve",
            "epoll",
            "--scenario",
            "scenarios/smoke.toml",
            "--set",
            "measure=\"1s\"",
            "--set",
            "warmup=\"500ms\"",
            "--progress",
            "quiet",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run chatbench");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = common::summary(&common::only_run_dir(&out));
    assert_eq!(s["valid"], true, "the real run must be valid: {s:#}");
    common::check_schema(&s);
    s
}

/// Writes `n` run folders under `dir/name/`, each a copy of `base` changed by `edit(i, run)`.
fn runs(
    dir: &Path,
    name: &str,
    base: &Value,
    n: usize,
    edit: impl Fn(usize, &mut Value),
) -> PathBuf {
    let root = dir.join(name);
    for i in 0..n {
        let mut s = base.clone();
        edit(i, &mut s);
        let d = root.join(format!("run{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.json"), s.to_string()).unwrap();
    }
    root
}

/// Scales the CPU per delivery and p99 of a run by `f` and a small per-run jitter.
fn scaled(f: f64) -> impl Fn(usize, &mut Value) {
    move |i, s| {
        let j = 1.0 + (i as f64 - 2.0) * 0.005;
        s["target_resources"]["cpu_us_per_delivery"] = (10.0 * f * j).into();
        s["latency_us"]["p99"] = (1000.0 * j).into();
    }
}

fn gate(dir: &Path, baseline: &Path, current: &[&Path], extra: &[&str]) -> Output {
    chatbench()
        .arg("gate")
        .arg("--baseline")
        .arg(baseline)
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .arg("--current")
        .args(current)
        .output()
        .expect("run chatbench gate")
}

#[test]
fn run_metrics_gate_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let real = real_summary(dir);
    let base_runs = runs(dir, "base", &real, 5, scaled(1.0));
    let baseline = dir.join("baseline.json");

    // The baseline of runs records the machine the runs were measured on.
    let o = gate(dir, &baseline, &[&base_runs], &["--update-baseline"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let b: Value = serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert_eq!(b["tier"], "runs");
    assert_eq!(
        b["fingerprint"]["cpu_model"],
        real["provenance"]["cpu_model"]
    );
    assert_eq!(
        b["fingerprint"]["cpu_cores"],
        real["provenance"]["cpu_cores"]
    );
    assert_eq!(
        b["metrics"]["cpu_us_per_delivery"]["samples"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // The same figures: pass, with the table, Markdown and JSON.
    let same = runs(dir, "same", &real, 5, scaled(1.0));
    let o = gate(dir, &baseline, &[&same], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/gate-runs.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(
        report["rows"].as_array().unwrap().len(),
        chatbench_model::figures::gated().count()
    );
    let md = std::fs::read_to_string(dir.join("out/gate-runs.md")).unwrap();
    assert!(md.contains("| `cpu_us_per_delivery` |"), "{md}");

    // The same figures with an absolute threshold they cross (p99 ≈ 1 ms): a regression row
    // per run, exit 1; one they meet passes.
    let o = gate(
        dir,
        &baseline,
        &[&same],
        &["--threshold", "p99_latency<=0.5ms"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let crossed = stdout
        .lines()
        .filter(|l| l.starts_with("threshold p99_latency") && l.ends_with("REGRESSION"))
        .count();
    assert_eq!(crossed, 5, "{stdout}");
    let o = gate(
        dir,
        &baseline,
        &[&same],
        &["--threshold", "p99_latency<=5ms"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = gate(dir, &baseline, &[&same], &["--threshold", "p99<=5ms"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // +30 % CPU per delivery in every run: a regression.
    let worse = runs(dir, "worse", &real, 5, scaled(1.3));
    let o = gate(dir, &baseline, &[&worse], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("cpu_us_per_delivery") && stdout.contains("REGRESSION"),
        "{stdout}"
    );

    // A metric missing from every current run: could not judge.
    let missing = runs(dir, "missing", &real, 5, |i, s| {
        scaled(1.0)(i, s);
        s["target_resources"]
            .as_object_mut()
            .unwrap()
            .remove("cpu_us_per_delivery");
    });
    let o = gate(dir, &baseline, &[&missing], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("target_resources.cpu_us_per_delivery"));

    // Runs from another machine: could not judge, unless allowed.
    let other = runs(dir, "other", &real, 5, |i, s| {
        scaled(1.0)(i, s);
        s["provenance"]["cpu_model"] = "Some Other CPU".into();
    });
    let o = gate(dir, &baseline, &[&other], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("CPU model"));
    let o = gate(dir, &baseline, &[&other], &["--allow-other-machine"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // One current run: no significance test is possible.
    let one = worse.join("run0");
    let o = gate(dir, &baseline, &[&one], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("too few samples"));
    // … unless the labelled fixed-threshold mode is asked for.
    let o = gate(dir, &baseline, &[&one], &["--fixed-threshold", "10"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no significance test"));

    // +100 % with the fewest current runs the gate accepts against this 5-run baseline (4:
    // 3 × 2 / C(9, 4) = 0.048 < 0.05) is flagged; with one fewer it refuses, naming how many.
    let doubled = runs(dir, "doubled", &real, 4, scaled(2.0));
    let o = gate(dir, &baseline, &[&doubled], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let three: Vec<PathBuf> = (0..3).map(|i| doubled.join(format!("run{i}"))).collect();
    let three: Vec<&Path> = three.iter().map(PathBuf::as_path).collect();
    let o = gate(dir, &baseline, &three, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("cannot reach significance") && stdout.contains("4 current runs"),
        "{stdout}"
    );

    // Deliveries −100 %: a regression, never "pass", even from a single run.
    let dead = runs(dir, "dead", &real, 1, |i, s| {
        scaled(1.0)(i, s);
        s["messages"]["delivered_per_s"] = 0.0.into();
    });
    let o = gate(dir, &baseline, &[&dead], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("−100 %"),
        "{}",
        text(&o)
    );

    // A kernel of the same series at another patch level: judged, with a warning.
    let kernel = real["provenance"]["kernel"]
        .as_str()
        .unwrap_or("6.1.0")
        .to_string();
    let mut parts: Vec<&str> = kernel.splitn(3, '.').collect();
    parts.truncate(2);
    let patched = format!("{}.9999-patched", parts.join("."));
    let patch = runs(dir, "patch", &real, 5, |i, s| {
        scaled(1.0)(i, s);
        s["provenance"]["kernel"] = patched.clone().into();
    });
    let o = gate(dir, &baseline, &[&patch], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("kernel patch level differs"),
        "{}",
        text(&o)
    );

    // Targets by label: another port is the same target when the label is; without a label
    // the URL decides.
    let at = |port: u16, label: Option<&'static str>| {
        move |i: usize, s: &mut Value| {
            scaled(1.0)(i, s);
            s["target"]["arch"] = Value::Null;
            s["target"]["url"] = format!("ws://127.0.0.1:{port}/ws").into();
            s["target"]["settings"] = match label {
                Some(l) => serde_json::json!({ "label": l }),
                None => serde_json::json!({}),
            };
        }
    };
    let labelled_base = runs(dir, "lbase", &real, 5, at(8080, Some("mine")));
    let lbaseline = dir.join("labelled.json");
    let o = gate(dir, &lbaseline, &[&labelled_base], &["--update-baseline"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let moved = runs(dir, "lmoved", &real, 5, at(9090, Some("mine")));
    let o = gate(dir, &lbaseline, &[&moved], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let unlabelled = runs(dir, "lnone", &real, 5, at(9090, None));
    let o = gate(dir, &lbaseline, &[&unlabelled], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("target"),
        "{}",
        text(&o)
    );

    // An invalid run is left out and named; a folder without runs is a usage error.
    let invalid = runs(dir, "invalid", &real, 1, |_, s| {
        s["valid"] = false.into();
        s["invalid_reasons"] = serde_json::json!(["generator-bound"]);
    });
    let o = gate(dir, &baseline, &[&invalid, &same], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("left out"));
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = gate(dir, &baseline, &[&empty], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no summary.json"));
}

#[test]
fn gate_without_a_tier_or_baseline_is_a_usage_error_and_tiers_still_parse() {
    let o = chatbench().arg("gate").output().expect("run chatbench");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--baseline FILE --current"));
    for tier in ["deterministic", "statistical"] {
        let o = chatbench()
            .args(["gate", tier, "--help"])
            .output()
            .expect("run chatbench");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    // Run-judging flags and a tier together are refused by the parser.
    let o = chatbench()
        .args(["gate", "--baseline", "b.json", "deterministic"])
        .output()
        .expect("run chatbench");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
