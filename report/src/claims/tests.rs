//! Claims judged from comparisons built from the recorded fixture summaries
//! (`report/tests/data/<step>/summary.json`), altered per column: every verdict at least once.

use std::path::{Path, PathBuf};

use chatbench_model::results::OtherLoad;

use super::*;
use crate::comparison::{build, Step};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture(step: &str, edit: impl FnOnce(&mut chatbench_model::results::Summary)) -> StepResult {
    let mut r = StepResult::load(&data().join(step)).expect("fixture summary");
    if let StepResult::Ran { summary, .. } = &mut r {
        edit(summary);
    }
    r
}

/// `elixir`: 12 KiB per connection, p50 1.5 ms, nobody else lost to the crash.
/// `node-ws`: 5000 connections held, 399 others lost to the crash, its broadcast step run on a
/// busy machine. `socketio`: its idle run invalid (generator-bound).
fn comparison() -> (Comparison, Results) {
    let mut r = Results::new();
    let elixir = "elixir".to_string();
    let node = "node-ws".to_string();
    let sio = "socketio".to_string();
    r.insert(
        (elixir.clone(), Step::Idle),
        fixture("idle", |s| {
            if let Some(m) = s.target_resources.memory_per_conn.as_mut() {
                m.user_bytes_per_conn = 12.0 * 1024.0;
            }
        }),
    );
    r.insert(
        (elixir.clone(), Step::Broadcast),
        fixture("broadcast", |_| {}),
    );
    r.insert((elixir.clone(), Step::Poison), fixture("poison", |_| {}));
    r.insert((node.clone(), Step::Idle), fixture("idle", |_| {}));
    r.insert(
        (node.clone(), Step::Broadcast),
        fixture("broadcast", |s| {
            s.target_resources.other_load = Some(OtherLoad {
                cpus: vec![1],
                busy_cores: 0.9,
                other_cores: 0.6,
                steal_cores: 0.0,
            });
        }),
    );
    r.insert(
        (node.clone(), Step::Poison),
        fixture("poison", |s| {
            if let Some(f) = s.fault.as_mut() {
                f.others_lost = 399;
                f.open_after = 0;
            }
        }),
    );
    r.insert(
        (sio.clone(), Step::Idle),
        fixture("idle", |s| {
            s.valid = false;
            s.invalid_reasons = vec!["generator CPU-bound: test".into()];
        }),
    );
    let c = build("quick", &[elixir, node, sio], &r, &data());
    (c, r)
}

fn claims(text: &str) -> ClaimsFile {
    parse("test.toml", text).expect("claims")
}

fn verdict<'s>(s: &'s ClaimsSection, id: &str, column: &str) -> &'s Judged {
    s.judged
        .iter()
        .find(|j| j.id == id && j.column == column)
        .unwrap_or_else(|| panic!("{id} / {column} in {:#?}", s.judged))
}

#[test]
fn the_shipped_claims_parse_and_are_judged_by_the_fixtures() {
    let (mut c, r) = comparison();
    attach(&mut c, None, &r).expect("shipped claims");
    let s = c
        .claims
        .as_ref()
        .expect("the shipped claims apply: elixir is a column");
    assert_eq!(s.file, ELIXIR_VS_NODE_PATH);
    assert_eq!(s.facts.cores, Some(2));
    assert_eq!(s.facts.descriptors, Some(20_000));

    // Refuted, with the measured value and the ratio to the claimed one: 12 KiB against ~2.
    let kb = verdict(s, "elixir-2kb-per-connection", "elixir");
    assert_eq!(kb.verdict, Verdict::Refuted, "{kb:?}");
    assert_eq!(kb.measured, Some(12.0));
    assert_eq!(kb.ratio, Some(6.0));
    assert!(kb.why.contains("×6.00 the claimed value"), "{}", kb.why);
    assert_eq!(kb.cell_source.as_deref(), Some("idle/summary.json"));

    // Holds: the fixture's crash took nobody else; node-ws's took 399.
    let iso = verdict(s, "elixir-crash-isolated", "elixir");
    assert_eq!(iso.verdict, Verdict::Holds, "{iso:?}");
    assert_eq!(iso.measured, Some(0.0));
    assert_eq!(iso.ratio, None, "no ratio to a claimed 0");
    let crash = verdict(s, "node-uncaught-crashes-process", "node-ws");
    assert_eq!(crash.verdict, Verdict::Holds, "{crash:?}");
    assert_eq!(crash.measured, Some(399.0));

    // Not measured, saying why: the descriptor cap, too few connections, no such column, no
    // figure that can decide it.
    let millions = verdict(s, "elixir-millions-per-server", "elixir");
    assert_eq!(millions.verdict, Verdict::NotMeasured);
    assert_eq!(
        millions.why,
        "this machine caps a process at 20000 descriptors; the claim is about 1000000"
    );
    let ten_k = verdict(s, "node-struggles-at-10k", "node-ws");
    assert_eq!(ten_k.verdict, Verdict::NotMeasured);
    assert!(
        ten_k.why.contains("held 5000 connections for node-ws"),
        "{}",
        ten_k.why
    );
    let cluster = verdict(s, "elixir-distribution-without-redis", "elixir-cluster");
    assert_eq!(cluster.verdict, Verdict::NotMeasured);
    assert_eq!(cluster.why, "no elixir-cluster column in this comparison");
    let sup = verdict(s, "elixir-supervisors-restart", "elixir");
    assert_eq!(sup.verdict, Verdict::NotMeasured);
    assert!(sup.why.contains("OTP"), "{}", sup.why);

    // Not judgeable: the other column's cell was measured on a busy machine; an invalid cell.
    let gc = verdict(s, "elixir-no-global-gc-pauses", "elixir");
    assert_eq!(gc.verdict, Verdict::NotJudgeable, "{gc:?}");
    assert!(
        gc.why
            .contains("node-ws's cell was measured on a busy machine"),
        "{}",
        gc.why
    );
    let sio = verdict(s, "node-100kb-per-connection", "socketio");
    assert_eq!(sio.verdict, Verdict::NotJudgeable, "{sio:?}");
    assert!(sio.why.contains("invalid"), "{}", sio.why);
    // node-ws holds 4.62 KiB per connection: refuted, ratio ≈ 0.046.
    let node_kb = verdict(s, "node-100kb-per-connection", "node-ws");
    assert_eq!(node_kb.verdict, Verdict::Refuted);
    let ratio = node_kb.ratio.expect("ratio");
    assert!((ratio - 4734.976 / 1024.0 / 100.0).abs() < 1e-3, "{ratio}");

    // Every (claim, column) of the file is there, in file order.
    let file = parse(ELIXIR_VS_NODE_PATH, ELIXIR_VS_NODE).expect("parse");
    let n: usize = file.claim.iter().map(|c| c.columns.len()).sum();
    assert_eq!(s.judged.len(), n);
}

#[test]
fn a_column_ratio_holds_or_is_refuted_by_the_factor() {
    let (c, r) = comparison();
    let text = |op: &str, factor: f64| {
        format!(
            "[[claim]]\nid = \"x\"\ntext = \"t\"\nsource = \"s\"\ncolumns = [\"elixir\"]\nfigure = \"memory_user_per_conn\"\nop = \"{op}\"\nagainst = \"node-ws\"\nfactor = {factor}\n"
        )
    };
    let facts = Facts::of(&r);
    // elixir 12 KiB against node-ws 4.62 KiB: ≥ 2× holds, ≤ 1× is refuted.
    let s = judge("t", &claims(&text(">=", 2.0)), &c, &facts);
    assert_eq!(s.judged[0].verdict, Verdict::Holds, "{:?}", s.judged[0]);
    let s = judge("t", &claims(&text("<=", 1.0)), &c, &facts);
    let j = &s.judged[0];
    assert_eq!(j.verdict, Verdict::Refuted, "{j:?}");
    let want = 12.0 / (4734.976 / 1024.0);
    assert!((j.ratio.expect("ratio") - want).abs() < 1e-6, "{j:?}");
    assert!(j.claimed.contains("node-ws: 4.62 KiB"), "{}", j.claimed);
}

#[test]
fn needs_cores_say_what_the_machine_lacks() {
    let (c, r) = comparison();
    let f = claims(
        "[[claim]]\nid = \"cores\"\ntext = \"uses all cores\"\nsource = \"s\"\ncolumns = [\"elixir\"]\nfigure = \"server_cpu_cores\"\nop = \">=\"\nvalue = 3.5\nunit = \"cores\"\nneeds = { cores = 4 }\n",
    );
    let s = judge("t", &f, &c, &Facts::of(&r));
    assert_eq!(s.judged[0].verdict, Verdict::NotMeasured);
    assert_eq!(s.judged[0].why, "needs ≥ 4 cores; this machine has 2");
}

#[test]
fn malformed_claims_are_refused_saying_how_to_fix_them() {
    let bad = |body: &str| {
        let text = format!(
            "[[claim]]\nid = \"b\"\ntext = \"t\"\nsource = \"s\"\ncolumns = [\"elixir\"]\n{body}"
        );
        parse("bad.toml", &text).expect_err(body).to_string()
    };
    let e = bad("figure = \"nope\"\nop = \"<\"\nvalue = 1.0\nunit = \"ms\"\n");
    assert!(e.contains("not a catalogue key"), "{e}");
    let e = bad("figure = \"p99_latency\"\nop = \"<\"\nvalue = 1.0\nunit = \"µs\"\n");
    assert!(e.contains("cells are in ms"), "{e}");
    let e = bad("figure = \"p99_latency\"\nop = \"<\"\n");
    assert!(e.contains("exactly one of `value`"), "{e}");
    let e = bad("figure = \"generator_cpu_cores\"\nop = \"<\"\nvalue = 1.0\nunit = \"cores\"\n");
    assert!(e.contains("no cells in the comparison table"), "{e}");
    let e = bad("figure = \"p99_latency\"\nop = \"=\"\nvalue = 1.0\nunit = \"ms\"\n");
    assert!(e.contains("bad.toml: not a claims file"), "{e}");
    assert!(e.contains("docs/claims.md"), "{e}");
}

#[test]
fn the_section_follows_the_table_in_the_markdown_and_the_page_and_goes_into_the_json() {
    let (mut c, r) = comparison();
    attach(&mut c, None, &r).expect("claims");
    let md = crate::comparison::render_markdown(&c, |_| None);
    let claims_at = md.find("## Claims").expect("a Claims section");
    let table_at = md.find("| question |").expect("the table");
    let verdict_at = md.find("## Verdict").expect("the verdict");
    assert!(
        verdict_at < table_at && table_at < claims_at,
        "verdict, table, then the claims"
    );
    assert!(
        md.contains("| “each WebSocket connection runs in its own isolated process (~2KB memory)”"),
        "{md}"
    );
    assert!(md.contains("**refuted** (×6.00 the claimed value)"), "{md}");
    assert!(
        md.contains("**not measured** — this machine caps a process at 20000 descriptors"),
        "{md}"
    );
    let page = crate::html::render(&c, &r, &crate::charts::Drawn::default(), None, |_| None);
    let h2 = page.find("<h2>Claims</h2>").expect("claims on the page");
    assert!(
        h2 > page.find("<th>question</th>").expect("table"),
        "after the table"
    );
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["claims"]["file"], ELIXIR_VS_NODE_PATH);
    let back: Comparison = serde_json::from_value(json).expect("read back");
    assert_eq!(back.claims, c.claims);
}

#[test]
fn the_shipped_claims_apply_only_to_comparisons_with_their_columns() {
    let (mut c, r) = comparison();
    c.archs = vec!["epoll".into()];
    attach(&mut c, None, &r).expect("claims");
    assert_eq!(c.claims, None);
    // A user's file always applies; its claims on absent columns are not measured.
    attach(
        &mut c,
        Some((
            "mine.toml",
            "[[claim]]\nid = \"m\"\ntext = \"t\"\nsource = \"design doc\"\ncolumns = [\"elixir\"]\nfigure = \"p99_latency\"\nop = \"<\"\nvalue = 5.0\nunit = \"ms\"\nneeds = { connections = 1000000 }\n",
        )),
        &r,
    )
    .expect("claims");
    let s = c.claims.expect("section");
    assert_eq!(s.judged[0].verdict, Verdict::NotMeasured);
    // The missing column is the reason, before what the claim needs of it.
    assert_eq!(s.judged[0].why, "no elixir column in this comparison");
}
