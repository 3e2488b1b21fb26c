//! End-to-end tests of `chatbench run`: the real binary starts the real task-per-conn server
//! (`--serve`), drives it with the real load generator on 127.0.0.1, and the tests check the
//! results files: exact delivery counts, zero loss, the summary against its JSON Schema. Bad
//! input (scenario, target, plan) must give a specific error and exit code, and no results.

mod common;
use common::*;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn run_ok(args: &[&str]) -> Output {
    let _turn = serial();
    chatbench()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

#[test]
fn smoke_run_delivers_exactly_the_expected_count() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(&[
        "run",
        "--serve",
        "task-per-conn",
        "--scenario",
        "scenarios/smoke.toml",
        "--out",
        out_dir.path().to_str().expect("utf-8 path"),
        "--progress",
        "lines",
    ]);
    let s = assert_finished(&out, out_dir.path());
    let dir = only_run_dir(out_dir.path());
    assert_eq!(s["status"], "complete", "{s:#}");
    // The server's wait for a CPU in the window, from its threads' schedstat, and on the console.
    let wait = &s["target_resources"]["run_queue_wait"];
    let (seconds, share) = (wait["seconds"].as_f64(), wait["share"].as_f64());
    assert!(
        seconds.is_some_and(|v| v >= 0.0) && share.is_some_and(|v| v >= 0.0),
        "{wait:#}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waited for a CPU"),
        "{}",
        text(&out)
    );
    let planned = s["connections"]["planned"].as_u64().expect("planned");
    assert_eq!(
        s["connections"]["ready"].as_u64(),
        Some(planned),
        "every connection ready"
    );
    let m = &s["messages"];
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0, "messages were sent");
    // smoke: every room has members_per_room readers, so expected = sent × (members − 1).
    let members = s["scenario"]["text"]
        .as_str()
        .expect("text")
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("members_per_room").map(|v| {
                v.trim_start_matches([' ', '='])
                    .trim()
                    .parse::<u64>()
                    .expect("number")
            })
        })
        .expect("members_per_room in the scenario");
    assert_eq!(m["expected"].as_u64(), Some(sent * (members - 1)));
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(m["lost"], 0);
    assert_eq!(m["duplicated"], 0);
    assert_eq!(m["extra"], 0);
    assert_eq!(
        s["latency_us"]["count"], m["delivered"],
        "one latency sample per window delivery"
    );
    assert!(
        s["target_resources"]["memory_per_conn"].is_object(),
        "server sampled: {s:#}"
    );
    // The figures name the build they came from: `--version`'s commit, not only the working
    // directory's (which a binary built elsewhere, or before a checkout moved, does not share).
    let version = chatbench().arg("--version").output().expect("--version");
    let version = String::from_utf8_lossy(&version.stdout);
    let build = s["provenance"]["build_commit"]
        .as_str()
        .expect("provenance.build_commit");
    assert!(
        !build.is_empty() && version.contains(&format!("(commit {build})")),
        "summary's build {build} against {version}"
    );
    // The other files.
    let hgrm = std::fs::read_to_string(dir.join("latency.hgrm")).expect("latency.hgrm");
    assert!(hgrm.contains("Total count"), "{hgrm}");
    let csv = std::fs::read_to_string(dir.join("timeseries.csv")).expect("timeseries.csv");
    assert!(
        csv.starts_with("t_s,phase,metric,value"),
        "{}",
        &csv[..csv.len().min(200)]
    );
    assert!(csv.contains("delivered_per_s") && csv.contains("target_rss_bytes"));
    // The server's wait for a CPU, second by second, never negative.
    let waits: Vec<f64> = csv
        .lines()
        .filter_map(|l| l.split_once(",target_run_queue_wait_ms_per_s,"))
        .map(|(_, v)| v.parse().expect("a number"))
        .collect();
    assert!(!waits.is_empty(), "no wait rows: {csv}");
    assert!(waits.iter().all(|&w| w >= 0.0), "{waits:?}");
    latency_log_re_percentiles_to_the_summary(&dir, &s);
    // The human summary.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("complete") && stdout.contains("latency"),
        "{stdout}"
    );
}

/// `latency.hlog` read back: one interval a second (and the tail after the last tick), and its
/// `window` intervals, added, give the summary's latency figures exactly.
fn latency_log_re_percentiles_to_the_summary(dir: &Path, s: &serde_json::Value) {
    use chatbench_model::hlog;
    let bytes = std::fs::read(dir.join(hlog::HLOG_FILE)).expect("latency.hlog");
    let intervals = hlog::read("latency.hlog", &bytes).expect("a valid interval log");
    let window: Vec<_> = intervals.iter().filter(|i| i.window).collect();
    let measured_s = s["phases"]["measure"].as_f64().unwrap_or(0.0);
    assert!(
        window.len() as f64 >= measured_s.floor(),
        "about one interval a second: {} window intervals for a {measured_s} s window",
        window.len()
    );
    assert_eq!(
        window.len() * 2,
        intervals.len(),
        "each second has an untagged and a window interval"
    );
    for pair in window.windows(2) {
        assert!(pair[0].start < pair[1].start, "intervals in time order");
    }
    let h = hlog::sum(&intervals, true);
    let l = &s["latency_us"];
    assert_eq!(Some(h.len()), l["count"].as_u64(), "count: {l:#}");
    for (q, key) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        assert_eq!(
            Some(h.value_at_quantile(q)),
            l[key].as_u64(),
            "{key} re-percentiled from latency.hlog: {l:#}"
        );
    }
    assert_eq!(Some(h.max()), l["max"].as_u64(), "max: {l:#}");
    assert!(
        hlog::sum(&intervals, false).len() >= h.len(),
        "the untagged intervals hold every delivery, the window's among them"
    );
}

#[test]
fn bad_scenario_is_a_usage_error_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"bad\"\nconnections = 10\nconections = 5\n").expect("write");
    let out_root = dir.path().join("out");
    let out = run_ok(&[
        "run",
        "--serve",
        "task-per-conn",
        "--scenario",
        path.to_str().expect("path"),
        "--out",
        out_root.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3") && err.contains("connections"),
        "{err}"
    );
    assert!(!out_root.exists(), "no results for a bad scenario");
}

/// Runs `chatbench ARGS`, killed (by its pid) if it has not ended within `limit`: a hang fails
/// the test instead of hanging it.
fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let _turn = serial();
    let mut child = chatbench()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatbench");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "chatbench {args:?} did not end within {limit:?}: {}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn scenario_values_the_engine_cannot_represent_are_usage_errors_at_their_line() {
    // Each once validated, then: a panic (exit 101), a generator spinning past Ctrl-C, or a
    // worker panic under a run that still said "complete" (exit 0).
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (line, key)) in [
        ("connect_timeout = \"500000000000years\"", "connect_timeout"),
        ("measure = \"500000000000years\"", "measure"),
        ("rate_per_sender = 1e300", "rate_per_sender"),
        ("ramp_rate = 1e-300", "ramp_rate"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("s{i}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"bounds\"\nconnections = 20\nrooms = 2\nmembers_per_room = 10\n\
                 warmup = \"0s\"\nmeasure = \"1s\"\ncooldown = \"0s\"\nsettle = \"0s\"\n{line}\n"
            ),
        )
        .expect("write");
        let out_root = dir.path().join(format!("out{i}"));
        let out = run_bounded(
            &[
                "run",
                "--serve",
                "task-per-conn",
                "--scenario",
                path.to_str().expect("path"),
                "--out",
                out_root.to_str().expect("path"),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(2), "{line}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("s{i}.toml:9")) && err.contains(key),
            "{line}: {err}"
        );
        assert!(!out_root.exists(), "no results for a refused scenario");
    }
}

#[test]
fn unreachable_target_is_reported_before_any_load() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let out = run_ok(&[
        "run",
        "--target",
        &url,
        "--scenario",
        "scenarios/smoke.toml",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains(&port.to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        0,
        "no partial results"
    );
}

/// A `--serve-cmd` server that exits at once (a bad flag, a missing file) is reported at once,
/// with its exit status and its last output, not after the 15 s wait for its address line, even
/// when a process it started keeps its stdout open; exit 3, no results.
#[test]
fn serve_cmd_that_exits_at_once_is_reported_at_once_with_its_status_and_last_words() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let script = dir.path().join("server.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 30 &\necho $! > {}\necho 'starting' >&2\n\
             echo 'cannot open /nope.conf' >&2\nexit 3\n",
            pid_file.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out_root = dir.path().join("out");
    let started = Instant::now();
    let out = run_bounded(
        &[
            "run",
            "--serve-cmd",
            script.to_str().expect("path"),
            "--scenario",
            "scenarios/smoke.toml",
            "--out",
            out_root.to_str().expect("path"),
        ],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    // The background sleep the script started, ended by its pid.
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: kill(2) on the pid of the sleep this test's script started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited before announcing its address (exit status: 3;")
            && err.contains("starting\ncannot open /nope.conf"),
        "{err}"
    );
    assert!(!err.contains("within 15s"), "{err}");
    assert!(
        !out_root.exists(),
        "no results for a server that did not start"
    );
}

/// A `--serve-cmd` server that announces an address it does not listen on (another port) is
/// named as such: "connection refused at ADDR (the address the server announced)", not the
/// `--target` hint to start `chatbench serve` there; exit 3, no results.
#[test]
fn serve_cmd_that_listens_elsewhere_than_it_announced_is_named() {
    use std::os::unix::fs::PermissionsExt;
    // A port nobody listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("server.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho '127.0.0.1:{port} listening'\nexec sleep 30\n"),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out_root = dir.path().join("out");
    let out = run_bounded(
        &[
            "run",
            "--serve-cmd",
            script.to_str().expect("path"),
            "--serve-path",
            "/ws",
            "--scenario",
            "scenarios/smoke.toml",
            "--out",
            out_root.to_str().expect("path"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "connection refused at 127.0.0.1:{port} (the address the {} server announced)",
            script.display()
        )),
        "{err}"
    );
    assert!(!err.contains("chatbench serve --listen"), "{err}");
    assert!(
        !out_root.exists(),
        "no results for a server that was never reached"
    );
}

/// An output folder that cannot be written, or a `--server-pid` that names no process, is found
/// before any load is sent (not after the whole run): exit 2, the flag named.
#[test]
fn unwritable_out_and_dead_server_pid_are_refused_before_any_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the output folder should be: nothing can be created under it (even as root).
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").expect("write");
    let out = run_ok(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--scenario",
        "scenarios/smoke.toml",
        "--out",
        blocker.join("runs").to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--out") && err.contains("cannot write"),
        "{err}"
    );
    assert!(
        !err.contains("unreachable"),
        "checked before the target: {err}"
    );

    // A PID that cannot exist (above the kernel's pid_max of 2^22).
    let out = run_ok(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--server-pid",
        "99999999",
        "--scenario",
        "scenarios/smoke.toml",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--server-pid 99999999"), "{err}");
}

#[test]
fn plan_over_the_descriptor_limit_names_the_limit_and_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "connections=5000000",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("5000000") && err.to_lowercase().contains("limit"),
        "{err}"
    );
}

#[test]
fn target_that_closes_every_connection_ends_with_a_verdict() {
    // A TCP server that accepts and closes at once: every handshake fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    listener.set_nonblocking(true).expect("nonblocking");
    let t = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("ws://{addr}/ws");
    let out = run_ok(&[
        "run",
        "--target",
        &url,
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "connections=50",
        "--set",
        "rooms=5",
        "--set",
        "members_per_room=10",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = t.join();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let s = summary(&only_run_dir(dir.path()));
    check_schema(&s);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["valid"], false);
    let errors: u64 = s["connections"]["errors"]
        .as_object()
        .expect("errors")
        .values()
        .map(|v| v.as_u64().expect("n"))
        .sum();
    assert_eq!(errors, 50, "every attempt failed and was counted: {s:#}");
}

#[test]
fn ctrl_c_stops_gracefully_and_keeps_what_was_measured() {
    stop_mid_window_keeps_what_was_measured(libc::SIGINT, 130);
}

/// What `timeout`, `docker stop` and Kubernetes send: the same graceful stop as Ctrl-C, exit 143.
#[test]
fn sigterm_stops_gracefully_and_keeps_what_was_measured() {
    stop_mid_window_keeps_what_was_measured(libc::SIGTERM, 143);
}

/// Sends `signal` to a run in its measurement window and checks that it stopped promptly with
/// `code`, its results written and nothing lost.
fn stop_mid_window_keeps_what_was_measured(signal: libc::c_int, code: i32) {
    let _turn = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = chatbench()
        .args([
            "run",
            "--serve",
            "task-per-conn",
            "--scenario",
            "scenarios/smoke.toml",
            "--set",
            "measure=\"60s\"",
            "--progress",
            "lines",
            "--out",
            dir.path().to_str().expect("path"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the run is in its measurement phase (its progress lines say so).
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("progress reached measure");
        let measuring = line.contains("[measure");
        seen.push(line);
        if measuring {
            break;
        }
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let started = Instant::now();
    let status = child.wait().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped promptly"
    );
    assert_eq!(status.code(), Some(code), "{seen:?}");
    let s = summary(&only_run_dir(dir.path()));
    check_schema(&s);
    assert_eq!(s["status"], "interrupted");
    let m = &s["messages"];
    assert!(m["sent"].as_u64().expect("sent") > 0, "{m:#}");
    assert_eq!(
        m["lost"], 0,
        "the drain after Ctrl-C lets in-flight messages arrive: {m:#}"
    );
}

#[test]
fn slow_consumers_do_not_cost_the_other_members_anything() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    // Two rooms of 10, 60 KB bodies at 50 msg/s per room (3 MB/s per member): within seconds
    // the slow members' socket buffers, then their bounded server queues (16 frames), fill up
    // and the server drops for them, and only for them.
    let out = run_ok(&[
        "run",
        "--serve",
        "task-per-conn",
        "--server-arg=--outbound-queue=16",
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "connections=20",
        "--set",
        "rooms=2",
        "--set",
        "members_per_room=10",
        "--set",
        "rate_per_sender=50.0",
        "--set",
        "slow_consumer_share=0.3",
        "--set",
        "payload_bytes=60000",
        "--out",
        out_dir.path().to_str().expect("utf-8 path"),
        "--progress",
        "quiet",
    ]);
    let s = assert_finished(&out, out_dir.path());
    let m = &s["messages"];
    assert!(m["slow_consumers"].as_u64().expect("slow") > 0, "{m:#}");
    assert!(m["expected"].as_u64().expect("expected") > 0);
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(m["lost"], 0);
    let drops =
        &s["target_resources"]["server_metrics"]["chatbench_drops_total{reason=\"queue_full\"}"];
    assert!(
        drops.as_f64().expect("server drop counter") > 0.0,
        "the server dropped for the slow members: {s:#}"
    );
}

#[test]
fn a_crashing_handler_in_task_per_conn_takes_only_its_own_connection() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(&[
        "run",
        "--serve",
        "task-per-conn",
        "--server-arg=--fault-injection",
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "poison_after=\"1s\"",
        "--out",
        out_dir.path().to_str().expect("utf-8 path"),
        "--progress",
        "quiet",
    ]);
    let s = assert_finished(&out, out_dir.path());
    let f = &s["fault"];
    assert_eq!(f["poisoner"], "a0.c0", "{s:#}");
    assert_eq!(f["poisoner_lost"], true, "{f:#}");
    assert_eq!(f["others_lost"], 0, "{f:#}");
    let panics =
        &s["target_resources"]["server_metrics"]["chatbench_disconnects_total{reason=\"panic\"}"];
    assert_eq!(panics.as_f64(), Some(1.0), "{s:#}");
}

/// `--version` names the commit the binary was built from (build.rs), so a result can be traced
/// to its build even when the checkout has moved on since.
#[test]
fn version_names_the_build_commit() {
    let out = chatbench()
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("git rev-parse (the tests run in a git checkout)");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(
        text.starts_with(&format!("chatbench {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains(&head), "{text} should name HEAD {head}");
}

/// Completions and the man page come from the flags' own definition and name every subcommand.
#[test]
fn completions_and_man_page_cover_every_subcommand() {
    let bash = chatbench()
        .args(["completions", "bash"])
        .output()
        .expect("completions");
    assert!(bash.status.success());
    let bash = String::from_utf8_lossy(&bash.stdout);
    let man = chatbench().arg("man").output().expect("man");
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH chatbench 1"),
        "{man}"
    );
    for sub in [
        "serve", "run", "compare", "cluster", "report", "gate", "agent",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
        assert!(man.contains(sub), "man page lacks {sub}");
    }
    let bad = chatbench()
        .args(["completions", "tcsh"])
        .output()
        .expect("completions tcsh");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `--metrics-listen`: while the run goes, `GET /metrics` gives its per-second figures as
/// Prometheus text. A non-loopback address needs
/// `--metrics-public`, and is refused before any load.
#[test]
fn metrics_listen_serves_the_live_figures_while_the_run_goes() {
    use std::io::{BufRead, BufReader, Read, Write};
    let out_dir = tempfile::tempdir().expect("tempdir");
    let refused = chatbench()
        .args([
            "run",
            "--target",
            "ws://127.0.0.1:9/ws",
            "--scenario",
            "scenarios/smoke.toml",
        ])
        .args(["--out", out_dir.path().to_str().expect("utf-8 path")])
        .args(["--metrics-listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("--metrics-public"),
        "{}",
        text(&refused)
    );
    let _turn = serial();
    let mut child = chatbench()
        .args([
            "run",
            "--serve",
            "task-per-conn",
            "--scenario",
            "scenarios/smoke.toml",
        ])
        .args(["--out", out_dir.path().to_str().expect("utf-8 path")])
        .args(["--progress", "quiet", "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let addr = first
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics URL first: {first:?}"))
        .to_string();
    let get = |addr: &str| -> String {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // Poll (bounded) until a second of the measurement window has been published.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = get(&addr);
        if seen.contains("chatbench_run_delivered_per_s{phase=\"measure\"}") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
    assert!(
        seen.contains("chatbench_run_delivered_per_s{phase=\"measure\"}"),
        "no measure second published: {seen}"
    );
    let sent: f64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("chatbench_run_messages_sent_total "))
        .and_then(|v| v.parse().ok())
        .expect("messages_sent_total");
    assert!(sent > 0.0, "{seen}");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let status = child.wait().expect("wait");
    assert!(matches!(status.code(), Some(0 | 4)), "{status:?}: {rest}");
}
