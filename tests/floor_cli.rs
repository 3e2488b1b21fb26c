//! End-to-end test of `chatbench floor`: the plain receiver and sender over loopback, then the
//! generator (`chatbench run --serve epoll`) at the same small load; the table and its JSON
//! hold both figures and their ratio. Bad options are usage errors (exit 2).

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};

/// `chatbench floor ARGS --out OUT`.
fn floor(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .arg("floor")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run chatbench floor")
}

/// The smallest load the tests use: two rooms of 10, 1,000 deliveries/s, 1 s.
const SMALL_LOAD: [&str; 8] = [
    "--connections",
    "20",
    "--members",
    "10",
    "--rate",
    "1000",
    "--seconds",
    "1",
];

/// `OUT/floor.json`, parsed.
fn floor_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("floor.json")).expect("floor.json"))
        .expect("json")
}

#[test]
fn floor_measures_the_plain_pair_and_the_generator_at_one_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("floor");
    let o = floor(
        &[
            "--connections",
            "60",
            "--members",
            "10",
            "--rate",
            "1500",
            "--seconds",
            "2",
        ],
        &out,
    );
    // 4 would mean the sending side could not keep 1,500 frames/s: not on loopback.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| 1500 |"), "{stdout}");
    let j = floor_json(&out);
    let row = &j["rows"][0];
    let plain = &row["plain"][0];
    // 1,500 frames/s for 2 s, every one received.
    assert_eq!(plain["frames"], 3000, "{j:#}");
    let recv = row["recv_floor_us"].as_f64().expect("a receive floor");
    let gen = row["generator_us"].as_f64().expect("a generator figure");
    assert!(recv > 0.0 && gen > 0.0, "{j:#}");
    let ratio = row["ratio"].as_f64().expect("a ratio");
    assert!((ratio - gen / recv).abs() < 1e-9, "{j:#}");
    // The generator delivered the asked load with no loss (else the row would be invalid).
    let g = &row["generator"][0];
    assert_eq!(g["loss_ratio"], 0.0, "{j:#}");
    assert!(g["delivered_per_s"].as_f64().unwrap() > 1400.0, "{j:#}");
    // The generator's receive threads and pacer, per delivery: parts of its figure (present;
    // their size is the machine's).
    let part = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k}: {j:#}"));
    assert!(
        part("receive_us") >= 0.0 && part("pacer_us") >= 0.0,
        "{j:#}"
    );
    assert!(g["receive_us"].is_f64() && g["pacer_us"].is_f64(), "{j:#}");
    let md = std::fs::read_to_string(out.join("floor.md")).expect("floor.md");
    assert!(
        md.contains("| its receive threads (÷ floor) | its pacer (÷ floor) |"),
        "{md}"
    );
    // The plainest client sends the generator's messages, into the plainest server
    // (`client_send`) and into the generator's own server (`target`, `chatbench serve --arch
    // epoll`): 1,500 deliveries/s in rooms of 10 is 1500 / 9 messages/s from 6 senders, for
    // 2 s, each sender 55 or 56 by its random phase; every message written, fanned out to the
    // room's 9 others and read.
    for step in ["client_send", "target"] {
        let run = &row[step][0];
        let messages = run["messages"].as_u64().expect("messages");
        assert!((330..=336).contains(&messages), "{step}: {j:#}");
        assert!(
            run["invalid"].as_array().is_some_and(|i| i.is_empty()),
            "{step}: {j:#}"
        );
    }
    let cs = &row["client_send"][0];
    let per_message = cs["send_us_per_message"].as_f64().expect("per message");
    let cs_floor = row["client_send_floor_us"]
        .as_f64()
        .expect("a client send floor");
    assert!((cs_floor - per_message / 9.0).abs() < 1e-9, "{j:#}");
    let whole = row["whole_ratio"].as_f64().expect("a whole ratio");
    assert!((whole - gen / (recv + cs_floor)).abs() < 1e-9, "{j:#}");
    assert!(
        md.contains(
            "| receive, in this loop | generator ÷ (receive + client send floor) | its pacer ÷ client send floor |"
        ),
        "{md}"
    );
    // By default the plain receiver runs again, its writer at the server's own pace in the
    // generator run just before: the server's CPU µs per delivery.
    let paced = &row["paced"][0];
    assert_eq!(paced["frames"], 3000, "{j:#}");
    let server_us = g["server_cores"].as_f64().expect("server cores") * 1e6
        / g["delivered_per_s"].as_f64().expect("delivered");
    let pace = paced["pace_us"].as_f64().expect("a pace");
    // (to the nanosecond the pace is kept in)
    assert!(
        (pace - server_us).abs() < 2e-3,
        "{pace} vs {server_us}: {j:#}"
    );
    let paced_floor = row["paced_floor_us"].as_f64().expect("a paced floor");
    let paced_ratio = row["paced_ratio"].as_f64().expect("a paced ratio");
    assert!((paced_ratio - gen / paced_floor).abs() < 1e-9, "{j:#}");
    assert_eq!(j["writer_pace"], "server", "{j:#}");
    assert!(
        md.contains("| deliveries/s | writer's pace | receive floor, paced |"),
        "{md}"
    );
    // The plainest client of the generator's own server.
    let t = &row["target"][0];
    assert!(t["server_cores"].as_f64().is_some_and(|c| c > 0.0), "{j:#}");
    let t_recv = row["target_recv_us"].as_f64().expect("a target receive");
    let t_send = row["target_send_us"].as_f64().expect("a target send");
    assert!(
        (t_send - t["send_us_per_message"].as_f64().expect("per message") / 9.0).abs() < 1e-9,
        "{j:#}"
    );
    let t_ratio = row["target_ratio"].as_f64().expect("a target ratio");
    assert!((t_ratio - gen / (t_recv + t_send)).abs() < 1e-9, "{j:#}");
    assert!(
        md.contains("against `chatbench serve --arch epoll` at the generator's load")
            && md.contains("| generator ÷ (receive + send) | its receive threads ÷ receive |"),
        "{md}"
    );
}

#[test]
fn floor_without_the_generator_paces_its_writer_only_when_told_how() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |pace: &'static str| {
        let mut a = SMALL_LOAD.to_vec();
        a.extend(["--no-generator", "--writer-pace", pace]);
        a
    };
    // `server` needs a server: no paced run, no second table.
    let out = dir.path().join("server");
    let o = floor(&args("server"), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j = floor_json(&out);
    assert!(j["rows"][0].get("paced").is_none(), "{j:#}");
    // Nor a plainest client of a server.
    assert!(j["rows"][0].get("target").is_none(), "{j:#}");
    // A fixed pace: one paced run per turn, at that pace.
    let out = dir.path().join("fixed");
    let o = floor(&args("20"), &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j = floor_json(&out);
    assert_eq!(j["rows"][0]["paced"][0]["pace_us"], 20.0, "{j:#}");
    assert_eq!(j["rows"][0]["paced"][0]["frames"], 1000, "{j:#}");
    // Nonsense is a usage error naming the flag.
    let o = floor(&args("fast"), &dir.path().join("bad"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--writer-pace"));
}

#[test]
fn floor_rejects_a_room_size_that_does_not_divide_the_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = floor(&["--connections", "45", "--members", "10"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--members"));
}

#[test]
fn generator_settings_reach_the_generators_run_and_the_table_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("floor");
    let mut args = SMALL_LOAD.to_vec();
    args.extend(["--generator-set", "client.receive_path=\"tokio\""]);
    let o = floor(&args, &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = std::fs::read_to_string(out.join("floor.md")).expect("floor.md");
    assert!(
        md.contains("The generator ran with `--set client.receive_path=\"tokio\"`"),
        "{md}"
    );
    // The run took the setting: no receiver rode the epoll path (18 would have by default).
    let runs = out.join("generator-1000-0").join("runs");
    let run = std::fs::read_dir(&runs)
        .expect("the generator's runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path();
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("summary.json")).expect("summary.json"),
    )
    .expect("json");
    assert!(s["connections"]["epoll_receivers"].is_null(), "{s:#}");
}

#[test]
fn floor_refuses_a_generator_setting_outside_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = floor(&["--generator-set", "connections=5"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--generator-set \"connections=5\""), "{err}");
    assert!(err.contains("client.KEY=VALUE"), "{err}");
}
