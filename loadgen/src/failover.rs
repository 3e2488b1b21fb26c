//! What a node loss cost (the `failover` section of `summary.json`): the loss timeline the
//! engine records when a scenario kills a node, and the pure computation of the figures from
//! it, the per-second latency histograms and the reconnect counters.
//!
//! Periods: *before* = window start → kill, *during* = kill → every client of the killed node
//! back (its last reconnect; the window's end if they never all came back), *after* = the rest
//! of the window. Latency per period merges the per-second histograms whose second lies in it
//! (a second that straddles a boundary counts as *during*). Loss per period is by intended send
//! time, in [`LossTimeline::BUCKET`] buckets; *during* starts [`LOSS_LEAD`] before the kill,
//! because messages sent just before it were still in flight through the killed node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chatbench_model::failover::{FailoverOutcome, LossCount};
use chatbench_model::results::Percentiles;
use hdrhistogram::Histogram;

use chatbench_model::hist::new_hist;

/// Messages sent this long before the kill count as lost *during* the failover (they were in
/// flight through the node that died).
pub const LOSS_LEAD: Duration = Duration::from_secs(1);

/// p99 counts as recovered once [`P99_RECOVERY_STREAK`] seconds in a row have their p99 within
/// this factor of *before*.
pub const P99_RECOVERY_FACTOR: f64 = 2.0;

/// Seconds in a row within the factor that make a recovery.
pub const P99_RECOVERY_STREAK: usize = 3;

/// Expected and delivered in-window messages by intended send time (bounded: one pair of
/// counters per [`LossTimeline::BUCKET`] of the window; later times land in the last bucket).
#[derive(Debug)]
pub struct LossTimeline {
    expected: Vec<AtomicU64>,
    delivered: Vec<AtomicU64>,
}

impl LossTimeline {
    /// Bucket width.
    pub const BUCKET: Duration = Duration::from_millis(100);

    /// Buckets covering a window of `measure`.
    pub fn new(measure: Duration) -> LossTimeline {
        let n = (measure.as_micros() / Self::BUCKET.as_micros()) as usize + 1;
        LossTimeline {
            expected: (0..n).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, offset_us: u64) -> usize {
        let i = (offset_us / Self::BUCKET.as_micros() as u64) as usize;
        i.min(self.expected.len() - 1)
    }

    /// A message sent `offset_us` after the window opened, expected by `readers` members.
    pub fn add_expected(&self, offset_us: u64, readers: u64) {
        self.expected[self.slot(offset_us)].fetch_add(readers, Ordering::Relaxed);
    }

    /// A unique in-window delivery of a message sent `offset_us` after the window opened.
    pub fn add_delivered(&self, offset_us: u64) {
        self.delivered[self.slot(offset_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// (expected, lost) of messages sent in `[from, to)` (offsets from the window's start),
    /// and of the rest.
    pub fn split(&self, from: Duration, to: Duration) -> (LossCount, LossCount) {
        let mut inside = LossCount::default();
        let mut outside = LossCount::default();
        for (i, (e, d)) in self.expected.iter().zip(&self.delivered).enumerate() {
            let at = Self::BUCKET * i as u32;
            let (e, d) = (e.load(Ordering::Relaxed), d.load(Ordering::Relaxed));
            let c = if at + Self::BUCKET > from && at < to {
                &mut inside
            } else {
                &mut outside
            };
            c.expected += e;
            c.lost += e.saturating_sub(d);
        }
        (inside, outside)
    }
}

/// One second of the time series: its span (seconds since the run started) and the latency
/// of every delivery recorded in it.
pub struct SecondHist {
    /// Start of the second.
    pub from_s: f64,
    /// End of the second.
    pub to_s: f64,
    /// Deliveries in it.
    pub hist: Histogram<u64>,
}

/// What [`compute`] needs.
pub struct FailoverInput<'a> {
    /// Killed node id and pid.
    pub node: u32,
    /// Its pid.
    pub pid: Option<u32>,
    /// Kill time, seconds since the run started.
    pub kill_s: f64,
    /// Window start and end, seconds since the run started.
    pub window_s: (f64, f64),
    /// Clients on the node just before the kill.
    pub clients_on_node: u64,
    /// Counter increases since the kill: reconnects, attempts, failures.
    pub reconnects: u64,
    /// Attempts.
    pub attempts: u64,
    /// Failures.
    pub failures: u64,
    /// Time of the last reconnect, seconds since the run started (if any after the kill).
    pub last_reconnect_s: Option<f64>,
    /// Per-second latency histograms of the run.
    pub seconds: &'a [SecondHist],
    /// The loss timeline.
    pub loss: Option<&'a LossTimeline>,
    /// Per-connection reconnect times.
    pub reconnect_time: Option<Percentiles>,
    /// Supervisor restarts of the node and the first restart's time.
    pub restarts: u32,
    /// Restart time, ms.
    pub restart_ms: Option<u64>,
}

fn p99_of<'a>(it: impl Iterator<Item = &'a SecondHist>) -> Option<u64> {
    let mut h = new_hist();
    for s in it {
        let _ = h.add(&s.hist);
    }
    (!h.is_empty()).then(|| h.value_at_quantile(0.99))
}

/// The failover figures.
pub fn compute(i: &FailoverInput<'_>) -> FailoverOutcome {
    let all_back = i.reconnects >= i.clients_on_node;
    let back_s = if all_back {
        Some(i.last_reconnect_s.unwrap_or(i.kill_s).max(i.kill_s))
    } else {
        None
    };
    let end_of_during = back_s.unwrap_or(i.window_s.1);
    // A small tolerance: tick times are taken a few ms after the second's boundary.
    let eps = 0.005;
    let in_window =
        |s: &&SecondHist| s.from_s >= i.window_s.0 - eps && s.to_s <= i.window_s.1 + 0.5;
    let before = p99_of(
        i.seconds
            .iter()
            .filter(in_window)
            .filter(|s| s.to_s <= i.kill_s + eps),
    );
    let during = p99_of(
        i.seconds
            .iter()
            .filter(in_window)
            .filter(|s| s.to_s > i.kill_s + eps && s.from_s < end_of_during),
    );
    let after = p99_of(
        i.seconds
            .iter()
            .filter(in_window)
            .filter(|s| s.from_s >= end_of_during && s.to_s > i.kill_s + eps),
    );
    // Recovery: from the kill to the start of the first run of P99_RECOVERY_STREAK seconds
    // (fewer at the window's end) all within the factor — robust to a lone later spike on a
    // shared machine. Seconds without deliveries are neither good nor bad, but a run needs one
    // good second.
    let p99_recovered_ms = before.and_then(|b| {
        let limit = (b as f64 * P99_RECOVERY_FACTOR).max(1.0);
        let later: Vec<&SecondHist> = i
            .seconds
            .iter()
            .filter(in_window)
            .filter(|s| s.to_s > i.kill_s + eps)
            .collect();
        let ok =
            |s: &SecondHist| s.hist.is_empty() || (s.hist.value_at_quantile(0.99) as f64) <= limit;
        (0..later.len()).find_map(|k| {
            let run = &later[k..(k + P99_RECOVERY_STREAK).min(later.len())];
            let good = run.iter().all(|s| ok(s)) && run.iter().any(|s| !s.hist.is_empty());
            good.then(|| (later[k].from_s - i.kill_s).max(0.0) * 1000.0)
        })
    });
    let (during_loss, outside_loss) = match i.loss {
        Some(t) => {
            let from = Duration::try_from_secs_f64((i.kill_s - i.window_s.0).max(0.0))
                .unwrap_or_default()
                .saturating_sub(LOSS_LEAD);
            let to = Duration::try_from_secs_f64((end_of_during - i.window_s.0).max(0.0))
                .unwrap_or_default();
            t.split(from, to)
        }
        None => (LossCount::default(), LossCount::default()),
    };
    FailoverOutcome {
        node: i.node,
        pid: i.pid,
        at_s: i.kill_s,
        at_window_s: i.kill_s - i.window_s.0,
        clients_on_node: i.clients_on_node,
        reconnects: i.reconnects,
        reconnect_attempts: i.attempts,
        reconnect_failures: i.failures,
        all_back,
        all_back_ms: back_s.map(|b| (b - i.kill_s) * 1000.0),
        reconnect_time_us: i.reconnect_time.clone(),
        during: during_loss,
        outside: outside_loss,
        steady_loss_ratio: if outside_loss.expected == 0 {
            0.0
        } else {
            outside_loss.lost as f64 / outside_loss.expected as f64
        },
        p99_before_us: before,
        p99_during_us: during,
        p99_after_us: after,
        p99_recovery_factor: P99_RECOVERY_FACTOR,
        p99_recovered_ms,
        restarts: i.restarts,
        restart_ms: i.restart_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(from: f64, values: &[u64]) -> SecondHist {
        let mut hist = new_hist();
        for &v in values {
            chatbench_model::hist::record(&mut hist, v);
        }
        SecondHist {
            from_s: from,
            to_s: from + 1.0,
            hist,
        }
    }

    fn input<'a>(seconds: &'a [SecondHist], loss: Option<&'a LossTimeline>) -> FailoverInput<'a> {
        FailoverInput {
            node: 1,
            pid: Some(42),
            kill_s: 13.0,
            window_s: (10.0, 20.0),
            clients_on_node: 5,
            reconnects: 5,
            attempts: 7,
            failures: 0,
            last_reconnect_s: Some(14.5),
            seconds,
            loss,
            reconnect_time: None,
            restarts: 1,
            restart_ms: Some(80),
        }
    }

    #[test]
    fn periods_split_at_the_kill_and_the_last_reconnect() {
        // Window 10..20 s, kill at 13 s, all back at 14.5 s.
        let seconds: Vec<SecondHist> = (9..20)
            .map(|t| {
                let v = match t {
                    13 | 14 => 50_000,
                    15 => 3_000,
                    _ => 1_000,
                };
                second(f64::from(t), &[v; 10])
            })
            .collect();
        let f = compute(&input(&seconds, None));
        assert!(f.all_back);
        assert_eq!(f.all_back_ms, Some(1500.0));
        assert_eq!(f.p99_before_us, Some(1_000));
        assert_eq!(f.p99_during_us.map(|v| v / 1000), Some(50));
        assert_eq!(f.p99_after_us.map(|v| v / 100), Some(30));
        // 15..16 is at 3x before (limit 2x): recovered from 16 s, 3 s after the kill.
        assert_eq!(f.p99_recovered_ms, Some(3000.0));
        assert_eq!(f.at_window_s, 3.0);
    }

    #[test]
    fn a_lone_later_spike_does_not_undo_a_recovery_but_a_short_dip_is_not_one() {
        let p99s = |bad: &[i32]| -> Vec<SecondHist> {
            (10..20)
                .map(|t| {
                    second(
                        f64::from(t),
                        &[if bad.contains(&t) { 9_000 } else { 1_000 }],
                    )
                })
                .collect()
        };
        // Bad 13, 14, then a lone spike at 18: recovered from 15.
        let s = p99s(&[13, 14, 18]);
        assert_eq!(compute(&input(&s, None)).p99_recovered_ms, Some(2000.0));
        // Bad 13, good 14, bad 15: 14 alone is no recovery; 16, 17, 18 are.
        let s = p99s(&[13, 15]);
        assert_eq!(compute(&input(&s, None)).p99_recovered_ms, Some(3000.0));
        // Bad to the end: none.
        let s = p99s(&[13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(compute(&input(&s, None)).p99_recovered_ms, None);
        // Good from the kill on: 0.
        let s = p99s(&[]);
        assert_eq!(compute(&input(&s, None)).p99_recovered_ms, Some(0.0));
    }

    #[test]
    fn not_all_back_extends_during_to_the_window_end() {
        let seconds: Vec<SecondHist> = (10..20).map(|t| second(f64::from(t), &[1_000])).collect();
        let mut i = input(&seconds, None);
        i.reconnects = 3;
        i.failures = 2;
        let f = compute(&i);
        assert!(!f.all_back);
        assert_eq!(f.all_back_ms, None);
        assert_eq!(f.p99_after_us, None);
        assert_eq!(f.p99_recovered_ms, Some(0.0), "never above the factor");
    }

    #[test]
    fn loss_is_split_by_intended_time() {
        let t = LossTimeline::new(Duration::from_secs(10));
        // 10 messages per 100 ms bucket, 4 readers each → 40 expected per bucket.
        for b in 0..100u64 {
            for _ in 0..10 {
                t.add_expected(b * 100_000 + 5, 4);
            }
            let lost_here = if (25..35).contains(&b) { 7 } else { 0 };
            for _ in 0..(40 - lost_here) {
                t.add_delivered(b * 100_000 + 5);
            }
        }
        // Kill at 3 s into the window (lead 1 s → from 2 s), all back at 4.5 s.
        let seconds = [];
        let f = compute(&input(&seconds, Some(&t)));
        assert_eq!(f.during.lost, 70);
        assert_eq!(f.during.expected, 25 * 40);
        assert_eq!(f.outside.lost, 0);
        assert_eq!(f.outside.expected, 75 * 40);
        assert_eq!(f.steady_loss_ratio, 0.0);
        // Past the end lands in the last bucket, never out of bounds.
        t.add_expected(u64::MAX, 1);
        let (a, b) = t.split(Duration::ZERO, Duration::from_secs(100));
        assert_eq!(a.expected + b.expected, 100 * 40 + 1);
    }
}
