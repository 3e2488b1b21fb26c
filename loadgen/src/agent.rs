//! The agent: `chatbench agent --listen ADDR` runs the client engine on behalf of a coordinator.
//!
//! It runs one coordinator session at a time, and greets every connection concurrently: each
//! has [`HELLO_TIMEOUT`] to send a hello with the control version and the shared token (at most
//! [`MAX_GREETING`] at once), so a connection that says nothing holds nobody, and a second
//! coordinator that authenticates while a session runs is told the agent is busy. A token is
//! required on every address; loopback without one only with
//! `--allow-unauthenticated-loopback`, since any local user reaches loopback. It refuses a
//! setup whose targets are outside its allow-list, or whose share of the plan does not fit its
//! descriptor limit, checked before any plan is built. It then drives the engine
//! ([`crate::lifecycle::Engine`]) through the same timeline as a one-process run: ramp, a
//! barrier (`connected`), a common start time
//! (`go`), warmup, measure, cooldown, reporting counters and the interval histogram every
//! second and its final figures (`done`) at the end. Losing the coordinator (end of stream,
//! or [`SILENCE_LIMIT`] without a message) stops the load at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::control::{
    self, encode_hist, unix_us, AgentReconnect, AllowList, ControlError, Final, FromAgent,
    LineReader, LoopClock, Setup, Tick, ToAgent, CONTROL_VERSION, SILENCE_LIMIT,
};
use crate::engine::Phase;
use crate::lifecycle::{Edges, Engine, Reaped, Timeline};
use crate::plan::{Layout, Plan, MAX_AGENTS};
use crate::run::{parse_targets, source_addrs_for};
use crate::stats::Stats;
use crate::{sampler, sys, threads};
use chatbench_model::scenario::Scenario;

/// The environment variable an agent reads its token from when no `--token-file` is given
/// (how a coordinator hands its local agents a per-run token without putting it on a command
/// line that every local user can read).
pub const TOKEN_ENV: &str = "CHATBENCH_AGENT_TOKEN";

/// Time a new connection has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections greeted at once; one beyond it is closed at once.
pub const MAX_GREETING: usize = 32;

/// Errors that stop an agent.
#[derive(Debug, Error)]
pub enum AgentError {
    /// Listening on a non-loopback address without a token.
    #[error("--listen {0} is not a loopback address: an agent there is a traffic cannon for anyone who reaches it; give --token-file FILE (the same token for the coordinator), or listen on 127.0.0.1")]
    NeedsToken(SocketAddr),
    /// Listening on loopback without a token, and without the flag that allows it.
    #[error("--listen {0}: an agent needs a token on every address, loopback too (any local user can reach loopback and use the agent as a traffic cannon); give --token-file FILE (or the {TOKEN_ENV} environment variable) and the same token to the coordinator (--agent-token-file), or accept the risk with --allow-unauthenticated-loopback")]
    LoopbackNeedsToken(SocketAddr),
    /// The token file is unusable.
    #[error("--token-file {path}: {problem}")]
    Token {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Binding failed.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where to listen for coordinators.
    pub listen: SocketAddr,
    /// The shared token, if any (required off loopback).
    pub token: Option<String>,
    /// Targets it accepts.
    pub allow: AllowList,
    /// Serve one coordinator session, then exit (local agents spawned by a coordinator).
    pub once: bool,
    /// Accept coordinators without a token on a loopback address.
    pub allow_unauthenticated_loopback: bool,
}

/// Reads a token file: one line, not empty.
pub fn read_token(path: &std::path::Path) -> Result<String, AgentError> {
    let err = |problem: String| AgentError::Token {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(err(
            "it is empty; put a random secret in it (e.g. `openssl rand -hex 32 > FILE`)".into(),
        ));
    }
    Ok(token)
}

/// A fresh random token (256 bits, hex), e.g. for the local agents of one run.
pub fn new_token() -> String {
    let (a, b) = (rand::random::<u128>(), rand::random::<u128>());
    format!("{a:032x}{b:032x}")
}

/// Binds the listener (checking the token rule first).
pub async fn bind(opts: &AgentOptions) -> Result<TcpListener, AgentError> {
    if opts.token.is_none() {
        if !opts.listen.ip().is_loopback() {
            return Err(AgentError::NeedsToken(opts.listen));
        }
        if !opts.allow_unauthenticated_loopback {
            return Err(AgentError::LoopbackNeedsToken(opts.listen));
        }
    }
    TcpListener::bind(opts.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: opts.listen,
            source,
        })
}

/// Serves coordinators on `listener` (one session at a time) until `once` ends it.
///
/// Connections are greeted (hello, version, token) concurrently by tasks; a greeted coordinator
/// is handed here. Run it with `Runtime::block_on`, not in a spawned task: the session (control
/// messages, ticks, phase timers) then runs on its own thread and never queues behind the
/// connection tasks on the runtime's workers, however busy they are.
pub async fn serve(listener: TcpListener, opts: AgentOptions) {
    let opts = Arc::new(opts);
    let busy = Arc::new(AtomicBool::new(false));
    let (tx, mut greeted) = mpsc::channel::<Greeted>(1);
    let acceptor = tokio::spawn(accept_loop(listener, opts.clone(), busy.clone(), tx));
    while let Some(mut g) = greeted.recv().await {
        let peer = g.peer;
        let ended = session(&mut g, &opts).await;
        // Free before the connection closes: a coordinator that saw the end of its session is
        // welcome again at once.
        busy.store(false, Ordering::SeqCst);
        drop(g);
        match ended {
            Ok(()) => eprintln!("agent: session with {peer} ended"),
            Err(e) => eprintln!("agent: session with {peer} ended: {e}"),
        }
        if opts.once {
            break;
        }
    }
    acceptor.abort();
}

/// Accepts connections and greets each in its own task, at most [`MAX_GREETING`] at once.
async fn accept_loop(
    listener: TcpListener,
    opts: Arc<AgentOptions>,
    busy: Arc<AtomicBool>,
    tx: mpsc::Sender<Greeted>,
) {
    let slots = Arc::new(Semaphore::new(MAX_GREETING));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("agent: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            eprintln!(
                "agent: {peer}: {MAX_GREETING} connections are already sending their hello; closing this one"
            );
            continue;
        };
        let (opts, busy, tx) = (opts.clone(), busy.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match greet(stream, peer, &opts, &busy).await {
                Ok(g) => {
                    if tx.send(g).await.is_err() {
                        busy.store(false, Ordering::SeqCst);
                    }
                }
                Err(e) => eprintln!("agent: connection from {peer}: {e}"),
            }
        });
    }
}

/// A coordinator whose hello passed: the session is its.
struct Greeted {
    peer: SocketAddr,
    link: Link,
    reader: Control,
}

/// Reads and checks a connection's hello within [`HELLO_TIMEOUT`]; claims the agent (`busy`)
/// for it, or refuses it when another session has it.
async fn greet(
    stream: TcpStream,
    peer: SocketAddr,
    opts: &AgentOptions,
    busy: &AtomicBool,
) -> Result<Greeted, ControlError> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut link = Link { w };
    let mut reader = LineReader::new(r);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next::<ToAgent>())
        .await
        .map_err(|_| ControlError::Bad(format!("no hello within {HELLO_TIMEOUT:?}")))?;
    match hello {
        Ok(ToAgent::Hello { version, token }) => {
            if version != CONTROL_VERSION {
                return Err(link
                    .refuse(format!(
                        "control protocol version mismatch: the coordinator speaks v{version}, this agent v{CONTROL_VERSION}; run the same chatbench version on both"
                    ))
                    .await);
            }
            if let Some(expected) = &opts.token {
                let ok = token
                    .as_deref()
                    .is_some_and(|t| control::token_matches(t, expected));
                if !ok {
                    return Err(link
                        .refuse(
                            "bad or missing token: give the coordinator the agent's token (--agent-token-file)"
                                .into(),
                        )
                        .await);
                }
            }
        }
        Ok(other) => {
            return Err(link
                .refuse(format!("expected hello first, got {other:?}"))
                .await)
        }
        Err(ControlError::Bad(e)) => {
            return Err(link
                .refuse(format!(
                    "the first message is not a chatbench hello ({e}); is this a chatbench coordinator of the same version?"
                ))
                .await)
        }
        Err(e) => return Err(e),
    }
    if busy
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(link
            .refuse(
                "busy: this agent is running another coordinator's session; wait for it to end, or start another agent"
                    .into(),
            )
            .await);
    }
    Ok(Greeted { peer, link, reader })
}

/// The control connection's reading side, read on the session's own thread (see
/// [`LineReader`]).
type Control = LineReader<OwnedReadHalf>;

/// The next message from the coordinator; `None` when it is gone (errors are logged).
/// Cancel-safe.
async fn recv_msg(r: &mut Control) -> Option<ToAgent> {
    match r.next::<ToAgent>().await {
        Ok(m) => Some(m),
        Err(ControlError::Closed) => None,
        Err(e) => {
            eprintln!("agent: control connection: {e}");
            None
        }
    }
}

struct Link {
    w: OwnedWriteHalf,
}

impl Link {
    async fn send(&mut self, m: &FromAgent) -> Result<(), ControlError> {
        tokio::time::timeout(Duration::from_secs(10), control::send(&mut self.w, m))
            .await
            .map_err(|_| {
                ControlError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the coordinator does not read",
                ))
            })?
    }

    async fn refuse(&mut self, reason: String) -> ControlError {
        eprintln!("agent: refused: {reason}");
        let _ = self
            .send(&FromAgent::Refused {
                reason: reason.clone(),
            })
            .await;
        ControlError::Bad(format!("refused: {reason}"))
    }
}

/// One coordinator session, after its hello passed.
async fn session(g: &mut Greeted, opts: &AgentOptions) -> Result<(), ControlError> {
    let Greeted { link, reader, .. } = g;
    let limit = sys::raise_nofile().map_err(ControlError::Io)?;
    link.send(&FromAgent::Hello {
        version: CONTROL_VERSION,
        pid: std::process::id(),
        nofile: limit.soft,
    })
    .await?;
    let mut prepared: Option<Prepared> = None;
    loop {
        let msg = match tokio::time::timeout(SILENCE_LIMIT, recv_msg(reader)).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ControlError::Closed),
            Err(_) => {
                return Err(ControlError::Bad(format!(
                    "no message from the coordinator for {SILENCE_LIMIT:?}"
                )))
            }
        };
        match msg {
            ToAgent::Ping { id } => {
                link.send(&FromAgent::Pong {
                    id,
                    agent_unix_us: unix_us(),
                })
                .await?
            }
            ToAgent::Setup(setup) => match prepare(&setup, opts, &limit).await {
                Ok(p) => {
                    link.send(&FromAgent::Ready {
                        connections: p.plan.conns.len() as u64,
                        source_addrs: p.source_addrs.iter().map(|a| a.to_string()).collect(),
                    })
                    .await?;
                    prepared = Some(p);
                }
                Err(reason) => return Err(link.refuse(reason).await),
            },
            ToAgent::Start => {
                let Some(p) = prepared.take() else {
                    return Err(link.refuse("start before setup".into()).await);
                };
                return run_engine(p, link, reader).await;
            }
            ToAgent::Stop => return Ok(()),
            ToAgent::Hello { .. } | ToAgent::Go { .. } => {
                return Err(link.refuse(format!("unexpected {msg:?} now")).await)
            }
        }
    }
}

struct Prepared {
    scenario: Arc<Scenario>,
    plan: Plan,
    targets: Vec<crate::target::Target>,
    source_addrs: Vec<std::net::IpAddr>,
}

/// Checks a setup: scenario, allow-list, limits, targets reachable.
async fn prepare(
    setup: &Setup,
    opts: &AgentOptions,
    limit: &sys::NofileLimit,
) -> Result<Prepared, String> {
    let scenario = Scenario::parse(&setup.scenario, "<scenario from the coordinator>")
        .map_err(|e| e.to_string())?;
    let targets = parse_targets(&setup.targets.join(",")).map_err(|e| e.to_string())?;
    for t in &targets {
        if !opts.allow.allows(t.addr.ip()) {
            return Err(format!(
                "target {} ({}) is not in this agent's allow-list ({}); start the agent with --allow-target naming it",
                t.url,
                t.addr.ip(),
                opts.allow.describe()
            ));
        }
    }
    if setup.agents > MAX_AGENTS {
        return Err(format!(
            "a run of {} agents: at most {MAX_AGENTS}",
            setup.agents
        ));
    }
    let layout = Layout {
        agents: setup.agents,
        targets: u32::try_from(targets.len()).unwrap_or(u32::MAX),
        policy: scenario.target_policy,
    };
    if let Some(p) = layout.problem(&scenario) {
        return Err(p);
    }
    if setup.agent >= setup.agents {
        return Err(format!(
            "agent id {} out of range for {} agents",
            setup.agent, setup.agents
        ));
    }
    // Every limit before anything is allocated: the scenario's own bounds (durations, rates,
    // the run's size) were checked when it was parsed; this agent's share against its
    // descriptor limit is counted without building the plan.
    let share = Plan::count_for_agent(&scenario, setup.agent, &layout);
    sys::fits_in_one_process(share, limit).map_err(|e| e.to_string())?;
    let plan = Plan::for_agent(&scenario, setup.agent, &layout);
    for t in &targets {
        t.preflight(&scenario).await.map_err(|e| e.to_string())?;
    }
    let source_addrs = source_addrs_for(&targets, plan.conns.len() as u64, setup.source_first);
    Ok(Prepared {
        scenario: Arc::new(scenario),
        plan,
        targets,
        source_addrs,
    })
}

/// Why the run loop ended.
enum End {
    /// Ran to the end, or was told to stop: report and close.
    Report { interrupted: bool },
    /// The coordinator is gone: stop the load, report nothing.
    Lost(String),
}

/// This agent's resident memory now.
fn own_rss() -> Option<u64> {
    sampler::sample_rss(std::process::id()).ok()
}

/// The measurement window as this agent saw it: its CPU, its threads (for the split by
/// role, [`threads`]) and the deliveries received (any agent's messages) at the window's start
/// and end — what the server made for this agent's receivers in the window, for CPU per
/// delivery.
#[derive(Debug, Default)]
struct WindowMarks {
    /// When it opened, the CPU seconds and the deliveries then.
    start: Option<(Instant, f64, u64)>,
    /// The CPU seconds and the deliveries when it closed.
    end: Option<(f64, u64)>,
    /// This process's threads at the window's edges (`None` where `/proc` cannot be read).
    threads: (Option<threads::Snapshot>, Option<threads::Snapshot>),
    /// Its length as run, seconds.
    measure_s: f64,
}

impl WindowMarks {
    fn open(&mut self, now: Instant, cpu_s: f64, delivered: u64, th: Option<threads::Snapshot>) {
        self.start = Some((now, cpu_s, delivered));
        self.threads = (th, None);
    }

    fn close(&mut self, now: Instant, cpu_s: f64, delivered: u64, th: Option<threads::Snapshot>) {
        if let Some((t0, _, _)) = self.start {
            self.measure_s = now.duration_since(t0).as_secs_f64();
        }
        self.end = Some((cpu_s, delivered));
        self.threads.1 = th;
    }

    /// The window's CPU by thread role, once it closed (the rule of a one-process run,
    /// [`threads::window_split`], over this agent's own threads).
    fn thread_split(&self) -> Option<threads::Split> {
        if self.end.is_none() || self.measure_s <= 0.0 {
            return None;
        }
        threads::window_split(
            self.threads.0.as_ref(),
            self.threads.1.as_ref(),
            self.measure_s,
        )
    }

    /// Deliveries in the window, given the deliveries received so far.
    fn delivered(&self, now: u64) -> u64 {
        match (self.start, self.end) {
            (Some((_, _, a)), Some((_, b))) => b.saturating_sub(a),
            (Some((_, _, a)), None) => now.saturating_sub(a),
            _ => 0,
        }
    }

    /// This agent's CPU cores over the window, once it closed.
    fn cpu_cores(&self) -> Option<f64> {
        match (self.start, self.end) {
            (Some((_, a, _)), Some((b, _))) if self.measure_s > 0.0 => {
                Some((b - a) / self.measure_s)
            }
            _ => None,
        }
    }
}

/// The engine driven for a coordinator: its timeline starts at the coordinator's `go`.
struct AgentRun {
    engine: Engine,
    timeline: Timeline,
    /// The sending phases' edges, once `go` has come.
    edges: Option<Edges>,
    connect_phase_s: f64,
    rss_before: Option<u64>,
    rss_per_conn: Option<f64>,
    window: WindowMarks,
    slow: u64,
}

impl AgentRun {
    fn start(p: Prepared) -> AgentRun {
        let rss_before = own_rss();
        let slow = p.plan.slow_count() as u64;
        let timeline = Timeline::of(&p.scenario);
        // This agent's own ramp: its connections at its share of the rate (the scenario's
        // `ramp_duration` counts every agent's connections).
        let engine = Engine::start(p.scenario, p.plan, p.targets, p.source_addrs);
        AgentRun {
            engine,
            timeline,
            edges: None,
            connect_phase_s: 0.0,
            rss_before,
            rss_per_conn: None,
            window: WindowMarks::default(),
            slow,
        }
    }

    /// Deliveries received so far (any agent's messages).
    fn delivered(&self) -> u64 {
        Stats::get(&self.engine.shared().stats.counters.delivered)
    }

    /// Ends connecting when it is done at `now`; returns the ready connections then.
    fn end_connect(&mut self, now: Instant) -> Option<u64> {
        if self.engine.phase() != Phase::Connect || !self.engine.connect_done(now) {
            return None;
        }
        self.connect_phase_s = self.engine.started().elapsed().as_secs_f64();
        self.engine.enter(Phase::Settle);
        let ready = self.engine.counts().ready;
        if let (Some(a), Some(b)) = (self.rss_before, own_rss()) {
            if ready > 0 {
                self.rss_per_conn = Some((b as f64 - a as f64) / ready as f64);
            }
        }
        Some(ready)
    }

    /// Sending starts at the coordinator's time `start_unix_us` (in this agent's clock).
    fn go(&mut self, start_unix_us: i64) {
        let wait_us = (start_unix_us - unix_us()).max(0) as u64;
        let start = Instant::now() + Duration::from_micros(wait_us);
        self.engine.go(start);
        self.edges = Some(self.timeline.from_go(start));
    }

    /// The phase changes due at `now`; true when the timeline has ended.
    fn advance(&mut self, now: Instant) -> bool {
        let Some(e) = self.edges else { return false };
        if self.engine.phase() == Phase::Warmup && now >= e.measure {
            self.engine.enter(Phase::Measure);
            let delivered = self.delivered();
            let th = threads::Snapshot::read();
            self.window
                .open(now, sampler::self_cpu_seconds(), delivered, th);
        }
        if self.engine.phase() == Phase::Measure && now >= e.cooldown {
            let delivered = self.delivered();
            let th = threads::Snapshot::read();
            self.window
                .close(now, sampler::self_cpu_seconds(), delivered, th);
            self.engine.enter(Phase::Cooldown);
        }
        self.engine.phase() == Phase::Cooldown && now >= e.end
    }

    /// When the loop must next look at the timeline (or tick).
    fn wake(&self, now: Instant, next_tick: Instant) -> Instant {
        if self.engine.phase() == Phase::Connect {
            return next_tick.min(now + Duration::from_millis(10));
        }
        self.edges
            .and_then(|e| e.next_after(now))
            .map_or(next_tick, |t| t.min(next_tick))
    }

    /// Early end: stop sending, give in-flight messages a moment.
    async fn stop_early(&mut self) {
        self.engine.stop_sending();
        let phase = self.engine.phase();
        if phase == Phase::Measure {
            let delivered = self.delivered();
            let th = threads::Snapshot::read();
            self.window
                .close(Instant::now(), sampler::self_cpu_seconds(), delivered, th);
        }
        if phase >= Phase::Warmup && phase < Phase::Cooldown {
            self.engine.enter(Phase::Cooldown);
            tokio::time::sleep(self.timeline.cooldown.min(Duration::from_secs(1))).await;
        }
    }

    /// This second's report.
    fn tick(&self) -> Result<Tick, ControlError> {
        let c = self.engine.counts();
        let (all, window) = self.engine.shared().stats.take_intervals();
        Ok(Tick {
            phase: self.engine.phase().as_str().into(),
            open: c.open,
            connect_attempts: c.connect_attempts,
            connect_errors: c.connect_errors,
            closed_by_server: c.closed_by_server,
            sent: c.sent,
            delivered: c.delivered,
            ready: c.ready,
            delivered_window_all: self.window.delivered(c.delivered),
            reconnects: c.reconnects,
            reconnect_failures: c.reconnect_failures,
            interval: encode_hist(&all)?,
            interval_window: encode_hist(&window)?,
            rss_bytes: own_rss(),
            cpu_seconds: sampler::self_cpu_seconds(),
        })
    }

    /// Follows the timeline and the coordinator's messages until the run ends or the
    /// coordinator is lost.
    async fn control_loop(
        &mut self,
        link: &mut Link,
        rx: &mut Control,
    ) -> Result<End, ControlError> {
        let mut last_heard = Instant::now();
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        let mut clock = LoopClock::new(Instant::now());
        loop {
            let now = Instant::now();
            // Silence this loop did not listen to (it was not scheduled) is not the coordinator's.
            last_heard += clock.lateness(now);
            if now.duration_since(last_heard) > SILENCE_LIMIT {
                return Ok(End::Lost(format!(
                    "no message from the coordinator for {SILENCE_LIMIT:?}"
                )));
            }
            if let Some(ready) = self.end_connect(now) {
                link.send(&FromAgent::Connected {
                    ready,
                    epoch_unix_us: self.engine.shared().epoch_unix_us,
                })
                .await?;
            }
            if self.advance(now) {
                return Ok(End::Report { interrupted: false });
            }
            if now >= next_tick {
                let late = now.duration_since(next_tick);
                if late > Duration::from_secs(1) {
                    tracing::debug!(
                        "agent: tick {:.1} s late (phase {})",
                        late.as_secs_f64(),
                        self.engine.phase().as_str()
                    );
                }
                next_tick += Duration::from_secs(1);
                link.send(&FromAgent::Tick(Box::new(self.tick()?))).await?;
            }
            // Sleep until the next thing due, or a message.
            let wake = self.wake(now, next_tick);
            let msg = tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => None,
                m = recv_msg(rx) => Some(m),
            };
            let m = match msg {
                None => continue,
                Some(None) => {
                    return Ok(End::Lost(
                        "the coordinator closed the control connection".into(),
                    ))
                }
                Some(Some(m)) => m,
            };
            last_heard = Instant::now();
            match m {
                ToAgent::Ping { id } => {
                    link.send(&FromAgent::Pong {
                        id,
                        agent_unix_us: unix_us(),
                    })
                    .await?
                }
                ToAgent::Go {
                    start_unix_us,
                    epochs_us,
                } if self.edges.is_none() && self.engine.phase() == Phase::Settle => {
                    let _ = self.engine.shared().peer_epochs.set(epochs_us);
                    self.go(start_unix_us)
                }
                ToAgent::Stop => {
                    self.stop_early().await;
                    return Ok(End::Report { interrupted: true });
                }
                other => {
                    eprintln!(
                        "agent: ignoring unexpected {other:?} in phase {}",
                        self.engine.phase().as_str()
                    );
                }
            }
        }
    }

    /// Reports the final figures and keeps the connections open until the coordinator says
    /// stop (it may read the server's counters first), at most 30 s.
    async fn report(
        &mut self,
        interrupted: bool,
        link: &mut Link,
        rx: &mut Control,
    ) -> Result<(), ControlError> {
        // Workers that panicked: the coordinator fails the run on them.
        let reaped = self.engine.reap().await;
        let fin = self.final_figures(interrupted, reaped)?;
        link.send(&FromAgent::Done(Box::new(fin))).await?;
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(m) = recv_msg(rx).await {
                if let ToAgent::Stop = m {
                    return;
                }
            }
        })
        .await;
        Ok(())
    }

    /// The final figures: counts, per-room window counts, histograms (encoded for the merge).
    fn final_figures(&self, interrupted: bool, reaped: Reaped) -> Result<Final, ControlError> {
        let Reaped { pacer, panicked } = reaped;
        let shared = self.engine.shared();
        let st = &shared.stats;
        let (cross, cross_complete) = shared.ledger.runs();
        let c = &st.counters;
        // What was recorded after the last tick: the end of `latency.hlog`.
        let tail = st.take_intervals();
        Ok(Final {
            planned: self.engine.planned(),
            attempted: Stats::get(&c.connect_attempts),
            connected: Stats::get(&c.connected),
            ready: Stats::get(&c.ready),
            connect_errors: st.connect_errors.snapshot(),
            closed_by_server: st.closed_by_server.snapshot(),
            server_errors: st.server_errors.snapshot(),
            sent_window: Stats::get(&c.sent_window),
            sent_all: Stats::get(&c.sent),
            delivered_all: Stats::get(&c.delivered),
            delivered_window_all: self.window.delivered(self.delivered()),
            reconnect: if shared.scenario.reconnects() {
                Some(AgentReconnect {
                    lost: Stats::get(&c.disconnects),
                    attempts: Stats::get(&c.reconnect_attempts),
                    reconnected: Stats::get(&c.reconnects),
                    failed: Stats::get(&c.reconnect_failures),
                    errors: st.reconnect_errors.snapshot(),
                    time: encode_hist(&st.reconnect_time())?,
                })
            } else {
                None
            },
            duplicated: Stats::get(&c.duplicated),
            late: Stats::get(&c.late),
            bad_frames: Stats::get(&c.bad_frames),
            echoes: Stats::get(&c.echoes),
            room_unsent_window: shared.unsent_in_window(),
            dropped_in_window: Stats::get(&c.dropped_in_window),
            epoll_receivers: shared.epoll_receivers(),
            unstamped_reads: Stats::get(&c.unstamped_reads),
            pacer_senders: shared.pacer_senders(),
            pacer_send_held: Stats::get(&c.send_held),
            thread_split: self.window.thread_split(),
            unexpected_frames: st.unexpected_frames(),
            sender_windows: shared.sender_windows(),
            cross,
            cross_complete,
            room_sent_window: st.room_sent_window.iter().map(Stats::get).collect(),
            room_delivered_window: st.room_delivered_window.iter().map(Stats::get).collect(),
            room_readers: shared
                .room_readers
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect(),
            slow: self.slow,
            window_latency: encode_hist(&st.window_latency())?,
            interval_tail: encode_hist(&tail.0)?,
            interval_window_tail: encode_hist(&tail.1)?,
            connect_time: encode_hist(&st.connect_time())?,
            send_lag: encode_hist(&st.send_lag())?,
            receive_lag: match st.receive_lag() {
                h if h.is_empty() => None,
                h => Some(encode_hist(&h)?),
            },
            pacer_lag: match &pacer {
                Some(p) => Some(encode_hist(&p.lateness)?),
                None => None,
            },
            pacer_realtime: pacer.as_ref().map(|p| p.realtime),
            cpu_cores_measure: self.window.cpu_cores(),
            cpus: sys::cpu_affinity().len() as u64,
            rss_per_conn_bytes: self.rss_per_conn,
            connect_phase_s: self.connect_phase_s,
            ramp_held_us: Stats::get(&c.ramp_held_us),
            connecting_peak: Stats::get(&c.connecting_peak),
            measure_s: self.window.measure_s,
            interrupted,
            panicked,
        })
    }
}

/// Runs the engine for the coordinator; whatever happens, the engine is stopped (its
/// connections closed) before this returns.
async fn run_engine(p: Prepared, link: &mut Link, rx: &mut Control) -> Result<(), ControlError> {
    let mut run = AgentRun::start(p);
    let result = match run.control_loop(link, rx).await {
        Ok(End::Lost(why)) => {
            eprintln!("agent: {why}: stopping the load");
            Err(ControlError::Closed)
        }
        Ok(End::Report { interrupted }) => run.report(interrupted, link, rx).await,
        Err(e) => Err(e),
    };
    run.engine.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_marks_give_the_agents_cpu_and_deliveries_over_the_window() {
        let t0 = Instant::now();
        let mut w = WindowMarks::default();
        assert_eq!(w.delivered(50), 0, "nothing before the window opens");
        assert_eq!(w.cpu_cores(), None);
        w.open(t0, 10.0, 100, None);
        assert_eq!(w.delivered(130), 30, "an open window counts up to now");
        assert_eq!(w.cpu_cores(), None, "not until it closes");
        w.close(t0 + Duration::from_secs(4), 12.0, 180, None);
        assert_eq!(w.delivered(500), 80, "a closed window keeps its count");
        assert_eq!(w.measure_s, 4.0);
        assert_eq!(w.cpu_cores(), Some(0.5));
        assert_eq!(
            w.thread_split(),
            None,
            "no reading of the threads, no split"
        );
    }

    #[test]
    fn the_window_marks_split_the_agents_own_threads_by_the_one_process_rule() {
        let snap = |rx: u64, pacer: u64| threads::Snapshot {
            threads: [
                (1, ("chatbench", 5)),
                (2, ("chatbench-rx-0", rx)),
                (3, ("pacer", pacer)),
            ]
            .into_iter()
            .map(|(tid, (comm, ns))| {
                let comm = comm.to_string();
                (tid, threads::ThreadCpu { comm, ns })
            })
            .collect(),
        };
        let t0 = Instant::now();
        let mut w = WindowMarks::default();
        w.open(t0, 1.0, 0, Some(snap(100, 10)));
        assert_eq!(w.thread_split(), None, "not until it closes");
        w.close(t0 + Duration::from_secs(2), 2.0, 0, Some(snap(200, 30)));
        let (a, b) = (snap(100, 10), snap(200, 30));
        let rule = threads::split(&a, &b, 2.0);
        assert_eq!(w.thread_split(), Some(rule));
        let s = rule.threads;
        assert_eq!((s.receive, s.pacer, s.other, s.tokio), (1, 1, 1, 0));
        // A window that closed without its first reading has no split.
        let mut half = WindowMarks::default();
        half.open(t0, 1.0, 0, None);
        half.close(t0 + Duration::from_secs(2), 2.0, 0, Some(b));
        assert_eq!(half.thread_split(), None);
    }
}
