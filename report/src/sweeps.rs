//! The sweeps of the full suite and its repeated steps, read from results files: what each
//! point of a sweep measured (`idle-ramp`, `capacity`, `load-sweep`, `room-size`), where a sweep
//! stopped and why, the memory slope over the idle ramp, the knee of the load sweep, and which of
//! several repeats of a step stands for it in the table (the median).
//!
//! A point "passes" when its run is valid (not generator-bound), every planned connection was
//! ready, the server closed none, and — for the steps that carry messages — nothing was lost and
//! p99 stayed within the SLO. A sweep stops at its first point that does not pass; the figure a
//! sweep gives is its last passing point, and the reason it stopped is said beside it. A
//! generator-bound point stops a sweep too, but it is named as the generator's limit, never as
//! the server's.

use chatbench_model::results::{RunStatus, Summary};
use chatbench_model::scenario::Scenario;

use crate::comparison::{Results, Runs, Step, StepResult};

/// The default latency SLO of the full suite's sweeps: p99 at most this many milliseconds.
pub const DEFAULT_SLO_P99_MS: f64 = 100.0;

/// The x value of a sweep point: connections (idle-ramp, capacity), offered deliveries per
/// second (load-sweep), members per room (room-size); `None` when the summary does not say.
pub fn x_of(step: Step, s: &Summary) -> Option<f64> {
    let scenario = || Scenario::parse(&s.scenario.text, "summary.json scenario").ok();
    match step {
        Step::IdleRamp | Step::Capacity | Step::Idle => Some(s.connections.planned as f64),
        Step::LoadSweep => scenario().map(|sc| sc.expected_deliveries_per_sec()),
        Step::RoomSize => scenario().map(|sc| f64::from(sc.members_per_room)),
        Step::Scaling => Some(nodes_of(s) as f64),
        Step::Broadcast | Step::Poison | Step::NodeLoss | Step::Slowloris => None,
    }
}

/// Where the server processes of a run ran: each node's own CPUs, or one set they all share
/// (with one server CPU more processes cannot add capacity, and this says so).
pub fn server_cpus(s: &Summary) -> String {
    let slices: Vec<&str> = s
        .target
        .settings
        .get("node_cpus")
        .map(|t| t.split("; ").collect())
        .unwrap_or_default();
    match (&s.target.cpu_affinity, slices.as_slice()) {
        (None, _) => "server processes not pinned".into(),
        (Some(_), [first, rest @ ..]) if rest.iter().any(|r| r != first) => {
            format!(
                "each server process pinned to its own CPUs ({})",
                slices.join("; ")
            )
        }
        (Some(c), _) => format!(
            "every server process shares the server's {} CPU(s) {c:?}{}",
            c.len(),
            if c.len() == 1 {
                ": with one server CPU more processes cannot add capacity"
            } else {
                ""
            }
        ),
    }
}

/// How many server processes a run had (`nodes` in the target's settings; 1 when absent).
pub fn nodes_of(s: &Summary) -> u32 {
    s.target
        .settings
        .get("nodes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Whether the step carries messages whose loss and latency a point is judged on.
fn carries_messages(step: Step) -> bool {
    matches!(
        step,
        Step::Capacity | Step::LoadSweep | Step::RoomSize | Step::Scaling
    )
}

/// What the server's side says about connections it did not take: its descriptors against the
/// per-process limit, and its own counters of failed accepts and refusals (`/metrics`).
fn server_side(s: &Summary) -> Option<String> {
    let r = &s.target_resources;
    let mut parts = Vec::new();
    if let (Some(fds), Some(limit)) = (r.open_fds, s.provenance.rlimit_nofile.as_ref()) {
        // The server inherits the run's limit and raises its soft limit to the hard one.
        if fds + 64 >= limit.hard && s.connections.ready > 0 {
            parts.push(format!(
                "out of descriptors ({fds} open of a {} per-process limit, {:.1} per connection)",
                limit.hard,
                fds as f64 / s.connections.ready as f64
            ));
        }
    }
    if let Some(m) = &r.server_metrics {
        for (key, what) in [
            ("chatbench_accept_errors_total", "failed accepts"),
            (
                "chatbench_pool_rejections_total",
                "refused with 503 (no pool worker)",
            ),
            ("chatbench_handshake_timeouts_total", "handshake timeouts"),
        ] {
            if let Some(&n) = m.get(key).filter(|&&n| n > 0.0) {
                parts.push(format!("{n:.0} {what}"));
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Why a point does not pass, or `None` when it does. `slo_p99_ms` applies to the steps that
/// carry messages.
pub fn check(step: Step, s: &Summary, slo_p99_ms: f64) -> Option<String> {
    if !s.valid {
        let why = if s.invalid_reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", s.invalid_reasons.join("; "))
        };
        return Some(format!("generator-bound{why}"));
    }
    match s.status {
        RunStatus::Failed => return Some("the run failed: nothing measured".into()),
        RunStatus::Interrupted => return Some("the run was interrupted".into()),
        RunStatus::Complete => {}
    }
    let c = &s.connections;
    if c.ready < c.planned {
        let errors: u64 = c.errors.values().sum();
        let kinds: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        return Some(format!(
            "{} of {} connections ready ({errors} errors{}){}",
            c.ready,
            c.planned,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {}", kinds.join(", "))
            },
            server_side(s)
                .map(|e| format!("; server side: {e}"))
                .unwrap_or_default()
        ));
    }
    let closed: u64 = c.closed_by_server.values().sum();
    if closed > 0 {
        return Some(format!("the server closed {closed} connections"));
    }
    if carries_messages(step) {
        let m = &s.messages;
        if m.lost > 0 {
            return Some(format!("{} of {} messages lost", m.lost, m.expected));
        }
        match &s.latency_us {
            None if m.expected > 0 => return Some("no message was delivered".into()),
            Some(l) if l.p99 as f64 / 1000.0 > slo_p99_ms => {
                return Some(format!(
                    "p99 {:.1} ms > SLO {slo_p99_ms} ms",
                    l.p99 as f64 / 1000.0
                ))
            }
            _ => {}
        }
    }
    None
}

/// One point of a sweep as the table and charts see it.
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    /// The point's x (see [`x_of`]); `None` for a step that could not be run.
    pub x: Option<f64>,
    /// Its run.
    pub result: &'a StepResult,
}

/// Where a sweep got to.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    /// The last point that passed, if any.
    pub held: Option<Point<'a>>,
    /// The first point that did not pass and why (the sweep stopped there).
    pub stopped: Option<(Point<'a>, String)>,
    /// Points run.
    pub tried: usize,
}

impl Verdict<'_> {
    /// Whether the sweep stopped because of the generator (the figure is then a lower bound
    /// set by the tool, not a property of the server).
    pub fn stopped_by_generator(&self) -> bool {
        self.stopped.as_ref().is_some_and(
            |(p, _)| matches!(p.result, StepResult::Ran { summary, .. } if !summary.valid),
        )
    }
}

/// Walks a sweep's points in the order they ran, up to the first that does not pass.
pub fn evaluate(step: Step, points: &[StepResult], slo_p99_ms: f64) -> Verdict<'_> {
    let mut held = None;
    for r in points {
        match r {
            StepResult::Failed { reason } => {
                return Verdict {
                    held,
                    stopped: Some((Point { x: None, result: r }, reason.clone())),
                    tried: points.len(),
                }
            }
            StepResult::Ran { summary, .. } => {
                let p = Point {
                    x: x_of(step, summary),
                    result: r,
                };
                if let Some(why) = check(step, summary, slo_p99_ms) {
                    return Verdict {
                        held,
                        stopped: Some((p, why)),
                        tried: points.len(),
                    };
                }
                held = Some(p);
            }
        }
    }
    Verdict {
        held,
        stopped: None,
        tried: points.len(),
    }
}

/// A least-squares line through the origin-free points `(x, y)`: slope, intercept.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// Which memory figure a slope is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// RSS of the server process.
    User,
    /// Kernel slab, host-wide (points whose socket count did not grow as expected are left out).
    Kernel,
}

/// The memory slope over an idle ramp: bytes per added connection, fitted by least squares to
/// the total memory the connections added at each passing point (so a heap that grows in steps
/// does not make the figure depend on one N). Returns (slope, points used, smallest and largest N).
pub fn memory_slope(
    points: &[StepResult],
    kind: MemoryKind,
    slo_p99_ms: f64,
) -> Option<(f64, usize, u64, u64)> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|r| match r {
            StepResult::Ran { summary, .. }
                if check(Step::IdleRamp, summary, slo_p99_ms).is_none() =>
            {
                let m = summary.target_resources.memory_per_conn.as_ref()?;
                let n = m.connections as f64;
                match kind {
                    MemoryKind::User => Some((n, m.user_bytes_per_conn * n)),
                    MemoryKind::Kernel if m.sockets_as_expected => {
                        Some((n, m.kernel_slab_bytes_per_conn * n))
                    }
                    MemoryKind::Kernel => None,
                }
            }
            _ => None,
        })
        .collect();
    let (slope, _) = fit_line(&xy)?;
    let lo = xy.iter().map(|p| p.0 as u64).min()?;
    let hi = xy.iter().map(|p| p.0 as u64).max()?;
    Some((slope, xy.len(), lo, hi))
}

/// The run that stands for a repeated step in the table: the median by p99 of the usable
/// repeats for the broadcast step (the lower middle one of an even count), the last run
/// otherwise. Sweep steps keep their last run (their figures come from [`evaluate`]).
pub fn representative(step: Step, runs: &[StepResult]) -> Option<&StepResult> {
    if step == Step::Broadcast {
        let mut usable: Vec<(&StepResult, u64)> = runs
            .iter()
            .filter_map(|r| match r {
                StepResult::Ran { summary, .. }
                    if summary.valid && summary.status != RunStatus::Failed =>
                {
                    summary.latency_us.as_ref().map(|l| (r, l.p99))
                }
                _ => None,
            })
            .collect();
        if !usable.is_empty() {
            usable.sort_by_key(|&(_, p99)| p99);
            return Some(usable[(usable.len() - 1) / 2].0);
        }
    }
    runs.last()
}

/// The table's view of a suite: one run per (architecture, step), see [`representative`].
pub fn headline(runs: &Runs) -> Results {
    runs.iter()
        .filter_map(|(k, v)| representative(k.1, v).map(|r| (k.clone(), r.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The recorded broadcast summary, changed by `f`.
    fn run(f: impl FnOnce(&mut Summary)) -> StepResult {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broadcast");
        let mut r = StepResult::load(&dir).expect("fixture");
        if let StepResult::Ran { summary, .. } = &mut r {
            f(summary);
        }
        r
    }

    fn summary(r: &StepResult) -> &Summary {
        match r {
            StepResult::Ran { summary, .. } => summary,
            StepResult::Failed { .. } => panic!("failed fixture"),
        }
    }

    #[test]
    fn server_cpus_says_whether_nodes_share_or_own_their_cpus() {
        let shared = run(|s| {
            s.target.cpu_affinity = Some(vec![0]);
            s.target
                .settings
                .insert("node_cpus".into(), "0; 0; 0".into());
        });
        let t = server_cpus(summary(&shared));
        assert!(
            t.contains("shares the server's 1 CPU(s) [0]: with one server CPU"),
            "{t}"
        );
        let own = run(|s| {
            s.target.cpu_affinity = Some((0..4).collect());
            s.target
                .settings
                .insert("node_cpus".into(), "0,1; 2,3".into());
        });
        let t = server_cpus(summary(&own));
        assert_eq!(t, "each server process pinned to its own CPUs (0,1; 2,3)");
        let unpinned = run(|s| s.target.cpu_affinity = None);
        assert_eq!(
            server_cpus(summary(&unpinned)),
            "server processes not pinned"
        );
    }

    #[test]
    fn a_refused_step_names_what_the_server_ran_out_of() {
        let refused = run(|s| {
            s.connections.planned = 10_000;
            s.connections.ready = 9_989;
            s.connections.errors = [("handshake_status_503".to_string(), 11)].into();
            s.provenance.rlimit_nofile = Some(chatbench_model::provenance::NofileLimit {
                soft: 20_000,
                hard: 20_000,
                raised_from: 20_000,
            });
            s.target_resources.open_fds = Some(19_991);
            s.target_resources.server_metrics = Some(
                [
                    ("chatbench_accept_errors_total".to_string(), 98.0),
                    ("chatbench_pool_rejections_total".to_string(), 11.0),
                    ("chatbench_deliveries_total".to_string(), 5.0),
                ]
                .into(),
            );
        });
        let why = check(Step::Capacity, summary(&refused), 1e9).expect("refused");
        assert!(why.starts_with("9989 of 10000 connections ready (11 errors: handshake_status_503 11); server side: out of descriptors (19991 open of a 20000 per-process limit, 2.0 per connection), 98 failed accepts, 11 refused with 503"), "{why}");
        // Far from the limit and no server counters: no server-side clause.
        let short = run(|s| {
            s.connections.planned = s.connections.ready + 1;
            s.target_resources.open_fds = Some(100);
            s.target_resources.server_metrics = None;
        });
        let why = check(Step::Capacity, summary(&short), 1e9).expect("short");
        assert!(!why.contains("server side"), "{why}");
    }

    #[test]
    fn a_point_fails_for_each_reason_and_passes_otherwise() {
        let ok = run(|_| {});
        let p99_ms = summary(&ok).latency_us.as_ref().expect("latency").p99 as f64 / 1000.0;
        assert_eq!(check(Step::LoadSweep, summary(&ok), p99_ms + 1.0), None);
        let slo = check(Step::LoadSweep, summary(&ok), p99_ms / 2.0).expect("over the SLO");
        assert!(slo.contains("> SLO"), "{slo}");
        // The idle ramp carries no messages: latency and loss do not judge it.
        assert_eq!(check(Step::IdleRamp, summary(&ok), p99_ms / 2.0), None);
        let lost = run(|s| s.messages.lost = 3);
        assert!(check(Step::Capacity, summary(&lost), 1e9)
            .expect("lost")
            .contains("3 of"));
        let short = run(|s| {
            s.connections.ready = s.connections.planned - 5;
            s.connections.errors.insert("refused".into(), 5);
        });
        let why = check(Step::IdleRamp, summary(&short), 1e9).expect("short");
        assert!(why.contains("refused 5"), "{why}");
        let invalid = run(|s| {
            s.valid = false;
            s.invalid_reasons = vec!["generator CPU-bound".into()];
        });
        let why = check(Step::Capacity, summary(&invalid), 1e9).expect("invalid");
        assert!(why.starts_with("generator-bound"), "{why}");
    }

    #[test]
    fn a_sweep_stops_at_its_first_failing_point() {
        let points = vec![
            run(|s| s.connections.planned = s.connections.ready),
            run(|s| s.messages.lost = 1),
            run(|_| {}),
        ];
        let v = evaluate(Step::Capacity, &points, 1e9);
        assert!(std::ptr::eq(v.held.expect("held").result, &points[0]));
        let (p, why) = v.stopped.as_ref().expect("stopped");
        assert!(std::ptr::eq(p.result, &points[1]), "{why}");
        assert!(!v.stopped_by_generator());
        let generator = vec![run(|s| s.valid = false)];
        let v = evaluate(Step::Capacity, &generator, 1e9);
        assert!(v.held.is_none() && v.stopped_by_generator());
        let failed = vec![StepResult::Failed {
            reason: "server did not start".into(),
        }];
        let v = evaluate(Step::LoadSweep, &failed, 1e9);
        assert_eq!(v.stopped.expect("stopped").1, "server did not start");
    }

    #[test]
    fn the_median_repeat_stands_for_the_broadcast_step() {
        let with_p99 = |p99| {
            run(move |s| {
                if let Some(l) = s.latency_us.as_mut() {
                    l.p99 = p99;
                }
            })
        };
        let runs = vec![
            with_p99(900),
            with_p99(100),
            with_p99(500),
            run(|s| s.valid = false),
        ];
        let pick = representative(Step::Broadcast, &runs).expect("one");
        assert_eq!(summary(pick).latency_us.as_ref().expect("l").p99, 500);
        // Two usable: the lower one.
        let pick = representative(Step::Broadcast, &runs[..2]).expect("one");
        assert_eq!(summary(pick).latency_us.as_ref().expect("l").p99, 100);
    }

    #[test]
    fn fit_line_recovers_slope_and_intercept() {
        let pts = [
            (1000.0, 6e6 + 4600.0 * 1000.0),
            (5000.0, 6e6 + 4600.0 * 5000.0),
            (10000.0, 6e6 + 4600.0 * 10000.0),
        ];
        let (slope, intercept) = fit_line(&pts).expect("fit");
        assert!((slope - 4600.0).abs() < 1e-6, "{slope}");
        assert!((intercept - 6e6).abs() < 1e-3, "{intercept}");
        assert!(fit_line(&pts[..1]).is_none());
        assert!(fit_line(&[(5.0, 1.0), (5.0, 2.0)]).is_none());
    }
}
