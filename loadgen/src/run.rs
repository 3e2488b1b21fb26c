//! The driver of a single-process run: checks the plan fits, preflights the target, drives
//! the engine ([`crate::lifecycle::Engine`]) through the scenario's timeline, samples the target
//! and the generator once a second, applies the generator self-check, and writes the results.
//!
//! Data flows one way: scenario → engine (+ sampler) → [`Summary`] and files. Ctrl-C (the
//! `interrupt` channel) ends the current phase early; what was measured is still written, with
//! the status `interrupted`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use thiserror::Error;
use tokio::sync::watch;

use crate::engine::{Phase, Shared};
use crate::failover::{self, FailoverInput, SecondHist};
use crate::faults::{EventKind, NodeControl};
use crate::lifecycle::{
    Counts, Edges, Engine, ProgressView, Rates, Reaped, Second, TargetSecond, Timeline,
};
use crate::live_metrics::{self, LiveMetrics};
use crate::plan::{Layout, Plan};
use crate::progress::{Progress, ProgressMode};
use crate::sampler;
use crate::stats::Stats;
use crate::sys;
use crate::target::{Target, TargetError};
use crate::threads;
use chatbench_model::figures;
use chatbench_model::hlog::{LatencyLog, HLOG_FILE};
use chatbench_model::results::{
    busy_note, write_run, FaultOutcome, OtherLoad, Percentiles, PhaseTimes, ReconnectStats,
    ResultsError, RunQueueWait, RunStatus, SeriesRow, Summary, TargetInfo,
};
use chatbench_model::sampler::{HostSample, ProcSample};
use chatbench_model::scenario::{ArrivalClock, Scenario};
use chatbench_model::summary::{
    self, ConnCounts, GenFigures, MsgCounts, SummaryInput, TargetFigures,
};

/// Generator CPU share (of the cores it may use) above which a run is generator-bound.
pub const GEN_CPU_LIMIT: f64 = 0.90;
/// Pacer p99 lateness above which the generator did not keep its schedule, µs.
pub const PACER_LAG_LIMIT_US: u64 = 2_000;

/// Errors that stop a run before it measures anything.
#[derive(Debug, Error)]
pub enum RunError {
    /// The target URL is wrong or unreachable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The plan does not fit this process.
    #[error(transparent)]
    Plan(#[from] sys::PlanError),
    /// Raising the descriptor limit failed.
    #[error("cannot read or raise the open-files limit: {0}")]
    Limit(std::io::Error),
    /// Results could not be written.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// The targets, agents and scenario do not fit together (e.g. fewer rooms than partitioned
    /// targets).
    #[error("{0}")]
    Layout(String),
    /// An agent could not be started, reached, or refused the run.
    #[error("{0}")]
    Agents(String),
}

/// Splits a `--target` value (one URL, or several separated by commas) and resolves each.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, TargetError> {
    let urls: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(TargetError::BadUrl {
            url: list.to_string(),
            problem: "no target URL given".into(),
        });
    }
    let targets: Vec<Target> = urls
        .into_iter()
        .map(Target::parse)
        .collect::<Result<_, _>>()?;
    if targets.iter().any(|t| t.tls != targets[0].tls) {
        return Err(TargetError::BadUrl {
            url: list.to_string(),
            problem: "mixes ws:// and wss:// targets; a run uses one scheme for all".into(),
        });
    }
    Ok(targets)
}

/// Source addresses for the clients of one process: spread over 127.x addresses (starting at
/// the `first`-th one, so local agents use disjoint ranges) when every target is on IPv4
/// loopback; none (the kernel picks) otherwise.
pub fn source_addrs_for(targets: &[Target], connections: u64, first: u64) -> Vec<std::net::IpAddr> {
    if !targets.is_empty() && targets.iter().all(|t| t.is_loopback() && t.addr.is_ipv4()) {
        let per = u64::from(sys::DEFAULT_CONNS_PER_SOURCE_ADDR);
        let own = connections.div_ceil(per).max(1);
        let all =
            sys::loopback_source_addrs((first + own) * per, sys::DEFAULT_CONNS_PER_SOURCE_ADDR);
        all.into_iter().skip(first as usize).collect()
    } else {
        Vec::new()
    }
}

/// Everything a run needs.
pub struct RunOptions {
    /// The scenario (after overrides).
    pub scenario: Scenario,
    /// The `--set` overrides applied, for the record.
    pub overrides: Vec<String>,
    /// The target URL, or several separated by commas (spread by the scenario's
    /// `target_policy`).
    pub target_url: String,
    /// What is known about the target (arch, pid, settings).
    pub target_info: TargetInfo,
    /// Folder that receives `<run id>/`.
    pub out_root: PathBuf,
    /// Progress display.
    pub progress: ProgressMode,
    /// Becomes `true` on Ctrl-C.
    pub interrupt: watch::Receiver<bool>,
    /// The supervisor of the nodes, when the run started them (`--serve cluster`, `--nodes`):
    /// polled through the run (a node that dies is restarted), and the one that kills a node
    /// for a `[[fault]] kill_node`. It must have been started on the thread that polls the
    /// run's future (the main thread under `block_on`): see `chatbench_harness::supervisor`.
    pub cluster: Option<Arc<Mutex<dyn NodeControl>>>,
    /// `--metrics-listen`: updated with each second's rows (the endpoint is the caller's).
    pub live: Option<Arc<LiveMetrics>>,
}

/// How often the run polls the supervisor.
const SUPERVISOR_POLL: Duration = Duration::from_millis(50);

fn lock_sup(m: &Mutex<dyn NodeControl>) -> std::sync::MutexGuard<'_, dyn NodeControl + 'static> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a run produced.
pub struct RunReport {
    /// The run folder.
    pub dir: PathBuf,
    /// The summary written there.
    pub summary: Summary,
}

struct Samples {
    server: Option<ProcSample>,
    host: Option<HostSample>,
    me: Option<ProcSample>,
    me_cpu: f64,
}

fn take_samples(pids: &[u32]) -> Samples {
    Samples {
        server: if pids.is_empty() {
            None
        } else {
            sampler::sample_processes(pids).ok()
        },
        host: sampler::sample_host().ok(),
        me: sampler::sample_process(std::process::id()).ok(),
        me_cpu: sampler::self_cpu_seconds(),
    }
}

/// The one-process run's clock: waits out each phase, ticking once a second (a time-series
/// second and the progress line), polling the supervisor, and noticing Ctrl-C.
struct Ticker {
    shared: Arc<Shared>,
    started: Instant,
    series: Vec<SeriesRow>,
    last: Samples,
    rates: Rates,
    peak_rss: Option<u64>,
    progress: Progress,
    pids: Vec<u32>,
    target_gone: bool,
    interrupt: watch::Receiver<bool>,
    interrupted: bool,
    cluster: Option<Arc<Mutex<dyn NodeControl>>>,
    last_poll: Instant,
    /// Every second's latency histogram, kept when the run kills a node (failover figures).
    seconds: Option<Vec<SecondHist>>,
    /// Every second's latency histograms, encoded (`latency.hlog`).
    hlog: LatencyLog,
    /// The live `/metrics` endpoint's state, when there is one.
    live: Option<Arc<LiveMetrics>>,
}

impl Ticker {
    fn new(engine: &Engine, pids: &[u32], opts: &RunOptions) -> Ticker {
        let started = engine.started();
        let last = take_samples(pids);
        Ticker {
            shared: engine.shared().clone(),
            started,
            series: Vec::new(),
            rates: Rates::new(started, last.me_cpu),
            last,
            peak_rss: None,
            progress: Progress::new(opts.progress),
            pids: pids.to_vec(),
            target_gone: false,
            interrupt: opts.interrupt.clone(),
            interrupted: *opts.interrupt.borrow(),
            cluster: opts.cluster.clone(),
            last_poll: started,
            seconds: opts.scenario.kill_fault().map(|_| Vec::new()),
            hlog: LatencyLog::new(SystemTime::now() - started.elapsed()),
            live: opts.live.clone(),
        }
    }

    /// Adds the latency interval from the last tick to `now` to `latency.hlog`; returns the
    /// interval of every delivery (the time series').
    fn log_interval(&mut self, now: Instant) -> Histogram<u64> {
        let (all, window) = self.shared.stats.take_intervals();
        let from = self.rates.at().duration_since(self.started);
        let to = now.duration_since(self.started);
        // Encoding the run's own histograms into memory cannot fail but by a bug; the log
        // then lacks that second, and says so on the console.
        let was = self.hlog.truncated();
        for (h, w) in [(&all, false), (&window, true)] {
            if let Err(e) = self.hlog.push(h, from, to, w) {
                self.progress.println(&format!("latency.hlog: {e}"));
            }
        }
        if self.hlog.truncated() && !was {
            self.progress.println(
                "latency.hlog reached its bound: later seconds are left out of it (the summary and timeseries.csv are whole)",
            );
        }
        all
    }

    /// The deliveries since the last tick, into `latency.hlog`, once the clients have stopped:
    /// its `window` intervals then add up to the summary's latency histogram.
    fn flush_latency(&mut self) {
        self.log_interval(Instant::now());
    }

    /// Lets the supervisor restart dead nodes; follows their pids for sampling.
    fn poll_cluster(&mut self) {
        let Some(c) = &self.cluster else { return };
        if self.last_poll.elapsed() < SUPERVISOR_POLL {
            return;
        }
        self.last_poll = Instant::now();
        let mut sup = lock_sup(c);
        let events = sup.poll();
        if events.is_empty() {
            return;
        }
        for e in &events {
            let what = match &e.kind {
                EventKind::Exited { status, .. } => format!("exited ({status})"),
                EventKind::Restarted {
                    pid, restart_ms, ..
                } => format!("restarted by the supervisor (pid {pid}, {restart_ms} ms)"),
                EventKind::RestartFailed { reason } => format!("restart failed: {reason}"),
                EventKind::GaveUp { restarts } => {
                    format!("given up after {restarts} restarts")
                }
                EventKind::Started { .. } | EventKind::Killed { .. } => continue,
            };
            self.progress.println(&format!("node {}: {what}", e.node));
        }
        self.pids = sup.pids();
        // The summed CPU of a changed set of processes is not comparable with the last one.
        self.last.server = None;
    }

    /// Ticks once a second until `until`, or until `done` says the phase is over, or interrupt.
    /// Returns false when interrupted.
    async fn run_until(
        &mut self,
        phase: Phase,
        until: Instant,
        label_total: Duration,
        done: Option<&dyn Fn() -> bool>,
    ) -> bool {
        let phase_start = Instant::now();
        loop {
            if self.interrupted {
                return false;
            }
            let now = Instant::now();
            if now >= until || done.is_some_and(|d| d()) {
                return true;
            }
            // Tick once a second; wake every 10 ms only while `done` can end the phase (the
            // connect phase: its length is the open-rate figure), and at each supervisor poll
            // while a cluster runs. A wake-up every 10 ms through the window cost the generator
            // about 0.2 µs per delivery at 20,000/s (docs/notes/2026-12-07-send-path.md).
            let mut next = (self.rates.at() + Duration::from_secs(1)).min(until);
            if done.is_some() {
                next = next.min(now + Duration::from_millis(10));
            }
            if self.cluster.is_some() {
                next = next.min(self.last_poll + SUPERVISOR_POLL);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                r = self.interrupt.changed() => {
                    if r.is_err() || *self.interrupt.borrow() {
                        self.interrupted = true;
                        return false;
                    }
                }
            }
            self.poll_cluster();
            if Instant::now() >= self.rates.at() + Duration::from_secs(1) {
                self.tick(phase, phase_start.elapsed(), label_total);
            }
        }
    }

    /// Waits out `len` of `phase` from now; returns how long it took.
    async fn phase(&mut self, phase: Phase, len: Duration) -> f64 {
        let t = Instant::now();
        self.run_until(phase, t + len, len, None).await;
        t.elapsed().as_secs_f64()
    }

    fn tick(&mut self, phase: Phase, in_phase: Duration, phase_len: Duration) {
        let now = Instant::now();
        let s = take_samples(&self.pids);
        let dt = now.duration_since(self.rates.at()).as_secs_f64().max(1e-3);
        let t = now.duration_since(self.started).as_secs_f64();
        let counts = Counts::of(&self.shared);
        let interval = self.log_interval(now);
        if let Some(seconds) = self.seconds.as_mut() {
            seconds.push(SecondHist {
                from_s: self.rates.at().duration_since(self.started).as_secs_f64(),
                to_s: t,
                hist: interval.clone(),
            });
        }
        let rate = self
            .rates
            .next(now, counts.sent, counts.delivered, s.me_cpu);
        let target = match (&self.last.server, &s.server) {
            (Some(a), Some(b)) => {
                self.peak_rss = Some(self.peak_rss.unwrap_or(0).max(b.rss_bytes));
                Some(TargetSecond {
                    cpu_cores: (b.cpu_seconds - a.cpu_seconds) / dt,
                    threads: b.threads,
                    open_fds: b.open_fds,
                    run_queue_wait_ms_per_s: summary::run_queue_wait(a, b, dt)
                        .map(|w| w.ms_per_s()),
                })
            }
            _ => None,
        };
        if !self.pids.is_empty() && s.server.is_none() && !self.target_gone {
            self.target_gone = true;
            self.progress.println(
                "the target process has exited; the run continues to record what the clients see",
            );
        }
        let second = Second {
            t_s: t,
            phase,
            counts,
            rate,
            latency: &interval,
            reconnects: self.shared.scenario.reconnects(),
            disconnects_known: true,
            target_rss: target.and(s.server.as_ref().map(|b| b.rss_bytes)),
            target,
            host: s.host.as_ref().map(|h| (h.slab_bytes, h.tcp_inuse)),
            generator_rss: s.me.as_ref().map(|m| m.rss_bytes),
            agents_live: None,
        };
        let from = self.series.len();
        second.rows(&mut self.series);
        if let Some(live) = &self.live {
            let totals = live_metrics::Totals {
                sent: second.counts.sent,
                delivered: second.counts.delivered,
                t_s: t,
            };
            live.update(&self.series[from..], totals);
        }
        self.progress
            .update(&second.progress_line(ProgressView::Local {
                in_phase,
                phase_len,
                planned: self.shared.plan.conns.len() as u64,
            }));
        self.last = s;
    }
}

/// The node-kill fault as done: what the failover figures are measured from.
struct Killed {
    node: u32,
    pid: Option<u32>,
    at: Instant,
    /// Clients on the node at the kill; `None` for a shared-port cluster (one URL for every
    /// node), whose killed node's clients are the connections lost after the kill.
    clients: Option<u64>,
    /// Connections lost before the kill.
    disconnects: u64,
    /// Reconnects, attempts and failures before the kill.
    counts: (u64, u64, u64),
    /// The supervisor's events before the kill.
    events_from: usize,
}

/// Kills node `node` (1-based) for a `[[fault]] kill_node`, and stops sampling it.
fn kill_node(
    shared: &Shared,
    ticker: &mut Ticker,
    cluster: &Arc<Mutex<dyn NodeControl>>,
    node: u32,
) -> Killed {
    let c = &shared.stats.counters;
    let clients = (!lock_sup(cluster).shares_one_port()).then(|| shared.open_on(node - 1));
    let disconnects = Stats::get(&c.disconnects);
    let counts = (
        Stats::get(&c.reconnects),
        Stats::get(&c.reconnect_attempts),
        Stats::get(&c.reconnect_failures),
    );
    let at = Instant::now();
    let (pid, pids, events_from) = {
        let mut sup = lock_sup(cluster);
        let pid = sup.kill(node);
        let mut pids = sup.pids();
        pids.retain(|p| Some(*p) != pid);
        (pid, pids, sup.events().len())
    };
    ticker.pids = pids;
    ticker.last.server = None;
    ticker.progress.println(&format!(
        "fault: SIGKILL node {node} (pid {}) with {} clients on it",
        pid.map_or("-".into(), |p| p.to_string()),
        clients.map_or("its".into(), |n| n.to_string())
    ));
    Killed {
        node,
        pid,
        at,
        clients,
        disconnects,
        counts,
        events_from,
    }
}

/// The failover section, from the kill and what followed.
fn failover_outcome(
    shared: &Shared,
    k: &Killed,
    started: Instant,
    window_s: (f64, f64),
    seconds: &[SecondHist],
    sup: Option<&Arc<Mutex<dyn NodeControl>>>,
) -> chatbench_model::failover::FailoverOutcome {
    let c = &shared.stats.counters;
    let since = |v: u64, before: u64| v.saturating_sub(before);
    let last_us = Stats::get(&c.last_reconnect_us);
    let kill_s = k.at.duration_since(started).as_secs_f64();
    let last_reconnect_s = (last_us > 0)
        .then(|| {
            (shared.epoch + Duration::from_micros(last_us))
                .saturating_duration_since(started)
                .as_secs_f64()
        })
        .filter(|&t| t >= kill_s);
    let (restarts, restart_ms) = match sup {
        Some(sup) => {
            let sup = lock_sup(sup);
            let mut n = 0u32;
            let mut first = None;
            for e in sup.events().iter().skip(k.events_from) {
                if let (true, EventKind::Restarted { restart_ms, .. }) = (e.node == k.node, &e.kind)
                {
                    n += 1;
                    first.get_or_insert(*restart_ms);
                }
            }
            (n, first)
        }
        None => (0, None),
    };
    failover::compute(&FailoverInput {
        node: k.node,
        pid: k.pid,
        kill_s,
        window_s,
        clients_on_node: k
            .clients
            .unwrap_or_else(|| since(Stats::get(&c.disconnects), k.disconnects)),
        reconnects: since(Stats::get(&c.reconnects), k.counts.0),
        attempts: since(Stats::get(&c.reconnect_attempts), k.counts.1),
        failures: since(Stats::get(&c.reconnect_failures), k.counts.2),
        last_reconnect_s,
        seconds,
        loss: shared.loss_timeline.as_ref(),
        reconnect_time: Percentiles::of(&shared.stats.reconnect_time()),
        restarts,
        restart_ms,
    })
}

/// Checks that the run can be made here: descriptors, the layout of targets, the node-kill
/// fault against the nodes started, and each target's preflight. Returns the targets.
async fn check(opts: &RunOptions, scenario: &Scenario) -> Result<(Vec<Target>, Layout), RunError> {
    let limit = sys::raise_nofile().map_err(RunError::Limit)?;
    sys::fits_in_one_process(
        u64::from(scenario.connections) + u64::from(scenario.silent_connections),
        &limit,
    )?;
    let targets = parse_targets(&opts.target_url)?;
    let layout = Layout {
        agents: 1,
        targets: targets.len() as u32,
        policy: scenario.target_policy,
    };
    if let Some(problem) = layout.problem(scenario) {
        return Err(RunError::Layout(problem));
    }
    if let Some(f) = scenario.kill_fault() {
        let nodes = match &opts.cluster {
            None => {
                return Err(RunError::Layout(format!(
                "the scenario kills node {} ([[fault]] kill_node), which needs a cluster this run \
                     starts and supervises itself: run it with --serve cluster --nodes N",
                f.kill_node
            )))
            }
            Some(c) => lock_sup(c).node_count(),
        };
        let one_url = opts
            .cluster
            .as_ref()
            .is_some_and(|c| lock_sup(c).shares_one_port());
        let urls = if one_url { 1 } else { nodes };
        if f.kill_node > nodes || urls != targets.len() as u32 {
            return Err(RunError::Layout(format!(
                "the scenario kills node {} ([[fault]] kill_node) but the run started {nodes} node(s) \
                 (raise --nodes, or lower kill_node)",
                f.kill_node
            )));
        }
    }
    for target in &targets {
        target.preflight(scenario).await?;
    }
    Ok((targets, layout))
}

/// What driving the engine through the timeline gave, beyond the engine's statistics.
struct Driven {
    phases: PhaseTimes,
    /// Connections ready at the end of connect.
    ready: u64,
    /// The reading after settle (memory per connection counts from it).
    connected: Samples,
    /// The window in seconds since the start.
    window_s: (f64, f64),
    /// The measurement window, when the run got to it.
    window: Option<Measured>,
}

/// What the measurement window gave.
struct Measured {
    /// Readings at the window's edges, and its length.
    cpu: (Samples, Samples, Duration),
    /// This process's threads at the window's edges (`None` where `/proc` cannot be read).
    threads: (Option<threads::Snapshot>, Option<threads::Snapshot>),
    fault: Option<FaultOutcome>,
    killed: Option<Killed>,
}

/// Drives the engine through the timeline: connect (until every attempt has an outcome or
/// the deadline), settle, then — when something connected and no Ctrl-C came — warmup,
/// measure and cooldown. After an interrupt the cooldown is a short drain, so that in-flight
/// messages are not counted as lost.
async fn drive(
    engine: &mut Engine,
    ticker: &mut Ticker,
    pids: &[u32],
    cluster: Option<&Arc<Mutex<dyn NodeControl>>>,
) -> Driven {
    let scenario = engine.shared().scenario.clone();
    let timeline = Timeline::of(&scenario);
    let (n, started) = (engine.planned(), engine.started());
    let mut phases = PhaseTimes::default();
    // The deadline moves with the time the ramp was held back by `max_connecting`, within a
    // bound: the longest it can be ends the wait in any case.
    let limit = started + scenario.connect_deadline(n, scenario.max_ramp_hold(n));
    let nominal = scenario.connect_deadline(n, Duration::ZERO);
    {
        let e = &*engine;
        ticker
            .run_until(
                Phase::Connect,
                limit,
                nominal,
                Some(&|| e.connect_done(Instant::now())),
            )
            .await;
    }
    phases.connect = started.elapsed().as_secs_f64();
    engine.enter(Phase::Settle);
    let ready = engine.counts().ready;
    phases.settle = ticker.phase(Phase::Settle, timeline.settle).await;
    let mut driven = Driven {
        phases,
        ready,
        connected: take_samples(pids),
        window_s: (0.0, 0.0),
        window: None,
    };
    if ticker.interrupted || ready == 0 {
        return driven;
    }
    let edges = timeline.from_go(Instant::now());
    engine.go(edges.start);
    let w0 = edges.measure.duration_since(started).as_secs_f64();
    driven.window_s = (w0, w0 + timeline.measure.as_secs_f64());
    ticker
        .run_until(Phase::Warmup, edges.measure, timeline.warmup, None)
        .await;
    driven.phases.warmup = edges.start.elapsed().as_secs_f64();
    if !ticker.interrupted {
        engine.enter(Phase::Measure);
        let m = measure(engine, ticker, pids, cluster, &edges).await;
        driven.phases.measure = m.cpu.2.as_secs_f64();
        driven.window = Some(m);
    }
    engine.enter(Phase::Cooldown);
    let cooldown = if ticker.interrupted {
        timeline.cooldown.min(Duration::from_secs(1))
    } else {
        timeline.cooldown
    };
    let was = ticker.interrupted;
    ticker.interrupted = false;
    driven.phases.cooldown = ticker.phase(Phase::Cooldown, cooldown).await;
    ticker.interrupted |= was;
    driven
}

/// The measurement window, with its faults: the poison frame `poison_after` into it, the node
/// kill at the `[[fault]]`'s time.
async fn measure(
    engine: &Engine,
    ticker: &mut Ticker,
    pids: &[u32],
    cluster: Option<&Arc<Mutex<dyn NodeControl>>>,
    edges: &Edges,
) -> Measured {
    let shared = engine.shared().clone();
    let scenario = shared.scenario.clone();
    let started = engine.started();
    let m0 = take_samples(pids);
    let th0 = threads::Snapshot::read();
    let t0 = Instant::now();
    let open_now = || shared.stats.counters.open.load(Ordering::Relaxed).max(0) as u64;
    let mut poisoned = None;
    if let Some(after) = scenario.poison_after {
        ticker
            .run_until(Phase::Measure, t0 + after, scenario.measure, None)
            .await;
        if !ticker.interrupted {
            let open_before = open_now();
            if let Some(id) = shared.poison() {
                ticker
                    .progress
                    .println(&format!("fault injection: {id} sent {{\"t\":\"panic\"}}"));
                poisoned = Some((id, started.elapsed().as_secs_f64(), open_before));
            }
        }
    }
    let mut killed = None;
    if let (Some(f), Some(cluster)) = (scenario.kill_fault(), cluster) {
        ticker
            .run_until(Phase::Measure, t0 + f.at, scenario.measure, None)
            .await;
        if !ticker.interrupted {
            killed = Some(kill_node(&shared, ticker, cluster, f.kill_node));
        }
    }
    ticker
        .run_until(Phase::Measure, edges.cooldown, scenario.measure, None)
        .await;
    let fault = poisoned.map(|(poisoner, at_s, open_before)| {
        let open_after = open_now();
        let poisoner_lost = shared.poisoner_gone.load(Ordering::Relaxed);
        FaultOutcome {
            poisoner,
            at_s,
            open_before,
            open_after,
            poisoner_lost,
            others_lost: open_before
                .saturating_sub(open_after)
                .saturating_sub(u64::from(poisoner_lost)),
        }
    });
    let th1 = threads::Snapshot::read();
    let wall = t0.elapsed();
    Measured {
        cpu: (m0, take_samples(pids), wall),
        threads: (th0, th1),
        fault,
        killed,
    }
}

/// The servers' own counters (drops for slow consumers, disconnects by reason), read before
/// the clients leave: every target's, summed (a cluster's or partitioned servers' counters are
/// per process). Also how many of how many answered.
async fn scrape_servers(
    targets: &[Target],
    reference: bool,
) -> (Option<BTreeMap<String, f64>>, (usize, usize)) {
    if !reference {
        return (None, (0, 0));
    }
    let scraped = futures_util::future::join_all(
        targets
            .iter()
            .map(|t| crate::target::scrape_metrics(t, Duration::from_secs(2))),
    )
    .await;
    let from = (scraped.iter().flatten().count(), scraped.len());
    (
        crate::target::sum_metrics(scraped.into_iter().flatten()),
        from,
    )
}

/// Runs a scenario against a target and writes the results.
pub async fn run(opts: RunOptions) -> Result<RunReport, RunError> {
    let scenario = Arc::new(opts.scenario.clone());
    let (targets, layout) = check(&opts, &scenario).await?;
    let source_addrs = source_addrs_for(&targets, u64::from(scenario.connections), 0);
    let mut provenance = crate::provenance::collect();
    let started_utc = chrono::Utc::now();
    let plan = Plan::for_agent(&scenario, 0, &layout);
    let slow = plan.slow_count() as u64;
    let mut target_info = opts.target_info.clone();
    if targets.len() > 1 {
        target_info.targets = targets.iter().map(|t| t.url.clone()).collect();
        target_info.target_policy = Some(scenario.target_policy.as_str().into());
    }
    let pids = opts.target_info.sampled_pids();
    let silent = crate::slowloris::Silent::open(
        targets[0].addr,
        scenario.silent_connections,
        scenario.connect_timeout,
    )
    .await;
    let before = take_samples(&pids);
    let mut engine = Engine::start(scenario.clone(), plan, targets, source_addrs.clone());
    let mut ticker = Ticker::new(&engine, &pids, &opts);
    let driven = drive(&mut engine, &mut ticker, &pids, opts.cluster.as_ref()).await;
    let shared = engine.shared().clone();
    let (server_metrics, metrics_from) =
        scrape_servers(&shared.targets, opts.target_info.arch.is_some()).await;
    // Workers that panicked: the run then fails, whatever it measured.
    let Reaped {
        pacer: pacer_lag,
        panicked,
    } = engine.stop().await;
    let silent_held = silent.held();
    drop(silent);
    ticker.flush_latency();
    ticker.progress.finish();
    let after = take_samples(&pids);
    provenance.finish();
    let failover = driven
        .window
        .as_ref()
        .and_then(|w| w.killed.as_ref())
        .map(|k| {
            failover_outcome(
                &shared,
                k,
                ticker.started,
                driven.window_s,
                ticker.seconds.as_deref().unwrap_or(&[]),
                opts.cluster.as_ref(),
            )
        });
    let ended = Ended {
        shared: &shared,
        driven,
        ticker: &ticker,
        pacer_lag,
        panicked,
        before,
        after,
        server_metrics,
        metrics_from,
        slow,
        source_addrs: &source_addrs,
    };
    let mut summary = summarize(&opts, ended, target_info, provenance, started_utc, failover);
    summary.connections.silent = (scenario.silent_connections > 0).then_some(silent_held);
    let epoll = shared.epoll_receivers();
    summary.connections.epoll_receivers = (epoll > 0).then_some(epoll);
    let latency = shared.stats.window_latency();
    let unexpected = unexpected_frames_text(&shared.stats.unexpected_frames());
    let mut extra: Vec<(&str, &[u8])> = vec![(HLOG_FILE, ticker.hlog.bytes())];
    if let Some(text) = &unexpected {
        extra.push((UNEXPECTED_FRAMES, text.as_bytes()));
    }
    let dir = write_run(
        &opts.out_root,
        &mut summary,
        &ticker.series,
        &latency,
        &extra,
    )?;
    Ok(RunReport { dir, summary })
}

/// Everything a one-process run measured, for its summary.
struct Ended<'a> {
    shared: &'a Shared,
    driven: Driven,
    ticker: &'a Ticker,
    pacer_lag: Option<crate::pacer::PacerReport>,
    /// Workers that panicked, with what they said.
    panicked: Vec<String>,
    before: Samples,
    after: Samples,
    server_metrics: Option<BTreeMap<String, f64>>,
    metrics_from: (usize, usize),
    slow: u64,
    source_addrs: &'a [std::net::IpAddr],
}

/// The window's CPU figures of a one-process run.
#[derive(Default)]
struct WindowCpuFigures {
    /// The generator's CPU, cores.
    gen_cores: Option<f64>,
    /// The server's CPU, cores.
    server_cores: Option<f64>,
    /// The server's CPU per delivery, µs.
    per_delivery: Option<f64>,
    /// Other work on the server's CPUs.
    other_load: Option<OtherLoad>,
    /// The server's threads' wait for a CPU.
    run_queue_wait: Option<RunQueueWait>,
}

/// The window's CPU figures: the generator's cores, the server's cores, CPU per delivery and
/// run-queue wait (not when a node was killed in it), and the other load on the server's CPUs.
fn window_cpu_figures(
    m: Option<&Measured>,
    delivered: u64,
    server_cpus: Option<&[usize]>,
) -> WindowCpuFigures {
    let Some(Measured {
        cpu: (a, b, wall),
        killed,
        ..
    }) = m
    else {
        return WindowCpuFigures::default();
    };
    let w = wall.as_secs_f64().max(1e-9);
    let mut f = WindowCpuFigures {
        gen_cores: Some((b.me_cpu - a.me_cpu) / w),
        ..WindowCpuFigures::default()
    };
    if let (Some(sa), Some(sb), None) = (&a.server, &b.server, killed) {
        let (cores, per) = summary::server_cpu(sb.cpu_seconds - sa.cpu_seconds, w, delivered, w);
        f.server_cores = Some(cores);
        f.per_delivery = per;
        f.run_queue_wait = summary::run_queue_wait(sa, sb, w);
    }
    // What else ran on the server's CPUs (only when it has its own: pinned apart from the
    // generator, whose CPU time would otherwise count as "other").
    f.other_load = summary::other_load(
        a.host.as_ref(),
        b.host.as_ref(),
        f.server_cores,
        server_cpus,
        &crate::sys::cpu_affinity(),
    );
    f
}

/// The connection counts of a one-process run.
fn conn_counts<'a>(
    shared: &Shared,
    connect_s: f64,
    connect_time: &'a Histogram<u64>,
) -> ConnCounts<'a> {
    let st = &shared.stats;
    let c = &st.counters;
    ConnCounts {
        planned: u64::from(shared.scenario.connections),
        attempted: Stats::get(&c.connect_attempts),
        connected: Stats::get(&c.connected),
        ready: Stats::get(&c.ready),
        errors: st.connect_errors.snapshot(),
        closed_by_server: st.closed_by_server.snapshot(),
        connect_s,
        ramp_held_s: Stats::get(&c.ramp_held_us) as f64 / 1e6,
        connect_time,
        reconnect: shared.scenario.reconnects().then(|| ReconnectStats {
            lost: Stats::get(&c.disconnects),
            attempts: Stats::get(&c.reconnect_attempts),
            reconnected: Stats::get(&c.reconnects),
            failed: Stats::get(&c.reconnect_failures),
            errors: st.reconnect_errors.snapshot(),
            time_us: Percentiles::of(&st.reconnect_time()),
        }),
        dropped_in_window: Stats::get(&c.dropped_in_window),
        pacer_senders: shared.pacer_senders(),
        pacer_send_held: Stats::get(&c.send_held),
    }
}

/// The message counts of a one-process run's window.
fn msg_counts(shared: &Shared, slow: u64, measure_s: f64) -> MsgCounts {
    let st = &shared.stats;
    let c = &st.counters;
    let unsent = shared.unsent_in_window();
    MsgCounts {
        sent_window: Stats::get(&c.sent_window),
        unsent_down: unsent.iter().sum(),
        expected: summary::expected_deliveries(
            st.room_sent_window
                .iter()
                .zip(&unsent)
                .map(|(s, u)| Stats::get(s) + u),
            shared
                .room_readers
                .iter()
                .map(|r| r.load(Ordering::Relaxed)),
        ),
        delivered: st.room_delivered_window.iter().map(Stats::get).sum(),
        duplicated: Stats::get(&c.duplicated),
        late: Stats::get(&c.late),
        slow_consumers: slow,
        server_errors: st.server_errors.snapshot(),
        bad_frames: Stats::get(&c.bad_frames),
        echoes: Stats::get(&c.echoes),
        measure_s,
    }
}

/// The file in a run folder that keeps the first frames that made no sense to the generator.
pub const UNEXPECTED_FRAMES: &str = "unexpected_frames.txt";

/// The first few frames kept in `unexpected_frames.txt`, for the console: at most
/// [`CONSOLE_FRAMES`], each cut to [`CONSOLE_FRAME_CHARS`] characters and quoted (control
/// characters escaped); none when the file is not there.
fn first_frames(saved: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(saved) else {
        return Vec::new();
    };
    text.lines()
        .take(CONSOLE_FRAMES)
        .map(|l| {
            let cut: String = l.chars().take(CONSOLE_FRAME_CHARS).collect();
            let more = if cut.len() < l.len() { "…" } else { "" };
            format!("{cut:?}{more}")
        })
        .collect()
}

/// How many unexpected frames the console summary shows.
const CONSOLE_FRAMES: usize = 3;
/// How much of each it shows.
const CONSOLE_FRAME_CHARS: usize = 120;

/// The first unexpected frames as the run folder keeps them (one per line, newlines escaped);
/// `None` when there were none (no file is written).
pub fn unexpected_frames_text(frames: &[String]) -> Option<String> {
    if frames.is_empty() {
        return None;
    }
    let mut text = String::new();
    for f in frames {
        text.push_str(&f.replace('\\', "\\\\").replace('\n', "\\n"));
        text.push('\n');
    }
    Some(text)
}

/// The summary of a one-process run: its status, self-check and notes, and the figures.
fn summarize(
    opts: &RunOptions,
    e: Ended<'_>,
    target: TargetInfo,
    provenance: chatbench_model::provenance::Provenance,
    started_utc: chrono::DateTime<chrono::Utc>,
    failover: Option<chatbench_model::failover::FailoverOutcome>,
) -> Summary {
    let Ended {
        shared,
        driven,
        ticker,
        ..
    } = e;
    let st = &shared.stats;
    let msgs = msg_counts(shared, e.slow, driven.phases.measure);
    let status = run_status(driven.ready, ticker.interrupted, &e.panicked);
    let mut notes = Vec::new();
    if !e.panicked.is_empty() {
        notes.push(format!(
            "the run failed: {} (a bug in the load generator; its figures are not trustworthy)",
            e.panicked.join("; ")
        ));
    }
    let killed = driven.window.as_ref().is_some_and(|w| w.killed.is_some());
    if killed {
        notes.push(
            "a node was killed during the window: the server side's CPU over the window is not \
             reported (the killed process's CPU left the sum and its replacement's joined it)"
                .into(),
        );
    }
    let affinity = sys::cpu_affinity();
    let cpu = window_cpu_figures(
        driven.window.as_ref(),
        msgs.delivered,
        opts.target_info.cpu_affinity.as_deref(),
    );
    let by_role = driven.window.as_ref().and_then(|w| {
        threads::window_split(
            w.threads.0.as_ref(),
            w.threads.1.as_ref(),
            w.cpu.2.as_secs_f64(),
        )
    });
    let pacer_lag_p = e
        .pacer_lag
        .as_ref()
        .and_then(|r| Percentiles::of(&r.lateness));
    let invalid = self_check(&SelfCheck {
        status,
        generator_cores: cpu.gen_cores,
        generator_cpus: affinity.len(),
        pacer_p99_us: pacer_lag_p.as_ref().map(|p| p.p99),
    });
    if let Some(w) = busy_note(cpu.other_load.as_ref(), cpu.run_queue_wait.as_ref()) {
        notes.push(w);
    }
    let (answered, asked) = e.metrics_from;
    if answered > 0 && answered < asked {
        notes.push(format!(
            "server metrics are the sum of {answered} of the {asked} targets' /metrics (the others did not answer in 2 s)"
        ));
    }
    if ticker.target_gone {
        notes.push(chatbench_model::thresholds::TARGET_EXITED_NOTE.into());
    }
    let gen_rss_per_conn = match (&e.before.me, &driven.connected.me) {
        (Some(a), Some(b)) if driven.ready > 0 => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / driven.ready as f64)
        }
        _ => None,
    };
    let latency = st.window_latency();
    let connect_time = st.connect_time();
    let fault = driven.window.as_ref().and_then(|w| w.fault.clone());
    let connect_s = driven.phases.connect;
    summary::build(SummaryInput {
        scenario: &shared.scenario,
        overrides: &opts.overrides,
        started_utc,
        status,
        invalid,
        notes,
        target,
        generator: GenFigures {
            agents: 1,
            source_addrs: e.source_addrs.iter().map(|a| a.to_string()).collect(),
            cpu_affinity: affinity,
            cpu_cores_measure: cpu.gen_cores,
            pacer_lag_us: pacer_lag_p,
            pacer_realtime: e.pacer_lag.as_ref().map(|r| r.realtime),
            send_lag_us: Percentiles::of(&st.send_lag()),
            receive_lag_us: Percentiles::of(&st.receive_lag()),
            unstamped_reads: (shared.epoll_receivers() > 0)
                .then(|| Stats::get(&st.counters.unstamped_reads)),
            rss_per_conn_bytes: gen_rss_per_conn,
            cpu_cores_by_role: by_role.map(|s| s.cores),
            threads_by_role: by_role.map(|s| s.threads),
            by_role_agents: None,
        },
        provenance,
        phases: driven.phases,
        conns: conn_counts(shared, connect_s, &connect_time),
        msgs,
        latency: &latency,
        target_figures: TargetFigures {
            server_before: e.before.server,
            host_before: e.before.host,
            server_connected: driven.connected.server,
            host_connected: driven.connected.host,
            host_after: e.after.host,
            rss_peak_bytes: ticker.peak_rss,
            cpu_cores_measure: cpu.server_cores,
            cpu_us_per_delivery: cpu.per_delivery,
            server_metrics: e.server_metrics,
            other_load: cpu.other_load,
            run_queue_wait: cpu.run_queue_wait,
        },
        fault,
        distributed: None,
        failover,
    })
}

/// What the generator self-check looks at.
#[derive(Debug, Clone)]
pub struct SelfCheck {
    /// How the run ended.
    pub status: RunStatus,
    /// Generator CPU over the window, in cores.
    pub generator_cores: Option<f64>,
    /// CPUs the generator could use.
    pub generator_cpus: usize,
    /// Pacer wake-up lateness p99, µs.
    pub pacer_p99_us: Option<u64>,
}

/// The reasons a run is invalid (empty when it is valid): the generator was CPU-bound, missed
/// its schedule, or nothing was measured.
pub fn self_check(c: &SelfCheck) -> Vec<String> {
    let mut invalid = Vec::new();
    let cpus = c.generator_cpus.max(1);
    if let Some(g) = c.generator_cores {
        if g >= GEN_CPU_LIMIT * cpus as f64 {
            invalid.push(format!(
                "generator CPU-bound: it used {g:.2} of its {cpus} core(s) during the measurement window \
                 (limit {:.0} %); give it more cores or agents, or lower the load",
                GEN_CPU_LIMIT * 100.0
            ));
        }
    }
    if let Some(p99) = c.pacer_p99_us {
        if p99 > PACER_LAG_LIMIT_US {
            invalid.push(format!(
                "generator missed its schedule: pacer wake-up lateness p99 {p99} µs (limit {PACER_LAG_LIMIT_US} µs); \
                 the generator, not the target, delayed sends (is the machine busy?)"
            ));
        }
    }
    if c.status == RunStatus::Failed {
        invalid.push(
            "no connection could be made: nothing was measured (see connections.errors)".into(),
        );
    }
    invalid
}

/// The console's line of the generator's CPU by thread role, beside its CPU line: the groups,
/// and their sum against the process's total (a thread that ended inside the window is in the
/// total only). For a fleet, the agents' sum, and how many of its agents it sums.
fn threads_line(g: &chatbench_model::results::GeneratorInfo) -> Option<String> {
    let c = g.cpu_cores_by_role.as_ref()?;
    let sum = c.receive + c.pacer + c.tokio + c.other;
    let total = g
        .cpu_cores_measure
        .map(|t| format!(" of {t:.2}"))
        .unwrap_or_default();
    let agents = g
        .by_role_agents
        .map(|n| format!(" ({n} of {} agents)", g.agents))
        .unwrap_or_default();
    Some(format!(
        "  gen threads {sum:.2}{total} cores{agents}: receive {:.2}, pacer {:.2}, tokio {:.2}, other {:.2}",
        c.receive, c.pacer, c.tokio, c.other
    ))
}

/// The short human summary printed after a run.
pub fn human_summary(s: &Summary, dir: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verdict = match (s.status, s.valid) {
        (RunStatus::Failed, _) => "FAILED",
        (_, false) => "INVALID (generator-limited: do not use these figures as the target's)",
        (RunStatus::Interrupted, true) => "interrupted (figures cover what was measured)",
        (RunStatus::Complete, true) => "complete",
    };
    let _ = writeln!(out, "run {}: {verdict}", s.run_id);
    let _ = writeln!(
        out,
        "  target      {} {}",
        s.target.url,
        s.target
            .arch
            .as_deref()
            .map(|a| format!("(arch {a})"))
            .unwrap_or_default()
    );
    let c = &s.connections;
    let _ = writeln!(
        out,
        "  connections {}/{} ready, {:.0}/s opened, errors {:?}, closed by server {:?}, dropped by the server mid-window {}",
        c.ready, c.planned, c.open_rate_per_s, c.errors, c.closed_by_server, c.dropped_in_window
    );
    if let Some(r) = &c.reconnect {
        let _ = writeln!(
            out,
            "  reconnects  {} lost mid-run, {} back, {} gave up ({} attempts){}",
            r.lost,
            r.reconnected,
            r.failed,
            r.attempts,
            r.time_us
                .as_ref()
                .map(|p| format!(
                    ", time to reconnect p50 {:.0} ms p99 {:.0} ms",
                    p.p50 as f64 / 1000.0,
                    p.p99 as f64 / 1000.0
                ))
                .unwrap_or_default()
        );
    }
    write_messages(&mut out, s, dir);
    // The catalogue's figures as the catalogue shows them.
    let fig = |key: &str| figures::by_key(key).map(|f| f.text(s)).unwrap_or_default();
    if let Some(l) = &s.latency_us {
        let _ = writeln!(
            out,
            "  latency     p50 {}  p99 {}  p99.9 {}  max {:.3} ms  (n={}, from intended send time)",
            fig("p50_latency"),
            fig("p99_latency"),
            fig("p999_latency"),
            l.max as f64 / 1000.0,
            l.count
        );
    }
    let r = &s.target_resources;
    if let Some(mem) = &r.memory_per_conn {
        let _ = writeln!(
            out,
            "  server mem  {:.2} KiB/conn user space, {:.2} KiB/conn kernel slab",
            mem.user_bytes_per_conn / 1024.0,
            mem.kernel_slab_bytes_per_conn / 1024.0
        );
    }
    if r.cpu_cores_measure.is_some() {
        let per = r
            .cpu_us_per_delivery
            .map(|v| format!(", {v:.2} CPU-µs/delivery"))
            .unwrap_or_default();
        let waited = r
            .run_queue_wait
            .map(|w| {
                format!(
                    ", waited for a CPU {} ({:.1} ms in the window)",
                    fig("server_run_queue_wait"),
                    w.seconds * 1e3
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  server cpu  {}{per}{waited}",
            fig("server_cpu_cores")
        );
    }
    let g = &s.generator;
    let _ = writeln!(
        out,
        "  generator   {} cores, {} KiB/conn{}",
        g.cpu_cores_measure
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into()),
        g.rss_per_conn_bytes
            .map(|v| format!("{:.2}", v / 1024.0))
            .unwrap_or_else(|| "-".into()),
        g.pacer_lag_us
            .as_ref()
            .map(|p| format!(", pacer lag p99 {} µs", p.p99))
            .unwrap_or_default()
    );
    if let Some(line) = threads_line(g) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(line) = lag_line(g) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(n) = c.epoll_receivers {
        let _ = writeln!(
            out,
            "  receiving   {n} of {} ready connections on the epoll receive path, the rest on tokio; \
             epoll deliveries timed to {}",
            c.ready,
            match g.arrival {
                Some(ArrivalClock::Kernel) => {
                    "the kernel's receive time ([client] arrival = \"kernel\")"
                }
                Some(ArrivalClock::Read) | None => "the read's return ([client] arrival = \"read\")",
            }
        );
    }
    if let Some(line) = sending_line(c) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(d) = &s.distributed {
        write_fleet(&mut out, d);
    }
    if let Some(f) = &s.failover {
        write_failover(&mut out, f);
    }
    let why = if s.status == RunStatus::Failed {
        "FAILED"
    } else {
        "INVALID"
    };
    for r in &s.invalid_reasons {
        let _ = writeln!(out, "  {why}: {r}");
    }
    for n in &s.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(out, "  results     {}", dir.display());
    out
}

/// The send path's line: how many senders' frames the pacer's thread wrote and how often a
/// full out-buffer held one; `None` when none rode it. One-process and fleet runs alike (a
/// fleet's counts are its agents' sums).
fn sending_line(c: &chatbench_model::results::ConnectionStats) -> Option<String> {
    let n = c.pacer_senders?;
    let held = match c.pacer_send_held {
        Some(h) if h > 0 => format!(
            "; held {h} times by a full out-buffer (the server not reading), each message still timed from its intended send"
        ),
        _ => String::new(),
    };
    Some(format!(
        "  sending     {n} senders' frames written by the pacer's thread (the send path){held}"
    ))
}

/// The generator's own lag line: the send lag's and the receive lag's p50 / p99 / p99.9 (µs),
/// and reads without a kernel timestamp; `None` when neither lag was recorded.
fn lag_line(g: &chatbench_model::results::GeneratorInfo) -> Option<String> {
    let three = |p: &Percentiles| format!("{} / {} / {}", p.p50, p.p99, p.p999);
    let mut parts = Vec::new();
    if let Some(p) = &g.send_lag_us {
        parts.push(format!("send lag {} µs", three(p)));
    }
    if let Some(p) = &g.receive_lag_us {
        parts.push(format!("receive lag {} µs", three(p)));
    }
    if parts.is_empty() {
        return None;
    }
    let unstamped = match g.unstamped_reads {
        Some(n) if n > 0 => format!(" ({n} reads without a kernel timestamp)"),
        _ => String::new(),
    };
    Some(format!(
        "  lag         {} (p50 / p99 / p99.9){unstamped}",
        parts.join(", ")
    ))
}

/// The summary's message lines: sent and delivered, owed messages on dropped connections, bad
/// frames (with the first few, as saved), and echoes.
fn write_messages(out: &mut String, s: &Summary, dir: &std::path::Path) {
    use std::fmt::Write;
    let m = &s.messages;
    let _ = writeln!(
        out,
        "  messages    sent {} ({:.0}/s)  delivered {}/{} expected ({:.0}/s)  lost {}  duplicated {}  late {}",
        m.sent, m.sent_per_s, m.delivered, m.expected, m.delivered_per_s, m.lost, m.duplicated, m.late
    );
    if m.unsent_down > 0 {
        let _ = writeln!(
            out,
            "  unsent      {} messages fell due on connections the server had dropped (counted as lost to every reader)",
            m.unsent_down
        );
    }
    if m.bad_frames > 0 || !m.server_errors.is_empty() {
        let saved = dir.join(UNEXPECTED_FRAMES);
        let _ = writeln!(
            out,
            "  frames      bad {}  server errors {:?}{}",
            m.bad_frames,
            m.server_errors,
            if saved.exists() {
                format!("  (first bad frames in {})", saved.display())
            } else {
                String::new()
            }
        );
        for frame in first_frames(&saved) {
            let _ = writeln!(out, "              {frame}");
        }
    }
    if m.echoes > 0 {
        let _ = writeln!(
            out,
            "  echoes      {} (messages the server sent back to their own sender: not deliveries, not in the latency)",
            figures::by_key("echoes").map(|f| f.text(s)).unwrap_or_default()
        );
    }
}

/// The summary's lines for each agent of a fleet and each agent lost.
fn write_fleet(out: &mut String, d: &chatbench_model::results::DistributedInfo) {
    use std::fmt::Write;
    for a in &d.agents {
        let _ = writeln!(
            out,
            "  agent {:<4}  {} pid {}: {}/{} ready, own senders' deliveries {}/{} expected, clock offset {} µs (±{} µs){}",
            a.agent,
            a.address,
            a.pid,
            a.ready,
            a.planned,
            a.delivered,
            a.expected,
            a.clock_offset_us,
            a.clock_rtt_us / 2,
            if a.complete { "" } else { "  LOST" }
        );
    }
    let _ = writeln!(
        out,
        "  across agents {} deliveries judged (in `delivered`){}",
        d.delivered_cross_agent,
        match d.clock_error_us {
            Some(0) => ", timed on this host's one clock".to_string(),
            Some(e) => format!(", timed with the measured clock offsets: latency error ≤ {e} µs"),
            None => String::new(),
        }
    );
    for f in &d.faults {
        let _ = writeln!(
            out,
            "  LOST: agent {} ({}) at {:.1} s: {}",
            f.agent, f.address, f.at_s, f.what
        );
    }
}

/// The summary's two lines about a node killed mid-run.
fn write_failover(out: &mut String, f: &chatbench_model::failover::FailoverOutcome) {
    use std::fmt::Write;
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1} ms", v as f64 / 1000.0));
    let _ = writeln!(
        out,
        "  failover    node {} killed at {:.1} s into the window with {} clients: {}; restarted {} time(s){}",
        f.node,
        f.at_window_s,
        f.clients_on_node,
        match f.all_back_ms {
            Some(t) => format!("all back after {t:.0} ms ({} reconnects, {} gave up)", f.reconnects, f.reconnect_failures),
            None => format!(
                "NOT all back ({} of {} reconnected, {} gave up)",
                f.reconnects, f.clients_on_node, f.reconnect_failures
            ),
        },
        f.restarts,
        f.restart_ms
            .map(|v| format!(" (restart took {v} ms)"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "              lost {} of {} during the failover, {} of {} outside it; p99 before {} during {} after {}; p99 within {}x of before {}",
        f.during.lost,
        f.during.expected,
        f.outside.lost,
        f.outside.expected,
        ms(f.p99_before_us),
        ms(f.p99_during_us),
        ms(f.p99_after_us),
        f.p99_recovery_factor,
        f.p99_recovered_ms
            .map_or("not within the window".into(), |v| format!("{v:.0} ms after the kill")),
    );
}

/// How a run ended: failed when nothing connected or a worker panicked (a panicked worker
/// leaves figures that cannot be trusted, so such a run is never "complete").
fn run_status(ready: u64, interrupted: bool, panicked: &[String]) -> RunStatus {
    if ready == 0 || !panicked.is_empty() {
        RunStatus::Failed
    } else if interrupted {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_worker_panic_fails_the_run() {
        use crate::lifecycle::panic_message;
        let task = tokio::spawn(async {
            let rate = f64::MIN_POSITIVE;
            // What `ramp_rate = 1e-300` once did to the ramp.
            std::time::Duration::from_secs_f64(1.0 / rate)
        });
        let e = task.await.expect_err("the task panicked");
        let why = panic_message("the ramp", e).expect("a panic");
        assert!(why.starts_with("the ramp panicked: "), "{why}");
        assert_eq!(run_status(10, false, &[why]), RunStatus::Failed);
        assert_eq!(run_status(10, false, &[]), RunStatus::Complete);
        assert_eq!(run_status(10, true, &[]), RunStatus::Interrupted);
        assert_eq!(run_status(0, false, &[]), RunStatus::Failed);
        // A cancelled task is not a panic.
        let t = tokio::spawn(std::future::pending::<()>());
        t.abort();
        let e = t.await.expect_err("cancelled");
        assert!(panic_message("the ramp", e).is_none());
    }

    use super::*;

    fn check(generator_cores: f64, cpus: usize, pacer: u64, status: RunStatus) -> Vec<String> {
        self_check(&SelfCheck {
            status,
            generator_cores: Some(generator_cores),
            generator_cpus: cpus,
            pacer_p99_us: Some(pacer),
        })
    }

    #[test]
    fn a_quiet_generator_is_valid() {
        assert!(check(0.3, 1, 150, RunStatus::Complete).is_empty());
        assert!(
            check(1.7, 2, 150, RunStatus::Complete).is_empty(),
            "1.7 of 2 cores is under 90 %"
        );
    }

    #[test]
    fn a_cpu_bound_generator_invalidates_the_run() {
        let r = check(0.95, 1, 150, RunStatus::Complete);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("CPU-bound") && r[0].contains("0.95"), "{r:?}");
    }

    #[test]
    fn a_late_pacer_invalidates_the_run() {
        let r = check(0.2, 1, PACER_LAG_LIMIT_US + 1, RunStatus::Complete);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("schedule"), "{r:?}");
        assert!(
            check(0.2, 1, PACER_LAG_LIMIT_US, RunStatus::Complete).is_empty(),
            "the limit itself passes"
        );
    }

    #[test]
    fn nothing_measured_is_invalid() {
        let r = self_check(&SelfCheck {
            status: RunStatus::Failed,
            generator_cores: None,
            generator_cpus: 1,
            pacer_p99_us: None,
        });
        assert_eq!(r.len(), 1);
    }

    fn samples(server_cpu_s: f64, me_cpu: f64) -> Samples {
        Samples {
            server: Some(ProcSample {
                at: Duration::ZERO,
                rss_bytes: 1 << 20,
                rss_anon_bytes: 1 << 19,
                cpu_seconds: server_cpu_s,
                threads: 4,
                open_fds: 10,
                // A tenth of the CPU seconds, as waits go.
                run_delay_seconds: Some(server_cpu_s / 10.0),
            }),
            host: None,
            me: None,
            me_cpu,
        }
    }

    #[test]
    fn the_windows_cpu_figures_leave_out_the_server_when_a_node_was_killed() {
        let target = None;
        let window = |killed: Option<Killed>| Measured {
            cpu: (
                samples(10.0, 1.0),
                samples(14.0, 3.0),
                Duration::from_secs(4),
            ),
            threads: (None, None),
            fault: None,
            killed,
        };
        assert_eq!(
            window_cpu_figures(None, 100, target).gen_cores,
            None,
            "no window"
        );
        let f = window_cpu_figures(Some(&window(None)), 4_000, target);
        assert_eq!(f.gen_cores, Some(0.5));
        assert_eq!(f.server_cores, Some(1.0));
        // 1 core over 4 s is 4 s of CPU for 4,000 deliveries: 1,000 µs each.
        assert_eq!(f.per_delivery, Some(1_000.0));
        // 1.0 → 1.4 s waited over 4 s.
        let w = f.run_queue_wait.expect("both readings have it");
        assert!(
            (w.seconds - 0.4).abs() < 1e-9 && (w.share - 0.1).abs() < 1e-9,
            "{w:?}"
        );
        let killed = Killed {
            node: 1,
            pid: Some(42),
            at: Instant::now(),
            clients: Some(3),
            disconnects: 0,
            counts: (0, 0, 0),
            events_from: 0,
        };
        let f = window_cpu_figures(Some(&window(Some(killed))), 4_000, target);
        assert_eq!(
            f.gen_cores,
            Some(0.5),
            "the generator's own CPU still counts"
        );
        assert_eq!((f.server_cores, f.per_delivery), (None, None));
        assert_eq!(
            f.run_queue_wait, None,
            "the killed node's wait left the sum"
        );
    }

    #[test]
    fn the_sending_line_says_the_pacer_senders_and_a_held_count_only_when_held() {
        use chatbench_model::summary::{build, testing::input};
        let scenario = Scenario::parse("name='t'\nconnections=10\n", "t").expect("valid");
        let hist = chatbench_model::hist::new_hist();
        let line = |senders: u64, held: u64| {
            let mut i = input(&scenario, &hist);
            i.conns.pacer_senders = senders;
            i.conns.pacer_send_held = held;
            let s = build(i);
            let text = human_summary(&s, std::path::Path::new("/r"));
            let line = sending_line(&s.connections);
            assert_eq!(
                line.is_some(),
                text.lines().any(|l| l.starts_with("  sending ")),
                "{text}"
            );
            line
        };
        assert_eq!(line(0, 5), None);
        assert_eq!(
            line(6, 0).as_deref(),
            Some("  sending     6 senders' frames written by the pacer's thread (the send path)")
        );
        let held = line(6, 2).expect("a line");
        assert!(
            held.ends_with("; held 2 times by a full out-buffer (the server not reading), each message still timed from its intended send"),
            "{held}"
        );
    }
    #[test]
    fn the_threads_line_shows_each_role_and_the_sum_of_the_total_only_when_split() {
        use chatbench_model::results::ByRole;
        use chatbench_model::summary::{build, testing::input};
        let scenario = Scenario::parse("name='t'\nconnections=10\n", "t").expect("valid");
        let hist = chatbench_model::hist::new_hist();
        let fleet = |split: Option<ByRole<f64>>, agents: Option<(u32, u32)>| {
            let mut i = input(&scenario, &hist);
            i.generator.cpu_cores_measure = Some(0.2);
            i.generator.cpu_cores_by_role = split;
            if let Some((summed, of)) = agents {
                i.generator.agents = of;
                i.generator.by_role_agents = Some(summed);
            }
            human_summary(&build(i), std::path::Path::new("/r"))
        };
        let text = |split| fleet(split, None);
        assert!(!text(None).contains("gen threads"));
        let split = ByRole {
            receive: 0.15,
            pacer: 0.02,
            tokio: 0.001,
            other: 0.0,
        };
        let out = text(Some(split));
        assert!(
            out.contains(
                "  gen threads 0.17 of 0.20 cores: receive 0.15, pacer 0.02, tokio 0.00, other 0.00\n"
            ),
            "{out}"
        );
        // A fleet's: the agents' sum, and how many of them it sums.
        let out = fleet(Some(split), Some((2, 3)));
        assert!(
            out.contains(
                "  gen threads 0.17 of 0.20 cores (2 of 3 agents): receive 0.15, pacer 0.02, tokio 0.00, other 0.00\n"
            ),
            "{out}"
        );
    }
}
