//! The coordinator of a single-process run: checks the plan fits, preflights the target, drives
//! the engine through its phases, samples the target and the generator once a second, applies
//! the generator self-check, and writes the results.
//!
//! Data flows one way: scenario → engine (+ sampler) → [`Summary`] and files. Ctrl-C (the
//! `interrupt` channel) ends the current phase early; what was measured is still written, with
//! the status `interrupted`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;

use crate::engine::{ramp, Phase, Shared};
use crate::failover::{self, FailoverInput, SecondHist};
use crate::plan::{Layout, Plan};
use crate::progress::{Progress, ProgressMode};
use crate::sampler;
use crate::stats::Stats;
use crate::supervisor::{EventKind, Supervisor};
use crate::sys;
use crate::target::{Target, TargetError};
use chatbench_model::figures;
use chatbench_model::results::{
    write_run, FaultOutcome, OtherLoad, Percentiles, PhaseTimes, ReconnectStats, ResultsError,
    RunStatus, SeriesRow, Summary, TargetInfo,
};
use chatbench_model::sampler::{HostSample, ProcSample};
use chatbench_model::scenario::Scenario;
use chatbench_model::series;
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
    /// run's future (the main thread under `block_on`): see [`Supervisor`].
    pub cluster: Option<Arc<Mutex<Supervisor>>>,
}

/// How often the run polls the supervisor.
const SUPERVISOR_POLL: Duration = Duration::from_millis(50);

fn lock_sup(m: &Mutex<Supervisor>) -> std::sync::MutexGuard<'_, Supervisor> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pids to sample: every running node, a shared-port cluster's primary and the private
/// redis-server.
fn cluster_pids(sup: &Supervisor) -> Vec<u32> {
    let mut pids: Vec<u32> = sup.nodes().iter().filter_map(|n| n.pid).collect();
    pids.extend(sup.primary_pid());
    pids.extend(sup.redis_pid());
    pids
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

struct Ticker {
    shared: Arc<Shared>,
    started: Instant,
    series: Vec<SeriesRow>,
    last: Samples,
    last_at: Instant,
    last_sent: u64,
    last_delivered: u64,
    peak_rss: Option<u64>,
    progress: Progress,
    pids: Vec<u32>,
    target_gone: bool,
    interrupt: watch::Receiver<bool>,
    interrupted: bool,
    cluster: Option<Arc<Mutex<Supervisor>>>,
    last_poll: Instant,
    /// Every second's latency histogram, kept when the run kills a node (failover figures).
    seconds: Option<Vec<SecondHist>>,
}

impl Ticker {
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
        self.pids = cluster_pids(&sup);
        // The summed CPU of a changed set of processes is not comparable with the last one.
        self.last.server = None;
    }

    /// Ticks once a second until `until` (or interrupt). Returns false when interrupted.
    async fn run_until(
        &mut self,
        phase: Phase,
        until: Instant,
        label_total: Duration,
        done: impl Fn(&Shared) -> bool,
    ) -> bool {
        let phase_start = Instant::now();
        loop {
            if self.interrupted {
                return false;
            }
            let now = Instant::now();
            if now >= until || done(&self.shared) {
                return true;
            }
            // Wake every 10 ms so that `done` ends a phase promptly (the connect phase's length is
            // the open-rate figure), and tick once a second.
            let next = (self.last_at + Duration::from_secs(1))
                .min(until)
                .min(now + Duration::from_millis(10));
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
            if Instant::now() >= self.last_at + Duration::from_secs(1) {
                self.tick(phase, phase_start.elapsed(), label_total);
            }
        }
    }

    fn tick(&mut self, phase: Phase, in_phase: Duration, phase_len: Duration) {
        let now = Instant::now();
        let s = take_samples(&self.pids);
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let t = now.duration_since(self.started).as_secs_f64();
        let st = &self.shared.stats;
        let c = &st.counters;
        let sent = Stats::get(&c.sent);
        let delivered = Stats::get(&c.delivered);
        let interval = st.take_interval();
        let open = c.open.load(Ordering::Relaxed).max(0) as f64;
        if let Some(seconds) = self.seconds.as_mut() {
            seconds.push(SecondHist {
                from_s: self.last_at.duration_since(self.started).as_secs_f64(),
                to_s: t,
                hist: interval.clone(),
            });
        }
        let mut rows: Vec<(&str, f64)> = vec![
            (series::CONNECTIONS_OPEN, open),
            (
                series::CONNECT_ATTEMPTS,
                Stats::get(&c.connect_attempts) as f64,
            ),
            (series::CONNECT_ERRORS, st.connect_errors.total() as f64),
            (series::CLOSED_BY_SERVER, st.closed_by_server.total() as f64),
            (series::SENT_PER_S, (sent - self.last_sent) as f64 / dt),
            (
                series::DELIVERED_PER_S,
                (delivered - self.last_delivered) as f64 / dt,
            ),
            (series::LATENCY_COUNT, interval.len() as f64),
        ];
        if self.shared.scenario.reconnects() {
            rows.push((series::CONNECTIONS_LOST, Stats::get(&c.disconnects) as f64));
            rows.push((series::RECONNECTS, Stats::get(&c.reconnects) as f64));
            rows.push((
                series::RECONNECT_FAILURES,
                Stats::get(&c.reconnect_failures) as f64,
            ));
        }
        if !interval.is_empty() {
            rows.push((
                series::LATENCY_P50_US,
                interval.value_at_quantile(0.5) as f64,
            ));
            rows.push((
                series::LATENCY_P99_US,
                interval.value_at_quantile(0.99) as f64,
            ));
            rows.push((series::LATENCY_MAX_US, interval.max() as f64));
        }
        if let (Some(a), Some(b)) = (&self.last.server, &s.server) {
            rows.push((series::TARGET_RSS_BYTES, b.rss_bytes as f64));
            rows.push((
                series::TARGET_CPU_CORES,
                (b.cpu_seconds - a.cpu_seconds) / dt,
            ));
            rows.push((series::TARGET_THREADS, b.threads as f64));
            rows.push((series::TARGET_OPEN_FDS, b.open_fds as f64));
            self.peak_rss = Some(self.peak_rss.unwrap_or(0).max(b.rss_bytes));
        }
        if !self.pids.is_empty() && s.server.is_none() && !self.target_gone {
            self.target_gone = true;
            self.progress.println(
                "the target process has exited; the run continues to record what the clients see",
            );
        }
        if let Some(h) = &s.host {
            rows.push((series::HOST_SLAB_BYTES, h.slab_bytes as f64));
            rows.push((series::HOST_TCP_INUSE, h.tcp_inuse as f64));
        }
        if let Some(me) = &s.me {
            rows.push((series::GENERATOR_RSS_BYTES, me.rss_bytes as f64));
        }
        rows.push((
            series::GENERATOR_CPU_CORES,
            (s.me_cpu - self.last.me_cpu) / dt,
        ));
        for (metric, value) in rows {
            self.series.push(SeriesRow {
                t_s: (t * 1000.0).round() / 1000.0,
                phase: phase.as_str().into(),
                metric: metric.into(),
                value,
            });
        }
        let p99 = if interval.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}ms", interval.value_at_quantile(0.99) as f64 / 1000.0)
        };
        self.progress.update(&format!(
            "[{:<8} {:>4.0}s/{:.0}s] conns {}/{}  sent {:.0}/s  delivered {:.0}/s  p99 {}  conn errors {}  closed {}",
            phase.as_str(),
            in_phase.as_secs_f64(),
            phase_len.as_secs_f64(),
            open,
            self.shared.plan.conns.len(),
            (sent - self.last_sent) as f64 / dt,
            (delivered - self.last_delivered) as f64 / dt,
            p99,
            st.connect_errors.total(),
            st.closed_by_server.total(),
        ));
        self.last_sent = sent;
        self.last_delivered = delivered;
        self.last = s;
        self.last_at = now;
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

/// The failover section, from the kill and what followed.
fn failover_outcome(
    shared: &Shared,
    k: &Killed,
    started: Instant,
    window_s: (f64, f64),
    seconds: &[SecondHist],
    sup: Option<&Arc<Mutex<Supervisor>>>,
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

/// Runs a scenario against a target and writes the results.
pub async fn run(opts: RunOptions) -> Result<RunReport, RunError> {
    let scenario = Arc::new(opts.scenario);
    let limit = sys::raise_nofile().map_err(RunError::Limit)?;
    sys::fits_in_one_process(u64::from(scenario.connections), &limit)?;
    let targets = parse_targets(&opts.target_url)?;
    let layout = Layout {
        agents: 1,
        targets: targets.len() as u32,
        policy: scenario.target_policy,
    };
    if let Some(problem) = layout.problem(&scenario) {
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
            Some(c) => lock_sup(c).nodes().len() as u32,
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
        target.preflight(&scenario).await?;
    }
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
    let (shared, phase_tx) = Shared::new(scenario.clone(), plan, targets, source_addrs.clone());
    let pids = opts.target_info.sampled_pids();
    let before = take_samples(&pids);
    let started = Instant::now();
    let mut ticker = Ticker {
        shared: shared.clone(),
        started,
        series: Vec::new(),
        last: take_samples(&pids),
        last_at: started,
        last_sent: 0,
        last_delivered: 0,
        peak_rss: None,
        progress: Progress::new(opts.progress),
        pids: pids.clone(),
        target_gone: false,
        interrupt: opts.interrupt.clone(),
        interrupted: *opts.interrupt.borrow(),
        cluster: opts.cluster.clone(),
        last_poll: started,
        seconds: scenario.kill_fault().map(|_| Vec::new()),
    };
    let n = scenario.connections as u64;
    let handles = Arc::new(Mutex::new(Vec::new()));
    let ramp_task = tokio::spawn(ramp(shared.clone(), handles.clone()));

    // Connect: until every attempt has an outcome, or the deadline (which moves with the time
    // the ramp was held back by `max_connecting`, within a bound).
    let connect_limit = started + scenario.connect_deadline(n, scenario.max_ramp_hold(n));
    let all_done = move |s: &Shared| {
        let c = &s.stats.counters;
        let held = Duration::from_micros(Stats::get(&c.ramp_held_us));
        Stats::get(&c.ready) + s.stats.connect_errors.total() >= n
            || Instant::now() >= started + s.scenario.connect_deadline(n, held)
    };
    let mut phases = PhaseTimes::default();
    ticker
        .run_until(
            Phase::Connect,
            connect_limit,
            scenario.connect_deadline(n, Duration::ZERO),
            all_done,
        )
        .await;
    let connect_phase = started.elapsed();
    phases.connect = connect_phase.as_secs_f64();
    let _ = phase_tx.send(Phase::Settle);
    ramp_task.abort();
    // Workers that panicked: the run then fails, whatever it measured.
    let mut panicked: Vec<String> = Vec::new();
    if let Err(e) = ramp_task.await {
        panicked.extend(panic_message("the ramp", e));
    }
    let ready = Stats::get(&shared.stats.counters.ready);

    // Settle, then the memory reading.
    let t = Instant::now();
    ticker
        .run_until(Phase::Settle, t + scenario.settle, scenario.settle, |_| {
            false
        })
        .await;
    phases.settle = t.elapsed().as_secs_f64();
    let connected = take_samples(&pids);

    // Warmup and measure: the pacer wakes senders.
    let pacer_stop = Arc::new(AtomicBool::new(false));
    let mut pacer = None;
    let mut window_cpu: Option<(Samples, Samples, Duration)> = None;
    let mut poisoned: Option<(String, f64, u64)> = None;
    let mut fault = None;
    let mut killed: Option<Killed> = None;
    let mut window_s = (0.0, 0.0);
    if !ticker.interrupted && ready > 0 {
        let send_start = Instant::now();
        shared.set_timeline(send_start);
        let w0 = (send_start + scenario.warmup)
            .duration_since(started)
            .as_secs_f64();
        window_s = (w0, w0 + scenario.measure.as_secs_f64());
        let paced = shared.paced_senders();
        let stop = pacer_stop.clone();
        pacer = Some(
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || crate::pacer::run(send_start, paced, stop)),
        );
        let _ = phase_tx.send(Phase::Warmup);
        ticker
            .run_until(
                Phase::Warmup,
                send_start + scenario.warmup,
                scenario.warmup,
                |_| false,
            )
            .await;
        phases.warmup = send_start.elapsed().as_secs_f64();
        if !ticker.interrupted {
            let _ = phase_tx.send(Phase::Measure);
            let m0 = take_samples(&pids);
            let t0 = Instant::now();
            let measure_end = send_start + scenario.warmup + scenario.measure;
            if let Some(after) = scenario.poison_after {
                ticker
                    .run_until(Phase::Measure, t0 + after, scenario.measure, |_| false)
                    .await;
                if !ticker.interrupted {
                    let open_before =
                        shared.stats.counters.open.load(Ordering::Relaxed).max(0) as u64;
                    if let Some(id) = shared.poison() {
                        ticker
                            .progress
                            .println(&format!("fault injection: {id} sent {{\"t\":\"panic\"}}"));
                        poisoned = Some((id, started.elapsed().as_secs_f64(), open_before));
                    }
                }
            }
            if let (Some(f), Some(cluster)) = (scenario.kill_fault(), opts.cluster.clone()) {
                ticker
                    .run_until(Phase::Measure, t0 + f.at, scenario.measure, |_| false)
                    .await;
                if !ticker.interrupted {
                    let c = &shared.stats.counters;
                    let clients = (!lock_sup(&cluster).shares_one_port())
                        .then(|| shared.open_on(f.kill_node - 1));
                    let disconnects = Stats::get(&c.disconnects);
                    let counts = (
                        Stats::get(&c.reconnects),
                        Stats::get(&c.reconnect_attempts),
                        Stats::get(&c.reconnect_failures),
                    );
                    let at = Instant::now();
                    let (pid, pids) = {
                        let mut sup = lock_sup(&cluster);
                        let pid = sup.kill(f.kill_node);
                        let mut pids = cluster_pids(&sup);
                        pids.retain(|p| Some(*p) != pid);
                        (pid, pids)
                    };
                    ticker.pids = pids;
                    ticker.last.server = None;
                    ticker.progress.println(&format!(
                        "fault: SIGKILL node {} (pid {}) with {} clients on it",
                        f.kill_node,
                        pid.map_or("-".into(), |p| p.to_string()),
                        clients.map_or("its".into(), |n| n.to_string())
                    ));
                    killed = Some(Killed {
                        node: f.kill_node,
                        pid,
                        at,
                        clients,
                        disconnects,
                        counts,
                        events_from: lock_sup(&cluster).events().len(),
                    });
                }
            }
            ticker
                .run_until(Phase::Measure, measure_end, scenario.measure, |_| false)
                .await;
            if let Some((id, at_s, open_before)) = poisoned.take() {
                let open_after = shared.stats.counters.open.load(Ordering::Relaxed).max(0) as u64;
                let poisoner_lost = shared.poisoner_gone.load(Ordering::Relaxed);
                fault = Some(FaultOutcome {
                    poisoner: id,
                    at_s,
                    open_before,
                    open_after,
                    poisoner_lost,
                    others_lost: open_before
                        .saturating_sub(open_after)
                        .saturating_sub(u64::from(poisoner_lost)),
                });
            }
            phases.measure = t0.elapsed().as_secs_f64();
            window_cpu = Some((m0, take_samples(&pids), t0.elapsed()));
        }
        pacer_stop.store(true, Ordering::Relaxed);
        // Cooldown: senders are done; receivers read stragglers. After an interrupt, a short
        // drain instead, so that in-flight messages are not counted as lost.
        let _ = phase_tx.send(Phase::Cooldown);
        let cooldown = if ticker.interrupted {
            scenario.cooldown.min(Duration::from_secs(1))
        } else {
            scenario.cooldown
        };
        let t = Instant::now();
        let was = ticker.interrupted;
        ticker.interrupted = false;
        ticker
            .run_until(Phase::Cooldown, t + cooldown, cooldown, |_| false)
            .await;
        ticker.interrupted |= was;
        phases.cooldown = t.elapsed().as_secs_f64();
    }
    // The reference servers count what only they can see (drops for slow consumers,
    // disconnects by reason): read it before the clients leave.
    // Every node's, summed (a cluster's or partitioned servers' counters are per process).
    let (server_metrics, metrics_from) = if opts.target_info.arch.is_some() {
        let scraped = futures_util::future::join_all(
            shared
                .targets
                .iter()
                .map(|t| crate::target::scrape_metrics(t, Duration::from_secs(2))),
        )
        .await;
        let from = (scraped.iter().flatten().count(), scraped.len());
        (
            crate::target::sum_metrics(scraped.into_iter().flatten()),
            from,
        )
    } else {
        (None, (0, 0))
    };
    let _ = phase_tx.send(Phase::Stop);
    let pacer_lag = match pacer.and_then(|p| p.ok()).map(|h| h.join()) {
        Some(Ok(report)) => Some(report),
        Some(Err(_)) => {
            panicked.push("the pacer thread panicked".into());
            None
        }
        None => None,
    };
    let tasks: Vec<_> = handles
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    if let Ok(ended) = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(tasks),
    )
    .await
    {
        let worst = ended
            .into_iter()
            .filter_map(Result::err)
            .find_map(|e| panic_message("a connection task", e));
        panicked.extend(worst);
    }
    ticker.progress.finish();
    let after = take_samples(&pids);
    provenance.finish();

    // The summary.
    let st = &shared.stats;
    let c = &st.counters;
    let mut expected = 0u64;
    let mut delivered_rooms = 0u64;
    for (room, readers) in shared.room_readers.iter().enumerate() {
        let readers = readers.load(Ordering::Relaxed);
        expected += Stats::get(&st.room_sent_window[room]) * readers.saturating_sub(1);
        delivered_rooms += Stats::get(&st.room_delivered_window[room]);
    }
    let delivered = delivered_rooms;
    let latency = st.window_latency();
    let connect_hist = st.connect_time();
    let status = run_status(ready, ticker.interrupted, &panicked);
    let mut notes = Vec::new();
    if !panicked.is_empty() {
        notes.push(format!(
            "the run failed: {} (a bug in the load generator; its figures are not trustworthy)",
            panicked.join("; ")
        ));
    }
    let failover = killed.as_ref().map(|k| {
        failover_outcome(
            &shared,
            k,
            started,
            window_s,
            ticker.seconds.as_deref().unwrap_or(&[]),
            opts.cluster.as_ref(),
        )
    });
    if killed.is_some() {
        notes.push(
            "a node was killed during the window: the server side's CPU over the window is not \
             reported (the killed process's CPU left the sum and its replacement's joined it)"
                .into(),
        );
    }
    let affinity = sys::cpu_affinity();
    let mut gen_cores = None;
    let mut server_cores = None;
    let mut cpu_per_delivery = None;
    let mut other_load = None;
    if let Some((a, b, wall)) = &window_cpu {
        let w = wall.as_secs_f64().max(1e-9);
        gen_cores = Some((b.me_cpu - a.me_cpu) / w);
        if let (Some(sa), Some(sb), None) = (&a.server, &b.server, &killed) {
            let (cores, per) =
                summary::server_cpu(sb.cpu_seconds - sa.cpu_seconds, w, delivered, w);
            server_cores = Some(cores);
            cpu_per_delivery = per;
        }
        // What else ran on the server's CPUs (only when it has its own: pinned apart from
        // the generator, whose CPU time would otherwise count as "other").
        other_load = summary::other_load(
            a.host.as_ref(),
            b.host.as_ref(),
            server_cores,
            opts.target_info.cpu_affinity.as_deref(),
            &crate::sys::cpu_affinity(),
        );
    }
    let pacer_lag_p = pacer_lag
        .as_ref()
        .and_then(|r| Percentiles::of(&r.lateness));
    let pacer_realtime = pacer_lag.as_ref().map(|r| r.realtime);
    let invalid = self_check(&SelfCheck {
        status,
        generator_cores: gen_cores,
        generator_cpus: affinity.len(),
        pacer_p99_us: pacer_lag_p.as_ref().map(|p| p.p99),
    });
    if let Some(w) = other_load.as_ref().and_then(OtherLoad::warning) {
        notes.push(w);
    }
    if metrics_from.0 > 0 && metrics_from.0 < metrics_from.1 {
        notes.push(format!(
            "server metrics are the sum of {} of the {} targets' /metrics (the others did not answer in 2 s)",
            metrics_from.0, metrics_from.1
        ));
    }
    if ticker.target_gone {
        notes.push("the target process exited during the run".into());
    }
    let measure_s = phases.measure;
    let gen_rss_per_conn = match (&before.me, &connected.me) {
        (Some(a), Some(b)) if ready > 0 => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / ready as f64)
        }
        _ => None,
    };
    let mut summary = summary::build(SummaryInput {
        scenario: &scenario,
        overrides: &opts.overrides,
        started_utc,
        status,
        invalid,
        notes,
        target: target_info,
        generator: GenFigures {
            agents: 1,
            source_addrs: source_addrs.iter().map(|a| a.to_string()).collect(),
            cpu_affinity: affinity,
            cpu_cores_measure: gen_cores,
            pacer_lag_us: pacer_lag_p,
            pacer_realtime,
            send_lag_us: Percentiles::of(&st.send_lag()),
            rss_per_conn_bytes: gen_rss_per_conn,
        },
        provenance,
        phases,
        conns: ConnCounts {
            planned: n,
            attempted: Stats::get(&c.connect_attempts),
            connected: Stats::get(&c.connected),
            ready,
            errors: st.connect_errors.snapshot(),
            closed_by_server: st.closed_by_server.snapshot(),
            connect_s: connect_phase.as_secs_f64(),
            ramp_held_s: Stats::get(&c.ramp_held_us) as f64 / 1e6,
            connect_time: &connect_hist,
            reconnect: scenario.reconnects().then(|| ReconnectStats {
                lost: Stats::get(&c.disconnects),
                attempts: Stats::get(&c.reconnect_attempts),
                reconnected: Stats::get(&c.reconnects),
                failed: Stats::get(&c.reconnect_failures),
                errors: st.reconnect_errors.snapshot(),
                time_us: Percentiles::of(&st.reconnect_time()),
            }),
        },
        msgs: MsgCounts {
            sent_window: Stats::get(&c.sent_window),
            expected,
            delivered,
            duplicated: Stats::get(&c.duplicated),
            late: Stats::get(&c.late),
            slow_consumers: slow,
            server_errors: st.server_errors.snapshot(),
            bad_frames: Stats::get(&c.bad_frames),
            measure_s,
        },
        latency: &latency,
        target_figures: TargetFigures {
            server_before: before.server,
            host_before: before.host,
            server_connected: connected.server,
            host_connected: connected.host,
            host_after: after.host,
            rss_peak_bytes: ticker.peak_rss,
            cpu_cores_measure: server_cores,
            cpu_us_per_delivery: cpu_per_delivery,
            server_metrics,
            other_load,
        },
        fault,
        distributed: None,
        failover,
    });
    let dir = write_run(&opts.out_root, &mut summary, &ticker.series, &latency)?;
    Ok(RunReport { dir, summary })
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
        "  connections {}/{} ready, {:.0}/s opened, errors {:?}, closed by server {:?}",
        c.ready, c.planned, c.open_rate_per_s, c.errors, c.closed_by_server
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
    let m = &s.messages;
    let _ = writeln!(
        out,
        "  messages    sent {} ({:.0}/s)  delivered {}/{} expected ({:.0}/s)  lost {}  duplicated {}  late {}",
        m.sent, m.sent_per_s, m.delivered, m.expected, m.delivered_per_s, m.lost, m.duplicated, m.late
    );
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
        let _ = writeln!(out, "  server cpu  {}{per}", fig("server_cpu_cores"));
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
    if let Some(d) = &s.distributed {
        for a in &d.agents {
            let _ = writeln!(
                out,
                "  agent {:<4}  {} pid {}: {}/{} ready, delivered {}/{} expected, clock offset {} µs (±{} µs){}",
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
        for f in &d.faults {
            let _ = writeln!(
                out,
                "  LOST: agent {} ({}) at {:.1} s: {}",
                f.agent, f.address, f.at_s, f.what
            );
        }
    }
    if let Some(f) = &s.failover {
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
    for r in &s.invalid_reasons {
        let _ = writeln!(out, "  INVALID: {r}");
    }
    for n in &s.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(out, "  results     {}", dir.display());
    out
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

/// What a worker's panic said, if `e` is a panic (a cancelled task is not one).
pub(crate) fn panic_message(what: &str, e: tokio::task::JoinError) -> Option<String> {
    let payload = e.try_into_panic().ok()?;
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "no message".into());
    Some(format!("{what} panicked: {text}"))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_worker_panic_fails_the_run() {
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
}
