//! `chatbench report DIR` on comparison folders built from the report crate's run fixtures (no
//! server is started): it rebuilds comparison.md/json/html byte for byte (notes, `--tiny` and
//! provenance included), never rewrites a committed or incomplete folder (exit 2, the reason,
//! `--out NEW` instead, which says what it could not draw), marks a busy run everywhere, and
//! says each input error once with exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("report/tests/data")
}

fn chatbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A comparison folder of two columns: task-per-conn (the fixtures as recorded) and
/// thread-pool (the same runs, its broadcast run's window shared with other work: busy).
/// `timeseries`: whether the runs keep their timeseries.csv (a committed baseline does not).
/// Its comparison.json carries what only a compare knows: a note, `--tiny`, the provenance.
fn comparison(root: &Path, timeseries: bool, tiny: bool) -> PathBuf {
    let dir = root.join("cmp");
    for (column, time) in [("task-per-conn", 10), ("thread-pool", 20)] {
        for (i, step) in ["idle", "broadcast", "poison"].into_iter().enumerate() {
            let to = dir
                .join("runs")
                .join(format!("20261127T1859{}Z-{column}-quick-{step}", time + i));
            std::fs::create_dir_all(&to).expect("mkdir");
            for f in ["summary.json", "timeseries.csv", "latency.hgrm"] {
                let from = data().join(step).join(f);
                if from.exists() && (timeseries || f != "timeseries.csv") {
                    std::fs::copy(&from, to.join(f)).expect("copy");
                }
            }
            let path = to.join("summary.json");
            let mut s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("summary")).expect("json");
            s["target"]["arch"] = serde_json::json!(column);
            if column == "thread-pool" && step == "broadcast" {
                s["target_resources"]["other_load"] = serde_json::json!({
                    "cpus": [0], "busy_cores": 0.9, "other_cores": 0.5, "steal_cores": 0.0
                });
                // And slower: the verdict has a best column to name.
                let p99 = s["latency_us"]["p99"].as_u64().expect("p99");
                s["latency_us"]["p99"] = serde_json::json!(p99 * 3);
            }
            std::fs::write(&path, serde_json::to_vec(&s).expect("encode")).expect("write");
        }
    }
    let json = serde_json::json!({
        "schema": "chatbench.comparison/v1",
        "suite": "quick",
        "archs": ["task-per-conn", "thread-pool"],
        "rows": [],
        "machine": "",
        "failures": [],
        "notes": ["The cluster-redis column was left out: `redis-server` is not installed (Debian: `apt-get install redis-server`)."],
        "tiny": tiny,
        "provenance": {
            "command_line": ["chatbench", "compare", "--archs", "task-per-conn,thread-pool"],
            "build": "", "machine": "",
            "started_at": "2026-11-27T18:59:10Z", "ended_at": "2026-11-27T19:00:40Z",
            "runs": []
        }
    });
    std::fs::write(
        dir.join("comparison.json"),
        serde_json::to_vec_pretty(&json).expect("encode"),
    )
    .expect("write");
    dir
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_dir_rebuilds_comparison_md_json_html_byte_for_byte_notes_included() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = comparison(root.path(), true, false);
    // The first report writes the files a compare would have written from these runs.
    let o = chatbench(&["report", path(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = ["comparison.md", "comparison.json", "report.html"];
    let first: Vec<Vec<u8>> = files.iter().map(|f| read(&dir.join(f))).collect();
    let md = String::from_utf8_lossy(&first[0]).into_owned();
    assert!(
        md.contains("The cluster-redis column was left out"),
        "the compare's note is kept: {md}"
    );
    assert!(
        md.contains("`chatbench compare --archs task-per-conn,thread-pool`"),
        "{md}"
    );
    // The terminal gets the verdict and the table, not the conditions and every run; its last
    // line is the page to open.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("Delivery latency p99: **task-per-conn**")
            && stdout.contains("| question |"),
        "{stdout}"
    );
    assert!(!stdout.contains("## Provenance") && !stdout.contains("## Conditions"));
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(&format!("report: {}", dir.join("report.html").display()))),
        "{stdout}"
    );
    // Every file again, byte for byte.
    let o = chatbench(&["report", path(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (f, before) in files.iter().zip(&first) {
        assert!(&read(&dir.join(f)) == before, "{f} differs after a rebuild");
    }
    // The page as a decision-maker reads it: verdict, columns, table, charts, conditions once,
    // provenance with every run, rendered Markdown (no raw backticks in the notes).
    let page = String::from_utf8_lossy(&first[2]).into_owned();
    let at = |what: &str| {
        page.find(what)
            .unwrap_or_else(|| panic!("{what} not on the page"))
    };
    assert!(at("id=\"verdict\"") < at("id=\"columns\""));
    assert!(at("id=\"columns\"") < at("id=\"table\""));
    assert!(at("id=\"table\"") < at("id=\"charts\""));
    assert!(at("id=\"charts\"") < at("id=\"conditions\""));
    assert!(at("id=\"scenarios\"") < at("id=\"provenance\""));
    assert!(
        page.contains("BEAM") && page.contains("Tomcat"),
        "column legend"
    );
    assert!(
        page.contains("<code>redis-server</code>") && !page.contains("`redis-server`"),
        "rendered Markdown"
    );
    assert_eq!(
        page.matches("<li class=\"subrun\">").count(),
        6,
        "one per run"
    );
    // Charts in table order: memory before latency before CPU, timelines after.
    assert!(at("id=\"memory_per_connection\"") < at("id=\"latency_distribution\""));
    assert!(at("id=\"latency_distribution\"") < at("id=\"cpu_per_delivery\""));
    assert!(at("id=\"cpu_per_delivery\"") < at("id=\"timeline-task-per-conn-idle\""));
    // Rows measured under one condition share one line.
    let conditions = &md[md.find("## Conditions").expect("conditions")..];
    let conditions = &conditions[..conditions.find("\n## ").unwrap_or(conditions.len())];
    assert!(
        conditions.lines().filter(|l| l.starts_with("- ")).count() < 8,
        "{conditions}"
    );
}

#[test]
fn a_busy_run_is_marked_in_the_table_every_chart_that_plots_it_and_report_a_b() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = comparison(root.path(), true, false);
    let o = chatbench(&["report", path(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8_lossy(&read(&dir.join("comparison.md"))).into_owned();
    let p99 = md
        .lines()
        .find(|l| l.starts_with("| Delivery latency p99 |"))
        .expect("p99 row");
    assert!(p99.contains("(machine busy)"), "{p99}");
    for chart in [
        "latency_distribution",
        "cpu_per_delivery",
        "timeline-thread-pool-broadcast",
    ] {
        let svg = String::from_utf8_lossy(&read(&dir.join("charts").join(format!("{chart}.svg"))))
            .into_owned();
        assert!(svg.contains("(machine busy)"), "{chart} drops the mark");
    }
    // The quiet idle runs: the memory chart says its figures are clean.
    let memory =
        String::from_utf8_lossy(&read(&dir.join("charts/memory_per_connection.svg"))).into_owned();
    assert!(memory.contains("Every figure drawn here is clean"));
    // report A B, run against run: B's latency carries the mark.
    let runs = dir.join("runs");
    let a = runs.join("20261127T185911Z-task-per-conn-quick-broadcast");
    let b = runs.join("20261127T185921Z-thread-pool-quick-broadcast");
    let o = chatbench(&["report", path(&a), path(&b)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("| latency p99 |"))
        .expect("p99 row");
    assert!(line.contains("(machine busy)"), "{line}");
    // report A B, comparison against comparison: the table's marks.
    let o = chatbench(&["report", path(&dir), path(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("| thread-pool |") && l.contains("(machine busy)")),
        "{out}"
    );
}

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), read(&p)));
            }
        }
    }
    out.sort();
    out
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git is needed for this test");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn report_on_a_committed_folder_changes_nothing_and_says_what_it_cannot_draw() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = comparison(root.path(), false, false);
    // As a compare wrote it, then committed without the timeseries (as the baselines were).
    let o = chatbench(&["report", path(&dir)]);
    assert_eq!(o.status.code(), Some(2), "incomplete: refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("incomplete") && err.contains("timeseries.csv") && err.contains("--out"),
        "{err}"
    );
    git(root.path(), &["init", "-q"]);
    git(root.path(), &["add", "."]);
    git(root.path(), &["commit", "-qm", "baseline"]);
    let before = snapshot(&dir);
    let o = chatbench(&["report", path(&dir)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is committed") && err.contains("--out NEW"),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "the committed folder changed");
    // --out NEW: the rebuild goes there, says which charts it could not draw and why, and
    // still draws the others; the committed folder is untouched.
    let new = root.path().join("rebuilt");
    let o = chatbench(&["report", path(&dir), "--out", path(&new)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("chart not drawn: timeline-task-per-conn-idle")
            && err.contains("timeseries.csv"),
        "{err}"
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "--out wrote into the committed folder"
    );
    assert!(git(root.path(), &["status", "--porcelain", "--", "cmp"]).is_empty());
    let page = String::from_utf8_lossy(&read(&new.join("report.html"))).into_owned();
    assert!(
        page.contains("id=\"latency_distribution\""),
        "drawable charts drawn"
    );
    assert!(
        page.contains("Charts not drawn"),
        "the page lists what it could not draw"
    );
    // Links from the new folder reach the runs' files.
    let href = page
        .split("href=\"")
        .skip(1)
        .filter_map(|h| h.split('"').next())
        .find(|h| h.ends_with("summary.json"))
        .expect("a link to a summary");
    assert!(
        new.join(href).is_file(),
        "{href} does not resolve from {}",
        new.display()
    );
    // An existing, non-empty --out is refused.
    let o = chatbench(&["report", path(&dir), "--out", path(&new)]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_tiny_comparison_is_labelled_in_the_title_the_table_and_every_chart() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = comparison(root.path(), true, true);
    let o = chatbench(&["report", path(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8_lossy(&read(&dir.join("comparison.md"))).into_owned();
    assert!(
        md.lines()
            .next()
            .is_some_and(|l| l.contains("(tiny: not meaningful)")),
        "title: {md}"
    );
    assert!(
        md.contains("| question (tiny: not meaningful) |"),
        "table: {md}"
    );
    let page = String::from_utf8_lossy(&read(&dir.join("report.html"))).into_owned();
    assert!(
        page.contains("<title>chatbench comparison — suite quick (tiny: not meaningful)</title>")
    );
    let mut charts = 0;
    for e in std::fs::read_dir(dir.join("charts"))
        .expect("charts")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "svg") {
            charts += 1;
            let svg = String::from_utf8_lossy(&read(&e.path())).into_owned();
            assert!(
                svg.contains("(tiny: not meaningful)"),
                "{}",
                e.path().display()
            );
        }
    }
    assert!(charts >= 9, "{charts} charts");
}

#[test]
fn input_errors_exit_2_and_say_the_os_error_once() {
    let root = tempfile::tempdir().expect("tempdir");
    // A folder without runs/.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = chatbench(&["report", path(&empty)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    // A run whose summary.json is not one.
    let dir = comparison(root.path(), true, false);
    let broken = dir.join("runs/20261127T185910Z-task-per-conn-quick-idle/summary.json");
    std::fs::write(&broken, b"{ not json").expect("write");
    let o = chatbench(&["report", path(&dir)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("summary.json"), "{err}");
}

/// The Claims section of a comparison.md: from its heading to the next section.
fn claims_section(md: &str) -> &str {
    let at = md
        .find("## Claims")
        .unwrap_or_else(|| panic!("no Claims section:\n{md}"));
    let rest = &md[at..];
    &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)]
}

/// A comparison judged with `--claims FILE` keeps the file's text as `claims.toml`, so a later
/// `report DIR` rebuilds the same Claims section after the file changed or went, and says it
/// used that copy. A folder without the copy (written before it was kept) says which file to
/// give.
#[test]
fn a_rebuild_judges_the_claims_copy_the_folder_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = comparison(root.path(), true, false);
    let claims = root.path().join("design-doc.toml");
    let text = "[[claim]]\nid = \"p99\"\ntext = \"p99 under 100 ms\"\nsource = \"our design doc\"\n\
         columns = [\"task-per-conn\"]\nfigure = \"p99_latency\"\nop = \"<\"\nvalue = 100.0\nunit = \"ms\"\n";
    std::fs::write(&claims, text).expect("write");
    let o = chatbench(&["report", path(&dir), "--claims", path(&claims)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("claims.toml")).expect("claims.toml kept"),
        text
    );
    let md = String::from_utf8_lossy(&read(&dir.join("comparison.md"))).into_owned();
    let json: serde_json::Value =
        serde_json::from_slice(&read(&dir.join("comparison.json"))).expect("json");
    // The file changes (a claim refuted now), then goes: the rebuild judges the kept copy.
    std::fs::write(&claims, text.replace("100.0", "0.001")).expect("alter");
    std::fs::remove_file(&claims).expect("delete");
    let other = root.path().join("other");
    let o = chatbench(&["report", path(&dir), "--out", path(&other)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "claims judged from {}, the copy of {}",
            dir.join("claims.toml").display(),
            claims.display()
        )),
        "{err}"
    );
    assert!(!err.contains("give --claims"), "{err}");
    // The same section, its links to the runs going through OTHER's path to DIR.
    let rebuilt = String::from_utf8_lossy(&read(&other.join("comparison.md"))).into_owned();
    assert!(claims_section(&md).contains("](runs/"), "{md}");
    assert_eq!(
        claims_section(&rebuilt).replace("](../cmp/", "]("),
        claims_section(&md)
    );
    let rebuilt_json: serde_json::Value =
        serde_json::from_slice(&read(&other.join("comparison.json"))).expect("json");
    assert_eq!(
        rebuilt_json["claims"]
            .to_string()
            .replace("\"../cmp/", "\""),
        json["claims"].to_string()
    );
    assert_eq!(json["claims"]["judged"][0]["verdict"], "holds", "{json:#}");
    // A folder without its copy: the rebuild cannot judge the same file, and says which.
    std::fs::remove_file(dir.join("claims.toml")).expect("remove the copy");
    let o = chatbench(&["report", path(&dir)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("give --claims {}", claims.display())),
        "{err}"
    );
}
