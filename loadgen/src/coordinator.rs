//! The coordinator of a distributed run (`chatbench run --agents local:N | auto | HOST:PORT,…`):
//! starts local agents (the same executable, own process group, killed by pid at the end) or
//! connects to remote ones, checks versions, measures clock offsets, splits the plan
//! ([`crate::plan::Plan::for_agent`]), holds the barrier, gives every agent a common start time
//! in its own clock, merges the agents' per-second interval histograms and counters into one
//! time series and one progress display, merges their final histograms exactly (histogram
//! addition), and writes the same results files as a one-process run plus a per-agent
//! breakdown (`summary.distributed`).
//!
//! Faults: an agent whose control connection ends, or that sends nothing for
//! [`STALL_LIMIT`], is named with the time it was lost; the others run to the end of the window;
//! the results are marked partial (status `interrupted`, invalid, with the reason). Every wait
//! is bounded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use tokio::io::BufReader as TokioBufReader;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::control::{
    self, add_hist, decode_hist, unix_us, ControlError, Final, FromAgent, LoopClock, Setup, Tick,
    ToAgent, CONTROL_VERSION, STALL_LIMIT,
};
use crate::engine::Phase;
use crate::ledger;
use crate::lifecycle::{Counts, Edges, ProgressView, Rates, Second, Timeline};
use crate::live_metrics::LiveMetrics;
use crate::plan::{Layout, Plan, MAX_AGENTS};
use crate::progress::Progress;
use crate::readings::{window_cpu, Mark, PhaseReading, Reading, Readings, SecondReading};
use crate::run::{
    parse_targets, self_check, unexpected_frames_text, RunError, RunOptions, RunReport, SelfCheck,
    UNEXPECTED_FRAMES,
};
use crate::target::Target;
use crate::{process, sampler, sys, threads};
use chatbench_model::hist::new_hist;
use chatbench_model::hlog::{LatencyLog, HLOG_FILE};
use chatbench_model::provenance::Provenance;
use chatbench_model::results::{
    busy_note, write_run, AgentBreakdown, AgentFault, DistributedInfo, OtherLoad, Percentiles,
    PhaseTimes, ReconnectStats, RunQueueWait, RunStatus, SeriesRow,
};
use chatbench_model::scenario::Scenario;
use chatbench_model::summary::{
    self, ConnCounts, GenFigures, MsgCounts, SummaryInput, TargetFigures,
};

/// Where the agents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentsSpec {
    /// Start this many local agent processes.
    Local(u32),
    /// Start as many local agents as the descriptor limit and the plan need.
    Auto,
    /// Connect to running agents at these addresses.
    Remote(Vec<String>),
}

impl AgentsSpec {
    /// Parses `local:N`, `auto` or `HOST:PORT,HOST:PORT,…`.
    pub fn parse(s: &str) -> Result<AgentsSpec, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(AgentsSpec::Auto);
        }
        if let Some(n) = s.strip_prefix("local:") {
            return match n.parse::<u32>() {
                Ok(n) if (1..=MAX_AGENTS).contains(&n) => Ok(AgentsSpec::Local(n)),
                _ => Err(format!(
                    "--agents {s:?}: local:N needs N between 1 and {MAX_AGENTS}, e.g. local:4"
                )),
            };
        }
        let list: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        if list.is_empty() || list.iter().any(|a| !a.contains(':')) {
            return Err(format!(
                "--agents {s:?}: expected local:N, auto, or HOST:PORT,HOST:PORT,… (agents started with `chatbench agent --listen HOST:PORT`)"
            ));
        }
        if list.len() > MAX_AGENTS as usize {
            return Err(format!(
                "--agents: {} agents named; a run has at most {MAX_AGENTS}",
                list.len()
            ));
        }
        Ok(AgentsSpec::Remote(list))
    }
}

/// Local agents for `auto`: enough that each holds at most its descriptor limit.
pub fn auto_agents(connections: u64, hard_nofile: u64) -> u32 {
    let per = hard_nofile
        .min(1 << 20)
        .saturating_sub(sys::FD_HEADROOM)
        .max(1);
    connections.div_ceil(per).clamp(1, u64::from(MAX_AGENTS)) as u32
}

/// How long a local agent has to exit on SIGTERM before it is killed.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);

/// A local agent process, stopped by its pid when dropped.
struct LocalAgent {
    child: Child,
    addr: String,
}

impl LocalAgent {
    /// Starts a local agent that accepts `token` (given in its environment, which only this
    /// user can read, not on its command line), as every long-lived child is started
    /// ([`process::spawn_pinned`]: its own process group, dying with the thread that started
    /// it — the runtime's, which outlives the run — unpinned).
    fn spawn(exe: &std::path::Path, token: &str) -> Result<LocalAgent, String> {
        let mut command = Command::new(exe);
        command
            .args(["agent", "--listen", "127.0.0.1:0", "--once"])
            .env(crate::agent::TOKEN_ENV, token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        process::spawn_pinned(&mut command, &[]);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a local agent ({}): {e}", exe.display()))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            return Err("local agent: no stdout".into());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).ok();
        let addr = line
            .as_deref()
            .and_then(|l| l.split_whitespace().next())
            .map(String::from);
        match addr {
            Some(addr) => Ok(LocalAgent { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(
                    "a local agent did not announce its address within 10 s (see its stderr above)"
                        .into(),
                )
            }
        }
    }

    /// SIGTERM by pid, then SIGKILL after [`AGENT_STOP_GRACE`]; reaps it either way.
    fn stop(&mut self) -> process::StopOutcome {
        process::terminate_then_kill(&mut self.child, AGENT_STOP_GRACE)
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        // An agent gone already is reaped, and not signalled (its pid may be reused).
        let _ = self.stop();
    }
}

/// One connected agent.
struct AgentLink {
    id: u32,
    address: String,
    pid: u32,
    /// The writing side until the agent is ready; then its writer task owns it.
    w: Option<OwnedWriteHalf>,
    /// Messages to the agent once its writer task runs (see [`writer`]); dropping it closes
    /// the control connection after the queued messages.
    out: Option<mpsc::Sender<ToAgent>>,
    offset_us: i64,
    rtt_us: u64,
    planned: u64,
    last_heard: Instant,
    connected: Option<u64>,
    /// Its engine's epoch on its wall clock (from its barrier message; 0: not told).
    epoch_unix_us: i64,
    last_tick: Option<Tick>,
    fin: Option<Final>,
    lost: bool,
}

impl AgentLink {
    /// A link to agent `id` at `address`, before its hello.
    fn new(id: u32, address: &str, w: Option<OwnedWriteHalf>) -> AgentLink {
        AgentLink {
            id,
            address: address.to_string(),
            pid: 0,
            w,
            out: None,
            offset_us: 0,
            rtt_us: 0,
            planned: 0,
            last_heard: Instant::now(),
            connected: None,
            epoch_unix_us: 0,
            last_tick: None,
            fin: None,
            lost: false,
        }
    }

    /// Queues `m` for the writer task without waiting: a full queue means the agent does not
    /// read its control messages.
    fn post(&self, m: ToAgent) -> Result<(), String> {
        let Some(out) = &self.out else {
            return Err("its control connection is closed".into());
        };
        out.try_send(m).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                format!("it does not read its control messages ({OUTBOX} queued)")
            }
            mpsc::error::TrySendError::Closed(_) => "its control connection failed".into(),
        })
    }

    /// Closes the control connection (after what is queued): the agent stops its load.
    fn close(&mut self) {
        self.out = None;
        self.w = None;
    }

    /// Hands the writing side to a writer task of its own (heartbeats included).
    fn start_writer(&mut self, i: usize, events: mpsc::Sender<Event>) {
        if let Some(w) = self.w.take() {
            let (tx, rx) = mpsc::channel(OUTBOX);
            tokio::spawn(writer(i, w, rx, events));
            self.out = Some(tx);
        }
    }

    async fn send(&mut self, m: &ToAgent) -> Result<(), ControlError> {
        let Some(w) = self.w.as_mut() else {
            return Err(ControlError::Closed);
        };
        tokio::time::timeout(Duration::from_secs(2), control::send(w, m))
            .await
            .map_err(|_| {
                ControlError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the agent does not read",
                ))
            })?
    }
}

/// A message from agent `usize` (or the failure of its control connection), stamped when its
/// reader task read it: a control loop that runs late does not take the agent for silent.
type Event = (usize, Instant, Result<FromAgent, ControlError>);

/// Control messages queued for one agent's writer task.
const OUTBOX: usize = 64;
/// Longest a control message may take to write before the agent counts as not reading.
const WRITE_LIMIT: Duration = Duration::from_secs(2);
/// The heartbeat: a ping to every agent this often (an agent stops after [`control::SILENCE_LIMIT`]).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest the run's end waits for phase readings still outstanding.
const READINGS_WAIT: Duration = Duration::from_secs(10);

/// One agent's writer task: sends what the control loop queues and, on a timer of its own, the
/// heartbeat — so neither a slow control loop nor another agent's connection delays it. A
/// failed write is reported as the agent's event; the task ends (closing the connection) when
/// the loop drops its sender.
async fn writer(
    i: usize,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<ToAgent>,
    events: mpsc::Sender<Event>,
) {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let m = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = beat.tick() => ToAgent::Ping { id: 0 },
        };
        let e = match tokio::time::timeout(WRITE_LIMIT, control::send(&mut w, &m)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => ControlError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the agent does not read",
            )),
        };
        let _ = events.send((i, Instant::now(), Err(e))).await;
        return;
    }
}

/// What the coordinator needs beyond a one-process run's options.
pub struct CoordinatorOptions {
    /// The run.
    pub run: RunOptions,
    /// Where the agents come from.
    pub agents: AgentsSpec,
    /// Token for remote agents.
    pub token: Option<String>,
    /// The chatbench executable (for local agents).
    pub exe: PathBuf,
    /// Test seam: every reading of the servers and the host after the first takes this much
    /// longer (a slow `/proc`). `Duration::ZERO` in real runs.
    pub sample_delay: Duration,
}

fn agent_err(msg: String) -> RunError {
    RunError::Agents(msg)
}

/// The scenario text for an agent holding `share` of `total` connections: the same scenario,
/// with the ramp rate scaled to its share so that the fleet opens connections at the scenario's
/// `ramp_rate`, as one process would. Local agents share this host's CPUs, so they share its
/// `max_connecting` too (each gets its part, at least 1): the host has that many set-ups in
/// flight, whatever the number of agents. A remote agent keeps the whole bound for its host.
fn agent_scenario(
    scenario: &chatbench_model::scenario::Scenario,
    share: u64,
    total: u64,
    local: bool,
) -> Result<String, RunError> {
    let mut s = scenario.clone();
    if share > 0 {
        // Within the scenario's bounds, which the agent checks again.
        s.ramp_rate = (scenario.ramp_rate * share as f64 / total as f64)
            .max(chatbench_model::scenario::RAMP_RATE_RANGE.0);
        if local {
            let part = (u64::from(scenario.max_connecting) * share).div_ceil(total.max(1));
            s.max_connecting = part.clamp(1, u64::from(scenario.max_connecting)) as u32;
        }
    }
    toml::to_string(&s)
        .map_err(|e| agent_err(format!("cannot encode the scenario for the agents: {e}")))
}

/// Connects to one agent and exchanges hellos; returns the link and the reader.
async fn connect_agent(
    id: u32,
    address: &str,
    token: Option<&str>,
) -> Result<(AgentLink, TokioBufReader<tokio::net::tcp::OwnedReadHalf>), RunError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .map_err(|_| agent_err(format!("agent {id} at {address}: no answer within 5 s")))?
        .map_err(|e| {
            agent_err(format!(
                "agent {id} at {address}: cannot connect: {e} (is `chatbench agent --listen {address}` running?)"
            ))
        })?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = TokioBufReader::new(r);
    let mut link = AgentLink::new(id, address, Some(w));
    let fail = |e: ControlError| agent_err(format!("agent {id} at {address}: {e}"));
    link.send(&ToAgent::Hello {
        version: CONTROL_VERSION,
        token: token.map(String::from),
    })
    .await
    .map_err(fail)?;
    let reply = tokio::time::timeout(Duration::from_secs(10), control::recv(&mut reader))
        .await
        .map_err(|_| agent_err(format!("agent {id} at {address}: no hello within 10 s")))?;
    match reply {
        Ok(FromAgent::Hello { version, pid, .. }) if version == CONTROL_VERSION => link.pid = pid,
        Ok(FromAgent::Hello { version, .. }) => {
            return Err(agent_err(format!(
                "agent {id} at {address}: control protocol version mismatch: the agent speaks v{version}, this coordinator v{CONTROL_VERSION}; run the same chatbench version on both"
            )))
        }
        Ok(FromAgent::Refused { reason }) => {
            return Err(agent_err(format!("agent {id} at {address} refused: {reason}")))
        }
        Ok(other) => {
            return Err(agent_err(format!(
                "agent {id} at {address}: expected hello, got {other:?}"
            )))
        }
        Err(ControlError::Bad(e)) => {
            return Err(agent_err(format!(
                "agent {id} at {address}: its answer is not a chatbench hello ({e}); is it a chatbench agent of the same version?"
            )))
        }
        Err(e) => return Err(fail(e)),
    }
    // Clock offset: the ping with the shortest round trip.
    let mut best: Option<(u64, i64)> = None;
    for i in 0..5u64 {
        let t0 = unix_us();
        link.send(&ToAgent::Ping { id: i }).await.map_err(fail)?;
        let pong = tokio::time::timeout(Duration::from_secs(5), control::recv(&mut reader))
            .await
            .map_err(|_| agent_err(format!("agent {id} at {address}: no pong within 5 s")))?
            .map_err(fail)?;
        let t1 = unix_us();
        if let FromAgent::Pong { agent_unix_us, .. } = pong {
            let rtt = (t1 - t0).max(0) as u64;
            let offset = agent_unix_us - (t0 + t1) / 2;
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
    }
    if let Some((rtt, offset)) = best {
        link.rtt_us = rtt;
        link.offset_us = offset;
    }
    Ok((link, reader))
}

/// The connect-error kind under which a lost agent's errors count (its errors by kind come
/// only with its final figures).
const LOST_AGENT_ERRORS: &str = "unknown (agent lost before its final figures)";

/// Adds one agent's connection counts to the fleet's `totals`: its final figures, or, for an
/// agent lost before it sent them, what it had reported up to the moment (its barrier count
/// and its last tick) — so a partial fleet's open rate counts every agent's opens, not only
/// those of the agents that finished. Returns the agent's ready connections.
fn add_conns(
    totals: &mut Final,
    fin: Option<&Final>,
    connected: Option<u64>,
    tick: Option<&Tick>,
) -> u64 {
    if let Some(f) = fin {
        totals.attempted += f.attempted;
        totals.connected += f.connected;
        totals.ready += f.ready;
        for (k, v) in &f.connect_errors {
            *totals.connect_errors.entry(k.clone()).or_insert(0) += v;
        }
        return f.ready;
    }
    let ready = connected.unwrap_or(0).max(tick.map_or(0, |t| t.ready));
    let errors = tick.map_or(0, |t| t.connect_errors);
    totals.attempted += tick.map_or(0, |t| t.connect_attempts).max(ready + errors);
    // Handshakes completed: at least the ready ones (a tick does not say more).
    totals.connected += ready;
    totals.ready += ready;
    if errors > 0 {
        *totals
            .connect_errors
            .entry(LOST_AGENT_ERRORS.to_string())
            .or_insert(0) += errors;
    }
    ready
}

/// The fleet's reconnect figures: the agents' counts summed, their error tallies added, their
/// time-to-reconnect histograms added (exact). `None` when no agent reported any.
fn merge_reconnect(
    parts: &[&control::AgentReconnect],
) -> Result<Option<ReconnectStats>, ControlError> {
    if parts.is_empty() {
        return Ok(None);
    }
    let mut time = new_hist();
    let mut out = ReconnectStats {
        lost: 0,
        attempts: 0,
        reconnected: 0,
        failed: 0,
        errors: BTreeMap::new(),
        time_us: None,
    };
    for r in parts {
        out.lost += r.lost;
        out.attempts += r.attempts;
        out.reconnected += r.reconnected;
        out.failed += r.failed;
        for (k, v) in &r.errors {
            *out.errors.entry(k.clone()).or_insert(0) += v;
        }
        add_hist(&mut time, &decode_hist(&r.time)?)?;
    }
    out.time_us = Percentiles::of(&time);
    Ok(Some(out))
}

/// Runs a scenario over agents and writes the results: agent start-up, the control loop,
/// the merge of the agents' figures, then the verdict and the summary.
pub async fn run(opts: CoordinatorOptions) -> Result<RunReport, RunError> {
    let CoordinatorOptions {
        run: ropts,
        agents: spec,
        token,
        exe,
        sample_delay,
    } = opts;
    let scenario = Arc::new(ropts.scenario.clone());
    let targets = parse_targets(&ropts.target_url)?;
    let n_agents = match &spec {
        AgentsSpec::Local(n) => *n,
        AgentsSpec::Auto => {
            let hard = sys::current_nofile().map_err(RunError::Limit)?.hard;
            auto_agents(u64::from(scenario.connections), hard)
        }
        AgentsSpec::Remote(list) => list.len() as u32,
    };
    let layout = Layout {
        agents: n_agents,
        targets: targets.len() as u32,
        policy: scenario.target_policy,
    };
    if let Some(problem) = layout.problem(&scenario) {
        return Err(RunError::Layout(problem));
    }
    if scenario.silent_connections > 0 {
        return Err(RunError::Layout(format!(
            "silent_connections = {}: slowloris sockets are held by a one-process run; run \
             without --agents",
            scenario.silent_connections
        )));
    }
    let progress = Progress::new(ropts.progress);
    let mut fleet =
        start_fleet(&spec, &exe, token.as_deref(), &scenario, &targets, &layout).await?;
    let mut provenance = crate::provenance::collect();
    let started_utc = chrono::Utc::now();
    let pids = ropts.target_info.sampled_pids();
    // The servers and the host are read on a thread of their own: a slow /proc must not keep
    // the control loop (stall detection, go, stop) from running.
    let mut readings = PhaseReadings::start(pids.clone(), sample_delay)?;
    // The reading before the run is waited for (the agents hear their heartbeats meanwhile):
    // memory per connection counts from it.
    readings.before().await;
    for l in fleet.links.iter() {
        let _ = l.post(ToAgent::Start);
    }
    let links = std::mem::take(&mut fleet.links);
    let mut ctl = Control::new(links, &scenario, Instant::now(), progress);
    ctl.same_host = matches!(spec, AgentsSpec::Local(_) | AgentsSpec::Auto);
    ctl.live = ropts.live.clone();
    let mut interrupt = ropts.interrupt.clone();
    ctl.interrupted = *interrupt.borrow();
    control_loop(&mut ctl, &mut fleet.events, &mut readings, &mut interrupt).await;
    ctl.flush_latency(Instant::now());
    // Read the server's own counters before the clients leave, then release the agents.
    let server_metrics = match (&ropts.target_info.arch, targets.first()) {
        (Some(_), Some(t)) => crate::target::scrape_metrics(t, Duration::from_secs(2)).await,
        _ => None,
    };
    ctl.release();
    let dropped_readings = readings.finish().await;
    let mut notes = readings.notes(!pids.is_empty(), dropped_readings);
    let got = std::mem::take(&mut readings.got);
    drop(readings);
    ctl.progress.finish();
    stop_locals(std::mem::take(&mut fleet.locals)).await;
    provenance.finish();
    let host_after = sampler::sample_host().ok();
    // Echoes never cross agents (each sender is its own room's only reader): each agent's own
    // judgement is the whole of it, and the fleet-wide room sums do not apply.
    let across = scenario.session_profile().fanout() == chatbench_model::profile::Fanout::Room;
    let mut merged = merge(&ctl.links, scenario.reconnects(), across)?;
    let local = matches!(spec, AgentsSpec::Local(_) | AgentsSpec::Auto);
    let affinity = sys::cpu_affinity();
    let (status, invalid) = verdict(&merged, &ctl.faults, ctl.interrupted, local, affinity.len());
    notes.insert(0, fleet_note(ctl.links.len()));
    notes.append(&mut merged.notes);
    if merged.cross_incomplete {
        notes.push(format!(
            "an agent's record of deliveries across agents needed more than {} runs (much loss): \
             loss is judged within each agent only (messages.expected and delivered count each \
             agent's own senders to its own receivers)",
            ledger::MAX_RUNS
        ));
    }
    if !merged.panicked.is_empty() {
        notes.insert(
            1,
            format!(
                "the run failed: {} (a bug in the load generator; its figures are not trustworthy)",
                merged.panicked.join("; ")
            ),
        );
    }
    let server = server_figures(
        &got,
        ctl.edges,
        &merged,
        ctl.phases.measure,
        &ropts.target_info,
        &mut notes,
    );
    let mut target_info = ropts.target_info.clone();
    if targets.len() > 1 {
        target_info.targets = targets.iter().map(|t| t.url.clone()).collect();
        target_info.target_policy = Some(scenario.target_policy.as_str().into());
    }
    let server_of = |m: Mark| got.get(&m).and_then(|r| r.server.clone());
    let host_of = |m: Mark| got.get(&m).and_then(|r| r.host.clone());
    let target_figures = TargetFigures {
        server_before: server_of(Mark::Before),
        host_before: host_of(Mark::Before),
        server_connected: server_of(Mark::Connected),
        host_connected: host_of(Mark::Connected),
        host_after,
        rss_peak_bytes: None,
        cpu_cores_measure: server.cores,
        cpu_us_per_delivery: server.per_delivery,
        server_metrics,
        other_load: server.other_load,
        run_queue_wait: server.run_queue_wait,
    };
    let verdict = Verdict {
        status,
        invalid,
        notes,
    };
    let summary_in = FleetSummary {
        scenario: &scenario,
        overrides: &ropts.overrides,
        started_utc,
        target: target_info,
        provenance,
        source_addrs: std::mem::take(&mut fleet.source_addrs),
        affinity,
    };
    let unexpected = std::mem::take(&mut merged.totals.unexpected_frames);
    let (mut summary, window) = fleet_summary(summary_in, &ctl, merged, verdict, target_figures);
    let unexpected = unexpected_frames_text(&unexpected);
    let mut extra: Vec<(&str, &[u8])> = vec![(HLOG_FILE, ctl.hlog.bytes())];
    if let Some(text) = &unexpected {
        extra.push((UNEXPECTED_FRAMES, text.as_bytes()));
    }
    let dir = write_run(&ropts.out_root, &mut summary, &ctl.series, &window, &extra)?;
    Ok(RunReport { dir, summary })
}

/// The fleet after start-up: every agent ready, their messages coming through one channel.
struct Fleet {
    locals: Vec<LocalAgent>,
    links: Vec<AgentLink>,
    /// Every agent's client source addresses, for the record.
    source_addrs: Vec<String>,
    events: mpsc::Receiver<Event>,
}

/// Agent start-up: starts the local agents or reaches the remote ones, exchanges hellos and
/// clock offsets, hands each agent its share of the plan and waits until each is ready. Then
/// every agent's messages (and its writer's failures) come through one channel, stamped when
/// read.
async fn start_fleet(
    spec: &AgentsSpec,
    exe: &std::path::Path,
    token: Option<&str>,
    scenario: &Scenario,
    targets: &[Target],
    layout: &Layout,
) -> Result<Fleet, RunError> {
    let mut locals = Vec::new();
    let run_token;
    let mut token = token;
    let addresses: Vec<String> = match spec {
        AgentsSpec::Remote(list) => list.clone(),
        _ => {
            // Local agents get a token of this run's own: another local user cannot use them.
            run_token = crate::agent::new_token();
            for _ in 0..layout.agents {
                locals.push(LocalAgent::spawn(exe, &run_token).map_err(agent_err)?);
            }
            token = Some(run_token.as_str());
            locals.iter().map(|l| l.addr.clone()).collect()
        }
    };
    let mut links = Vec::new();
    let mut readers = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let (l, r) = connect_agent(i as u32, a, token).await?;
        links.push(l);
        readers.push(r);
    }
    let setups = setups(scenario, targets, layout, !locals.is_empty())?;
    for ((i, link), setup) in links.iter_mut().enumerate().zip(setups) {
        link.planned = setup.1;
        link.send(&ToAgent::Setup(Box::new(setup.0)))
            .await
            .map_err(|e| agent_err(format!("agent {i} at {}: {e}", link.address)))?;
    }
    let (tx, events) = mpsc::channel::<Event>(1024);
    let setup_wait = scenario.connect_timeout * (targets.len() as u32 + 1) + Duration::from_secs(5);
    let mut source_addrs = Vec::new();
    for (i, r) in readers.iter_mut().enumerate() {
        source_addrs.extend(await_ready(i, &links[i].address, r, setup_wait).await?);
        // Heartbeats from now on, whatever the control loop does.
        links[i].start_writer(i, tx.clone());
    }
    // Readers forward into the same channel, stamping when they read.
    for (i, mut r) in readers.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let m = control::recv::<_, FromAgent>(&mut r).await;
                let end = m.is_err();
                if tx.send((i, Instant::now(), m)).await.is_err() || end {
                    return;
                }
            }
        });
    }
    Ok(Fleet {
        locals,
        links,
        source_addrs,
        events,
    })
}

/// Every agent's setup, with the connections it holds: its share of the plan, its scenario
/// (see [`agent_scenario`]) and the first of its source addresses (disjoint ranges).
fn setups(
    scenario: &Scenario,
    targets: &[Target],
    layout: &Layout,
    local: bool,
) -> Result<Vec<(Setup, u64)>, RunError> {
    let counts = Plan::counts_per_agent(scenario, layout);
    let per = u64::from(sys::DEFAULT_CONNS_PER_SOURCE_ADDR);
    let total = counts.iter().sum::<u64>().max(1);
    let mut first = 0u64;
    let mut out = Vec::with_capacity(counts.len());
    for (i, &count) in counts.iter().enumerate() {
        let setup = Setup {
            agent: i as u32,
            agents: layout.agents,
            scenario: agent_scenario(scenario, count, total, local)?,
            targets: targets.iter().map(|t| t.url.clone()).collect(),
            source_first: first,
        };
        first += count.div_ceil(per).max(1);
        out.push((setup, count));
    }
    Ok(out)
}

/// Waits for agent `i`'s answer to its setup: its source addresses when it is ready.
async fn await_ready(
    i: usize,
    addr: &str,
    r: &mut TokioBufReader<tokio::net::tcp::OwnedReadHalf>,
    wait: Duration,
) -> Result<Vec<String>, RunError> {
    let reply = tokio::time::timeout(wait, control::recv(r))
        .await
        .map_err(|_| {
            agent_err(format!(
                "agent {i} at {addr}: no answer to setup within {wait:?}"
            ))
        })?
        .map_err(|e| agent_err(format!("agent {i} at {addr}: {e}")))?;
    match reply {
        FromAgent::Ready { source_addrs, .. } => Ok(source_addrs),
        FromAgent::Refused { reason } => Err(agent_err(format!(
            "agent {i} at {addr} refused the run: {reason}"
        ))),
        other => Err(agent_err(format!(
            "agent {i} at {addr}: expected ready, got {other:?}"
        ))),
    }
}

/// Local agents exit after their session; gives them a moment to close politely, then makes
/// sure (by pid).
async fn stop_locals(mut locals: Vec<LocalAgent>) {
    let exit_wait = Instant::now() + Duration::from_secs(8);
    for la in locals.iter_mut() {
        while Instant::now() < exit_wait {
            if let Ok(Some(_)) = la.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for mut la in locals {
        la.stop();
    }
}

/// The coordinator's readings of the servers and the host, asked for at phase edges and taken
/// on their own thread ([`Readings`]), with what has come back.
struct PhaseReadings {
    readings: Readings,
    got: BTreeMap<Mark, PhaseReading>,
    asked: Vec<Mark>,
    last_second: Option<SecondReading>,
    open: bool,
}

impl PhaseReadings {
    fn start(pids: Vec<u32>, delay: Duration) -> Result<PhaseReadings, RunError> {
        let readings = Readings::start(pids, delay)
            .map_err(|e| agent_err(format!("cannot start the reading thread: {e}")))?;
        Ok(PhaseReadings {
            readings,
            got: BTreeMap::new(),
            asked: Vec::new(),
            last_second: None,
            open: true,
        })
    }

    fn ask(&mut self, m: Mark) {
        if self.readings.ask(m) {
            self.asked.push(m);
        }
    }

    /// Takes one reading as it comes (`None`: the reading thread has ended).
    fn take(&mut self, r: Option<Reading>) {
        match r {
            Some(Reading::Phase(p)) => {
                self.got.insert(p.mark, p);
            }
            Some(Reading::Second(r)) => self.last_second = Some(r),
            None => self.open = false,
        }
    }

    /// Asks for the reading before the run and waits for it (bounded).
    async fn before(&mut self) {
        self.ask(Mark::Before);
        if !self.asked.contains(&Mark::Before) {
            return;
        }
        let until = Instant::now() + READINGS_WAIT;
        while !self.got.contains_key(&Mark::Before) {
            match tokio::time::timeout_at(until.into(), self.readings.rx.recv()).await {
                Ok(Some(r)) => self.take(Some(r)),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Waits (bounded) for the phase readings still on their way — a reading stuck in /proc
    /// leaves its figures out, with a note — and ends the reading thread. Returns how many
    /// once-a-second readings were dropped.
    async fn finish(&mut self) -> u64 {
        let until = Instant::now() + READINGS_WAIT;
        while self.open && self.asked.iter().any(|m| !self.got.contains_key(m)) {
            match tokio::time::timeout_at(until.into(), self.readings.rx.recv()).await {
                Ok(Some(Reading::Phase(p))) => {
                    self.got.insert(p.mark, p);
                }
                Ok(Some(Reading::Second(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.readings.dropped()
    }

    /// The notes on readings that did not come.
    fn notes(&self, servers: bool, dropped: u64) -> Vec<String> {
        let mut notes = Vec::new();
        if servers {
            for m in self.asked.iter().filter(|m| !self.got.contains_key(m)) {
                notes.push(format!(
                    "the servers' reading at {} did not come within {READINGS_WAIT:?} of the run's end (reading /proc was slow): the figures that need it are not given",
                    m.as_str()
                ));
            }
        }
        if dropped > 0 {
            notes.push(format!(
                "{dropped} once-a-second readings of the servers and the host were dropped (the control loop had not taken the previous one): timeseries.csv misses them"
            ));
        }
        notes
    }
}

/// The control loop's state: the agents, the run's timeline as the coordinator keeps it (a
/// barrier, then a common start), the faults, and the merged time series.
struct Control {
    links: Vec<AgentLink>,
    timeline: Timeline,
    started: Instant,
    phase: Phase,
    phases: PhaseTimes,
    /// A backstop behind the agents' own connect deadlines.
    connect_deadline: Instant,
    /// When the loop ends whatever the agents do.
    hard_deadline: Instant,
    connect_end: Option<Instant>,
    /// The sending phases' edges, in coordinator time, once the barrier is passed.
    edges: Option<Edges>,
    faults: Vec<AgentFault>,
    series: Vec<SeriesRow>,
    /// The agents' interval histograms since the last second, added.
    pending: Histogram<u64>,
    /// The in-window part of `pending` (`latency.hlog`'s `window` intervals).
    pending_window: Histogram<u64>,
    /// Every merged second's latency histograms, encoded (`latency.hlog`).
    hlog: LatencyLog,
    rates: Rates,
    interrupted: bool,
    stop_sent: bool,
    planned: u64,
    reconnects: bool,
    progress: Progress,
    /// Whether every agent runs on this host (local agents): one wall clock.
    same_host: bool,
    /// The live `/metrics` endpoint's state (`run --metrics-listen`), when there is one.
    live: Option<Arc<LiveMetrics>>,
}

impl Control {
    fn new(
        links: Vec<AgentLink>,
        scenario: &Scenario,
        started: Instant,
        progress: Progress,
    ) -> Control {
        let timeline = Timeline::of(scenario);
        // Behind the agents' own deadlines (ramp + time held back by `max_connecting`, within
        // its bound + connect_timeout + 1 s).
        let all = u64::from(scenario.connections);
        let connect_deadline = started
            + scenario.connect_deadline(all, scenario.max_ramp_hold(all))
            + Duration::from_secs(9);
        Control {
            links,
            timeline,
            started,
            phase: Phase::Connect,
            phases: PhaseTimes::default(),
            connect_deadline,
            hard_deadline: connect_deadline + timeline.after_connect() + Duration::from_secs(20),
            connect_end: None,
            edges: None,
            faults: Vec::new(),
            series: Vec::new(),
            pending: new_hist(),
            pending_window: new_hist(),
            hlog: LatencyLog::new(SystemTime::now() - started.elapsed()),
            rates: Rates::new(started, 0.0),
            interrupted: false,
            stop_sent: false,
            planned: all,
            reconnects: scenario.reconnects(),
            progress,
            same_host: false,
            live: None,
        }
    }

    /// Every agent's epoch in agent `j`'s wall clock, by agent id (0: not told). Agents on
    /// this host share its `CLOCK_REALTIME`: no offset (a pinged offset would only add its
    /// noise). Across hosts: `epoch_i − offset_i + offset_j` (offset = agent − coordinator).
    fn epochs_for(&self, j: usize) -> Vec<i64> {
        let mut by_id = vec![
            0i64;
            self.links
                .iter()
                .map(|l| l.id as usize + 1)
                .max()
                .unwrap_or(0)
        ];
        let off_j = if self.same_host {
            0
        } else {
            self.links[j].offset_us
        };
        for l in self.links.iter().filter(|l| l.epoch_unix_us != 0) {
            let off_i = if self.same_host { 0 } else { l.offset_us };
            by_id[l.id as usize] = l.epoch_unix_us - off_i + off_j;
        }
        by_id
    }

    /// The error bound of cross-agent latencies, µs: 0 on one host (one clock); across hosts,
    /// the widest pair's half round trips added (each offset is known to ± half its ping's).
    fn clock_error_us(&self) -> u64 {
        if self.same_host {
            return 0;
        }
        let mut rtts: Vec<u64> = self.links.iter().map(|l| l.rtt_us).collect();
        rtts.sort_unstable_by(|a, b| b.cmp(a));
        rtts.iter().take(2).map(|r| r.div_ceil(2)).sum()
    }

    /// Seconds since the start, to the millisecond.
    fn at_s(&self, t: Instant) -> f64 {
        (t.duration_since(self.started).as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// Agent `i` is lost at `at`: its control connection closes (the agent stops its load),
    /// and the fault is recorded.
    fn lose(&mut self, i: usize, at: Instant, what: String) {
        let at_s = self.at_s(at);
        let l = &mut self.links[i];
        l.lost = true;
        l.close();
        self.faults.push(AgentFault {
            agent: l.id,
            address: l.address.clone(),
            at_s,
            what,
        });
    }

    /// Agents still expected to report.
    fn live(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&i| !self.links[i].lost && self.links[i].fin.is_none())
            .collect()
    }

    /// Whether the loop is over at `now`: every agent has reported or is lost, or the hard
    /// deadline passed (the agents still out are lost).
    fn finished(&mut self, now: Instant) -> bool {
        let live = self.live();
        if !live.is_empty() && now < self.hard_deadline {
            return false;
        }
        for i in live {
            self.lose(
                i,
                now,
                "did not deliver its final figures before the run's deadline".into(),
            );
        }
        true
    }

    /// Loses the agents silent for [`STALL_LIMIT`]. Time this loop itself was not scheduled
    /// (`late`: a host busy opening connections) is not held against them: their reports may
    /// be waiting to be read.
    fn check_stalls(&mut self, now: Instant, late: Duration) {
        for i in self.live() {
            let l = &mut self.links[i];
            l.last_heard += late;
            if now.duration_since(l.last_heard) > STALL_LIMIT {
                let what = format!("stalled: no report for {STALL_LIMIT:?}");
                let line = format!("agent {} ({}) {what}", l.id, l.address);
                let at_s = self.at_s(now);
                self.progress.println(&format!("{line} at {at_s:.1} s"));
                self.lose(i, now, what);
            }
        }
    }

    /// The connect phase at `now`: the barrier once every live agent has connected, or the
    /// connect deadline. True when the loop should look again at once.
    fn connect_step(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Connect {
            return false;
        }
        if self.links.iter().all(|l| l.lost || l.connected.is_some()) {
            return self.barrier(now);
        }
        if now < self.connect_deadline {
            return false;
        }
        for i in 0..self.links.len() {
            if !self.links[i].lost && self.links[i].connected.is_none() {
                self.lose(
                    i,
                    now,
                    "did not finish connecting by the connect deadline".into(),
                );
            }
        }
        true
    }

    /// The barrier is passed: a common start after settle, told to every agent in its own
    /// clock. With nothing connected, every agent is told to stop (their figures still
    /// come, with their errors). True when the loop should look again at once.
    fn barrier(&mut self, now: Instant) -> bool {
        self.connect_end = Some(now);
        self.phases.connect = now.duration_since(self.started).as_secs_f64();
        self.phase = Phase::Settle;
        let ready: u64 = self.links.iter().filter_map(|l| l.connected).sum();
        if ready == 0 {
            self.progress
                .println("no connection could be made by any agent: ending the run");
            self.post_stop();
            self.hard_deadline = now + Duration::from_secs(15);
            return true;
        }
        let start = now + self.timeline.settle + Duration::from_millis(200);
        let edges = self.timeline.from_go(start);
        self.edges = Some(edges);
        self.hard_deadline = edges.end + Duration::from_secs(15);
        let start_coord_us = unix_us() + (start - now).as_micros() as i64;
        for i in 0..self.links.len() {
            let l = &self.links[i];
            if l.lost {
                continue;
            }
            let go = ToAgent::Go {
                start_unix_us: start_coord_us + l.offset_us,
                epochs_us: self.epochs_for(i),
            };
            if let Err(e) = l.post(go) {
                self.lose(i, now, format!("could not be told to start: {e}"));
            }
        }
        false
    }

    /// The phase changes due at `now` on the timeline; returns the readings to ask for.
    fn advance(&mut self, now: Instant) -> Vec<Mark> {
        let Some(e) = self.edges else {
            return Vec::new();
        };
        let mut marks = Vec::new();
        let secs = |a: Instant, b: Instant| a.duration_since(b).as_secs_f64();
        if self.phase == Phase::Settle && now >= e.start {
            marks.push(Mark::Connected);
            self.phases.settle = secs(now, self.connect_end.unwrap_or(now));
            self.phase = Phase::Warmup;
        }
        if self.phase == Phase::Warmup && now >= e.measure {
            self.phases.warmup = secs(now, e.start);
            marks.push(Mark::MeasureStart);
            self.phase = Phase::Measure;
        }
        if self.phase == Phase::Measure && now >= e.cooldown {
            self.phases.measure = secs(now, e.measure);
            marks.push(Mark::MeasureEnd);
            self.phase = Phase::Cooldown;
        }
        if self.phase == Phase::Cooldown && now >= e.end {
            self.phases.cooldown = secs(now, e.cooldown);
            self.phase = Phase::Stop;
        }
        marks
    }

    /// Tells every agent still running to stop (once).
    fn post_stop(&mut self) {
        for l in self.links.iter().filter(|l| !l.lost) {
            let _ = l.post(ToAgent::Stop);
        }
        self.stop_sent = true;
    }

    /// After Ctrl-C: stops everyone early, and the run ends soon after.
    fn on_interrupt(&mut self, now: Instant) {
        if self.interrupted && !self.stop_sent {
            self.post_stop();
            self.hard_deadline = self.hard_deadline.min(now + Duration::from_secs(15));
        }
    }

    /// One merged second: the agents' last ticks summed, their interval histograms added,
    /// the latest reading of the servers' memory and the host's sockets.
    fn second(&mut self, now: Instant, reading: Option<SecondReading>) {
        let ticks: Vec<&Tick> = self
            .links
            .iter()
            .filter_map(|l| l.last_tick.as_ref())
            .collect();
        let sum = |f: fn(&Tick) -> u64| ticks.iter().map(|t| f(t)).sum::<u64>();
        let counts = Counts {
            open: sum(|t| t.open),
            connect_attempts: sum(|t| t.connect_attempts),
            connect_errors: sum(|t| t.connect_errors),
            closed_by_server: sum(|t| t.closed_by_server),
            sent: sum(|t| t.sent),
            delivered: sum(|t| t.delivered),
            ready: sum(|t| t.ready),
            disconnects: 0,
            reconnects: sum(|t| t.reconnects),
            reconnect_failures: sum(|t| t.reconnect_failures),
        };
        let cpu: f64 = ticks.iter().map(|t| t.cpu_seconds).sum();
        let gen_rss = ticks.iter().filter_map(|t| t.rss_bytes).sum::<u64>();
        self.log_interval(now);
        let rate = self.rates.next(now, counts.sent, counts.delivered, cpu);
        let (target_rss, host) = match reading {
            Some(r) => (r.target_rss, r.host.map(|h| (h.slab_bytes, h.tcp_inuse))),
            None => (None, None),
        };
        let second = Second {
            t_s: self.at_s(now),
            phase: self.phase,
            counts,
            rate,
            latency: &self.pending,
            reconnects: self.reconnects,
            disconnects_known: false,
            target_rss,
            target: None,
            host,
            generator_rss: Some(gen_rss),
            agents_live: Some(self.links.iter().filter(|l| !l.lost).count() as u64),
        };
        let from = self.series.len();
        second.rows(&mut self.series);
        if let Some(live) = &self.live {
            let totals = crate::live_metrics::Totals {
                sent: second.counts.sent,
                delivered: second.counts.delivered,
                t_s: second.t_s,
            };
            live.update(&self.series[from..], totals);
        }
        self.progress
            .update(&second.progress_line(ProgressView::Fleet {
                agents: self.links.len(),
                planned: self.planned,
            }));
        self.pending.reset();
        self.pending_window.reset();
    }

    /// Adds the pending latencies, from the last second to `now`, to `latency.hlog`.
    fn log_interval(&mut self, now: Instant) {
        let from = self.rates.at().duration_since(self.started);
        let to = now.duration_since(self.started);
        for (h, w) in [(&self.pending, false), (&self.pending_window, true)] {
            if let Err(e) = self.hlog.push(h, from, to, w) {
                self.progress.println(&format!("latency.hlog: {e}"));
            }
        }
    }

    /// The last interval of `latency.hlog`, once the agents are done: what their ticks brought
    /// since the last second, and the window's latencies each recorded after its last tick (its
    /// `Final`), so that the `window` intervals add up to the merged window histogram.
    fn flush_latency(&mut self, now: Instant) {
        for f in self.links.iter().filter_map(|l| l.fin.as_ref()) {
            if let Ok(h) = decode_hist(&f.interval_tail) {
                let _ = add_hist(&mut self.pending, &h);
            }
            if let Ok(h) = decode_hist(&f.interval_window_tail) {
                let _ = add_hist(&mut self.pending_window, &h);
            }
        }
        self.log_interval(now);
        self.pending.reset();
        self.pending_window.reset();
    }

    /// A message from agent `i` (or its control connection's failure), read at `heard`.
    fn on_event(&mut self, i: usize, heard: Instant, m: Result<FromAgent, ControlError>) {
        let Some(l) = self.links.get_mut(i) else {
            return;
        };
        if l.lost {
            return;
        }
        let gap = heard.saturating_duration_since(l.last_heard);
        if gap > STALL_LIMIT / 2 {
            tracing::warn!(
                "agent {}: {:.1} s since its last report",
                l.id,
                gap.as_secs_f64()
            );
        }
        l.last_heard = l.last_heard.max(heard);
        match m {
            Ok(FromAgent::Tick(t)) => {
                if let Ok(h) = decode_hist(&t.interval) {
                    let _ = add_hist(&mut self.pending, &h);
                }
                if let Ok(h) = decode_hist(&t.interval_window) {
                    let _ = add_hist(&mut self.pending_window, &h);
                }
                l.last_tick = Some(*t);
            }
            Ok(FromAgent::Connected {
                ready,
                epoch_unix_us,
            }) => {
                l.connected = Some(ready);
                l.epoch_unix_us = epoch_unix_us;
            }
            Ok(FromAgent::Done(f)) => l.fin = Some(*f),
            Ok(FromAgent::Pong { .. }) => {}
            Ok(FromAgent::Refused { reason }) => self.lose(i, heard, format!("gave up: {reason}")),
            Ok(other) => {
                self.progress
                    .println(&format!("agent {}: unexpected {other:?}", l.id));
            }
            Err(e) => {
                let what = match e {
                    ControlError::Closed => {
                        "its control connection closed (the agent died or was killed)".to_string()
                    }
                    e => format!("control connection failed: {e}"),
                };
                let now = Instant::now();
                let who = format!("agent {} ({})", l.id, l.address);
                let at_s = self.at_s(now);
                self.progress
                    .println(&format!("{who} lost at {at_s:.1} s: {what}"));
                self.lose(i, now, what);
            }
        }
    }

    /// Releases the agents still connected: they stop and close their connections.
    fn release(&mut self) {
        for l in self.links.iter_mut().filter(|l| !l.lost) {
            let _ = l.post(ToAgent::Stop);
            l.close();
        }
    }
}

/// Runs the control loop until every agent has reported or is lost (or the hard deadline):
/// the barrier, the common start, the phase edges (asking for readings there), one merged
/// second a second, Ctrl-C, and every agent's messages as they come.
async fn control_loop(
    ctl: &mut Control,
    events: &mut mpsc::Receiver<Event>,
    readings: &mut PhaseReadings,
    interrupt: &mut tokio::sync::watch::Receiver<bool>,
) {
    let mut clock = LoopClock::new(Instant::now());
    loop {
        let now = Instant::now();
        if ctl.finished(now) {
            return;
        }
        ctl.check_stalls(now, clock.lateness(now));
        if ctl.connect_step(now) {
            continue;
        }
        for m in ctl.advance(now) {
            readings.ask(m);
        }
        // Heartbeats: each agent's writer task sends them on its own timer.
        if now >= ctl.rates.at() + Duration::from_secs(1) {
            ctl.second(now, readings.last_second.take());
        }
        ctl.on_interrupt(Instant::now());
        // Wait for a message or the next thing due.
        let wake = (ctl.rates.at() + Duration::from_secs(1)).min(now + Duration::from_millis(100));
        let interrupted = ctl.interrupted;
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = interrupt.changed(), if !interrupted => {
                if r.is_err() || *interrupt.borrow() { ctl.interrupted = true; }
            }
            r = readings.readings.rx.recv(), if readings.open => readings.take(r),
            ev = events.recv() => {
                if let Some((i, heard, m)) = ev {
                    ctl.on_event(i, heard, m);
                }
            }
        }
    }
}

/// The fleet's figures: every agent's final figures added (histograms exactly), an agent lost
/// before them counted up to its last report, with a per-agent breakdown.
#[derive(Debug)]
struct Merged {
    window: Histogram<u64>,
    connect_hist: Histogram<u64>,
    send_lag: Histogram<u64>,
    receive_lag: Option<Histogram<u64>>,
    pacer_lag: Option<Histogram<u64>>,
    breakdown: Vec<AgentBreakdown>,
    totals: Final,
    expected: u64,
    delivered: u64,
    /// In-window messages that fell due on downed connections (in `expected`).
    unsent_down: u64,
    /// Of `delivered`, the deliveries across agents.
    delivered_cross: u64,
    /// An agent's ledger was too large to send: loss judged within agents only.
    cross_incomplete: bool,
    /// The longest window an agent ran.
    measure_s: f64,
    /// Each agent's CPU cores over the window, with the CPUs it may use.
    agent_cores: Vec<(f64, u64)>,
    rss_per_conn: Vec<f64>,
    realtime: Option<bool>,
    any_interrupted: bool,
    /// Workers of the agents that panicked, with what they said (the run then fails).
    panicked: Vec<String>,
    delivered_window_all: u64,
    reconnect: Option<ReconnectStats>,
    /// An agent did not deliver its final figures.
    partial: bool,
    /// The agents' CPU by thread role, summed over those that sent a split the coordinator
    /// believed ([`believed_split`]); `None` when none did.
    thread_split: Option<threads::Split>,
    /// How many agents `thread_split` sums.
    split_agents: u32,
    /// What the merge left out, for the summary's notes (one per agent at most).
    notes: Vec<String>,
}

fn bad_hist(e: ControlError) -> RunError {
    agent_err(format!("an agent's histogram did not decode: {e}"))
}

impl Merged {
    fn new() -> Merged {
        Merged {
            window: new_hist(),
            connect_hist: new_hist(),
            send_lag: new_hist(),
            receive_lag: None,
            pacer_lag: None,
            breakdown: Vec::new(),
            totals: Final::default(),
            expected: 0,
            delivered: 0,
            unsent_down: 0,
            delivered_cross: 0,
            cross_incomplete: false,
            measure_s: 0.0,
            agent_cores: Vec::new(),
            rss_per_conn: Vec::new(),
            realtime: None,
            any_interrupted: false,
            panicked: Vec::new(),
            delivered_window_all: 0,
            reconnect: None,
            partial: false,
            thread_split: None,
            split_agents: 0,
            notes: Vec::new(),
        }
    }

    /// Adds one agent's (believed) thread split to the fleet's.
    fn add_split(&mut self, s: &threads::Split) {
        self.thread_split
            .get_or_insert_with(Default::default)
            .add(s);
        self.split_agents += 1;
    }

    /// Adds one agent's final figures; returns its expected and delivered messages and its
    /// latency percentiles. `planned`: the connections the coordinator gave that agent, the
    /// bound of its per-connection counts (figures read from the network are checked, not
    /// trusted).
    fn add_final(
        &mut self,
        f: &Final,
        planned: u64,
    ) -> Result<(u64, u64, Option<Percentiles>), RunError> {
        if f.pacer_senders > planned {
            return Err(agent_err(format!(
                "an agent reported {} senders on the pacer's path, more than the {planned} \
                 connections it was given",
                f.pacer_senders
            )));
        }
        // Rooms with no unsent messages (or an agent that does not report them) add 0.
        let unsent = |r: usize| f.room_unsent_window.get(r).copied().unwrap_or(0);
        let exp = summary::expected_deliveries(
            f.room_sent_window
                .iter()
                .enumerate()
                .map(|(r, s)| s + unsent(r)),
            f.room_readers.iter().copied(),
        );
        let del = f.room_delivered_window.iter().sum();
        let w = decode_hist(&f.window_latency).map_err(bad_hist)?;
        add_hist(&mut self.window, &w).map_err(bad_hist)?;
        let add = |into: &mut Histogram<u64>, s: &str| {
            add_hist(into, &decode_hist(s).map_err(bad_hist)?).map_err(bad_hist)
        };
        add(&mut self.connect_hist, &f.connect_time)?;
        add(&mut self.send_lag, &f.send_lag)?;
        if let Some(r) = &f.receive_lag {
            add(self.receive_lag.get_or_insert_with(new_hist), r)?;
        }
        if let Some(p) = &f.pacer_lag {
            add(self.pacer_lag.get_or_insert_with(new_hist), p)?;
        }
        self.expected += exp;
        self.delivered += del;
        self.unsent_down += f.room_unsent_window.iter().sum::<u64>();
        self.measure_s = self.measure_s.max(f.measure_s);
        if let Some(c) = f.cpu_cores_measure {
            self.agent_cores.push((c, f.cpus));
        }
        if let Some(r) = f.rss_per_conn_bytes {
            self.rss_per_conn.push(r);
        }
        self.realtime = self.realtime.or(f.pacer_realtime);
        self.any_interrupted |= f.interrupted;
        let t = &mut self.totals;
        t.ramp_held_us = t.ramp_held_us.max(f.ramp_held_us);
        t.planned += f.planned;
        for (k, v) in &f.closed_by_server {
            *t.closed_by_server.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &f.server_errors {
            *t.server_errors.entry(k.clone()).or_insert(0) += v;
        }
        t.sent_window += f.sent_window;
        t.duplicated += f.duplicated;
        t.late += f.late;
        t.bad_frames += f.bad_frames;
        t.echoes += f.echoes;
        t.dropped_in_window += f.dropped_in_window;
        t.epoll_receivers += f.epoll_receivers;
        t.unstamped_reads += f.unstamped_reads;
        t.pacer_senders += f.pacer_senders;
        t.pacer_send_held = t.pacer_send_held.saturating_add(f.pacer_send_held);
        for frame in &f.unexpected_frames {
            if t.unexpected_frames.len() < crate::stats::MAX_UNEXPECTED {
                t.unexpected_frames.push(frame.clone());
            }
        }
        t.slow += f.slow;
        Ok((exp, del, Percentiles::of(&w)))
    }

    /// The generator's CPU cores over the window, summed over the agents that measured it.
    fn gen_cores(&self) -> Option<f64> {
        (!self.agent_cores.is_empty()).then(|| self.agent_cores.iter().map(|(c, _)| c).sum())
    }
}

/// Merges the agents' figures (see [`Merged`]).
/// `across`: judge deliveries between agents too ([`judge_fleet`]); false for the echo fan-out.
fn merge(links: &[AgentLink], reconnects: bool, across: bool) -> Result<Merged, RunError> {
    let mut m = Merged::new();
    let mut reconnect_parts: Vec<&control::AgentReconnect> = Vec::new();
    for l in links {
        let (exp, del, lat) = match &l.fin {
            Some(f) => {
                if let Some(r) = &f.reconnect {
                    reconnect_parts.push(r);
                }
                m.panicked.extend(
                    f.panicked
                        .iter()
                        .take(8)
                        .map(|p| format!("agent {} ({}): {p}", l.id, l.address)),
                );
                m.add_final(f, l.planned)?
            }
            None => (0, 0, None),
        };
        let ready = add_conns(
            &mut m.totals,
            l.fin.as_ref(),
            l.connected,
            l.last_tick.as_ref(),
        );
        let fin = l.fin.as_ref();
        let split = fin.and_then(|f| believed_split(f, l, &mut m.notes));
        if let Some(s) = &split {
            m.add_split(s);
        }
        let window_all = fin.map_or(
            l.last_tick.as_ref().map_or(0, |t| t.delivered_window_all),
            |f| f.delivered_window_all,
        );
        m.delivered_window_all += window_all;
        m.breakdown.push(AgentBreakdown {
            agent: l.id,
            address: l.address.clone(),
            pid: l.pid,
            clock_offset_us: l.offset_us,
            clock_rtt_us: l.rtt_us,
            planned: l.planned,
            ready,
            connect_errors: fin.map(|f| f.connect_errors.clone()).unwrap_or_default(),
            sent: fin.map_or(0, |f| f.sent_window),
            expected: exp,
            delivered: del,
            sent_all: fin.map_or(0, |f| f.sent_all),
            delivered_all: fin.map_or(0, |f| f.delivered_all),
            delivered_window_all: window_all,
            latency_us: lat,
            cpu_cores_measure: fin.and_then(|f| f.cpu_cores_measure),
            rss_per_conn_bytes: fin.and_then(|f| f.rss_per_conn_bytes),
            ramp_held_s: fin.map_or(0.0, |f| f.ramp_held_us as f64 / 1e6),
            connecting_peak: fin.map_or(0, |f| f.connecting_peak),
            pacer_senders: fin.map_or(0, |f| f.pacer_senders),
            pacer_send_held: fin.map_or(0, |f| f.pacer_send_held),
            cpu_cores_by_role: split.map(|s| s.cores),
            threads_by_role: split.map(|s| s.threads),
            complete: fin.is_some(),
        });
    }
    m.partial = links.iter().any(|l| l.fin.is_none());
    if reconnects {
        m.reconnect = merge_reconnect(&reconnect_parts).map_err(bad_hist)?;
    }
    if across {
        judge_fleet(&mut m, links);
    }
    Ok(m)
}

/// An agent's CPU split by thread role, when it sent one that could be a reading
/// ([`threads::Split::check`]: it is untrusted input). One that could not is left out of the
/// fleet's sum and of the agent's entry, and a note names the agent and why; an agent that sent
/// none (older, or it could not read its threads) is left out without a note.
fn believed_split(f: &Final, l: &AgentLink, notes: &mut Vec<String>) -> Option<threads::Split> {
    let s = f.thread_split?;
    match s.check() {
        Ok(()) => Some(s),
        Err(why) => {
            notes.push(format!(
                "agent {} ({}) sent a CPU split by thread role that cannot be a reading ({why}): \
                 it is left out of generator.cpu_cores_by_role",
                l.id, l.address
            ));
            None
        }
    }
}

/// Every in-window delivery of the agents that reported, judged across agents too
/// ([`ledger::reconcile`]): expected over each room's readers on every agent, delivered within
/// and across agents. Replaces the per-agent sums, which judge only each agent's own pairs.
fn judge_fleet(m: &mut Merged, links: &[AgentLink]) {
    let due: Vec<(u32, Vec<u64>)> = links
        .iter()
        .filter_map(|l| {
            let f = l.fin.as_ref()?;
            let unsent = |r: usize| f.room_unsent_window.get(r).copied().unwrap_or(0);
            Some((
                l.id,
                f.room_sent_window
                    .iter()
                    .enumerate()
                    .map(|(r, s)| s + unsent(r))
                    .collect(),
            ))
        })
        .collect();
    let books: Vec<ledger::AgentBooks<'_>> = links
        .iter()
        .filter_map(|l| l.fin.as_ref().map(|f| (l.id, f)))
        .zip(&due)
        .map(|((agent, f), (_, room_due))| ledger::AgentBooks {
            agent,
            room_due,
            room_readers: &f.room_readers,
            room_delivered_own: &f.room_delivered_window,
            senders: &f.sender_windows,
            cross: &f.cross,
        })
        .collect();
    if links
        .iter()
        .any(|l| l.fin.as_ref().is_some_and(|f| !f.cross_complete))
    {
        // Some agent's ledger was too large to send: each agent's own pairs stay the judgement.
        m.cross_incomplete = true;
        return;
    }
    let judged = ledger::reconcile(&books);
    m.expected = judged.expected;
    m.delivered = judged.delivered;
    m.delivered_cross = judged.delivered_cross;
}

/// The verdict on a fleet's run: its status, and why it is invalid. Local agents share this
/// host's CPUs, so their CPU is judged summed against them; a remote agent against its own.
/// A lost agent makes the results partial.
fn verdict(
    m: &Merged,
    faults: &[AgentFault],
    interrupted: bool,
    local: bool,
    cpus: usize,
) -> (RunStatus, Vec<String>) {
    // A worker that panicked leaves figures that cannot be trusted: the run failed.
    let status = if m.totals.ready == 0 || !m.panicked.is_empty() {
        RunStatus::Failed
    } else if m.partial || interrupted || m.any_interrupted {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    };
    let pacer_p99_us = m
        .pacer_lag
        .as_ref()
        .and_then(Percentiles::of)
        .map(|p| p.p99);
    let mut invalid = Vec::new();
    if local {
        invalid.extend(self_check(&SelfCheck {
            status,
            generator_cores: m.gen_cores(),
            generator_cpus: cpus,
            pacer_p99_us,
        }));
    } else {
        for (c, cpus) in &m.agent_cores {
            invalid.extend(self_check(&SelfCheck {
                status: RunStatus::Complete,
                generator_cores: Some(*c),
                generator_cpus: *cpus as usize,
                pacer_p99_us: None,
            }));
        }
        invalid.extend(self_check(&SelfCheck {
            status,
            generator_cores: None,
            generator_cpus: 1,
            pacer_p99_us,
        }));
    }
    for f in faults {
        invalid.push(format!(
            "partial results: agent {} ({}) was lost at {:.1} s ({}); its connections and messages are missing from the totals",
            f.agent, f.address, f.at_s, f.what
        ));
    }
    (status, invalid)
}

/// The note every fleet's summary carries: how its latency, loss and deliveries are counted.
fn fleet_note(agents: usize) -> String {
    format!(
        "{agents} agents; every delivery is judged, across agents too (loss by sequence number, reconciled by the coordinator: \
         `distributed.delivered_cross_agent`; latency across agents on the agents' wall clocks, error bound `distributed.clock_error_us`); \
         `distributed.agents[].delivered_all` counts every delivery, across agents, and \
         `distributed.delivered_window_all` those of the window (CPU per delivery divides by it)"
    )
}

/// The servers' side over the window.
struct ServerFigures {
    cores: Option<f64>,
    per_delivery: Option<f64>,
    other_load: Option<OtherLoad>,
    run_queue_wait: Option<RunQueueWait>,
}

/// The servers' CPU over the window, from readings taken near its edges on the readings' own
/// clock; CPU per delivery divides by every delivery the server made in the window (any
/// sender to any receiver, counted by the receivers' agents), so not when an agent was lost
/// and took some of its count with it; other work on the servers' CPUs (local agents inherit
/// the coordinator's CPUs).
fn server_figures(
    got: &BTreeMap<Mark, PhaseReading>,
    edges: Option<Edges>,
    m: &Merged,
    phases_measure: f64,
    target: &chatbench_model::results::TargetInfo,
    notes: &mut Vec<String>,
) -> ServerFigures {
    let server_of = |mark: Mark| got.get(&mark).and_then(|r| r.server.clone());
    let host_of = |mark: Mark| got.get(&mark).and_then(|r| r.host.clone());
    let window_edges = edges.map(|e| {
        let epoch = sampler::clock_epoch();
        (
            e.measure.saturating_duration_since(epoch),
            e.cooldown.saturating_duration_since(epoch),
        )
    });
    let server_window = match (
        server_of(Mark::MeasureStart),
        server_of(Mark::MeasureEnd),
        window_edges,
    ) {
        (Some(a), Some(b), Some((start, end))) => match window_cpu(&a, &b, start, end) {
            Ok(w) => Some(w),
            Err(why) => {
                notes.push(format!("server CPU over the window is not given: {why}"));
                None
            }
        },
        _ => None,
    };
    let per_delivery_known = !m.partial;
    if !per_delivery_known && server_window.is_some() {
        notes.push(
            "server CPU per delivery is not given: an agent was lost, so the window's deliveries \
             counted by the agents miss some that the server made"
                .into(),
        );
    }
    // The agents' own window (each switched on its timer from the common start).
    let agents_window_s = if m.measure_s > 0.0 {
        m.measure_s
    } else {
        phases_measure
    };
    let (cores, per_delivery) = match server_window {
        Some(w) => {
            let delivered = if per_delivery_known {
                m.delivered_window_all
            } else {
                0
            };
            let (cores, per) = summary::server_cpu(w.cpu_s, w.over_s, delivered, agents_window_s);
            (Some(cores), per)
        }
        None => (None, None),
    };
    let other_load = summary::other_load(
        host_of(Mark::MeasureStart).as_ref(),
        host_of(Mark::MeasureEnd).as_ref(),
        cores,
        target.cpu_affinity.as_deref(),
        &crate::sys::cpu_affinity(),
    );
    let run_queue_wait = server_window.and_then(|w| w.run_queue_wait);
    if let Some(w) = busy_note(other_load.as_ref(), run_queue_wait.as_ref()) {
        notes.push(w);
    }
    ServerFigures {
        cores,
        per_delivery,
        other_load,
        run_queue_wait,
    }
}

/// A fleet run's status, self-check and notes.
struct Verdict {
    status: RunStatus,
    invalid: Vec<String>,
    notes: Vec<String>,
}

/// What a fleet's summary records beyond the figures.
struct FleetSummary<'a> {
    scenario: &'a Scenario,
    overrides: &'a [String],
    started_utc: chrono::DateTime<chrono::Utc>,
    target: chatbench_model::results::TargetInfo,
    provenance: Provenance,
    source_addrs: Vec<String>,
    affinity: Vec<usize>,
}

/// The summary of a fleet's run, and the merged window histogram (for `latency.hgrm`).
fn fleet_summary(
    s: FleetSummary<'_>,
    ctl: &Control,
    m: Merged,
    v: Verdict,
    target_figures: TargetFigures,
) -> (chatbench_model::results::Summary, Histogram<u64>) {
    let phases = ctl.phases.clone();
    let connect_s = phases.connect;
    let measure_s = if phases.measure > 0.0 {
        phases.measure
    } else {
        m.measure_s
    };
    let gen_cores = m.gen_cores();
    let totals = m.totals;
    let epoll_receivers = totals.epoll_receivers;
    let totals_unstamped = totals.unstamped_reads;
    let mut summary = summary::build(SummaryInput {
        scenario: s.scenario,
        overrides: s.overrides,
        started_utc: s.started_utc,
        status: v.status,
        invalid: v.invalid,
        notes: v.notes,
        target: s.target,
        generator: GenFigures {
            agents: ctl.links.len() as u32,
            source_addrs: s.source_addrs,
            cpu_affinity: s.affinity,
            cpu_cores_measure: gen_cores,
            pacer_lag_us: m.pacer_lag.as_ref().and_then(Percentiles::of),
            pacer_realtime: m.realtime,
            send_lag_us: Percentiles::of(&m.send_lag),
            receive_lag_us: m.receive_lag.as_ref().and_then(Percentiles::of),
            unstamped_reads: (epoll_receivers > 0).then_some(totals_unstamped),
            rss_per_conn_bytes: (!m.rss_per_conn.is_empty())
                .then(|| m.rss_per_conn.iter().sum::<f64>() / m.rss_per_conn.len() as f64),
            // The agents' own splits, summed over those that sent one.
            cpu_cores_by_role: m.thread_split.map(|s| s.cores),
            threads_by_role: m.thread_split.map(|s| s.threads),
            by_role_agents: m.thread_split.map(|_| m.split_agents),
        },
        provenance: s.provenance,
        phases,
        conns: ConnCounts {
            planned: u64::from(s.scenario.connections),
            attempted: totals.attempted,
            connected: totals.connected,
            ready: totals.ready,
            errors: totals.connect_errors,
            closed_by_server: totals.closed_by_server,
            connect_s,
            ramp_held_s: totals.ramp_held_us as f64 / 1e6,
            connect_time: &m.connect_hist,
            reconnect: m.reconnect,
            dropped_in_window: totals.dropped_in_window,
            pacer_senders: totals.pacer_senders,
            pacer_send_held: totals.pacer_send_held,
        },
        msgs: MsgCounts {
            sent_window: totals.sent_window,
            expected: m.expected,
            delivered: m.delivered,
            duplicated: totals.duplicated,
            late: totals.late,
            slow_consumers: totals.slow,
            server_errors: totals.server_errors,
            bad_frames: totals.bad_frames,
            echoes: totals.echoes,
            unsent_down: m.unsent_down,
            measure_s,
        },
        latency: &m.window,
        target_figures,
        fault: None,
        failover: None,
        distributed: Some(DistributedInfo {
            agents: m.breakdown,
            faults: ctl.faults.clone(),
            partial: m.partial,
            delivered_window_all: m.delivered_window_all,
            delivered_cross_agent: m.delivered_cross,
            clock_error_us: Some(ctl.clock_error_us()),
        }),
    });
    summary.connections.epoll_receivers = (epoll_receivers > 0).then_some(epoll_receivers);
    (summary, m.window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_spec_parses_and_explains() {
        assert_eq!(AgentsSpec::parse("local:3"), Ok(AgentsSpec::Local(3)));
        assert_eq!(AgentsSpec::parse("auto"), Ok(AgentsSpec::Auto));
        assert_eq!(
            AgentsSpec::parse("10.0.0.1:7000, 10.0.0.2:7000"),
            Ok(AgentsSpec::Remote(vec![
                "10.0.0.1:7000".into(),
                "10.0.0.2:7000".into()
            ]))
        );
        let e = AgentsSpec::parse("local:0").expect_err("zero");
        assert!(e.contains("between 1 and"), "{e}");
        assert!(AgentsSpec::parse("banana").is_err());
    }

    #[test]
    fn agents_share_the_ramp_rate_and_keep_everything_else() {
        let s = chatbench_model::scenario::Scenario::parse(
            "name='t'\nconnections=300\nramp_rate=3000.0\nrooms=3\nmembers_per_room=100\n",
            "t",
        )
        .expect("scenario");
        let text = agent_scenario(&s, 100, 300, false).expect("encode");
        let back = chatbench_model::scenario::Scenario::parse(&text, "agent").expect("parses back");
        assert!((back.ramp_rate - 1000.0).abs() < 1e-9);
        assert_eq!(back.connections, 300);
        assert_eq!(back.rooms, 3);
        assert_eq!(back.measure, s.measure);
        assert_eq!(back.target_policy, s.target_policy);
        // A remote agent keeps the whole set-up bound; local agents share the host's.
        assert_eq!(back.max_connecting, s.max_connecting);
        let local = agent_scenario(&s, 100, 300, true).expect("encode");
        let back =
            chatbench_model::scenario::Scenario::parse(&local, "agent").expect("parses back");
        assert_eq!(back.max_connecting, 334);
        let tiny = chatbench_model::scenario::Scenario::parse(
            "name='t'\nconnections=300\nmax_connecting=2\n",
            "t",
        )
        .expect("scenario");
        let back = agent_scenario(&tiny, 1, 300, true).expect("encode");
        let back = chatbench_model::scenario::Scenario::parse(&back, "agent").expect("parses back");
        assert_eq!(back.max_connecting, 1, "never below one");
        // The slowest ramp the scenario accepts, shared: each agent's stays within the bound.
        let slow = chatbench_model::scenario::Scenario::parse(
            "name='t'\nconnections=300\nramp_rate=0.001\n",
            "t",
        )
        .expect("scenario");
        let text = agent_scenario(&slow, 1, 300, false).expect("encode");
        chatbench_model::scenario::Scenario::parse(&text, "agent")
            .expect("an agent accepts its share");
    }

    #[test]
    fn a_lost_agents_opens_count_up_to_its_last_report() {
        let mut totals = Final::default();
        let done = Final {
            attempted: 100,
            connected: 100,
            ready: 98,
            connect_errors: BTreeMap::from([("refused".to_string(), 2)]),
            ..Final::default()
        };
        assert_eq!(add_conns(&mut totals, Some(&done), Some(98), None), 98);
        // Lost during its ramp: 40 ready at its last tick, 1 failed, no barrier message.
        let tick = Tick {
            connect_attempts: 45,
            connect_errors: 1,
            ready: 40,
            ..Tick::default()
        };
        assert_eq!(add_conns(&mut totals, None, None, Some(&tick)), 40);
        // Lost after the barrier, before any tick said as much: the barrier count stands.
        assert_eq!(
            add_conns(&mut totals, None, Some(30), Some(&Tick::default())),
            30
        );
        // Lost before it said anything.
        assert_eq!(add_conns(&mut totals, None, None, None), 0);
        assert_eq!(totals.ready, 98 + 40 + 30);
        assert_eq!(totals.attempted, 100 + 45 + 30);
        assert_eq!(totals.connect_errors.get("refused"), Some(&2));
        assert_eq!(totals.connect_errors.get(LOST_AGENT_ERRORS), Some(&1));
        // The open rate the summary derives counts all three agents' opens.
        let s = chatbench_model::scenario::Scenario::parse("name='t'\nconnections=300\n", "t")
            .expect("s");
        let hist = new_hist();
        let conns = summary::ConnCounts {
            planned: 300,
            attempted: totals.attempted,
            connected: totals.connected,
            ready: totals.ready,
            errors: totals.connect_errors.clone(),
            closed_by_server: BTreeMap::new(),
            connect_s: 2.0,
            ramp_held_s: 0.0,
            connect_time: &hist,
            reconnect: None,
            dropped_in_window: 0,
            pacer_senders: 0,
            pacer_send_held: 0,
        };
        let summary = summary::build(summary::SummaryInput {
            conns,
            ..summary::testing::input(&s, &hist)
        });
        assert!((summary.connections.open_rate_per_s - 84.0).abs() < 1e-9);
    }

    #[test]
    fn reconnect_figures_merge_by_sum_and_histogram_addition() {
        assert!(merge_reconnect(&[]).expect("none").is_none());
        let hist_of = |values: &[u64]| {
            let mut h = new_hist();
            for &v in values {
                chatbench_model::hist::record(&mut h, v);
            }
            control::encode_hist(&h).expect("encode")
        };
        let a = control::AgentReconnect {
            lost: 60,
            attempts: 70,
            reconnected: 59,
            failed: 1,
            errors: BTreeMap::from([("refused".to_string(), 10)]),
            time: hist_of(&[1_000; 59]),
        };
        let b = control::AgentReconnect {
            lost: 40,
            attempts: 44,
            reconnected: 40,
            failed: 0,
            errors: BTreeMap::from([("refused".to_string(), 3), ("timeout".to_string(), 1)]),
            time: hist_of(&[500_000; 40]),
        };
        let m = merge_reconnect(&[&a, &b]).expect("merge").expect("some");
        assert_eq!(
            (m.lost, m.attempts, m.reconnected, m.failed),
            (100, 114, 99, 1)
        );
        assert_eq!(m.errors.get("refused"), Some(&13));
        assert_eq!(m.errors.get("timeout"), Some(&1));
        let t = m.time_us.expect("times");
        assert_eq!(t.count, 99);
        assert!(t.p50 < 2_000 && t.max >= 499_000, "{t:?}");
        let bad = control::AgentReconnect {
            time: "not base64!".into(),
            ..b
        };
        assert!(merge_reconnect(&[&a, &bad]).is_err());
    }

    #[test]
    fn auto_sizes_to_the_descriptor_limit() {
        assert_eq!(auto_agents(200_000, 20_000), 11); // 19,936 per agent
        assert_eq!(auto_agents(100, 20_000), 1);
        assert_eq!(auto_agents(0, 20_000), 1);
        assert_eq!(auto_agents(200_000, u64::MAX), 1);
    }

    /// Agent links whose control messages the test reads (no processes, no sockets).
    fn fleet(n: usize) -> (Vec<AgentLink>, Vec<mpsc::Receiver<ToAgent>>) {
        let mut links = Vec::new();
        let mut outs = Vec::new();
        for i in 0..n {
            let mut l = AgentLink::new(i as u32, &format!("127.0.0.1:{}", 7000 + i), None);
            let (tx, rx) = mpsc::channel(OUTBOX);
            l.out = Some(tx);
            l.offset_us = 1_000 * i as i64;
            links.push(l);
            outs.push(rx);
        }
        (links, outs)
    }

    fn scenario() -> Scenario {
        Scenario::parse(
            "name='t'\nconnections=40\nrooms=2\nmembers_per_room=20\nsettle='1s'\nwarmup='2s'\nmeasure='3s'\ncooldown='1s'\n",
            "t",
        )
        .expect("scenario")
    }

    fn control(n: usize) -> (Control, Vec<mpsc::Receiver<ToAgent>>) {
        let (links, outs) = fleet(n);
        let ctl = Control::new(
            links,
            &scenario(),
            Instant::now(),
            Progress::new(crate::progress::ProgressMode::Quiet),
        );
        (ctl, outs)
    }

    fn drain(rx: &mut mpsc::Receiver<ToAgent>) -> Vec<ToAgent> {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            v.push(m);
        }
        v
    }

    fn encoded(values: &[u64]) -> String {
        let mut h = new_hist();
        for &v in values {
            chatbench_model::hist::record(&mut h, v);
        }
        control::encode_hist(&h).expect("encode")
    }

    /// An agent's final figures: `sent` in room 0 with `readers` readers, `delivered` there.
    fn fin(sent: u64, readers: u64, delivered: u64, latencies: &[u64]) -> Final {
        Final {
            planned: 20,
            attempted: 20,
            connected: 20,
            ready: 20,
            sent_window: sent,
            room_sent_window: vec![sent, 0],
            room_delivered_window: vec![delivered, 0],
            room_readers: vec![readers, 0],
            window_latency: encoded(latencies),
            connect_time: encoded(&[500; 20]),
            send_lag: encoded(&[10]),
            pacer_lag: Some(encoded(&[50])),
            cpu_cores_measure: Some(0.5),
            cpus: 2,
            measure_s: 3.0,
            delivered_window_all: delivered,
            cross_complete: true,
            ..Final::default()
        }
    }

    #[test]
    fn the_barrier_gives_every_agent_the_common_start_in_its_own_clock() {
        let (mut ctl, mut outs) = control(3);
        let t0 = ctl.started;
        ctl.links[0].connected = Some(10);
        ctl.links[1].connected = Some(5);
        ctl.links[0].epoch_unix_us = 5_000_000;
        ctl.links[1].epoch_unix_us = 7_000_000;
        assert!(!ctl.connect_step(t0), "agent 2 has not connected yet");
        assert_eq!(ctl.phase, Phase::Connect);
        ctl.links[2].connected = Some(0);
        // Agent 2's control connection is gone: it cannot be told to start.
        ctl.links[2].out = None;
        let now = t0 + Duration::from_secs(2);
        assert!(!ctl.connect_step(now));
        assert_eq!(ctl.phase, Phase::Settle);
        assert_eq!(ctl.phases.connect, 2.0);
        let edges = ctl.edges.expect("a timeline");
        assert_eq!(
            edges.start,
            now + Duration::from_millis(1_200),
            "settle + 200 ms"
        );
        assert_eq!(edges.end - edges.start, Duration::from_secs(6));
        let (starts, epochs): (Vec<i64>, Vec<Vec<i64>>) = outs[..2]
            .iter_mut()
            .map(|rx| match drain(rx).as_slice() {
                [ToAgent::Go {
                    start_unix_us,
                    epochs_us,
                }] => (*start_unix_us, epochs_us.clone()),
                other => panic!("expected one go, got {other:?}"),
            })
            .unzip();
        assert_eq!(starts[1] - starts[0], 1_000, "each in its own clock");
        // Agents' epochs in each agent's clock (offsets 0 and 1,000 µs; agent 2 told none).
        assert_eq!(epochs[0], vec![5_000_000, 6_999_000, 0]);
        assert_eq!(epochs[1], vec![5_001_000, 7_000_000, 0]);
        ctl.same_host = true;
        assert_eq!(
            ctl.epochs_for(1),
            vec![5_000_000, 7_000_000, 0],
            "one clock"
        );
        assert_eq!(ctl.clock_error_us(), 0);
        assert!(ctl.links[2].lost);
        assert_eq!(ctl.faults.len(), 1);
        assert_eq!(ctl.faults[0].agent, 2);
        assert!(
            ctl.faults[0].what.starts_with("could not be told to start"),
            "{:?}",
            ctl.faults
        );
    }

    #[test]
    fn with_nothing_connected_every_agent_is_told_to_stop() {
        let (mut ctl, mut outs) = control(2);
        ctl.links[0].connected = Some(0);
        ctl.links[1].lost = true;
        let now = ctl.started + Duration::from_secs(1);
        assert!(ctl.connect_step(now), "look again at once");
        assert!(ctl.stop_sent && ctl.edges.is_none());
        assert_eq!(ctl.hard_deadline, now + Duration::from_secs(15));
        assert!(matches!(drain(&mut outs[0]).as_slice(), [ToAgent::Stop]));
        assert!(drain(&mut outs[1]).is_empty(), "a lost agent is not told");
    }

    #[test]
    fn an_agent_not_connected_by_the_deadline_is_lost_and_the_rest_go_on() {
        let (mut ctl, _outs) = control(2);
        ctl.links[0].connected = Some(20);
        let late = ctl.connect_deadline;
        assert!(ctl.connect_step(late));
        assert!(ctl.links[1].lost && !ctl.links[0].lost);
        assert!(ctl.faults[0].what.contains("connect deadline"));
        assert!(!ctl.connect_step(late), "the barrier, with the agent left");
        assert_eq!(ctl.phase, Phase::Settle);
    }

    #[test]
    fn the_phase_edges_ask_for_readings_in_order() {
        let (mut ctl, _outs) = control(1);
        ctl.links[0].connected = Some(20);
        let t = ctl.started + Duration::from_secs(1);
        ctl.connect_step(t);
        let e = ctl.edges.expect("edges");
        assert!(ctl.advance(t).is_empty());
        assert_eq!(ctl.advance(e.start), vec![Mark::Connected]);
        assert_eq!(ctl.phase, Phase::Warmup);
        // A late loop passes two edges at once: both readings, in order.
        assert_eq!(
            ctl.advance(e.cooldown),
            vec![Mark::MeasureStart, Mark::MeasureEnd]
        );
        assert_eq!(ctl.phase, Phase::Cooldown);
        // Warmup is seen to end late; the window is measured from its own start edge.
        assert_eq!(ctl.phases.warmup, 5.0);
        assert_eq!(ctl.phases.measure, 3.0);
        assert!(ctl.advance(e.end).is_empty());
        assert_eq!(ctl.phase, Phase::Stop);
        assert_eq!(ctl.phases.cooldown, 1.0);
        assert_eq!(ctl.phases.settle, 1.2);
    }

    #[test]
    fn a_silent_agent_is_lost_but_not_for_the_loops_own_lateness() {
        let (mut ctl, _outs) = control(2);
        let t = ctl.started;
        for l in ctl.links.iter_mut() {
            l.last_heard = t;
        }
        ctl.links[1].last_heard = t + STALL_LIMIT;
        let now = t + STALL_LIMIT + Duration::from_secs(1);
        // The loop itself was not scheduled for 2 s: both agents get that much back.
        ctl.check_stalls(now, Duration::from_secs(2));
        assert!(!ctl.links[0].lost);
        ctl.check_stalls(now + Duration::from_secs(2), Duration::ZERO);
        assert!(ctl.links[0].lost && !ctl.links[1].lost);
        assert!(ctl.faults[0].what.starts_with("stalled"));
        assert!(
            ctl.links[0].out.is_none(),
            "its control connection is closed"
        );
    }

    #[test]
    fn agents_messages_feed_the_barrier_the_series_and_the_figures() {
        let (mut ctl, _outs) = control(3);
        let t = ctl.started;
        ctl.on_event(
            0,
            t,
            Ok(FromAgent::Connected {
                ready: 20,
                epoch_unix_us: 1,
            }),
        );
        let tick = Tick {
            open: 20,
            sent: 100,
            delivered: 300,
            connect_attempts: 21,
            connect_errors: 1,
            interval: encoded(&[1_000, 2_000]),
            rss_bytes: Some(1 << 20),
            ..Tick::default()
        };
        ctl.on_event(0, t, Ok(FromAgent::Tick(Box::new(tick.clone()))));
        ctl.on_event(1, t, Ok(FromAgent::Tick(Box::new(tick))));
        assert_eq!(ctl.links[0].connected, Some(20));
        assert_eq!(ctl.pending.len(), 4, "interval histograms added");
        ctl.on_event(1, t, Ok(FromAgent::Done(Box::new(fin(1, 2, 1, &[5])))));
        assert!(ctl.links[1].fin.is_some());
        ctl.on_event(2, t, Err(ControlError::Closed));
        assert!(ctl.links[2].lost);
        assert!(ctl.faults[0].what.contains("died or was killed"));
        ctl.on_event(
            2,
            t,
            Ok(FromAgent::Connected {
                ready: 9,
                epoch_unix_us: 1,
            }),
        );
        assert_eq!(ctl.links[2].connected, None, "a lost agent is not heard");
        ctl.second(t + Duration::from_secs(2), None);
        let value = |m: &str| {
            ctl.series
                .iter()
                .find(|r| r.metric == m)
                .map(|r| r.value)
                .expect(m)
        };
        assert_eq!(value("connections_open"), 40.0);
        assert_eq!(value("sent_per_s"), 100.0);
        assert_eq!(value("latency_count"), 4.0);
        assert_eq!(value("agents_live"), 2.0);
        assert_eq!(value("generator_rss_bytes"), 2.0 * (1 << 20) as f64);
        assert!(
            ctl.pending.is_empty(),
            "a second takes the pending latencies"
        );
        // Agent 0 is still out: the run waits for it until the hard deadline, then loses it.
        assert!(!ctl.finished(t));
        assert!(ctl.finished(ctl.hard_deadline));
        assert!(ctl.links[0].lost);
        assert!(ctl.faults[1].what.contains("before the run's deadline"));
    }

    #[test]
    fn an_agent_whose_ledger_was_too_large_leaves_the_judgement_within_agents() {
        let (mut links, _outs) = fleet(2);
        links[0].fin = Some(fin(10, 3, 20, &[1_000; 20]));
        let mut big = fin(5, 2, 4, &[3_000; 4]);
        big.cross_complete = false;
        links[1].fin = Some(big);
        let m = merge(&links, false, true).expect("merge");
        assert!(m.cross_incomplete);
        // Each agent's own pairs: 10 × (3 − 1) + 5 × (2 − 1).
        assert_eq!((m.expected, m.delivered), (25, 24));
    }

    #[test]
    fn the_epoll_receivers_are_summed_and_an_older_agent_reports_none() {
        let mut json = serde_json::to_value(fin(1, 2, 1, &[5])).expect("encode");
        let old = json.as_object_mut().expect("an object");
        assert!(old.remove("epoll_receivers").is_some());
        assert!(old.remove("receive_lag").is_some());
        assert!(old.remove("unstamped_reads").is_some());
        let old: Final = serde_json::from_value(json).expect("an older agent's figures decode");
        assert_eq!(old.epoll_receivers, 0);
        assert_eq!((old.receive_lag.as_deref(), old.unstamped_reads), (None, 0));
        let (mut links, _outs) = fleet(3);
        links[0].fin = Some(Final {
            epoll_receivers: 17,
            receive_lag: Some(encoded(&[5, 7, 9])),
            unstamped_reads: 2,
            ..fin(10, 3, 20, &[1_000; 20])
        });
        links[1].fin = Some(old);
        links[2].fin = Some(Final {
            epoll_receivers: 5,
            receive_lag: Some(encoded(&[40])),
            unstamped_reads: 1,
            ..fin(5, 2, 4, &[3_000; 4])
        });
        let m = merge(&links, false, true).expect("merge");
        assert_eq!(m.totals.epoll_receivers, 22);
        assert_eq!(m.totals.unstamped_reads, 3);
        let lag = m.receive_lag.as_ref().expect("receive lag merged");
        assert_eq!(
            (lag.len(), lag.max()),
            (4, 40),
            "added exactly like the send lag"
        );
    }

    #[test]
    fn the_pacer_senders_are_summed_bounded_by_each_agents_plan_and_absent_from_an_older_agent() {
        let mut json = serde_json::to_value(fin(1, 2, 1, &[5])).expect("encode");
        let old = json.as_object_mut().expect("an object");
        assert!(old.remove("pacer_senders").is_some());
        assert!(old.remove("pacer_send_held").is_some());
        let old: Final = serde_json::from_value(json).expect("an older agent's figures decode");
        assert_eq!((old.pacer_senders, old.pacer_send_held), (0, 0));
        let (mut links, _outs) = fleet(3);
        for l in &mut links {
            l.planned = 20;
        }
        links[0].fin = Some(Final {
            pacer_senders: 4,
            pacer_send_held: 7,
            ..fin(10, 3, 20, &[1_000; 20])
        });
        links[1].fin = Some(old);
        links[2].fin = Some(Final {
            pacer_senders: 20,
            pacer_send_held: u64::MAX,
            ..fin(5, 2, 4, &[3_000; 4])
        });
        let m = merge(&links, false, true).expect("merge");
        assert_eq!(m.totals.pacer_senders, 24);
        let per_agent: Vec<_> = m
            .breakdown
            .iter()
            .map(|a| (a.pacer_senders, a.pacer_send_held))
            .collect();
        assert_eq!(
            per_agent,
            [(4, 7), (0, 0), (20, u64::MAX)],
            "and each agent's own"
        );
        assert_eq!(
            m.totals.pacer_send_held,
            u64::MAX,
            "the held count saturates"
        );
        // An agent that claims more senders than the connections it was given is not believed.
        links[2].fin.as_mut().expect("figures").pacer_senders = 21;
        let e = merge(&links, false, true).expect_err("refused");
        assert!(e.to_string().contains("21 senders"), "{e}");
    }

    #[test]
    fn the_thread_splits_are_summed_over_the_agents_that_sent_one_the_coordinator_believes() {
        // An older agent's figures have no split: they decode, and it is left out.
        let mut json = serde_json::to_value(fin(1, 2, 1, &[5])).expect("encode");
        let old = json.as_object_mut().expect("an object");
        assert!(old.remove("thread_split").is_some());
        let old: Final = serde_json::from_value(json).expect("an older agent's figures decode");
        assert_eq!(old.thread_split, None);
        // A hostile agent's: it decodes (JSON carries it), and the check refuses it.
        let mut json = serde_json::to_value(fin(1, 2, 1, &[5])).expect("encode");
        json["thread_split"] = serde_json::json!({
            "cores": {"receive": -0.5, "pacer": 0.0, "tokio": 0.0, "other": 0.0},
            "threads": {"receive": 1, "pacer": 0, "tokio": 0, "other": 0},
        });
        let negative: Final = serde_json::from_value(json).expect("decodes");
        let (mut links, _outs) = fleet(6);
        let good = [
            threads::test_split([0.5, 0.25, 0.125, 0.0625], [2, 1, 4, 3]),
            threads::test_split([0.25, 0.125, 0.0, 0.0625], [2, 1, 4, 2]),
        ];
        links[0].fin = Some(Final {
            thread_split: Some(good[0]),
            ..fin(10, 3, 20, &[1_000; 20])
        });
        links[1].fin = Some(old);
        links[2].fin = Some(negative);
        links[3].fin = Some(Final {
            // More cores than its threads can use, and absurd: not summed (no overflow).
            thread_split: Some(threads::test_split([0.0, 0.0, 1e308, 0.0], [0, 0, 4, 0])),
            ..fin(1, 2, 1, &[5])
        });
        // Agent 4 was lost before its final figures.
        links[5].fin = Some(Final {
            thread_split: Some(good[1]),
            ..fin(5, 2, 4, &[3_000; 4])
        });
        let m = merge(&links, false, true).expect("a bad split does not fail the merge");
        assert_eq!(m.split_agents, 2, "agents 0 and 5");
        assert_eq!(
            m.thread_split,
            Some(threads::test_split(
                [0.75, 0.375, 0.125, 0.125],
                [4, 2, 8, 5]
            )),
            "role by role"
        );
        let per_agent: Vec<_> = m
            .breakdown
            .iter()
            .map(|a| (a.cpu_cores_by_role, a.threads_by_role))
            .collect();
        let some = |s: &threads::Split| (Some(s.cores), Some(s.threads));
        assert_eq!(
            per_agent,
            [
                some(&good[0]),
                (None, None),
                (None, None),
                (None, None),
                (None, None),
                some(&good[1])
            ]
        );
        // A note for each split left out as unbelievable, none for the old or the lost agent.
        assert_eq!(m.notes.len(), 2, "{:?}", m.notes);
        assert!(
            m.notes[0].starts_with("agent 2 (127.0.0.1:7002)")
                && m.notes[0].contains("receive cores -0.5 are not a finite number"),
            "{:?}",
            m.notes
        );
        assert!(
            m.notes[1].starts_with("agent 3 (127.0.0.1:7003)")
                && m.notes[1].contains("more than its 4 thread(s)"),
            "{:?}",
            m.notes
        );
        // No agent sent one: the fleet has none (absent, not zero).
        let (mut links, _outs) = fleet(2);
        links[0].fin = Some(fin(10, 3, 20, &[1_000; 20]));
        let m = merge(&links, false, true).expect("merge");
        assert_eq!((m.thread_split, m.split_agents), (None, 0));
    }

    #[test]
    fn the_merge_adds_agents_exactly_and_counts_a_lost_one_up_to_its_last_report() {
        let (mut links, _outs) = fleet(3);
        links[0].fin = Some(fin(10, 3, 20, &[1_000; 20]));
        links[1].fin = Some(fin(5, 2, 4, &[3_000; 4]));
        links[2].connected = Some(15);
        let m = merge(&links, false, true).expect("merge");
        // The loss formula over the fleet's room: (10 + 5) due × (3 + 2 readers − 1); the
        // agents report no deliveries across agents here.
        assert_eq!(m.expected, 60);
        assert_eq!(m.delivered, 24);
        assert_eq!(m.delivered_cross, 0);
        assert!(!m.cross_incomplete);
        assert_eq!(m.window.len(), 24, "histograms added");
        assert_eq!(m.connect_hist.len(), 40);
        assert_eq!(m.pacer_lag.as_ref().map(|h| h.len()), Some(2));
        assert_eq!(m.totals.ready, 20 + 20 + 15);
        assert_eq!(m.totals.sent_window, 15);
        assert_eq!(m.delivered_window_all, 24);
        assert!(m.partial);
        assert_eq!(m.gen_cores(), Some(1.0));
        assert_eq!(m.breakdown.len(), 3);
        assert_eq!((m.breakdown[1].expected, m.breakdown[1].delivered), (5, 4));
        assert!(m.breakdown[1].complete && !m.breakdown[2].complete);
        assert_eq!(m.breakdown[2].ready, 15);
        let mut bad = fin(1, 2, 1, &[1]);
        bad.window_latency = "not base64!".into();
        links[0].fin = Some(bad);
        assert!(merge(&links, false, true).is_err());
    }

    #[test]
    fn the_verdict_marks_partial_failed_and_generator_bound_runs() {
        let (mut links, _outs) = fleet(2);
        links[0].fin = Some(fin(10, 3, 20, &[1_000]));
        links[1].fin = Some(fin(10, 3, 20, &[1_000]));
        let whole = merge(&links, false, true).expect("merge");
        let (status, invalid) = verdict(&whole, &[], false, true, 4);
        assert_eq!(status, RunStatus::Complete);
        assert!(invalid.is_empty(), "{invalid:?}");
        let (status, _) = verdict(&whole, &[], true, true, 4);
        assert_eq!(status, RunStatus::Interrupted, "Ctrl-C");
        // Local agents share this host: 1.0 core of 1 CPU is generator-bound.
        let (_, invalid) = verdict(&whole, &[], false, true, 1);
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        // Remote agents are each judged against their own CPUs (0.5 of 2: fine).
        let (_, invalid) = verdict(&whole, &[], false, false, 1);
        assert!(invalid.is_empty(), "{invalid:?}");
        links[1].fin = None;
        let partial = merge(&links, false, true).expect("merge");
        let fault = AgentFault {
            agent: 1,
            address: "127.0.0.1:7001".into(),
            at_s: 2.5,
            what: "stalled".into(),
        };
        let (status, invalid) = verdict(&partial, &[fault], false, true, 4);
        assert_eq!(status, RunStatus::Interrupted);
        assert!(
            invalid
                .iter()
                .any(|r| r.starts_with("partial results: agent 1")),
            "{invalid:?}"
        );
        links[0].fin = None;
        let none = merge(&links, false, true).expect("merge");
        assert_eq!(verdict(&none, &[], false, true, 4).0, RunStatus::Failed);
    }

    #[test]
    fn setups_split_the_plan_and_give_disjoint_source_ranges() {
        let s = scenario();
        let targets = vec![Target::parse("ws://127.0.0.1:9/ws").expect("url")];
        let layout = Layout {
            agents: 2,
            targets: 1,
            policy: s.target_policy,
        };
        let v = setups(&s, &targets, &layout, true).expect("setups");
        assert_eq!(v.len(), 2);
        assert_eq!(v.iter().map(|(_, n)| n).sum::<u64>(), 40);
        assert_eq!(v[0].0.source_first, 0);
        assert!(v[1].0.source_first >= 1);
        assert_eq!(v[1].0.agent, 1);
        assert_eq!(v[1].0.agents, 2);
    }
}
