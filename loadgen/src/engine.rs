//! The client engine of one load-generator process: opens the planned connections at the ramp
//! rate, joins rooms, runs the phases (connect, settle, warmup, measure, cooldown), sends on the
//! open-loop schedule, checks every delivery, and hands its driver what it needs for the time
//! series and the summary. Drivers hold it through [`crate::lifecycle::Engine`], which moves it
//! from phase to phase.
//!
//! One tokio task per connection. Senders are woken by the [`crate::pacer`] thread (or, on the
//! send path, [`crate::tx`], have their frames written by it, their task parked); every
//! reading connection parses what it receives, records latency from the message's intended
//! send time (only for messages from this agent: one clock), and tracks the last sequence number
//! per sender to count duplicates. Loss is computed per room at the end:
//! expected = sent × (readers − 1). A message delivered back to its own sender (a server that
//! echoes) is an echo: counted apart, neither a delivery nor a latency sample.
//!
//! What goes over the wire is the scenario's protocol profile's business ([`chatbench_model::profile`]):
//! the engine asks it for the session request, the set-up conversation, the message encoder,
//! what an incoming frame is, and keep-alives. With the `echo` profile each sender reads its own
//! messages back and its room counts as two readers, so expected = sent.
//!
//! The connection tasks are generic over the [`Transport`] (the ramp picks one per run): `ws://`
//! runs on a bare `TcpStream` exactly as before TLS existed, `wss://` on a rustls stream. Each
//! connection's upgrade request is rendered from the target's [`SessionTemplate`] (its
//! placeholders and feeder row) during its boxed set-up, and not kept.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::failover::LossTimeline;
use crate::ledger::{LastSeqs, Ledger, SenderWindow};
use crate::plan::{parse_conn_id, room_name, ConnPlan, Plan, Role};
use crate::schedule::Schedule;
use crate::stats::{Direct, Hist, Sink, Stats};
use crate::target::{connect, ws_config, Target, Transport};
use crate::tls::TlsClient;
use chatbench_model::placeholder::{ConnVars, SessionTemplate};
use chatbench_model::profile::{Fanout, FrameWriter, Incoming};
use chatbench_model::reconnect::ReconnectSettings;
use chatbench_model::scenario::Scenario;

/// The phase a run is in, broadcast to every connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Opening connections and joining rooms.
    Connect,
    /// All open; waiting for memory readings to settle. No sends.
    Settle,
    /// Sending, before the measurement window.
    Warmup,
    /// Sending; this is the window that counts.
    Measure,
    /// Senders stopped; receivers still read stragglers.
    Cooldown,
    /// Close everything.
    Stop,
}

impl Phase {
    /// Lower-case name, as in the time series.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Settle => "settle",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Cooldown => "cooldown",
            Phase::Stop => "stop",
        }
    }
}

/// The measurement window in µs since the engine's epoch; `u64::MAX` until known.
#[derive(Debug)]
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Window {
    fn contains(&self, ts: u64) -> bool {
        ts >= self.start_us.load(Ordering::Relaxed) && ts < self.end_us.load(Ordering::Relaxed)
    }

    /// Where the window starts, µs since the engine's epoch (`u64::MAX` until known).
    pub fn start_us(&self) -> u64 {
        self.start_us.load(Ordering::Relaxed)
    }
}

/// State shared by every connection task of one engine.
pub struct Shared {
    /// The plan.
    pub plan: Plan,
    /// The scenario.
    pub scenario: Arc<Scenario>,
    /// The targets; a connection uses `targets[plan.target]`.
    pub targets: Vec<Target>,
    /// Measurements.
    pub stats: Stats,
    /// Time zero of every `ts` this agent writes.
    pub epoch: Instant,
    /// `epoch` on this host's wall clock (`CLOCK_REALTIME`), µs since the Unix epoch, read
    /// back to back with it.
    pub epoch_unix_us: i64,
    /// Every agent's epoch on this agent's wall clock, by agent id (set at `go` in a fleet):
    /// deliveries from another agent's senders are timed with it.
    pub peer_epochs: OnceLock<Vec<i64>>,
    /// The measurement window.
    pub window: Window,
    /// When sending starts (start of warmup); set once.
    pub send_start: OnceLock<Instant>,
    /// Per room: members that joined and read (senders and receivers), at the end of connect.
    pub room_readers: Vec<AtomicU64>,
    /// The connection that sends the fault-injection frame (`poison_after`), if any.
    pub poisoner: Option<u32>,
    /// Set when the poisoner's connection has ended.
    pub poisoner_gone: AtomicBool,
    /// Connections open now on each target (gauge, by index into `targets`).
    pub open_by_target: Vec<AtomicI64>,
    /// Whether a delivery back to its own sender is an echo, counted apart (the room fan-out:
    /// a message goes to every *other* member); with the `echo` profile it is the delivery.
    echoes_apart: bool,
    /// Whether incoming frames are chatbench `msg` frames (the `chatbench` and `echo`
    /// profiles): then [`crate::fast_msg`] reads them first, the profile's parser only when it
    /// declines.
    fast_msg: bool,
    /// Senders whose connection went down for good (closed, broken, or still reconnecting when
    /// the run stopped): plan index, room, and how many messages it had sent. What fell due on
    /// their schedules afterwards is counted at the end ([`Shared::unsent_in_window`]).
    gone_senders: std::sync::Mutex<Vec<(u32, u32, u64)>>,
    /// What this agent's receivers got from other agents' senders (judged by the coordinator).
    pub ledger: Ledger,
    /// Per sender (by ordinal): first and last sequence number sent in the window (0: none).
    window_seqs: Vec<(AtomicU64, AtomicU64)>,
    /// Expected and delivered in-window messages by intended send time, when the scenario
    /// kills a node (what the failover cost, against the steady state).
    pub loss_timeline: Option<LossTimeline>,
    poison: Notify,
    ws_config: WebSocketConfig,
    /// The session request of each target (the profile's path and query for its URL), with
    /// its per-connection placeholders; `None` if they do not parse (the preflight said so).
    sessions: Vec<Option<SessionTemplate>>,
    /// The TLS client, when the targets are `wss://` (then every connection runs on TLS).
    tls: Option<TlsClient>,
    /// Whether connections run on TLS (the first target is `wss://`).
    tls_transport: bool,
    source_addrs: Vec<IpAddr>,
    phase: watch::Receiver<Phase>,
    wakes: Vec<Arc<Notify>>,
    /// Per sender (by ordinal): its connection's write side once it writes on the pacer's
    /// thread ([`crate::tx`]); set once, at the hand-over.
    tx_links: Vec<OnceLock<Arc<crate::tx::Link>>>,
    sender_ordinal: Vec<u32>,
    /// The epoll receive path's threads (`[client] receive_path`), started on first use.
    pub(crate) rx: crate::rx::Pool,
}

impl Shared {
    /// Builds the shared state and the phase sender that drives it.
    pub fn new(
        scenario: Arc<Scenario>,
        plan: Plan,
        targets: Vec<Target>,
        source_addrs: Vec<IpAddr>,
    ) -> (Arc<Shared>, watch::Sender<Phase>) {
        let (tx, rx) = watch::channel(Phase::Connect);
        let scenario_threads = scenario.client.receive_threads;
        let mut sender_ordinal = vec![u32::MAX; plan.conns.len()];
        let mut wakes = Vec::new();
        for c in plan.conns.iter().filter(|c| c.role == Role::Sender) {
            sender_ordinal[c.index as usize] = wakes.len() as u32;
            wakes.push(Arc::new(Notify::new()));
        }
        let rooms = plan.rooms;
        let poisoner = scenario.poison_after.and_then(|_| {
            plan.conns
                .iter()
                .find(|c| c.room.is_some())
                .map(|c| c.index)
        });
        let loss_timeline = scenario
            .kill_fault()
            .map(|_| LossTimeline::new(scenario.measure));
        let shared = Shared {
            echoes_apart: scenario.session_profile().fanout() == Fanout::Room,
            fast_msg: matches!(scenario.session_profile().name(), "chatbench" | "echo"),
            gone_senders: std::sync::Mutex::new(Vec::new()),
            // A sender's seqs are its schedule's points: at most rate × (warmup + measure) + 1.
            ledger: Ledger::new(
                scenario.sender_count(),
                (scenario.rate_per_sender * (scenario.warmup + scenario.measure).as_secs_f64())
                    .ceil() as u64
                    + 1,
            ),
            window_seqs: (0..wakes.len())
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            open_by_target: targets.iter().map(|_| AtomicI64::new(0)).collect(),
            loss_timeline,
            poisoner,
            poisoner_gone: AtomicBool::new(false),
            poison: Notify::new(),
            stats: Stats::new(rooms),
            room_readers: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            ws_config: ws_config(&scenario.client),
            sessions: targets
                .iter()
                .map(|t| t.session_template(&scenario).ok())
                .collect(),
            tls: targets
                .iter()
                .find(|t| t.tls)
                .and_then(|t| t.tls_client(&scenario.client).ok().flatten()),
            tls_transport: targets.first().is_some_and(|t| t.tls),
            plan,
            scenario,
            targets,
            epoch: Instant::now(),
            epoch_unix_us: crate::control::unix_us(),
            peer_epochs: OnceLock::new(),
            window: Window {
                start_us: AtomicU64::new(u64::MAX),
                end_us: AtomicU64::new(u64::MAX),
            },
            send_start: OnceLock::new(),
            source_addrs,
            phase: rx,
            tx_links: wakes.iter().map(|_| OnceLock::new()).collect(),
            wakes,
            sender_ordinal,
            rx: crate::rx::Pool::new(scenario_threads),
        };
        (Arc::new(shared), tx)
    }

    /// Fixes the timeline: sending starts at `start`; the window follows the warmup.
    pub fn set_timeline(&self, start: Instant) {
        let _ = self.send_start.set(start);
        let s = &self.scenario;
        let ws = (start + s.warmup)
            .saturating_duration_since(self.epoch)
            .as_micros() as u64;
        let we = (start + s.warmup + s.measure)
            .saturating_duration_since(self.epoch)
            .as_micros() as u64;
        self.window.start_us.store(ws, Ordering::Relaxed);
        self.window.end_us.store(we, Ordering::Relaxed);
    }

    /// The schedule of the sender with plan index `index` (its own and the pacer's copy).
    pub fn schedule_of(&self, index: u32) -> Schedule {
        let s = &self.scenario;
        let seed = s.seed
            ^ (u64::from(self.plan.agent) << 32)
            ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Schedule::new(s.arrival, s.rate_per_sender, s.warmup + s.measure, seed)
    }

    /// Per room: in-window messages that fell due on a sender's connection while it was down
    /// for good (never sent; each is owed to every other reader of its room, so the loss
    /// formula counts it with the messages sent). Recomputed from each gone sender's
    /// schedule, past what it had sent; 0 before the timeline is set.
    pub fn unsent_in_window(&self) -> Vec<u64> {
        let mut per_room = vec![0u64; self.plan.rooms as usize];
        let Some(&start) = self.send_start.get() else {
            return per_room;
        };
        let gone = self
            .gone_senders
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        for (index, room, sent) in gone {
            let due = self
                .schedule_of(index)
                .skip(sent as usize)
                .filter(|off| {
                    let ts = (start + *off).saturating_duration_since(self.epoch);
                    self.window.contains(ts.as_micros() as u64)
                })
                .count() as u64;
            if let Some(r) = per_room.get_mut(room as usize) {
                *r += due;
            }
        }
        per_room
    }

    /// Each own sender's in-window sequence numbers (for the fleet's judgement).
    pub fn sender_windows(&self) -> Vec<SenderWindow> {
        self.plan
            .conns
            .iter()
            .filter(|c| c.role == Role::Sender)
            .filter_map(|c| {
                let (lo, hi) = self
                    .window_seqs
                    .get(self.sender_ordinal[c.index as usize] as usize)?;
                Some(SenderWindow {
                    index: c.index,
                    room: c.room?,
                    lo: lo.load(Ordering::Relaxed),
                    hi: hi.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// Records that sender `plan` lost its connection for good, having sent `sent` messages.
    pub(crate) fn sender_gone(&self, plan: ConnPlan, sent: u64) {
        if let (Role::Sender, Some(room)) = (plan.role, plan.room) {
            if let Ok(mut g) = self.gone_senders.lock() {
                g.push((plan.index, room, sent));
            }
        }
    }

    /// The pacer's view of every sender: its schedule, how to wake its task, and, where the
    /// send path applies ([`crate::tx::applies`]), the means to write its frames itself.
    pub fn paced_senders(self: &Arc<Self>) -> Vec<crate::pacer::PacedSender> {
        self.plan
            .conns
            .iter()
            .filter(|c| c.role == Role::Sender)
            .map(|c| crate::pacer::PacedSender {
                schedule: self.schedule_of(c.index),
                wake: self.wakes[self.sender_ordinal[c.index as usize] as usize].clone(),
                direct: crate::tx::Sender::new(self, *c),
            })
            .collect()
    }

    /// The write side of sender `index`'s connection, once it writes on the pacer's thread.
    pub(crate) fn tx_link(&self, index: u32) -> Option<&Arc<crate::tx::Link>> {
        let ordinal = *self.sender_ordinal.get(index as usize)?;
        self.tx_links.get(ordinal as usize)?.get()
    }

    /// Gives sender `index`'s write side to the pacer; `false` if it is not a sender or
    /// already has one.
    pub(crate) fn publish_tx_link(&self, index: u32, link: Arc<crate::tx::Link>) -> bool {
        let Some(slot) = self
            .sender_ordinal
            .get(index as usize)
            .and_then(|&o| self.tx_links.get(o as usize))
        else {
            return false;
        };
        slot.set(link).is_ok()
    }

    /// Makes the poisoner send `{"t":"panic"}` now. Returns its id, or `None` if there is none.
    pub fn poison(&self) -> Option<String> {
        let index = self.poisoner?;
        self.poison.notify_one();
        Some(self.plan.conn_id(index))
    }

    fn source_for(&self, index: u32) -> Option<IpAddr> {
        if self.source_addrs.is_empty() {
            None
        } else {
            Some(self.source_addrs[index as usize % self.source_addrs.len()])
        }
    }

    /// The phase, as every connection task watches it.
    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.clone()
    }

    /// The WebSocket settings of every connection.
    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        self.ws_config
    }

    /// Receive-only connections whose receiving ran on the epoll receive path so far.
    pub fn epoll_receivers(&self) -> u64 {
        self.rx.handed()
    }

    /// Senders whose frames the pacer's thread wrote ([`crate::tx`]).
    pub fn pacer_senders(&self) -> u64 {
        self.tx_links.iter().filter(|l| l.get().is_some()).count() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Counts a connection opened (`+1`) or lost (`-1`) on target `target`.
    fn opened(&self, target: u32, delta: i64) {
        self.stats.counters.open.fetch_add(delta, Ordering::Relaxed);
        if let Some(g) = self.open_by_target.get(target as usize) {
            g.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Connections open now on target `target`.
    pub fn open_on(&self, target: u32) -> u64 {
        self.open_by_target
            .get(target as usize)
            .map_or(0, |g| g.load(Ordering::Relaxed).max(0) as u64)
    }
}

/// Spawns connection tasks at the scenario's ramp rate; returns when all are spawned or the
/// phase moves past `Connect`.
///
/// At most `max_connecting` connections are in set-up at once (each task holds a permit until
/// its connect, handshake and join are done or have failed). When none is free the ramp waits,
/// counts how far its schedule slipped (the wait, and any lateness of the wake-up before it) in
/// `ramp_held_us`, and shifts its schedule by it: a slow target slows the ramp down instead of
/// collecting timeouts, the ramp does not burst to catch up, and the connect deadline, which
/// adds `ramp_held_us`, moves with it.
pub async fn ramp(
    shared: Arc<Shared>,
    handles: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    let rate = shared.scenario.ramp_rate;
    let bound = shared.scenario.max_connecting.max(1) as usize;
    let slots = Arc::new(Semaphore::new(bound));
    let counters = &shared.stats.counters;
    let mut phase = shared.phase.clone();
    let mut start = Instant::now();
    let n = shared.plan.conns.len();
    let mut i = 0usize;
    // Schedule position: connection `i` is due at `start + (i - base) / rate`.
    let mut base = 0usize;
    while i < n {
        if *phase.borrow() != Phase::Connect {
            return;
        }
        let due = start + Duration::from_secs_f64((i - base) as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        // Spawn everything due by now (the timer has 1 ms resolution; a burst per tick keeps
        // the average rate exact).
        let elapsed = start.elapsed().as_secs_f64();
        let upto = (base + (elapsed * rate).floor() as usize + 1).min(n);
        let mut batch = Vec::with_capacity(upto.saturating_sub(i));
        let mut held = false;
        let mut over = false;
        while i < upto && !held {
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let waited = Instant::now();
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => p.ok(),
                        _ = phase.wait_for(|p| *p != Phase::Connect) => None,
                    };
                    // `None`: the connect phase is over (the semaphore is never closed).
                    let Some(permit) = permit else {
                        over = true;
                        break;
                    };
                    // Count how far the schedule slipped, not only this wait: a ramp that
                    // woke late (a busy host) and then waited loses its lateness too when the
                    // schedule restarts here, and the connect deadline must allow for it.
                    let due = start + Duration::from_secs_f64((i - base) as f64 / rate);
                    let slipped = Instant::now()
                        .saturating_duration_since(due)
                        .max(waited.elapsed());
                    counters
                        .ramp_held_us
                        .fetch_add(slipped.as_micros() as u64, Ordering::Relaxed);
                    // Resume the schedule from here: the rest of the ramp keeps its rate.
                    start = Instant::now();
                    base = i;
                    held = true;
                    permit
                }
            };
            let in_flight = (bound - slots.available_permits()) as u64;
            counters
                .connecting_peak
                .fetch_max(in_flight, Ordering::Relaxed);
            let plan = shared.plan.conns[i];
            // One transport per run, chosen here: ws:// tasks are the plain TcpStream code, or
            // the tapped one when they may hand over to the epoll receive path.
            batch.push(if shared.tls_transport {
                tokio::spawn(conn_task::<TlsStream<TcpStream>>(
                    shared.clone(),
                    plan,
                    permit,
                ))
            } else if shared.scenario.client.receive_path
                != chatbench_model::scenario::ReceivePath::Tokio
            {
                tokio::spawn(conn_task::<crate::rx::tap::Tapped>(
                    shared.clone(),
                    plan,
                    permit,
                ))
            } else {
                tokio::spawn(conn_task::<TcpStream>(shared.clone(), plan, permit))
            });
            // After a wait, the rest of this burst is re-planned from the new start.
            i += 1;
        }
        if let Ok(mut h) = handles.lock() {
            h.extend(batch);
        }
        if over {
            return;
        }
    }
}

enum Exit {
    /// The run told us to stop: close politely.
    Stop,
    /// The server closed or the connection broke.
    Gone,
}

// The setup, send, reconnect and close paths are boxed: their state (handshake request,
// buffers, timers) is allocated while they run instead of sizing every connection's task for
// its whole life — the task's future is allocated once, at its largest state.
async fn conn_task<S: Transport>(shared: Arc<Shared>, plan: ConnPlan, slot: OwnedSemaphorePermit) {
    let stats = &shared.stats;
    Stats::inc(&stats.counters.connect_attempts);
    let t0 = Instant::now();
    let timeout = shared.scenario.connect_timeout;
    let setup = tokio::time::timeout(
        timeout,
        Box::pin(open_and_join::<S>(&shared, plan, plan.target)),
    )
    .await;
    // Set-up is over (done or failed): the ramp may start another.
    drop(slot);
    let mut ws = match setup {
        Ok(Ok(ws)) => ws,
        Ok(Err(label)) => {
            stats.connect_errors.add(&label);
            return;
        }
        Err(_) => {
            stats.connect_errors.add("timeout");
            return;
        }
    };
    Stats::inc(&stats.counters.connected);
    stats.record(plan.index, Hist::Connect, t0.elapsed().as_micros() as u64);
    if *shared.phase.borrow() != Phase::Connect {
        // Too late to be counted as a member of this run: leave rather than skew the counts.
        stats.connect_errors.add("too_late");
        let _ = ws.close(None).await;
        return;
    }
    Stats::inc(&stats.counters.ready);
    match (
        plan.room,
        plan.role,
        shared.scenario.session_profile().fanout(),
    ) {
        // An echo sender is its own only reader: count the room as two readers (sender and
        // echo), so that expected = sent × (2 − 1).
        (Some(room), Role::Sender, Fanout::Echo) => {
            shared.room_readers[room as usize].store(2, Ordering::Relaxed);
        }
        (Some(room), Role::Sender | Role::Receiver, Fanout::Room) => {
            shared.room_readers[room as usize].fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    // The sender's schedule outlives a connection: a sender that reconnects keeps it.
    let mut sender: Option<SenderState> = None;
    let mut target = plan.target;
    loop {
        shared.opened(target, 1);
        // The hand-over point: a receive-only connection may read on the epoll path (boxed,
        // as the other paths: only a connection that rides it carries its state).
        let rode = match Box::pin(crate::rx::hand_over(&shared, plan, ws)).await {
            crate::rx::Hand::Kept(kept) => {
                ws = kept;
                None
            }
            crate::rx::Hand::Stopped(back) => {
                ws = back;
                Some(Exit::Stop)
            }
            crate::rx::Hand::Gone => {
                // Never the poisoner or reconnecting: it is simply over (a sender's count
                // of what it sent was recorded at the hand-back, `tx::detach`).
                shared.opened(target, -1);
                if *shared.phase.borrow() == Phase::Measure {
                    Stats::inc(&stats.counters.dropped_in_window);
                }
                return;
            }
        };
        let exit = match rode {
            Some(exit) => exit,
            None => drive(&shared, plan, &mut ws, &mut sender).await,
        };
        shared.opened(target, -1);
        if matches!(exit, Exit::Gone) && *shared.phase.borrow() == Phase::Measure {
            Stats::inc(&stats.counters.dropped_in_window);
        }
        if shared.poisoner == Some(plan.index) {
            shared.poisoner_gone.store(true, Ordering::Relaxed);
        }
        if let Exit::Stop = exit {
            Box::pin(close_politely(&mut ws)).await;
            return;
        }
        let phase = *shared.phase.borrow();
        if !shared.scenario.reconnects() || !(Phase::Settle..Phase::Stop).contains(&phase) {
            shared.sender_gone(plan, sender.as_ref().map_or(0, |s| s.sent));
            return;
        }
        Stats::inc(&stats.counters.disconnects);
        match Box::pin(reconnect(&shared, plan, target)).await {
            Some((again, now_on)) => {
                ws = again;
                target = now_on;
            }
            None => {
                shared.sender_gone(plan, sender.as_ref().map_or(0, |s| s.sent));
                return;
            }
        }
    }
}

/// The reconnect policy after connection `plan` lost target `lost` mid-run: waits (backoff),
/// tries the next targets round-robin, redoes the session set-up and rejoins the room.
/// Returns the new connection and its target, or `None` when it gave up or the run stopped.
async fn reconnect<S: Transport>(
    shared: &Shared,
    plan: ConnPlan,
    lost: u32,
) -> Option<(WebSocketStream<S>, u32)> {
    use rand::{Rng, SeedableRng};
    let policy: &ReconnectSettings = &shared.scenario.reconnect;
    let stats = &shared.stats;
    let t0 = Instant::now();
    let mut phase_rx = shared.phase.clone();
    let targets = shared.targets.len() as u32;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(
        shared.scenario.seed
            ^ u64::from(plan.index).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ shared.now_us(),
    );
    for attempt in 0..policy.max_attempts {
        let wait = policy.delay(attempt, rng.random::<f64>());
        if t0.elapsed() + wait >= policy.deadline {
            break;
        }
        let stopped = async {
            loop {
                if *phase_rx.borrow_and_update() == Phase::Stop {
                    return;
                }
                if phase_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped => return None,
        }
        Stats::inc(&stats.counters.reconnect_attempts);
        let target = ReconnectSettings::target_for(lost, attempt, targets);
        let budget = policy
            .deadline
            .saturating_sub(t0.elapsed())
            .min(shared.scenario.connect_timeout);
        match tokio::time::timeout(budget, open_and_join(shared, plan, target)).await {
            Ok(Ok(ws)) => {
                stats.record(plan.index, Hist::Reconnect, t0.elapsed().as_micros() as u64);
                Stats::inc(&stats.counters.reconnects);
                stats
                    .counters
                    .last_reconnect_us
                    .fetch_max(shared.now_us(), Ordering::Relaxed);
                return Some((ws, target));
            }
            Ok(Err(label)) => stats.reconnect_errors.add(&label),
            Err(_) => stats.reconnect_errors.add("timeout"),
        }
    }
    Stats::inc(&stats.counters.reconnect_failures);
    None
}

async fn open_and_join<S: Transport>(
    shared: &Shared,
    plan: ConnPlan,
    target: u32,
) -> Result<WebSocketStream<S>, String> {
    let (target, session) = shared
        .targets
        .get(target as usize)
        .zip(shared.sessions.get(target as usize))
        .ok_or_else(|| "no_such_target".to_string())?;
    if target.tls != S::TLS {
        return Err("scheme_mismatch".into());
    }
    let session = session.as_ref().ok_or("bad_request_template")?;
    let room = plan.room.map(room_name).unwrap_or_default();
    let from = shared.plan.conn_id(plan.index);
    let row = match shared.scenario.feeder() {
        Some(f) => Some(f.row(plan.global).ok_or("feeder_exhausted")?),
        None => None,
    };
    let request = session.render(&ConnVars {
        conn: plan.global,
        from: &from,
        room: &room,
        row,
    });
    let mut ws = connect::<S>(
        target,
        &request,
        shared.source_for(plan.index),
        shared.ws_config,
        shared.tls.as_ref(),
    )
    .await
    .map_err(|e| e.label())?;
    let profile = shared.scenario.session_profile();
    crate::session::open_session(profile, &mut ws, &shared.stats).await?;
    let Some(room) = plan.room else { return Ok(ws) };
    crate::session::join(profile, &mut ws, &shared.stats, &room_name(room)).await?;
    Ok(ws)
}

fn close_label(f: Option<&CloseFrame>) -> String {
    f.map(|f| u16::from(f.code).to_string())
        .unwrap_or_else(|| "none".into())
}

/// What one reading connection remembers of the deliveries it got (duplicates).
pub(crate) struct Receiver {
    /// Last seq seen per sender of the room (own agent), by sender slot.
    last_seq: LastSeqs,
    /// Last seq seen per sender of another agent (allocated on the first such delivery).
    /// Boxed: one pointer in every connection's task, the map only where it is used.
    cross_last: Option<Box<CrossLast>>,
}

impl Receiver {
    /// A connection's receiver state before its first delivery.
    pub(crate) fn new(shared: &Shared) -> Receiver {
        Receiver {
            last_seq: LastSeqs::new(shared.plan.senders_per_room as usize),
            cross_last: None,
        }
    }
}

/// Last seq seen per sender `(agent, index)` of another agent.
#[derive(Default)]
struct CrossLast(std::collections::HashMap<(u32, u32), u64>);

async fn drive<S: Transport>(
    shared: &Shared,
    plan: ConnPlan,
    ws: &mut WebSocketStream<S>,
    sender: &mut Option<SenderState>,
) -> Exit {
    let mut phase_rx = shared.phase.clone();
    let reading = |p: Phase| plan.role != Role::Slow || p >= Phase::Stop;
    let mut phase = *phase_rx.borrow_and_update();
    if phase == Phase::Stop {
        return Exit::Stop;
    }
    let mut receiver = Receiver::new(shared);
    let wake = (plan.role == Role::Sender)
        .then(|| shared.wakes[shared.sender_ordinal[plan.index as usize] as usize].clone());
    let room = plan.room.unwrap_or(0);
    if phase >= Phase::Warmup && wake.is_some() {
        // Back after a reconnect: catch up with the open-loop schedule (what fell due while
        // away goes out now, its latency still counted from its intended time).
        if sender.is_none() {
            *sender = new_sender(shared, plan, room);
        }
        if let Some(s) = sender.as_mut() {
            if Box::pin(send_due(shared, plan, room, s, ws)).await.is_err() {
                Stats::inc(&shared.stats.counters.send_failures);
                return Exit::Gone;
            }
        }
    }
    let poisoner = shared.poisoner == Some(plan.index);
    let profile = shared.scenario.session_profile();
    // Keep-alives the protocol needs from the client (Phoenix heartbeats); none by default.
    // Boxed: one pointer in every connection's task, the timer only where it is used.
    let every = profile.heartbeat_interval();
    let mut heartbeat = every.map(|d| Box::pin(tokio::time::sleep(d)));
    let mut beats = 0u64;
    loop {
        tokio::select! {
            _ = shared.poison.notified(), if poisoner => {
                // The scenario checks that the profile has a poison frame.
                if let Some(frame) = profile.poison_frame() {
                    if ws.send(Message::text(frame)).await.is_err() {
                        return Exit::Gone;
                    }
                }
            }
            changed = phase_rx.changed() => {
                if changed.is_err() { return Exit::Stop; }
                phase = *phase_rx.borrow_and_update();
                if phase == Phase::Stop { return Exit::Stop; }
                if phase >= Phase::Warmup && sender.is_none() && wake.is_some() {
                    *sender = new_sender(shared, plan, room);
                }
            }
            _ = async { if let Some(w) = &wake { w.notified().await } else { std::future::pending().await } }, if sender.is_some() => {
                if let Some(s) = sender.as_mut() {
                    if Box::pin(send_due(shared, plan, room, s, ws)).await.is_err() {
                        Stats::inc(&shared.stats.counters.send_failures);
                        return Exit::Gone;
                    }
                }
            }
            _ = async { if let Some(h) = heartbeat.as_mut() { h.as_mut().await; } else { std::future::pending::<()>().await } }, if heartbeat.is_some() => {
                if let (Some(h), Some(d)) = (heartbeat.as_mut(), every) {
                    h.as_mut().reset(tokio::time::Instant::now() + d);
                    beats += 1;
                    if let Some(frame) = profile.heartbeat_frame(beats) {
                        if Box::pin(ws.send(Message::text(frame))).await.is_err() {
                            return Exit::Gone;
                        }
                    }
                }
            }
            msg = ws.next(), if reading(phase) => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(reply) = on_text(shared, plan, &mut receiver, &t) {
                            if Box::pin(ws.send(Message::text(reply.into_owned()))).await.is_err() {
                                return Exit::Gone;
                            }
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        shared.stats.closed_by_server.add(&close_label(f.as_ref()));
                        return Exit::Gone;
                    }
                    Some(Ok(Message::Binary(b))) => shared.stats.bad_frame(&format!("<binary frame, {} bytes>", b.len())),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        shared.stats.closed_by_server.add("reset");
                        return Exit::Gone;
                    }
                }
            }
        }
    }
}

pub(crate) struct SenderState {
    schedule: std::iter::Peekable<Schedule>,
    writer: FrameWriter,
    start: Instant,
    seq: u64,
    /// Messages handed to the connection (the schedule's first `sent` points).
    pub(crate) sent: u64,
}

impl SenderState {
    /// The intended time of the next message if it is due by `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Instant> {
        let intended = self.start + *self.schedule.peek()?;
        (intended <= now).then_some(intended)
    }

    /// Writes the next message (intended at `intended`) into `text`; returns its `ts`. The
    /// schedule does not move until [`SenderState::take`].
    pub(crate) fn encode(&self, shared: &Shared, intended: Instant, text: &mut String) -> u64 {
        let ts = intended.saturating_duration_since(shared.epoch).as_micros() as u64;
        self.writer.write(text, self.seq + 1, ts);
        ts
    }

    /// The message last encoded goes out: the schedule moves on, and its seq is taken.
    pub(crate) fn take(&mut self) {
        self.schedule.next();
        self.seq += 1;
    }

    /// When the next message falls due, from the start of sending (`None`: the schedule is over).
    pub(crate) fn next_offset(&mut self) -> Option<Duration> {
        self.schedule.peek().copied()
    }

    /// When sending started.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }
}

/// Notes a message just queued by the sender of ordinal `ordinal` (seq `s.seq`, intended at
/// `intended`): its count of what it sent (owed messages of a connection that dies) and its
/// in-window seqs (the fleet's judgement).
fn note_sent(shared: &Shared, ordinal: u32, s: &mut SenderState, intended: Instant) {
    s.sent += 1;
    let ts = intended.saturating_duration_since(shared.epoch).as_micros() as u64;
    if shared.window.contains(ts) {
        if let Some((lo, hi)) = shared.window_seqs.get(ordinal as usize) {
            let _ = lo.compare_exchange(0, s.seq, Ordering::Relaxed, Ordering::Relaxed);
            hi.store(s.seq, Ordering::Relaxed);
        }
    }
}

/// A sender's state once sending has started (`None` before the timeline is set).
pub(crate) fn new_sender(shared: &Shared, plan: ConnPlan, room: u32) -> Option<SenderState> {
    let start = *shared.send_start.get()?;
    let name = room_name(room);
    let id = shared.plan.conn_id(plan.index);
    let body = "x".repeat(shared.scenario.payload_bytes as usize);
    Some(SenderState {
        schedule: shared.schedule_of(plan.index).peekable(),
        writer: shared.scenario.session_profile().writer(&name, &id, &body),
        start,
        seq: 0,
        sent: 0,
    })
}

/// Sends, on the tokio path, every message of `s`'s schedule that is due by now (the task was
/// woken by the pacer, or came back after a reconnect), then flushes.
pub(crate) async fn send_due<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    shared: &Shared,
    plan: ConnPlan,
    room: u32,
    s: &mut SenderState,
    ws: &mut WebSocketStream<T>,
) -> Result<(), tungstenite::Error> {
    let now = Instant::now();
    let mut first = true;
    let mut any = false;
    while let Some(intended) = s.due(now) {
        if first {
            record_send_lag(shared, plan, now, intended);
            first = false;
        }
        let mut text = String::new();
        let ts = s.encode(shared, intended, &mut text);
        s.take();
        ws.feed(Message::text(text)).await?;
        sent_one(shared, plan, room, s, intended, ts);
        any = true;
    }
    if any {
        ws.flush().await?;
    }
    Ok(())
}

/// Records the send lag of a wake-up at `now` whose first due message was intended at
/// `intended` (both send paths: once per wake-up that sends).
pub(crate) fn record_send_lag(shared: &Shared, plan: ConnPlan, now: Instant, intended: Instant) {
    shared.stats.record(
        plan.index,
        Hist::SendLag,
        now.saturating_duration_since(intended).as_micros() as u64,
    );
}

/// The bookkeeping of one message just handed to the connection (both send paths): the
/// sender's own count and window seqs ([`note_sent`]), the sent counters, the room's in-window
/// count and the loss timeline's expectation.
pub(crate) fn sent_one(
    shared: &Shared,
    plan: ConnPlan,
    room: u32,
    s: &mut SenderState,
    intended: Instant,
    ts: u64,
) {
    let stats = &shared.stats;
    let ordinal = shared.sender_ordinal[plan.index as usize];
    note_sent(shared, ordinal, s, intended);
    Stats::inc(&stats.counters.sent);
    if shared.window.contains(ts) {
        Stats::inc(&stats.counters.sent_window);
        Stats::inc(&stats.room_sent_window[room as usize]);
        if let Some(t) = &shared.loss_timeline {
            let readers = shared.room_readers[room as usize].load(Ordering::Relaxed);
            t.add_expected(
                ts.saturating_sub(shared.window.start_us()),
                readers.saturating_sub(1),
            );
        }
    }
}

/// What an incoming text frame is: the fast `msg` path first where the profile allows it.
fn decode<'a>(shared: &Shared, text: &'a str) -> Incoming<'a> {
    match shared
        .fast_msg
        .then(|| crate::fast_msg::parse(text))
        .flatten()
    {
        Some(d) => Incoming::Delivery(d),
        None => shared.scenario.session_profile().decode(text),
    }
}

/// Handles one incoming text frame on its own: the clock read for it, its figures added at
/// once (the tokio path, a frame per `ws.next()`); returns the answer to send, if the
/// protocol wants one.
pub(crate) fn on_text(
    shared: &Shared,
    plan: ConnPlan,
    r: &mut Receiver,
    text: &str,
) -> Option<std::borrow::Cow<'static, str>> {
    judge(
        shared,
        plan,
        r,
        text,
        shared.now_us(),
        &mut Direct(plan.index),
    )
}

/// A text message whose bytes are not UTF-8 (a protocol error: the connection ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotUtf8;

/// [`judge`] of a complete text message as the bytes the epoll path read: an ASCII `msg`
/// frame the fast parse takes is judged without a UTF-8 check (ASCII is UTF-8); any other is
/// checked, then judged as text. `Err` when it is not UTF-8.
pub(crate) fn judge_bytes<S: Sink>(
    shared: &Shared,
    plan: ConnPlan,
    r: &mut Receiver,
    bytes: &[u8],
    now_us: u64,
    sink: &mut S,
) -> Result<Option<std::borrow::Cow<'static, str>>, NotUtf8> {
    if shared.fast_msg {
        if let Some(m) = crate::fast_msg::parse_ascii(bytes) {
            delivery(
                shared,
                plan,
                r,
                m,
                &|| String::from_utf8_lossy(bytes),
                now_us,
                sink,
            );
            return Ok(None);
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|_| NotUtf8)?;
    Ok(judge(shared, plan, r, text, now_us, sink))
}

/// Judges one incoming text frame that arrived by `now_us` (µs since the epoch: the time the
/// read that brought it returned); returns the answer to send, if the protocol wants one.
/// Both receive paths judge every delivery here; the per-delivery figures go to `sink`
/// (straight into the statistics, or a [`crate::stats::Tally`] its caller publishes).
pub(crate) fn judge<S: Sink>(
    shared: &Shared,
    plan: ConnPlan,
    r: &mut Receiver,
    text: &str,
    now_us: u64,
    sink: &mut S,
) -> Option<std::borrow::Cow<'static, str>> {
    let stats = &shared.stats;
    match decode(shared, text) {
        Incoming::Delivery(m) => delivery(shared, plan, r, m, &|| text.into(), now_us, sink),
        Incoming::Reply(answer) => return Some(answer),
        Incoming::ServerError(code) => stats.server_errors.add(&code),
        Incoming::Other => {}
        Incoming::Bad => stats.bad_frame(text),
    }
    None
}

/// One delivery `m` that arrived by `now_us`: an echo, a duplicate, another agent's (to the
/// ledger) or this agent's, timed and counted. `text` gives the frame for the unexpected
/// frames' list (only a frame that makes no sense here is asked for it).
fn delivery<'t, S: Sink>(
    shared: &Shared,
    plan: ConnPlan,
    r: &mut Receiver,
    m: chatbench_model::profile::Delivery<'_>,
    text: &dyn Fn() -> std::borrow::Cow<'t, str>,
    now_us: u64,
    sink: &mut S,
) {
    let stats = &shared.stats;
    let from = parse_conn_id(&m.from);
    if shared.echoes_apart && from == Some((shared.plan.agent, plan.index)) {
        if shared.window.contains(m.ts) {
            Stats::inc(&stats.counters.echoes);
        }
        return;
    }
    sink.delivered(stats);
    let Some((agent, index)) = from else {
        stats.bad_frame(&text());
        return;
    };
    if agent != shared.plan.agent {
        // Another agent's sender: judged by the coordinator from the ledger.
        let last = r
            .cross_last
            .get_or_insert_with(Box::default)
            .0
            .entry((agent, index))
            .or_insert(0);
        if m.seq <= *last {
            Stats::inc(&stats.counters.duplicated);
        } else if shared.ledger.record(agent, index, m.seq) {
            *last = m.seq;
            time_cross(shared, agent, m.ts, now_us, sink);
        } else {
            stats.bad_frame(&text());
        }
        return;
    }
    let Some(slot) = shared
        .plan
        .conns
        .get(index as usize)
        .and_then(|c| c.sender_slot)
    else {
        stats.bad_frame(&text());
        return;
    };
    let Some(last) = r.last_seq.get_mut(slot as usize) else {
        stats.bad_frame(&text());
        return;
    };
    if m.seq <= *last {
        Stats::inc(&stats.counters.duplicated);
        return;
    }
    *last = m.seq;
    let latency = now_us.saturating_sub(m.ts);
    let in_window = shared.window.contains(m.ts);
    sink.latency(stats, latency, in_window);
    if in_window {
        if let Some(t) = &shared.loss_timeline {
            t.add_delivered(m.ts.saturating_sub(shared.window.start_us()));
        }
        // The frame's room, or the receiver's own (a connection is in one room).
        sink.delivered_window(stats, m.room.or(plan.room));
        if latency > shared.scenario.late_after.as_micros() as u64 {
            sink.late(stats);
        }
    }
}

/// Times a delivery from agent `agent`'s sender, intended at its `ts`, that arrived by
/// `now_us`, on this agent's clock through the agents' epochs (nothing before they are known).
fn time_cross<S: Sink>(shared: &Shared, agent: u32, ts: u64, now_us: u64, sink: &mut S) {
    let Some(&their) = shared
        .peer_epochs
        .get()
        .and_then(|e| e.get(agent as usize))
        .filter(|e| **e != 0)
    else {
        return;
    };
    // The intended time in µs since this agent's epoch.
    let intended = their + ts as i64 - shared.epoch_unix_us;
    let Ok(intended) = u64::try_from(intended) else {
        return;
    };
    let latency = now_us.saturating_sub(intended);
    let in_window = shared.window.contains(intended);
    sink.latency(&shared.stats, latency, in_window);
    if in_window && latency > shared.scenario.late_after.as_micros() as u64 {
        sink.late(&shared.stats);
    }
}

async fn close_politely<S: Transport>(ws: &mut WebSocketStream<S>) {
    // Send a close frame and wait (bounded) for the server to answer and close the TCP
    // connection first, so TIME_WAIT lands on the server side and back-to-back runs don't run
    // out of client ports. If it does not answer, drop with zero linger (RST, no TIME_WAIT).
    let done = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "run finished".into(),
            }))
            .await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if done.is_err() {
        let _ = socket2::SockRef::from(ws.get_ref().tcp()).set_linger(Some(Duration::ZERO));
    }
}

/// Stop flag for the pacer, shared with the coordinator.
pub type PacerStop = Arc<AtomicBool>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_task_stays_small() {
        let scenario = Arc::new(
            Scenario::parse(
                "name='t'\nconnections=2\nrooms=1\nmembers_per_room=2\n",
                "t",
            )
            .expect("valid"),
        );
        let plan = Plan::new(&scenario, 0);
        let target = Target::parse("ws://127.0.0.1:9/ws").expect("url");
        let (shared, _tx) = Shared::new(scenario, plan.clone(), vec![target], Vec::new());
        let slot = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        let fut = conn_task::<TcpStream>(shared.clone(), plan.conns[0], slot);
        let size = std::mem::size_of_val(&fut);
        // Every idle connection holds one of these: keep it small (1,296 bytes when this test was
        // written; 1,376 before protocol profiles, 1,448 with the keep-alive and reply branches).
        assert!(size <= 1536, "connection task future is {size} bytes");
        // wss:// connections carry rustls's connection state inline (its record buffers are
        // on the heap besides): 3,664 bytes when TLS was added (the ws:// one did not change).
        let slot = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        let tls = conn_task::<TlsStream<TcpStream>>(shared, plan.conns[0], slot);
        let tls_size = std::mem::size_of_val(&tls);
        eprintln!("task future: ws {size} B, wss {tls_size} B");
        assert!(
            tls_size <= TLS_TASK_MAX,
            "wss connection task future is {tls_size} bytes"
        );
    }

    const TLS_TASK_MAX: usize = 3840;

    type Handles = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

    /// A listener on 127.0.0.1 that accepts TCP connections, counts them, and never answers.
    async fn silent_server() -> (
        std::net::SocketAddr,
        Arc<AtomicU64>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(sock); // never read, never answered, closed at the end
            }
        });
        (addr, accepted, task)
    }

    /// An engine of `n` idle connections against `addr`, at most `bound` in set-up at once.
    fn engine_against(
        addr: std::net::SocketAddr,
        n: u64,
        bound: u64,
        timeout: &str,
    ) -> (Arc<Shared>, watch::Sender<Phase>, Handles) {
        let scenario = Arc::new(
            Scenario::parse(
                &format!(
                    "name='t'\nconnections={n}\nramp_rate=100000.0\nmax_connecting={bound}\n\
                     connect_timeout=\"{timeout}\"\n"
                ),
                "t",
            )
            .expect("valid"),
        );
        let plan = Plan::new(&scenario, 0);
        let target = Target::parse(&format!("ws://{addr}/ws")).expect("url");
        let (shared, phase_tx) = Shared::new(scenario, plan, vec![target], Vec::new());
        (
            shared,
            phase_tx,
            Arc::new(std::sync::Mutex::new(Vec::new())),
        )
    }

    /// A server that accepts TCP connections and never answers the WebSocket handshake: the
    /// ramp never has more than `max_connecting` set-ups in flight, waits (and counts the wait)
    /// instead, and every connection ends as a counted timeout.
    #[tokio::test]
    async fn ramp_bounds_connections_in_flight() {
        let (addr, accepted, silent) = silent_server().await;
        let n = 40u64;
        let bound = 4u64;
        let (shared, phase_tx, handles) = engine_against(addr, n, bound, "200ms");
        tokio::time::timeout(
            Duration::from_secs(30),
            ramp(shared.clone(), handles.clone()),
        )
        .await
        .expect("the ramp ends: every set-up times out within connect_timeout");
        let tasks: Vec<_> = handles
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        assert_eq!(
            tasks.len() as u64,
            n,
            "every planned connection was started"
        );
        tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(tasks),
        )
        .await
        .expect("every set-up ends");
        let c = &shared.stats.counters;
        let peak = Stats::get(&c.connecting_peak);
        assert!(
            (1..=bound).contains(&peak),
            "{peak} set-ups in flight, bound {bound}"
        );
        assert_eq!(Stats::get(&c.connect_attempts), n);
        assert_eq!(Stats::get(&c.ready), 0);
        assert_eq!(
            shared
                .stats
                .connect_errors
                .snapshot()
                .get("timeout")
                .copied(),
            Some(n),
            "{:?}",
            shared.stats.connect_errors.snapshot()
        );
        assert_eq!(accepted.load(Ordering::Relaxed), n);
        // 40 set-ups through 4 slots: the ramp had to wait for slots to free up.
        assert!(Stats::get(&c.ramp_held_us) > 0);
        let _ = phase_tx.send(Phase::Stop);
        silent.abort();
    }

    /// When the connect phase ends while the ramp waits for a slot, the ramp stops starting
    /// connections.
    #[tokio::test]
    async fn ramp_stops_when_the_connect_phase_ends() {
        let (addr, _accepted, silent) = silent_server().await;
        let (shared, phase_tx, handles) = engine_against(addr, 50, 2, "60s");
        let ramp_task = tokio::spawn(ramp(shared.clone(), handles.clone()));
        // Wait (bounded) until both slots are taken, then end the connect phase.
        for _ in 0..3000 {
            if Stats::get(&shared.stats.counters.connecting_peak) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Stats::get(&shared.stats.counters.connecting_peak), 2);
        let _ = phase_tx.send(Phase::Settle);
        tokio::time::timeout(Duration::from_secs(30), ramp_task)
            .await
            .expect("the ramp returns once the phase moves on")
            .expect("the ramp does not panic");
        let started = handles.lock().map(|h| h.len()).unwrap_or(0);
        assert_eq!(
            started, 2,
            "only the connections that got a slot were started"
        );
        let _ = phase_tx.send(Phase::Stop);
        let tasks: Vec<_> = handles
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        silent.abort();
    }
}
