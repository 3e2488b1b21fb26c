//! End-to-end tests of `chatbench report` on a single run's folder: a real run's folder gets
//! its timeline charts and report.html; a folder that is not there, or that lacks what the page
//! is drawn from, is an input error (exit 2) naming what is missing.

mod common;
use common::*;

use std::path::Path;
use std::process::Stdio;

fn report(dir: &Path) -> std::process::Output {
    chatbench()
        .args(["report", dir.to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench report")
}

#[test]
fn report_of_a_run_draws_its_timeline_and_page() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let run = {
        let _turn = serial();
        chatbench()
            .args([
                "run",
                "--serve",
                "task-per-conn",
                "--scenario",
                "scenarios/smoke.toml",
                "--set",
                "connections=40",
                "--set",
                "rooms=4",
                "--set",
                "members_per_room=10",
                "--set",
                "measure=\"2s\"",
                "--out",
                out_dir.path().to_str().expect("utf-8 path"),
                "--progress",
                "quiet",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run")
    };
    assert!(matches!(run.status.code(), Some(0 | 4)), "{}", text(&run));
    let dir = only_run_dir(out_dir.path());
    let o = report(&dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in ["report.html", "charts/timeline.png", "charts/timeline.svg"] {
        assert!(dir.join(f).is_file(), "{f} missing: {}", text(&o));
    }
    let page = std::fs::read_to_string(dir.join("report.html")).expect("page");
    let s = summary(&dir);
    let id = s["run_id"].as_str().expect("run_id");
    assert!(
        page.contains(id) && page.contains("<svg"),
        "{}",
        &page[..page.len().min(500)]
    );
    assert!(
        page.contains("href=\"latency.hlog\""),
        "the run's files linked"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("report.html"), "{stdout}");
    // Drawn again, the page replaces the first (atomic writes, no temporary left).
    let again = report(&dir);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let tmp: Vec<_> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn report_of_a_missing_or_incomplete_run_folder_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nothing-here");
    let o = report(&missing);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no such folder"), "{err}");
    assert!(
        err.matches("os error").count() <= 1,
        "an OS error said twice: {err}"
    );
    // A summary without its time series: the page cannot be drawn, and the error says why.
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::copy(
        root().join("report/tests/data/broadcast/summary.json"),
        run.join("summary.json"),
    )
    .expect("copy");
    let o = report(&run);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("timeseries.csv"), "{err}");
    assert!(!run.join("report.html").exists(), "no page");
    // A summary that is not one.
    std::fs::write(run.join("summary.json"), "{\"not\": \"a summary\"}").expect("write");
    let o = report(&run);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("summary.json"), "{err}");
}
