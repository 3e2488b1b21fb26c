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
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::plan::{Layout, Plan, MAX_AGENTS};
use crate::progress::Progress;
use crate::readings::{window_cpu, Mark, PhaseReading, Reading, Readings, SecondReading};
use crate::run::{parse_targets, self_check, RunError, RunOptions, RunReport, SelfCheck};
use crate::{sampler, sys};
use chatbench_model::hist::new_hist;
use chatbench_model::results::{
    write_run, AgentBreakdown, AgentFault, DistributedInfo, OtherLoad, Percentiles, PhaseTimes,
    ReconnectStats, RunStatus, SeriesRow,
};
use chatbench_model::series;
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

/// A local agent process, killed by its pid when dropped.
struct LocalAgent {
    child: Child,
    addr: String,
}

impl LocalAgent {
    /// Starts a local agent that accepts `token` (given in its environment, which only this
    /// user can read, not on its command line).
    fn spawn(exe: &std::path::Path, token: &str) -> Result<LocalAgent, String> {
        let mut child = Command::new(exe)
            .args(["agent", "--listen", "127.0.0.1:0", "--once"])
            .env(crate::agent::TOKEN_ENV, token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
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

    fn stop(&mut self) {
        // SIGTERM to our own child by pid, then SIGKILL after a grace period.
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
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
    last_tick: Option<Tick>,
    fin: Option<Final>,
    lost: bool,
}

impl AgentLink {
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
    let mut link = AgentLink {
        id,
        address: address.to_string(),
        pid: 0,
        w: Some(w),
        out: None,
        offset_us: 0,
        rtt_us: 0,
        planned: 0,
        last_heard: Instant::now(),
        connected: None,
        last_tick: None,
        fin: None,
        lost: false,
    };
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

/// Runs a scenario over agents and writes the results.
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
    let progress = Progress::new(ropts.progress);
    // Start or reach the agents.
    let mut locals = Vec::new();
    let mut token = token;
    let addresses: Vec<String> = match &spec {
        AgentsSpec::Remote(list) => list.clone(),
        _ => {
            // Local agents get a token of this run's own: another local user cannot use them.
            let run_token = crate::agent::new_token();
            for _ in 0..n_agents {
                locals.push(LocalAgent::spawn(&exe, &run_token).map_err(agent_err)?);
            }
            token = Some(run_token);
            locals.iter().map(|l| l.addr.clone()).collect()
        }
    };
    let mut links = Vec::new();
    let mut readers = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let (l, r) = connect_agent(i as u32, a, token.as_deref()).await?;
        links.push(l);
        readers.push(r);
    }
    // Setup: each agent's share.
    let counts = Plan::counts_per_agent(&scenario, &layout);
    let per = u64::from(sys::DEFAULT_CONNS_PER_SOURCE_ADDR);
    let total = counts.iter().sum::<u64>().max(1);
    let mut first = 0u64;
    let mut source_addrs = Vec::new();
    for (i, link) in links.iter_mut().enumerate() {
        link.planned = counts[i];
        let setup = Setup {
            agent: i as u32,
            agents: n_agents,
            scenario: agent_scenario(&scenario, counts[i], total, !locals.is_empty())?,
            targets: targets.iter().map(|t| t.url.clone()).collect(),
            source_first: first,
        };
        first += counts[i].div_ceil(per).max(1);
        link.send(&ToAgent::Setup(Box::new(setup)))
            .await
            .map_err(|e| agent_err(format!("agent {i} at {}: {e}", link.address)))?;
    }
    let setup_wait = scenario.connect_timeout * (targets.len() as u32 + 1) + Duration::from_secs(5);
    // Agents' messages (and their writers' failures) come through one channel.
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    for (i, r) in readers.iter_mut().enumerate() {
        let addr = &links[i].address;
        let reply = tokio::time::timeout(setup_wait, control::recv(r))
            .await
            .map_err(|_| {
                agent_err(format!(
                    "agent {i} at {addr}: no answer to setup within {setup_wait:?}"
                ))
            })?
            .map_err(|e| agent_err(format!("agent {i} at {addr}: {e}")))?;
        match reply {
            FromAgent::Ready {
                source_addrs: s, ..
            } => {
                source_addrs.extend(s);
                // Heartbeats from now on, whatever the control loop does.
                links[i].start_writer(i, tx.clone());
            }
            FromAgent::Refused { reason } => {
                return Err(agent_err(format!(
                    "agent {i} at {addr} refused the run: {reason}"
                )))
            }
            other => {
                return Err(agent_err(format!(
                    "agent {i} at {addr}: expected ready, got {other:?}"
                )))
            }
        }
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
    drop(tx);

    let mut provenance = crate::provenance::collect();
    let started_utc = chrono::Utc::now();
    let pids = ropts.target_info.sampled_pids();
    // The servers and the host are read on a thread of their own: a slow /proc must not keep
    // this loop (stall detection, go, stop) from running.
    let mut readings = Readings::start(pids.clone(), sample_delay)
        .map_err(|e| agent_err(format!("cannot start the reading thread: {e}")))?;
    let mut phase_readings: BTreeMap<Mark, PhaseReading> = BTreeMap::new();
    let mut asked: Vec<Mark> = Vec::new();
    let mut last_second: Option<SecondReading> = None;
    let mut readings_open = true;
    // The reading before the run is waited for (the agents hear their heartbeats meanwhile):
    // memory per connection counts from it.
    if readings.ask(Mark::Before) {
        asked.push(Mark::Before);
        let until = Instant::now() + READINGS_WAIT;
        while let Ok(Some(r)) = tokio::time::timeout_at(until.into(), readings.rx.recv()).await {
            match r {
                Reading::Phase(p) => {
                    let before = p.mark == Mark::Before;
                    phase_readings.insert(p.mark, p);
                    if before {
                        break;
                    }
                }
                Reading::Second(r) => last_second = Some(r),
            }
        }
    }
    for l in links.iter() {
        let _ = l.post(ToAgent::Start);
    }
    let started = Instant::now();
    let at_s = |t: Instant| (t.duration_since(started).as_secs_f64() * 1000.0).round() / 1000.0;
    let mut faults: Vec<AgentFault> = Vec::new();
    let mut series: Vec<SeriesRow> = Vec::new();
    let mut pending = new_hist();
    let mut last_emit = Instant::now();
    let mut last_sent = 0u64;
    let mut last_delivered = 0u64;
    let mut last_cpu = 0.0f64;
    let mut phase = Phase::Connect;
    let mut phases = PhaseTimes::default();
    // A backstop behind the agents' own connect deadlines (ramp + time held back by
    // `max_connecting`, within its bound + connect_timeout + 1 s).
    let all = u64::from(scenario.connections);
    let connect_deadline = started
        + scenario.connect_deadline(all, scenario.max_ramp_hold(all))
        + Duration::from_secs(9);
    // (start, measure start, cooldown start, end) in coordinator time.
    let mut timeline: Option<[Instant; 4]> = None;
    let mut interrupt = ropts.interrupt.clone();
    let mut interrupted = *interrupt.borrow();
    let mut stop_sent = false;
    let mut hard_deadline = connect_deadline
        + scenario.settle
        + scenario.warmup
        + scenario.measure
        + scenario.cooldown
        + Duration::from_secs(20);
    let mut connect_end: Option<Instant> = None;
    let mut clock = LoopClock::new(Instant::now());
    loop {
        let now = Instant::now();
        let live: Vec<usize> = (0..links.len())
            .filter(|&i| !links[i].lost && links[i].fin.is_none())
            .collect();
        if live.is_empty() || now >= hard_deadline {
            if !live.is_empty() {
                for i in live {
                    let l = &mut links[i];
                    l.lost = true;
                    l.close();
                    faults.push(AgentFault {
                        agent: l.id,
                        address: l.address.clone(),
                        at_s: at_s(now),
                        what: "did not deliver its final figures before the run's deadline".into(),
                    });
                }
            }
            break;
        }
        // Stalls. Time this loop itself was not scheduled (a host busy opening connections)
        // is not held against the agents: their reports may be waiting to be read.
        let late = clock.lateness(now);
        for l in links.iter_mut().filter(|l| !l.lost && l.fin.is_none()) {
            l.last_heard += late;
            if now.duration_since(l.last_heard) > STALL_LIMIT {
                l.lost = true;
                l.close(); // closing the control connection makes the agent stop its load
                let what = format!("stalled: no report for {STALL_LIMIT:?}");
                progress.println(&format!(
                    "agent {} ({}) {what} at {:.1} s",
                    l.id,
                    l.address,
                    at_s(now)
                ));
                faults.push(AgentFault {
                    agent: l.id,
                    address: l.address.clone(),
                    at_s: at_s(now),
                    what,
                });
            }
        }
        // The barrier: every live agent has finished connecting.
        if phase == Phase::Connect && links.iter().all(|l| l.lost || l.connected.is_some()) {
            connect_end = Some(now);
            phases.connect = now.duration_since(started).as_secs_f64();
            phase = Phase::Settle;
            let ready: u64 = links.iter().filter_map(|l| l.connected).sum();
            if ready == 0 {
                // Nothing to measure: collect every agent's figures (their errors) and end.
                progress.println("no connection could be made by any agent: ending the run");
                for l in links.iter().filter(|l| !l.lost) {
                    let _ = l.post(ToAgent::Stop);
                }
                stop_sent = true;
                hard_deadline = now + Duration::from_secs(15);
                continue;
            }
            let start = now + scenario.settle + Duration::from_millis(200);
            let measure_at = start + scenario.warmup;
            let cool_at = measure_at + scenario.measure;
            let end_at = cool_at + scenario.cooldown;
            timeline = Some([start, measure_at, cool_at, end_at]);
            hard_deadline = end_at + Duration::from_secs(15);
            let start_coord_us = unix_us() + (start - now).as_micros() as i64;
            for l in links.iter_mut().filter(|l| !l.lost) {
                let go = ToAgent::Go {
                    start_unix_us: start_coord_us + l.offset_us,
                };
                if let Err(e) = l.post(go) {
                    l.lost = true;
                    l.close();
                    faults.push(AgentFault {
                        agent: l.id,
                        address: l.address.clone(),
                        at_s: at_s(now),
                        what: format!("could not be told to start: {e}"),
                    });
                }
            }
        } else if phase == Phase::Connect && now >= connect_deadline {
            for l in links
                .iter_mut()
                .filter(|l| !l.lost && l.connected.is_none())
            {
                l.lost = true;
                l.close();
                faults.push(AgentFault {
                    agent: l.id,
                    address: l.address.clone(),
                    at_s: at_s(now),
                    what: "did not finish connecting by the connect deadline".into(),
                });
            }
            continue;
        }
        if let Some([start, measure_at, cool_at, end_at]) = timeline {
            // Readings are asked for here and come back on their own (see `Readings`).
            let mut ask = |m: Mark| {
                if readings.ask(m) {
                    asked.push(m);
                }
            };
            if phase == Phase::Settle && now >= start {
                ask(Mark::Connected);
                phases.settle = now.duration_since(connect_end.unwrap_or(now)).as_secs_f64();
                phase = Phase::Warmup;
            }
            if phase == Phase::Warmup && now >= measure_at {
                phases.warmup = now.duration_since(start).as_secs_f64();
                ask(Mark::MeasureStart);
                phase = Phase::Measure;
            }
            if phase == Phase::Measure && now >= cool_at {
                phases.measure = now.duration_since(measure_at).as_secs_f64();
                ask(Mark::MeasureEnd);
                phase = Phase::Cooldown;
            }
            if phase == Phase::Cooldown && now >= end_at {
                phases.cooldown = now.duration_since(cool_at).as_secs_f64();
                phase = Phase::Stop;
            }
        }
        // Heartbeats: each agent's writer task sends them on its own timer.
        // One merged row a second.
        if now >= last_emit + Duration::from_secs(1) {
            let dt = now.duration_since(last_emit).as_secs_f64().max(1e-3);
            let ticks: Vec<&Tick> = links.iter().filter_map(|l| l.last_tick.as_ref()).collect();
            let sum = |f: fn(&Tick) -> u64| ticks.iter().map(|t| f(t)).sum::<u64>();
            let sent = sum(|t| t.sent);
            let delivered = sum(|t| t.delivered);
            let open = sum(|t| t.open);
            let cpu: f64 = ticks.iter().map(|t| t.cpu_seconds).sum();
            let t = at_s(now);
            let mut rows: Vec<(&str, f64)> = vec![
                (series::CONNECTIONS_OPEN, open as f64),
                (series::CONNECT_ATTEMPTS, sum(|t| t.connect_attempts) as f64),
                (series::CONNECT_ERRORS, sum(|t| t.connect_errors) as f64),
                (series::CLOSED_BY_SERVER, sum(|t| t.closed_by_server) as f64),
                (
                    series::SENT_PER_S,
                    sent.saturating_sub(last_sent) as f64 / dt,
                ),
                (
                    series::DELIVERED_PER_S,
                    delivered.saturating_sub(last_delivered) as f64 / dt,
                ),
                (series::LATENCY_COUNT, pending.len() as f64),
                (
                    series::GENERATOR_RSS_BYTES,
                    ticks.iter().filter_map(|t| t.rss_bytes).sum::<u64>() as f64,
                ),
                (series::GENERATOR_CPU_CORES, (cpu - last_cpu).max(0.0) / dt),
                (
                    series::AGENTS_LIVE,
                    links.iter().filter(|l| !l.lost).count() as f64,
                ),
            ];
            if scenario.reconnects() {
                rows.push((series::RECONNECTS, sum(|t| t.reconnects) as f64));
                rows.push((
                    series::RECONNECT_FAILURES,
                    sum(|t| t.reconnect_failures) as f64,
                ));
            }
            if !pending.is_empty() {
                rows.push((
                    series::LATENCY_P50_US,
                    pending.value_at_quantile(0.5) as f64,
                ));
                rows.push((
                    series::LATENCY_P99_US,
                    pending.value_at_quantile(0.99) as f64,
                ));
                rows.push((series::LATENCY_MAX_US, pending.max() as f64));
            }
            // The latest reading of the servers' RSS and the kernel side of the fleet's
            // sockets (as a one-process run records it), taken once per reading.
            if let Some(r) = last_second.take() {
                if let Some(rss) = r.target_rss {
                    rows.push((series::TARGET_RSS_BYTES, rss as f64));
                }
                if let Some(h) = &r.host {
                    rows.push((series::HOST_SLAB_BYTES, h.slab_bytes as f64));
                    rows.push((series::HOST_TCP_INUSE, h.tcp_inuse as f64));
                }
            }
            for (metric, value) in rows {
                series.push(SeriesRow {
                    t_s: t,
                    phase: phase.as_str().into(),
                    metric: metric.into(),
                    value,
                });
            }
            let p99 = if pending.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}ms", pending.value_at_quantile(0.99) as f64 / 1000.0)
            };
            // Connections in set-up across the fleet: attempted, not yet open nor failed.
            let setting_up = sum(|t| t.connect_attempts)
                .saturating_sub(open)
                .saturating_sub(sum(|t| t.connect_errors));
            let gen_rss = ticks.iter().filter_map(|t| t.rss_bytes).sum::<u64>();
            progress.update(&format!(
                "[{:<8} {:>5.0}s] agents {}/{}  conns {}/{} (+{} setting up)  sent {:.0}/s  delivered {:.0}/s  p99 {}  conn errors {}  agents {:.0} MiB",
                phase.as_str(),
                t,
                links.iter().filter(|l| !l.lost).count(),
                links.len(),
                open,
                scenario.connections,
                setting_up,
                sent.saturating_sub(last_sent) as f64 / dt,
                delivered.saturating_sub(last_delivered) as f64 / dt,
                p99,
                sum(|t| t.connect_errors),
                gen_rss as f64 / (1024.0 * 1024.0),
            ));
            pending.reset();
            last_sent = sent;
            last_delivered = delivered;
            last_cpu = cpu;
            last_emit = now;
        }
        // Interrupt: stop everyone early.
        if interrupted && !stop_sent {
            stop_sent = true;
            for l in links.iter().filter(|l| !l.lost) {
                let _ = l.post(ToAgent::Stop);
            }
            hard_deadline = hard_deadline.min(Instant::now() + Duration::from_secs(15));
        }
        // Wait for a message or the next thing due.
        let wake = (last_emit + Duration::from_secs(1)).min(now + Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = interrupt.changed(), if !interrupted => {
                if r.is_err() || *interrupt.borrow() { interrupted = true; }
            }
            r = readings.rx.recv(), if readings_open => match r {
                Some(Reading::Phase(p)) => { phase_readings.insert(p.mark, p); }
                Some(Reading::Second(r)) => last_second = Some(r),
                None => readings_open = false,
            },
            ev = rx.recv() => {
                let Some((i, heard, m)) = ev else { continue };
                let l = &mut links[i];
                if l.lost { continue; }
                let gap = heard.saturating_duration_since(l.last_heard);
                if gap > STALL_LIMIT / 2 {
                    tracing::warn!("agent {}: {:.1} s since its last report", l.id, gap.as_secs_f64());
                }
                l.last_heard = l.last_heard.max(heard);
                match m {
                    Ok(FromAgent::Tick(t)) => {
                        if let Ok(h) = decode_hist(&t.interval) {
                            let _ = add_hist(&mut pending, &h);
                        }
                        l.last_tick = Some(*t);
                    }
                    Ok(FromAgent::Connected { ready }) => l.connected = Some(ready),
                    Ok(FromAgent::Done(f)) => l.fin = Some(*f),
                    Ok(FromAgent::Pong { .. }) => {}
                    Ok(FromAgent::Refused { reason }) => {
                        l.lost = true;
                        l.close();
                        faults.push(AgentFault { agent: l.id, address: l.address.clone(), at_s: at_s(heard), what: format!("gave up: {reason}") });
                    }
                    Ok(other) => {
                        progress.println(&format!("agent {}: unexpected {other:?}", l.id));
                    }
                    Err(e) => {
                        l.lost = true;
                        l.close();
                        let what = match e {
                            ControlError::Closed => "its control connection closed (the agent died or was killed)".to_string(),
                            e => format!("control connection failed: {e}"),
                        };
                        progress.println(&format!("agent {} ({}) lost at {:.1} s: {what}", l.id, l.address, at_s(Instant::now())));
                        faults.push(AgentFault { agent: l.id, address: l.address.clone(), at_s: at_s(Instant::now()), what });
                    }
                }
            }
        }
    }
    // Read the server's own counters before the clients leave, then release the agents.
    let server_metrics = match (&ropts.target_info.arch, targets.first()) {
        (Some(_), Some(t)) => crate::target::scrape_metrics(t, Duration::from_secs(2)).await,
        _ => None,
    };
    for l in links.iter_mut().filter(|l| !l.lost) {
        let _ = l.post(ToAgent::Stop);
        l.close();
    }
    // The phase readings still on their way (bounded: a reading stuck in /proc leaves its
    // figures out, with a note).
    let until = Instant::now() + READINGS_WAIT;
    while readings_open && asked.iter().any(|m| !phase_readings.contains_key(m)) {
        match tokio::time::timeout_at(until.into(), readings.rx.recv()).await {
            Ok(Some(Reading::Phase(p))) => {
                phase_readings.insert(p.mark, p);
            }
            Ok(Some(Reading::Second(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let dropped_readings = readings.dropped();
    drop(readings);
    progress.finish();
    // Local agents exit after their session; give them a moment to close politely, then make
    // sure (by pid).
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
    provenance.finish();
    let host_after = sampler::sample_host().ok();

    // Merge.
    let mut window = new_hist();
    let mut connect_hist = new_hist();
    let mut send_lag = new_hist();
    let mut pacer_lag: Option<Histogram<u64>> = None;
    let mut breakdown = Vec::new();
    let mut totals = Final::default();
    let mut expected = 0u64;
    let mut delivered = 0u64;
    let mut measure_s: f64 = 0.0;
    let mut agent_cores: Vec<(f64, u64)> = Vec::new();
    let mut rss_per_conn = Vec::new();
    let mut realtime = None;
    let mut any_interrupted = false;
    let mut panicked: Vec<String> = Vec::new();
    let mut delivered_window_all = 0u64;
    let mut reconnects: Vec<&control::AgentReconnect> = Vec::new();
    let bad_hist = |e: ControlError| agent_err(format!("an agent's histogram did not decode: {e}"));
    for l in &links {
        let (mut exp, mut del) = (0u64, 0u64);
        let mut lat = None;
        if let Some(f) = &l.fin {
            for (room, sent) in f.room_sent_window.iter().enumerate() {
                let readers = f.room_readers.get(room).copied().unwrap_or(0);
                exp += sent * readers.saturating_sub(1);
            }
            del = f.room_delivered_window.iter().sum();
            let w = decode_hist(&f.window_latency).map_err(bad_hist)?;
            add_hist(&mut window, &w).map_err(bad_hist)?;
            lat = Percentiles::of(&w);
            add_hist(
                &mut connect_hist,
                &decode_hist(&f.connect_time).map_err(bad_hist)?,
            )
            .map_err(bad_hist)?;
            add_hist(&mut send_lag, &decode_hist(&f.send_lag).map_err(bad_hist)?)
                .map_err(bad_hist)?;
            if let Some(p) = &f.pacer_lag {
                let h = decode_hist(p).map_err(bad_hist)?;
                add_hist(pacer_lag.get_or_insert_with(new_hist), &h).map_err(bad_hist)?;
            }
            expected += exp;
            delivered += del;
            measure_s = measure_s.max(f.measure_s);
            if let Some(c) = f.cpu_cores_measure {
                agent_cores.push((c, f.cpus));
            }
            if let Some(r) = f.rss_per_conn_bytes {
                rss_per_conn.push(r);
            }
            realtime = realtime.or(f.pacer_realtime);
            any_interrupted |= f.interrupted;
            panicked.extend(
                f.panicked
                    .iter()
                    .take(8)
                    .map(|p| format!("agent {} ({}): {p}", l.id, l.address)),
            );
            totals.ramp_held_us = totals.ramp_held_us.max(f.ramp_held_us);
            totals.planned += f.planned;
            if let Some(r) = &f.reconnect {
                reconnects.push(r);
            }
            for (k, v) in &f.closed_by_server {
                *totals.closed_by_server.entry(k.clone()).or_insert(0) += v;
            }
            for (k, v) in &f.server_errors {
                *totals.server_errors.entry(k.clone()).or_insert(0) += v;
            }
            totals.sent_window += f.sent_window;
            totals.duplicated += f.duplicated;
            totals.late += f.late;
            totals.bad_frames += f.bad_frames;
            totals.slow += f.slow;
        }
        let ready = add_conns(
            &mut totals,
            l.fin.as_ref(),
            l.connected,
            l.last_tick.as_ref(),
        );
        let window_all = l.fin.as_ref().map_or(
            l.last_tick.as_ref().map_or(0, |t| t.delivered_window_all),
            |f| f.delivered_window_all,
        );
        delivered_window_all += window_all;
        breakdown.push(AgentBreakdown {
            agent: l.id,
            address: l.address.clone(),
            pid: l.pid,
            clock_offset_us: l.offset_us,
            clock_rtt_us: l.rtt_us,
            planned: l.planned,
            ready,
            connect_errors: l
                .fin
                .as_ref()
                .map(|f| f.connect_errors.clone())
                .unwrap_or_default(),
            sent: l.fin.as_ref().map_or(0, |f| f.sent_window),
            expected: exp,
            delivered: del,
            sent_all: l.fin.as_ref().map_or(0, |f| f.sent_all),
            delivered_all: l.fin.as_ref().map_or(0, |f| f.delivered_all),
            delivered_window_all: window_all,
            latency_us: lat,
            cpu_cores_measure: l.fin.as_ref().and_then(|f| f.cpu_cores_measure),
            rss_per_conn_bytes: l.fin.as_ref().and_then(|f| f.rss_per_conn_bytes),
            ramp_held_s: l.fin.as_ref().map_or(0.0, |f| f.ramp_held_us as f64 / 1e6),
            connecting_peak: l.fin.as_ref().map_or(0, |f| f.connecting_peak),
            complete: l.fin.is_some(),
        });
    }
    let partial = links.iter().any(|l| l.fin.is_none());
    // A worker that panicked leaves figures that cannot be trusted: the run failed.
    let status = if totals.ready == 0 || !panicked.is_empty() {
        RunStatus::Failed
    } else if partial || interrupted || any_interrupted {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    };
    let affinity = sys::cpu_affinity();
    // Local agents share this host's CPUs: judge their sum against them; a remote agent against
    // its own.
    let local = matches!(spec, AgentsSpec::Local(_) | AgentsSpec::Auto);
    let gen_cores_sum: f64 = agent_cores.iter().map(|(c, _)| c).sum();
    let mut invalid = Vec::new();
    if local {
        invalid.extend(self_check(&SelfCheck {
            status,
            generator_cores: (!agent_cores.is_empty()).then_some(gen_cores_sum),
            generator_cpus: affinity.len(),
            pacer_p99_us: pacer_lag.as_ref().and_then(Percentiles::of).map(|p| p.p99),
        }));
    } else {
        for (c, cpus) in &agent_cores {
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
            pacer_p99_us: pacer_lag.as_ref().and_then(Percentiles::of).map(|p| p.p99),
        }));
    }
    for f in &faults {
        invalid.push(format!(
            "partial results: agent {} ({}) was lost at {:.1} s ({}); its connections and messages are missing from the totals",
            f.agent, f.address, f.at_s, f.what
        ));
    }
    let mut notes = vec![format!(
        "{} agents; latency and loss are judged per agent (a receiver times and checks only messages from its own agent: one clock); \
         `distributed.agents[].delivered_all` counts every delivery, across agents, and \
         `distributed.delivered_window_all` those of the window (CPU per delivery divides by it)",
        links.len()
    )];
    if !panicked.is_empty() {
        notes.push(format!(
            "the run failed: {} (a bug in the load generator; its figures are not trustworthy)",
            panicked.join("; ")
        ));
    }
    // The window's deliveries counted here are each agent's own (same clock); the server also
    // delivered every cross-agent message in the window, so CPU per delivery over these would
    // read about N times too high. Left out until the window's cross-agent deliveries are
    // counted.
    // CPU per delivery divides by every delivery the server made in the window (any sender to
    // any receiver, counted by the receivers' agents); an agent lost on the way took some of
    // its count with it.
    let per_delivery_known = !partial;
    let server_of = |m: Mark| phase_readings.get(&m).and_then(|r| r.server.clone());
    let host_of = |m: Mark| phase_readings.get(&m).and_then(|r| r.host.clone());
    if !pids.is_empty() {
        for m in &asked {
            if !phase_readings.contains_key(m) {
                notes.push(format!(
                    "the servers' reading at {} did not come within {READINGS_WAIT:?} of the run's end (reading /proc was slow): the figures that need it are not given",
                    m.as_str()
                ));
            }
        }
    }
    if dropped_readings > 0 {
        notes.push(format!(
            "{dropped_readings} once-a-second readings of the servers and the host were dropped (the control loop had not taken the previous one): timeseries.csv misses them"
        ));
    }
    // The window's CPU from readings taken near its edges, on the readings' own clock.
    let edges = timeline.map(|[_, m, c, _]| {
        let epoch = sampler::clock_epoch();
        (
            m.saturating_duration_since(epoch),
            c.saturating_duration_since(epoch),
        )
    });
    let server_window = match (
        server_of(Mark::MeasureStart),
        server_of(Mark::MeasureEnd),
        edges,
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
    if !per_delivery_known && server_window.is_some() {
        notes.push(
            "server CPU per delivery is not given: an agent was lost, so the window's deliveries \
             counted by the agents miss some that the server made"
                .into(),
        );
    }
    // The agents' own window (each switched on its timer from the common start).
    let agents_window_s = if measure_s > 0.0 {
        measure_s
    } else {
        phases.measure
    };
    let (server_cores, cpu_per_delivery) = match server_window {
        Some(w) => {
            let (cores, per) = summary::server_cpu(
                w.cpu_s,
                w.over_s,
                if per_delivery_known {
                    delivered_window_all
                } else {
                    0
                },
                agents_window_s,
            );
            (Some(cores), per)
        }
        None => (None, None),
    };
    // Other work on the servers' CPUs (local agents inherit the coordinator's CPUs).
    let other_load = summary::other_load(
        host_of(Mark::MeasureStart).as_ref(),
        host_of(Mark::MeasureEnd).as_ref(),
        server_cores,
        ropts.target_info.cpu_affinity.as_deref(),
        &crate::sys::cpu_affinity(),
    );
    if let Some(w) = other_load.as_ref().and_then(OtherLoad::warning) {
        notes.push(w);
    }
    let connect_s = phases.connect;
    let measure_s = if phases.measure > 0.0 {
        phases.measure
    } else {
        measure_s
    };
    let mut target_info = ropts.target_info.clone();
    if targets.len() > 1 {
        target_info.targets = targets.iter().map(|t| t.url.clone()).collect();
        target_info.target_policy = Some(scenario.target_policy.as_str().into());
    }
    let mut summary = summary::build(SummaryInput {
        scenario: &scenario,
        overrides: &ropts.overrides,
        started_utc,
        status,
        invalid,
        notes,
        target: target_info,
        generator: GenFigures {
            agents: links.len() as u32,
            source_addrs,
            cpu_affinity: affinity,
            cpu_cores_measure: (!agent_cores.is_empty()).then_some(gen_cores_sum),
            pacer_lag_us: pacer_lag.as_ref().and_then(Percentiles::of),
            pacer_realtime: realtime,
            send_lag_us: Percentiles::of(&send_lag),
            rss_per_conn_bytes: (!rss_per_conn.is_empty())
                .then(|| rss_per_conn.iter().sum::<f64>() / rss_per_conn.len() as f64),
        },
        provenance,
        phases,
        conns: ConnCounts {
            planned: u64::from(scenario.connections),
            attempted: totals.attempted,
            connected: totals.connected,
            ready: totals.ready,
            errors: totals.connect_errors,
            closed_by_server: totals.closed_by_server,
            connect_s,
            ramp_held_s: totals.ramp_held_us as f64 / 1e6,
            connect_time: &connect_hist,
            reconnect: if scenario.reconnects() {
                merge_reconnect(&reconnects).map_err(bad_hist)?
            } else {
                None
            },
        },
        msgs: MsgCounts {
            sent_window: totals.sent_window,
            expected,
            delivered,
            duplicated: totals.duplicated,
            late: totals.late,
            slow_consumers: totals.slow,
            server_errors: totals.server_errors,
            bad_frames: totals.bad_frames,
            measure_s,
        },
        latency: &window,
        target_figures: TargetFigures {
            server_before: server_of(Mark::Before),
            host_before: host_of(Mark::Before),
            server_connected: server_of(Mark::Connected),
            host_connected: host_of(Mark::Connected),
            host_after,
            rss_peak_bytes: None,
            cpu_cores_measure: server_cores,
            cpu_us_per_delivery: cpu_per_delivery,
            server_metrics,
            other_load,
        },
        fault: None,
        failover: None,
        distributed: Some(DistributedInfo {
            agents: breakdown,
            faults,
            partial,
            delivered_window_all,
        }),
    });
    let dir = write_run(&ropts.out_root, &mut summary, &series, &window)?;
    Ok(RunReport { dir, summary })
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
}
