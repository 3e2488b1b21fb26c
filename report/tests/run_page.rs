//! `report RUN`'s page on a recorded run folder (`tests/data/broadcast`, copied): the timeline
//! drawn into `charts/`, `report.html` written with it, nothing half-written left behind.

use std::path::Path;

use chatbench_report::run_page::{draw, RunPageError, RUN_PAGE};

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broadcast");
    for f in ["summary.json", "timeseries.csv", "latency.hgrm"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy fixture");
    }
}

#[test]
fn a_run_folder_gets_its_timeline_and_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    let drawn = draw(dir.path()).expect("page drawn");
    assert_eq!(drawn.page, dir.path().join(RUN_PAGE));
    for ext in ["png", "svg"] {
        let chart = dir.path().join(format!("charts/timeline.{ext}"));
        assert!(chart.is_file(), "{} missing", chart.display());
        assert!(drawn.charts.contains(&chart));
    }
    let page = std::fs::read_to_string(&drawn.page).expect("page");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg"), "the timeline inline");
    assert!(page.contains(&drawn.summary.run_id));
    assert!(page.contains("href=\"latency.hgrm\""));
    assert!(
        !page.contains("href=\"latency.hlog\""),
        "not in this folder"
    );
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_folder_without_a_timeseries_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    std::fs::remove_file(dir.path().join("timeseries.csv")).expect("rm");
    let err = draw(dir.path()).expect_err("no timeseries");
    assert!(matches!(err, RunPageError::Chart(_)), "{err:?}");
    assert!(err.to_string().contains("timeseries.csv"), "{err}");
    assert!(
        !dir.path().join(RUN_PAGE).exists(),
        "no page without its charts"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
