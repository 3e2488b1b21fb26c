//! One run lifecycle, shared by the one-process run ([`crate::run`]), the agent
//! ([`crate::agent`]) and the coordinator ([`crate::coordinator`]): the timeline (connect, then
//! settle → warmup → measure → cooldown, with the scenario's lengths, written once), the engine
//! handle that a driver moves through it (start a plan, go at a time, enter a phase, stop and
//! hand back its figures), and the once-a-second figures with the time-series rows and the
//! progress line made from them.
//!
//! The drivers differ in where time comes from (a local loop, a coordinator's `go`, a fleet's
//! barrier) and in what they sample; what a phase change does to the engine, which rows a
//! second writes and how the progress line reads live here only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use crate::engine::{ramp, Phase, Shared};
use crate::pacer::PacerReport;
use crate::plan::Plan;
use crate::stats::Stats;
use crate::target::Target;
use chatbench_model::results::SeriesRow;
use chatbench_model::scenario::Scenario;
use chatbench_model::series;

/// Longest the engine's teardown waits for its connections to close.
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// The phases after connect and their lengths: the one description of a run's timeline.
/// Connect has a deadline, not a length (see [`Engine::connect_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Connected, not yet sending (memory settles).
    pub settle: Duration,
    /// Sending, before the window.
    pub warmup: Duration,
    /// The window that counts.
    pub measure: Duration,
    /// Senders stopped; receivers read stragglers.
    pub cooldown: Duration,
}

impl Timeline {
    /// The scenario's timeline.
    pub fn of(s: &Scenario) -> Timeline {
        Timeline {
            settle: s.settle,
            warmup: s.warmup,
            measure: s.measure,
            cooldown: s.cooldown,
        }
    }

    /// The edges of the sending phases when sending starts at `start`.
    pub fn from_go(&self, start: Instant) -> Edges {
        let measure = start + self.warmup;
        let cooldown = measure + self.measure;
        Edges {
            start,
            measure,
            cooldown,
            end: cooldown + self.cooldown,
        }
    }

    /// Longest the phases after connect take together.
    pub fn after_connect(&self) -> Duration {
        self.settle + self.warmup + self.measure + self.cooldown
    }
}

/// When each sending phase begins, once the start is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edges {
    /// Warmup begins (sending starts).
    pub start: Instant,
    /// Measure begins.
    pub measure: Instant,
    /// Cooldown begins (sending stops).
    pub cooldown: Instant,
    /// The run ends.
    pub end: Instant,
}

impl Edges {
    /// The phase the timeline is in at `now`: settle before the start, stop after the end.
    pub fn phase_at(&self, now: Instant) -> Phase {
        if now < self.start {
            Phase::Settle
        } else if now < self.measure {
            Phase::Warmup
        } else if now < self.cooldown {
            Phase::Measure
        } else if now < self.end {
            Phase::Cooldown
        } else {
            Phase::Stop
        }
    }

    /// The first edge after `now`, if any is left.
    pub fn next_after(&self, now: Instant) -> Option<Instant> {
        [self.start, self.measure, self.cooldown, self.end]
            .into_iter()
            .find(|t| *t > now)
    }
}

/// A running engine: the connection tasks of one plan, the ramp that opens them, and the pacer
/// thread once sending starts. Dropping it stops the ramp and the pacer; [`Engine::stop`]
/// also closes the connections.
pub struct Engine {
    shared: Arc<Shared>,
    phase_tx: watch::Sender<Phase>,
    phase: Phase,
    started: Instant,
    /// The ramp task, until its end has been read.
    ramp: Option<JoinHandle<()>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pacer_stop: Arc<AtomicBool>,
    pacer: Option<std::thread::JoinHandle<PacerReport>>,
    /// Whether a connection task's panic has been reported (one is enough to fail the run).
    task_panic_seen: bool,
}

/// What the engine's workers left when reaped: the pacer's report and the panics.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The pacer's report (`None` if it never ran, panicked, or was reaped before).
    pub pacer: Option<PacerReport>,
    /// Workers that panicked (the ramp, the pacer thread, a connection task), with what they
    /// said: a run with any fails, whatever it measured.
    pub panicked: Vec<String>,
}

/// The engine's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections open now.
    pub open: u64,
    /// Connection attempts so far.
    pub connect_attempts: u64,
    /// Failed attempts so far.
    pub connect_errors: u64,
    /// Connections the server closed so far.
    pub closed_by_server: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Connections that joined in time.
    pub ready: u64,
    /// Connections lost (reconnecting scenarios).
    pub disconnects: u64,
    /// Reconnects that succeeded.
    pub reconnects: u64,
    /// Connections given up on.
    pub reconnect_failures: u64,
}

impl Counts {
    /// The counters of the engine that `shared` belongs to, now.
    pub fn of(shared: &Shared) -> Counts {
        let st = &shared.stats;
        let c = &st.counters;
        Counts {
            open: c.open.load(Ordering::Relaxed).max(0) as u64,
            connect_attempts: Stats::get(&c.connect_attempts),
            connect_errors: st.connect_errors.total(),
            closed_by_server: st.closed_by_server.total(),
            sent: Stats::get(&c.sent),
            delivered: Stats::get(&c.delivered),
            ready: Stats::get(&c.ready),
            disconnects: Stats::get(&c.disconnects),
            reconnects: Stats::get(&c.reconnects),
            reconnect_failures: Stats::get(&c.reconnect_failures),
        }
    }
}

impl Engine {
    /// Starts a plan: the ramp opens its connections from now, in the connect phase.
    pub fn start(
        scenario: Arc<Scenario>,
        plan: Plan,
        targets: Vec<Target>,
        source_addrs: Vec<IpAddr>,
    ) -> Engine {
        let (shared, phase_tx) = Shared::new(scenario, plan, targets, source_addrs);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let ramp = tokio::spawn(ramp(shared.clone(), tasks.clone()));
        Engine {
            shared,
            phase_tx,
            phase: Phase::Connect,
            started,
            ramp: Some(ramp),
            tasks,
            pacer_stop: Arc::new(AtomicBool::new(false)),
            pacer: None,
            task_panic_seen: false,
        }
    }

    /// The state every connection shares (statistics, plan, scenario).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The phase the engine is in.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the ramp started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Connections in the plan.
    pub fn planned(&self) -> u64 {
        self.shared.plan.conns.len() as u64
    }

    /// Whether connecting is over at `now`: every planned connection has an outcome, or the
    /// connect deadline passed (it moves with the time the ramp was held back by
    /// `max_connecting`, within a bound).
    pub fn connect_done(&self, now: Instant) -> bool {
        let c = &self.shared.stats.counters;
        let n = self.planned();
        let held = Duration::from_micros(Stats::get(&c.ramp_held_us));
        Stats::get(&c.ready) + self.shared.stats.connect_errors.total() >= n
            || now >= self.started + self.shared.scenario.connect_deadline(n, held)
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts::of(&self.shared)
    }
}

impl Engine {
    /// Sending starts at `start`: fixes the measurement window, starts the pacer thread and
    /// enters warmup.
    pub fn go(&mut self, start: Instant) {
        self.shared.set_timeline(start);
        let paced = self.shared.paced_senders();
        let stop = self.pacer_stop.clone();
        self.pacer = std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                let report = crate::pacer::run(start, paced, stop.clone());
                // Its schedules end with the window: it stays until told to stop (cooldown),
                // so that the window's last reading of the generator's threads still finds it
                // (a thread gone by then is lost to the split by role, `crate::threads`).
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                report
            })
            .ok();
        self.enter(Phase::Warmup);
    }

    /// Enters `phase` and tells every connection. Leaving connect stops the ramp; cooldown (or
    /// later) stops the senders.
    pub fn enter(&mut self, phase: Phase) {
        if phase > Phase::Connect {
            self.abort_ramp();
        }
        if phase >= Phase::Cooldown {
            self.stop_sending();
        }
        self.phase = phase;
        let _ = self.phase_tx.send(phase);
    }

    /// Tells the pacer to stop waking senders (it ends at its next wake-up).
    pub fn stop_sending(&self) {
        self.pacer_stop.store(true, Ordering::Relaxed);
    }

    fn abort_ramp(&self) {
        if let Some(r) = &self.ramp {
            r.abort();
        }
    }

    /// Stops sending and reaps the workers that have ended, the connections staying open: the
    /// pacer's report (once), the ramp (stopped), the connection tasks that are over. Hands
    /// back the report and the panics found — the one place a worker's panic is collected,
    /// for the local run and the agent alike.
    pub async fn reap(&mut self) -> Reaped {
        self.stop_sending();
        self.abort_ramp();
        let mut reaped = Reaped::default();
        if let Some(ramp) = self.ramp.take() {
            if let Err(e) = ramp.await {
                reaped.panicked.extend(panic_message("the ramp", e));
            }
        }
        match self.pacer.take().map(|h| h.join()) {
            Some(Ok(report)) => reaped.pacer = Some(report),
            Some(Err(_)) => reaped.panicked.push("the pacer thread panicked".into()),
            None => {}
        }
        let ended: Vec<_> = self
            .tasks
            .lock()
            .map(|mut h| {
                let (ended, running) = std::mem::take(&mut *h)
                    .into_iter()
                    .partition(|t| t.is_finished());
                *h = running;
                ended
            })
            .unwrap_or_default();
        self.reap_tasks(futures_util::future::join_all(ended).await, &mut reaped);
        reaped
    }

    /// Records the first connection task's panic among `ended` (one says enough).
    fn reap_tasks(&mut self, ended: Vec<Result<(), JoinError>>, reaped: &mut Reaped) {
        if self.task_panic_seen {
            return;
        }
        let first = ended
            .into_iter()
            .filter_map(Result::err)
            .find_map(|e| panic_message("a connection task", e));
        self.task_panic_seen = first.is_some();
        reaped.panicked.extend(first);
    }

    /// Stops: every connection is told to close (waited for, bounded), the pacer and the ramp
    /// end. Hands back what [`Engine::reap`] has not already: the pacer's report and the
    /// panics.
    pub async fn stop(mut self) -> Reaped {
        self.enter(Phase::Stop);
        let mut reaped = self.reap().await;
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        if let Ok(ended) =
            tokio::time::timeout(TEARDOWN_WAIT, futures_util::future::join_all(tasks)).await
        {
            self.reap_tasks(ended, &mut reaped);
        }
        reaped
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.abort_ramp();
        self.stop_sending();
    }
}

/// What a worker's panic said, if `e` is a panic (a cancelled task is not one).
pub(crate) fn panic_message(what: &str, e: JoinError) -> Option<String> {
    let payload = e.try_into_panic().ok()?;
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "no message".into());
    Some(format!("{what} panicked: {text}"))
}

/// Per-second rates from running totals: what changed since the last second.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    at: Instant,
    sent: u64,
    delivered: u64,
    cpu_s: f64,
}

/// One second's rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Messages sent per second.
    pub sent_per_s: f64,
    /// Messages delivered per second.
    pub delivered_per_s: f64,
    /// CPU cores used (CPU seconds per second).
    pub cpu_cores: f64,
}

impl Rates {
    /// Counting from `at`, with the totals then.
    pub fn new(at: Instant, cpu_s: f64) -> Rates {
        Rates {
            at,
            sent: 0,
            delivered: 0,
            cpu_s,
        }
    }

    /// When the last second was taken.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The rates since the last call (or the start), given the totals at `now`.
    pub fn next(&mut self, now: Instant, sent: u64, delivered: u64, cpu_s: f64) -> Rate {
        let dt = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let r = Rate {
            sent_per_s: sent.saturating_sub(self.sent) as f64 / dt,
            delivered_per_s: delivered.saturating_sub(self.delivered) as f64 / dt,
            cpu_cores: (cpu_s - self.cpu_s).max(0.0) / dt,
        };
        *self = Rates {
            at: now,
            sent,
            delivered,
            cpu_s,
        };
        r
    }
}

/// The target's process figures of one second (summed over its processes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetSecond {
    /// CPU cores used.
    pub cpu_cores: f64,
    /// Threads.
    pub threads: u64,
    /// Open descriptors.
    pub open_fds: u64,
    /// Its threads' wait for a CPU, milliseconds per second, when readable.
    pub run_queue_wait_ms_per_s: Option<f64>,
}

/// Everything one second of a run records: one time-series row per figure, and the progress
/// line. Built by each driver from what it has (its engine, or its agents' ticks).
#[derive(Debug)]
pub struct Second<'a> {
    /// Seconds since the run started.
    pub t_s: f64,
    /// The phase.
    pub phase: Phase,
    /// Connection and message counters (totals; `ready` is not recorded).
    pub counts: Counts,
    /// Sent, delivered and generator CPU rates.
    pub rate: Rate,
    /// This second's latencies.
    pub latency: &'a Histogram<u64>,
    /// Whether the scenario reconnects (the reconnect rows).
    pub reconnects: bool,
    /// Whether `counts.disconnects` is known (a fleet's ticks do not carry it).
    pub disconnects_known: bool,
    /// The target's resident memory.
    pub target_rss: Option<u64>,
    /// The target's CPU, threads and descriptors, when sampled.
    pub target: Option<TargetSecond>,
    /// The host's slab bytes and TCP sockets in use.
    pub host: Option<(u64, u64)>,
    /// The generator's resident memory.
    pub generator_rss: Option<u64>,
    /// Agents still running (a fleet only).
    pub agents_live: Option<u64>,
}

/// How the progress line states where the run is.
#[derive(Debug, Clone, Copy)]
pub enum ProgressView {
    /// One process: time into the phase, of its length; `planned` connections.
    Local {
        /// Time into the phase.
        in_phase: Duration,
        /// The phase's length.
        phase_len: Duration,
        /// Planned connections.
        planned: u64,
    },
    /// A fleet: seconds since the start; agents live of `agents`; `planned` connections.
    Fleet {
        /// Agents in the run.
        agents: usize,
        /// Planned connections.
        planned: u64,
    },
}

impl Second<'_> {
    /// Appends this second's time-series rows.
    pub fn rows(&self, series: &mut Vec<SeriesRow>) {
        let c = &self.counts;
        let mut rows: Vec<(&str, f64)> = vec![
            (series::CONNECTIONS_OPEN, c.open as f64),
            (series::CONNECT_ATTEMPTS, c.connect_attempts as f64),
            (series::CONNECT_ERRORS, c.connect_errors as f64),
            (series::CLOSED_BY_SERVER, c.closed_by_server as f64),
            (series::SENT_PER_S, self.rate.sent_per_s),
            (series::DELIVERED_PER_S, self.rate.delivered_per_s),
            (series::LATENCY_COUNT, self.latency.len() as f64),
        ];
        if self.reconnects {
            if self.disconnects_known {
                rows.push((series::CONNECTIONS_LOST, c.disconnects as f64));
            }
            rows.push((series::RECONNECTS, c.reconnects as f64));
            rows.push((series::RECONNECT_FAILURES, c.reconnect_failures as f64));
        }
        if !self.latency.is_empty() {
            rows.push((
                series::LATENCY_P50_US,
                self.latency.value_at_quantile(0.5) as f64,
            ));
            rows.push((
                series::LATENCY_P99_US,
                self.latency.value_at_quantile(0.99) as f64,
            ));
            rows.push((series::LATENCY_MAX_US, self.latency.max() as f64));
        }
        if let Some(rss) = self.target_rss {
            rows.push((series::TARGET_RSS_BYTES, rss as f64));
        }
        if let Some(t) = &self.target {
            rows.push((series::TARGET_CPU_CORES, t.cpu_cores));
            if let Some(w) = t.run_queue_wait_ms_per_s {
                rows.push((series::TARGET_RUN_QUEUE_WAIT_MS_PER_S, w));
            }
            rows.push((series::TARGET_THREADS, t.threads as f64));
            rows.push((series::TARGET_OPEN_FDS, t.open_fds as f64));
        }
        if let Some((slab, tcp)) = self.host {
            rows.push((series::HOST_SLAB_BYTES, slab as f64));
            rows.push((series::HOST_TCP_INUSE, tcp as f64));
        }
        if let Some(rss) = self.generator_rss {
            rows.push((series::GENERATOR_RSS_BYTES, rss as f64));
        }
        rows.push((series::GENERATOR_CPU_CORES, self.rate.cpu_cores));
        if let Some(n) = self.agents_live {
            rows.push((series::AGENTS_LIVE, n as f64));
        }
        let t_s = (self.t_s * 1000.0).round() / 1000.0;
        series.extend(rows.into_iter().map(|(metric, value)| SeriesRow {
            t_s,
            phase: self.phase.as_str().into(),
            metric: metric.into(),
            value,
        }));
    }

    /// The progress line of this second.
    pub fn progress_line(&self, view: ProgressView) -> String {
        let c = &self.counts;
        let p99 = if self.latency.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}ms",
                self.latency.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        let (sent, delivered) = (self.rate.sent_per_s, self.rate.delivered_per_s);
        match view {
            ProgressView::Local {
                in_phase,
                phase_len,
                planned,
            } => format!(
                "[{:<8} {:>4.0}s/{:.0}s] conns {}/{planned}  sent {sent:.0}/s  delivered {delivered:.0}/s  p99 {p99}  conn errors {}  closed {}",
                self.phase.as_str(),
                in_phase.as_secs_f64(),
                phase_len.as_secs_f64(),
                c.open,
                c.connect_errors,
                c.closed_by_server,
            ),
            ProgressView::Fleet { agents, planned } => {
                // Connections in set-up across the fleet: attempted, not yet open nor failed.
                let setting_up = c
                    .connect_attempts
                    .saturating_sub(c.open)
                    .saturating_sub(c.connect_errors);
                format!(
                    "[{:<8} {:>5.0}s] agents {}/{agents}  conns {}/{planned} (+{setting_up} setting up)  sent {sent:.0}/s  delivered {delivered:.0}/s  p99 {p99}  conn errors {}  agents {:.0} MiB",
                    self.phase.as_str(),
                    self.t_s,
                    self.agents_live.unwrap_or(0),
                    c.open,
                    c.connect_errors,
                    self.generator_rss.unwrap_or(0) as f64 / (1024.0 * 1024.0),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatbench_model::hist::new_hist;

    fn timeline() -> Timeline {
        Timeline {
            settle: Duration::from_secs(1),
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(3),
            cooldown: Duration::from_secs(4),
        }
    }

    #[test]
    fn the_edges_follow_the_phase_lengths_from_the_start() {
        let t0 = Instant::now();
        let e = timeline().from_go(t0);
        assert_eq!(e.measure - t0, Duration::from_secs(2));
        assert_eq!(e.cooldown - t0, Duration::from_secs(5));
        assert_eq!(e.end - t0, Duration::from_secs(9));
        assert_eq!(timeline().after_connect(), Duration::from_secs(10));
    }

    #[test]
    fn the_phase_at_a_time_is_the_one_whose_edges_hold_it() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let e = timeline().from_go(t0);
        let at = |ms: i64| {
            if ms < 0 {
                t0 - Duration::from_millis(ms.unsigned_abs())
            } else {
                t0 + Duration::from_millis(ms as u64)
            }
        };
        assert_eq!(e.phase_at(at(-1)), Phase::Settle);
        assert_eq!(e.phase_at(at(0)), Phase::Warmup);
        assert_eq!(e.phase_at(at(1_999)), Phase::Warmup);
        assert_eq!(e.phase_at(at(2_000)), Phase::Measure);
        assert_eq!(e.phase_at(at(5_000)), Phase::Cooldown);
        assert_eq!(e.phase_at(at(9_000)), Phase::Stop);
        assert_eq!(e.next_after(at(-1)), Some(t0));
        assert_eq!(e.next_after(at(2_000)), Some(e.cooldown));
        assert_eq!(e.next_after(at(9_000)), None);
    }

    #[test]
    fn rates_are_the_change_since_the_last_second() {
        let t0 = Instant::now();
        let mut r = Rates::new(t0, 10.0);
        let first = r.next(t0 + Duration::from_secs(2), 100, 300, 11.0);
        assert_eq!(first.sent_per_s, 50.0);
        assert_eq!(first.delivered_per_s, 150.0);
        assert_eq!(first.cpu_cores, 0.5);
        assert_eq!(r.at(), t0 + Duration::from_secs(2));
        // Totals that went down (an agent's ticks left the sum) give zero, not a wrap.
        let second = r.next(t0 + Duration::from_secs(3), 40, 300, 10.0);
        assert_eq!(second.sent_per_s, 0.0);
        assert_eq!(second.cpu_cores, 0.0);
    }

    fn second(latency: &Histogram<u64>) -> Second<'_> {
        Second {
            t_s: 3.00049,
            phase: Phase::Measure,
            counts: Counts {
                open: 7,
                connect_attempts: 10,
                connect_errors: 2,
                closed_by_server: 1,
                disconnects: 4,
                reconnects: 3,
                reconnect_failures: 1,
                ..Counts::default()
            },
            rate: Rate {
                sent_per_s: 20.0,
                delivered_per_s: 40.0,
                cpu_cores: 0.25,
            },
            latency,
            reconnects: false,
            disconnects_known: true,
            target_rss: None,
            target: None,
            host: None,
            generator_rss: Some(2 << 20),
            agents_live: None,
        }
    }

    fn metrics(s: &Second<'_>) -> Vec<(String, f64)> {
        let mut rows = Vec::new();
        s.rows(&mut rows);
        assert!(rows.iter().all(|r| r.phase == "measure" && r.t_s == 3.0));
        rows.into_iter().map(|r| (r.metric, r.value)).collect()
    }

    #[test]
    fn a_second_writes_the_rows_it_has_figures_for() {
        let empty = new_hist();
        let s = second(&empty);
        let m = metrics(&s);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "connections_open",
                "connect_attempts",
                "connect_errors",
                "closed_by_server",
                "sent_per_s",
                "delivered_per_s",
                "latency_count",
                "generator_rss_bytes",
                "generator_cpu_cores"
            ]
        );
        let mut hist = new_hist();
        hist.record(1_500).unwrap();
        let s = Second {
            reconnects: true,
            disconnects_known: false,
            target_rss: Some(9),
            target: Some(TargetSecond {
                cpu_cores: 1.5,
                threads: 4,
                open_fds: 12,
                run_queue_wait_ms_per_s: Some(2.5),
            }),
            host: Some((100, 5)),
            agents_live: Some(2),
            ..second(&hist)
        };
        let m = metrics(&s);
        let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("connections_lost"), None, "a fleet does not know it");
        assert_eq!(get("reconnects"), Some(3.0));
        assert_eq!(get("reconnect_failures"), Some(1.0));
        assert_eq!(get("latency_count"), Some(1.0));
        assert!(get("latency_p99_us").is_some_and(|v| (1_499.0..=1_501.0).contains(&v)));
        assert_eq!(get("target_rss_bytes"), Some(9.0));
        assert_eq!(get("target_cpu_cores"), Some(1.5));
        assert_eq!(get("target_run_queue_wait_ms_per_s"), Some(2.5));
        assert_eq!(get("target_open_fds"), Some(12.0));
        assert_eq!(get("host_tcp_inuse"), Some(5.0));
        assert_eq!(get("agents_live"), Some(2.0));
        let with_lost = Second {
            reconnects: true,
            ..second(&hist)
        };
        assert!(metrics(&with_lost).contains(&("connections_lost".into(), 4.0)));
    }

    #[test]
    fn the_progress_line_reads_the_same_figures_for_a_process_and_a_fleet() {
        let mut hist = new_hist();
        hist.record(2_500).unwrap();
        let s = Second {
            agents_live: Some(2),
            ..second(&hist)
        };
        let local = s.progress_line(ProgressView::Local {
            in_phase: Duration::from_secs(3),
            phase_len: Duration::from_secs(10),
            planned: 9,
        });
        assert_eq!(
            local,
            "[measure     3s/10s] conns 7/9  sent 20/s  delivered 40/s  p99 2.50ms  conn errors 2  closed 1"
        );
        let fleet = s.progress_line(ProgressView::Fleet {
            agents: 3,
            planned: 9,
        });
        assert_eq!(
            fleet,
            "[measure      3s] agents 2/3  conns 7/9 (+1 setting up)  sent 20/s  delivered 40/s  p99 2.50ms  conn errors 2  agents 2 MiB"
        );
        let empty = new_hist();
        assert!(second(&empty)
            .progress_line(ProgressView::Fleet {
                agents: 1,
                planned: 1
            })
            .contains("p99 -"));
    }

    /// The engine handle's phases without a server: every connection is refused, connecting
    /// ends, sending starts and stops, and the teardown hands the pacer's report back once.
    #[tokio::test]
    async fn an_engine_goes_through_its_phases_and_stops_with_its_figures() {
        // A port nothing listens on: every connection is refused at once.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let scenario = Arc::new(
            Scenario::parse(
                "name='t'\nconnections=6\nrooms=2\nmembers_per_room=3\nramp_rate=100000.0\nconnect_timeout=\"2s\"\n",
                "t",
            )
            .expect("valid"),
        );
        let plan = Plan::new(&scenario, 0);
        let target = Target::parse(&format!("ws://{addr}/ws")).expect("url");
        let mut engine = Engine::start(scenario, plan, vec![target], Vec::new());
        assert_eq!(engine.phase(), Phase::Connect);
        assert_eq!(engine.planned(), 6);
        let until = Instant::now() + Duration::from_secs(10);
        while !engine.connect_done(Instant::now()) {
            assert!(
                Instant::now() < until,
                "connecting ends: every attempt is refused"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = engine.counts();
        assert_eq!(
            (c.connect_attempts, c.connect_errors, c.ready, c.open),
            (6, 6, 0, 0)
        );
        engine.enter(Phase::Settle);
        let start = Instant::now();
        engine.go(start);
        assert_eq!(engine.phase(), Phase::Warmup);
        assert_eq!(engine.shared().send_start.get(), Some(&start));
        engine.enter(Phase::Measure);
        engine.enter(Phase::Cooldown);
        let reaped = engine.reap().await;
        assert!(reaped.pacer.is_some(), "the pacer ran and reports");
        assert!(reaped.panicked.is_empty(), "{:?}", reaped.panicked);
        let again = tokio::time::timeout(Duration::from_secs(10), engine.stop())
            .await
            .expect("the teardown is bounded");
        assert!(again.pacer.is_none(), "its report is handed back once");
        assert!(again.panicked.is_empty(), "{:?}", again.panicked);
    }

    /// A connection task's panic is reaped once, with what it said, and a cancelled one is
    /// not a panic.
    #[tokio::test]
    async fn a_panicked_connection_task_is_reaped_once() {
        let scenario = Arc::new(
            Scenario::parse(
                "name='t'\nconnections=2\nrooms=1\nmembers_per_room=2\n",
                "t",
            )
            .expect("valid"),
        );
        let plan = Plan::new(&scenario, 0);
        let target = Target::parse("ws://127.0.0.1:9/ws").expect("url");
        let mut engine = Engine::start(scenario, plan, vec![target], Vec::new());
        let panics = tokio::spawn(async { panic!("boom") });
        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        while !(panics.is_finished() && cancelled.is_finished()) {
            tokio::task::yield_now().await;
        }
        if let Ok(mut tasks) = engine.tasks.lock() {
            tasks.extend([cancelled, panics]);
        }
        let reaped = engine.reap().await;
        assert_eq!(reaped.panicked, ["a connection task panicked: boom"]);
        let again = tokio::time::timeout(Duration::from_secs(10), engine.stop())
            .await
            .expect("the teardown is bounded");
        assert!(again.panicked.is_empty(), "{:?}", again.panicked);
    }
}
