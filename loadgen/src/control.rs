//! The control protocol between a coordinator (`chatbench run --agents …`) and its agents
//! (`chatbench agent`): one TCP connection per agent carrying newline-delimited JSON messages,
//! each at most [`MAX_LINE_BYTES`] long; histograms travel in HdrHistogram's compact V2+deflate
//! form (base64), so the coordinator merges them exactly (histogram addition).
//!
//! Sequence: `hello` both ways (version and token checked; a mismatch is a `refused` message and
//! a clear error on both sides) → `ping`/`pong` (clock offsets) → `setup` (the scenario, targets
//! and this agent's share; the agent checks its allow-list and limits) → `ready` → `start` (open
//! connections) → `connected` (the barrier) → `go` (a common start time in the agent's clock) →
//! `tick` every second → `done` (the agent's final figures) → `stop`. The coordinator pings every
//! second; an agent that hears nothing for [`SILENCE_LIMIT`] or loses the connection stops its
//! load. Also the allow-list of targets an agent accepts, and token comparison.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use chatbench_model::hist::new_hist;

/// Version of the control protocol; both sides must speak the same. v2: ticks carry ready
/// connections, the window's deliveries from every agent and reconnect counts; `done` carries
/// the window's deliveries from every agent and the reconnect figures. Fields added since
/// (`Final`'s receive and send path counts, its thread split) default when absent, so they did
/// not change it.
pub const CONTROL_VERSION: u32 = 2;
/// Longest control message accepted, bytes (a `done` with thousands of rooms fits easily).
pub const MAX_LINE_BYTES: u64 = 16 << 20;
/// An agent that hears nothing from its coordinator for this long stops its load.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// A coordinator that hears nothing from an agent for this long declares it stalled.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// Control-protocol failures.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The connection failed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("control connection closed by the peer")]
    Closed,
    /// A message longer than [`MAX_LINE_BYTES`].
    #[error("control message longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// A message that does not parse.
    #[error("bad control message: {0}")]
    Bad(String),
    /// A histogram that does not decode.
    #[error("bad histogram in a control message: {0}")]
    Histogram(String),
}

/// The targets an agent may be pointed at.
#[derive(Debug, Clone)]
pub struct AllowList {
    entries: Vec<(IpAddr, u8)>,
}

impl AllowList {
    /// Loopback only (127.0.0.0/8 and ::1): the default.
    pub fn loopback() -> AllowList {
        AllowList {
            entries: vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
        }
    }

    /// Parses `CIDR/host,…`: `10.0.0.0/8`, `192.168.1.7`, `::1`, `fd00::/8` or a host name
    /// (resolved now, every address it has).
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut entries = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some((ip, bits)) = item.split_once('/') {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("--allow-target {item:?}: {ip:?} is not an IP address"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| {
                    format!("--allow-target {item:?}: the prefix length must be 0..={max}")
                })?;
                entries.push((ip, bits));
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                entries.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                use std::net::ToSocketAddrs;
                let addrs = (item, 0u16).to_socket_addrs().map_err(|e| {
                    format!("--allow-target {item:?}: not a CIDR, an address, or a host that resolves: {e}")
                })?;
                for a in addrs {
                    let ip = a.ip();
                    entries.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
                }
            }
        }
        if entries.is_empty() {
            return Err("--allow-target: empty list; name at least one CIDR or host".into());
        }
        Ok(AllowList { entries })
    }

    /// Whether `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .any(|&(net, bits)| in_net(ip, net, bits))
    }

    /// The list, for messages.
    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|(ip, bits)| format!("{ip}/{bits}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Compares two tokens in time independent of where they differ.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Wall-clock time, µs since the Unix epoch (for clock offsets and the common start time).
pub fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// How late a control loop itself runs. A loop that the OS did not schedule for a while (a host
/// busy opening hundreds of thousands of connections) must not blame its peer for the silence
/// it did not listen to: its lateness is added to the peer's last-heard time.
#[derive(Debug)]
pub struct LoopClock {
    last: std::time::Instant,
}

impl LoopClock {
    /// On-time gap between two turns of a control loop (they wake at least every second).
    pub const ON_TIME: Duration = Duration::from_secs(1);

    /// Starts at `now`.
    pub fn new(now: std::time::Instant) -> LoopClock {
        LoopClock { last: now }
    }

    /// The time since the previous turn beyond [`LoopClock::ON_TIME`] (zero when on time).
    pub fn lateness(&mut self, now: std::time::Instant) -> Duration {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        gap.saturating_sub(Self::ON_TIME)
    }
}

/// What an agent is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// This agent's id (the `a` of its connection ids).
    pub agent: u32,
    /// Agents in the run.
    pub agents: u32,
    /// The scenario, as TOML (after the coordinator's overrides).
    pub scenario: String,
    /// Target URLs.
    pub targets: Vec<String>,
    /// First loopback source address (index) this agent may use, so local agents use disjoint
    /// ranges.
    pub source_first: u64,
}

/// Messages from the coordinator to an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToAgent {
    /// First message: version and token.
    Hello {
        /// [`CONTROL_VERSION`] of the coordinator.
        version: u32,
        /// The shared token, if the coordinator has one.
        token: Option<String>,
    },
    /// Clock probe; also the heartbeat.
    Ping {
        /// Echoed back.
        id: u64,
    },
    /// The run.
    Setup(Box<Setup>),
    /// Open the connections.
    Start,
    /// Start sending at this time (agent's wall clock, µs since the Unix epoch).
    Go {
        /// Start of warmup.
        start_unix_us: i64,
        /// Every agent's engine epoch (time zero of its `ts`) in this agent's wall clock, by
        /// agent id (0: unknown): what times deliveries across agents. On one host the agents
        /// share `CLOCK_REALTIME`, so no offset is applied; across hosts, the measured offsets.
        #[serde(default)]
        epochs_us: Vec<i64>,
    },
    /// End now (early), report, close.
    Stop,
}

/// The agent's counters once a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Phase name.
    pub phase: String,
    /// Connections open.
    pub open: u64,
    /// Attempts so far.
    pub connect_attempts: u64,
    /// Failed attempts so far.
    pub connect_errors: u64,
    /// Closed by the server so far.
    pub closed_by_server: u64,
    /// Sent so far (all phases).
    pub sent: u64,
    /// Delivered so far (all phases, any agent's messages).
    pub delivered: u64,
    /// Connections ready (joined) so far: a lost agent's opens count up to its last tick.
    #[serde(default)]
    pub ready: u64,
    /// Deliveries received during this agent's measurement window so far, any agent's messages
    /// (what the server made for this agent's receivers in the window).
    #[serde(default)]
    pub delivered_window_all: u64,
    /// Connections back after a reconnect, so far.
    #[serde(default)]
    pub reconnects: u64,
    /// Connections that gave up reconnecting, so far.
    #[serde(default)]
    pub reconnect_failures: u64,
    /// Latencies recorded since the last tick, V2+deflate base64.
    pub interval: String,
    /// Those of them of messages due in the window (`latency.hlog`'s `window` intervals);
    /// empty from an agent that does not send it.
    #[serde(default)]
    pub interval_window: String,
    /// Agent RSS, bytes.
    pub rss_bytes: Option<u64>,
    /// Agent CPU time so far, seconds.
    pub cpu_seconds: f64,
}

/// An agent's figures at the end of its run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    /// Connections in this agent's plan.
    pub planned: u64,
    /// Attempts started.
    pub attempted: u64,
    /// Handshakes completed.
    pub connected: u64,
    /// Ready (joined).
    pub ready: u64,
    /// Failed attempts by kind.
    pub connect_errors: BTreeMap<String, u64>,
    /// Closed by the server, by close code.
    pub closed_by_server: BTreeMap<String, u64>,
    /// `error` frames by code.
    pub server_errors: BTreeMap<String, u64>,
    /// Sent in the window.
    pub sent_window: u64,
    /// Sent, all phases.
    pub sent_all: u64,
    /// Delivered, all phases, any agent's messages.
    pub delivered_all: u64,
    /// Delivered during this agent's measurement window, any agent's messages.
    #[serde(default)]
    pub delivered_window_all: u64,
    /// What the reconnect policy did, when it was on.
    #[serde(default)]
    pub reconnect: Option<AgentReconnect>,
    /// Duplicates.
    pub duplicated: u64,
    /// Late window deliveries.
    pub late: u64,
    /// Frames that did not parse.
    pub bad_frames: u64,
    /// In-window echoes (messages delivered back to their own sender), counted apart.
    #[serde(default)]
    pub echoes: u64,
    /// Per room: in-window messages that fell due on this agent's senders' connections while
    /// they were down (owed like the sent ones).
    #[serde(default)]
    pub room_unsent_window: Vec<u64>,
    /// Connections the server closed or broke during the window.
    #[serde(default)]
    pub dropped_in_window: u64,
    /// Connections whose receiving ran on the epoll receive path (0 from an agent that
    /// predates it).
    #[serde(default)]
    pub epoll_receivers: u64,
    /// Reads on the epoll receive path that brought no kernel timestamp (0 from an agent that
    /// predates them).
    #[serde(default)]
    pub unstamped_reads: u64,
    /// Senders whose frames the pacer's thread wrote (the send path; 0 from an agent that
    /// predates it). At most the connections the coordinator gave this agent: it refuses more.
    #[serde(default)]
    pub pacer_senders: u64,
    /// How many times a due message found one of those senders' out-buffer full and held its
    /// sender (0 from an agent that predates it).
    #[serde(default)]
    pub pacer_send_held: u64,
    /// This agent's CPU over its window split by what its threads do, with its threads by
    /// role (`threads::window_split` of its own threads; absent when it could not read them,
    /// the window did not close, or from an agent that predates it). Untrusted: the
    /// coordinator believes it only if `threads::Split::check` passes.
    #[serde(default)]
    pub thread_split: Option<crate::threads::Split>,
    /// The first frames that made no sense (bounded in number and length).
    #[serde(default)]
    pub unexpected_frames: Vec<String>,
    /// This agent's senders' in-window sequence numbers.
    #[serde(default)]
    pub sender_windows: Vec<crate::ledger::SenderWindow>,
    /// What this agent's receivers got from other agents' senders, as runs.
    #[serde(default)]
    pub cross: Vec<crate::ledger::CrossRuns>,
    /// Whether `cross` is all this agent's receivers got (false: too many runs to send, left
    /// out; the coordinator then judges each agent's own pairs only).
    #[serde(default)]
    pub cross_complete: bool,
    /// Per room: window messages sent by this agent.
    pub room_sent_window: Vec<u64>,
    /// Per room: window deliveries of this agent's messages to this agent's receivers.
    pub room_delivered_window: Vec<u64>,
    /// Per room: this agent's ready readers.
    pub room_readers: Vec<u64>,
    /// Slow consumers.
    pub slow: u64,
    /// Window latency, V2+deflate base64.
    pub window_latency: String,
    /// The latencies recorded since the last tick (the tail of `latency.hlog`'s intervals),
    /// V2+deflate base64.
    #[serde(default)]
    pub interval_tail: String,
    /// The window's part of them (the tail of its `window` intervals).
    #[serde(default)]
    pub interval_window_tail: String,
    /// Connection time.
    pub connect_time: String,
    /// Send lag.
    pub send_lag: String,
    /// Receive lag on the epoll receive path, if any delivery was read there with a kernel
    /// timestamp (absent from an agent that predates it).
    #[serde(default)]
    pub receive_lag: Option<String>,
    /// Pacer lateness, if the pacer ran.
    pub pacer_lag: Option<String>,
    /// Whether the pacer ran at real-time priority.
    pub pacer_realtime: Option<bool>,
    /// Agent CPU over the window, cores.
    pub cpu_cores_measure: Option<f64>,
    /// CPUs the agent could use.
    pub cpus: u64,
    /// Agent RSS per connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Seconds of the connect phase.
    pub connect_phase_s: f64,
    /// µs the ramp waited for set-up slots (`max_connecting`).
    #[serde(default)]
    pub ramp_held_us: u64,
    /// Most connections in set-up at once.
    #[serde(default)]
    pub connecting_peak: u64,
    /// Seconds of the measurement window as run.
    pub measure_s: f64,
    /// Stopped early (by `stop` or losing the coordinator).
    pub interrupted: bool,
    /// Workers of the agent that panicked, with what they said (the run then fails).
    #[serde(default)]
    pub panicked: Vec<String>,
}

/// An agent's reconnect figures (scenario `[reconnect]`), merged by the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentReconnect {
    /// Connections lost mid-run that the policy took up.
    pub lost: u64,
    /// Attempts (one per target tried).
    pub attempts: u64,
    /// Connections that came back and rejoined their room.
    pub reconnected: u64,
    /// Connections that gave up.
    pub failed: u64,
    /// Failed attempts by kind.
    pub errors: BTreeMap<String, u64>,
    /// Time to reconnect, V2+deflate base64.
    pub time: String,
}

/// Messages from an agent to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromAgent {
    /// Answer to `hello`.
    Hello {
        /// [`CONTROL_VERSION`] of the agent.
        version: u32,
        /// The agent's pid.
        pid: u32,
        /// Its RLIMIT_NOFILE (soft, after raising).
        nofile: u64,
    },
    /// The agent will not do what was asked, and why.
    Refused {
        /// Why.
        reason: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: u64,
        /// Agent wall clock, µs since the Unix epoch.
        agent_unix_us: i64,
    },
    /// Setup accepted: the plan fits and the targets answer.
    Ready {
        /// Connections this agent will open.
        connections: u64,
        /// Source addresses it will use.
        source_addrs: Vec<String>,
    },
    /// The connect phase ended (the barrier).
    Connected {
        /// Connections ready.
        ready: u64,
        /// The engine's epoch (time zero of this agent's `ts`) on this agent's wall clock, µs
        /// since the Unix epoch.
        #[serde(default)]
        epoch_unix_us: i64,
    },
    /// Once a second.
    Tick(Box<Tick>),
    /// Final figures.
    Done(Box<Final>),
}

/// Encodes a histogram in the V2+deflate form, base64.
pub fn encode_hist(h: &Histogram<u64>) -> Result<String, ControlError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| ControlError::Histogram(format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// HdrHistogram's V2 cookie (uncompressed) and V2+deflate cookie.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// Bytes of a V2 header: cookie, payload length, normalizing offset, digits (u32 each), lowest,
/// highest (u64 each), integer-to-double ratio (f64).
const V2_HEADER_BYTES: usize = 40;
/// Largest inflated histogram accepted: a full [`new_hist`] histogram's V2 form is well below.
const MAX_HIST_BYTES: u64 = 4 << 20;

/// Decodes [`encode_hist`]'s form; an empty string is an empty histogram.
///
/// The bytes come from the network, so the header is checked before the histogram library
/// sees it (it would allocate whatever payload length a header claims, and whatever counts
/// array its bounds imply): V2+deflate only, inflated within [`MAX_HIST_BYTES`], a payload length
/// that matches, and the bounds of [`new_hist`].
pub fn decode_hist(s: &str) -> Result<Histogram<u64>, ControlError> {
    use std::io::Read as _;
    if s.is_empty() {
        return Ok(new_hist());
    }
    let bad = |why: &str| ControlError::Histogram(why.to_owned());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ControlError::Histogram(e.to_string()))?;
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    if u32_at(&bytes, 0) != Some(V2_DEFLATE_COOKIE) {
        return Err(bad("not a V2+deflate histogram"));
    }
    let deflated_len = u32_at(&bytes, 4).ok_or_else(|| bad("truncated header"))? as usize;
    let deflated = bytes
        .get(8..)
        .filter(|d| d.len() == deflated_len)
        .ok_or_else(|| bad("the compressed length does not match"))?;
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(deflated)
        .take(MAX_HIST_BYTES + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| ControlError::Histogram(format!("cannot inflate: {e}")))?;
    if inflated.len() as u64 > MAX_HIST_BYTES {
        return Err(bad("inflates beyond the largest histogram accepted"));
    }
    let header_ok = u32_at(&inflated, 0) == Some(V2_COOKIE)
        && u32_at(&inflated, 4).map(|n| n as usize) == inflated.len().checked_sub(V2_HEADER_BYTES)
        && u32_at(&inflated, 12) == Some(u32::from(chatbench_model::hist::HIST_SIGFIG))
        && u64_at(&inflated, 16) == Some(1)
        && u64_at(&inflated, 24) == Some(chatbench_model::hist::HIST_MAX_US);
    if !header_ok {
        return Err(bad(
            "its header does not describe a chatbench latency histogram (same version on both sides?)",
        ));
    }
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut inflated.as_slice())
        .map_err(|e| ControlError::Histogram(format!("{e:?}")))?;
    Ok(h)
}

/// Adds `from` into `into` (exact); values beyond `into`'s range are a decoding problem.
pub fn add_hist(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), ControlError> {
    into.add(from)
        .map_err(|e| ControlError::Histogram(format!("{e:?}")))
}

/// Writes one message and a newline.
pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| ControlError::Bad(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Reads messages from a stream, one per line, keeping partial lines across calls: `next` is
/// cancel-safe, so it can sit in a `select!` beside timers without losing bytes. The agent reads
/// its coordinator this way on its own thread instead of in a task that would queue behind
/// thousands of connection tasks on a busy machine (which once looked like a silent coordinator).
pub struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> LineReader<R> {
    /// Wraps a stream.
    pub fn new(r: R) -> LineReader<R> {
        LineReader { r, buf: Vec::new() }
    }

    /// The next message; `Closed` at end of stream. Cancel-safe.
    pub async fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, ControlError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return parse_line(&line);
            }
            if self.buf.len() as u64 > MAX_LINE_BYTES {
                return Err(ControlError::TooLong);
            }
            self.buf.reserve(64 * 1024);
            let n = self.r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ControlError::Closed);
            }
        }
    }
}

/// Decodes one control message (a line, its newline included or not): a message or a
/// [`ControlError::Bad`], never a panic (the fuzz target `control` feeds it any bytes).
pub fn parse_line<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(buf).map_err(|e| {
        let shown = String::from_utf8_lossy(&buf[..buf.len().min(120)]).into_owned();
        ControlError::Bad(format!("{e} in {shown:?}"))
    })
}

/// Reads one message; `Closed` at end of stream.
pub async fn recv<R: AsyncBufRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, ControlError> {
    let mut buf = Vec::new();
    let n = r
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(ControlError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 > MAX_LINE_BYTES {
            ControlError::TooLong
        } else {
            ControlError::Closed
        });
    }
    parse_line(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_clock_counts_only_the_time_beyond_an_on_time_turn() {
        let t0 = std::time::Instant::now();
        let mut c = LoopClock::new(t0);
        assert_eq!(c.lateness(t0 + Duration::from_millis(500)), Duration::ZERO);
        assert_eq!(
            c.lateness(t0 + Duration::from_millis(7500)),
            Duration::from_secs(6)
        );
        // A clock read before the last turn counts as on time.
        assert_eq!(c.lateness(t0), Duration::ZERO);
    }

    #[test]
    fn histograms_round_trip_and_add_exactly() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..=1000u64 {
            chatbench_model::hist::record(&mut a, v);
            chatbench_model::hist::record(&mut b, v * 1000);
        }
        let a2 = decode_hist(&encode_hist(&a).expect("encode")).expect("decode");
        let b2 = decode_hist(&encode_hist(&b).expect("encode")).expect("decode");
        assert_eq!(a2, a);
        let mut sum = new_hist();
        add_hist(&mut sum, &a2).expect("add");
        add_hist(&mut sum, &b2).expect("add");
        assert_eq!(sum.len(), 2000);
        assert_eq!(sum.max(), b.max());
        assert_eq!(decode_hist("").expect("empty").len(), 0);
        assert!(decode_hist("not base64!").is_err());
        // A V2 header claiming a 4 GiB payload (the library would allocate it) is refused.
        let mut huge = 0x1c84_9313u32.to_be_bytes().to_vec();
        huge.extend(u32::MAX.to_be_bytes());
        huge.extend([0u8; 32]);
        let e = decode_hist(&base64::engine::general_purpose::STANDARD.encode(&huge));
        assert!(e.is_err());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &huge).expect("deflate");
        let z = z.finish().expect("deflate");
        let mut wrapped = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        wrapped.extend((z.len() as u32).to_be_bytes());
        wrapped.extend(z);
        let e = decode_hist(&base64::engine::general_purpose::STANDARD.encode(&wrapped))
            .expect_err("a huge claimed payload");
        assert!(e.to_string().contains("header"), "{e}");
    }

    #[test]
    fn allow_list_matches_cidrs_and_addresses() {
        let l = AllowList::parse("10.1.0.0/16, 192.168.1.7,fd00::/8").expect("parse");
        assert!(l.allows("10.1.200.3".parse().expect("ip")));
        assert!(!l.allows("10.2.0.1".parse().expect("ip")));
        assert!(l.allows("192.168.1.7".parse().expect("ip")));
        assert!(!l.allows("192.168.1.8".parse().expect("ip")));
        assert!(l.allows("fd12::1".parse().expect("ip")));
        assert!(!l.allows("127.0.0.1".parse().expect("ip")));
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("").is_err());
        let lo = AllowList::loopback();
        assert!(lo.allows("127.9.9.9".parse().expect("ip")));
        assert!(lo.allows("::1".parse().expect("ip")));
        assert!(!lo.allows("10.0.0.1".parse().expect("ip")));
        assert!(AllowList::parse("0.0.0.0/0")
            .expect("all")
            .allows("8.8.8.8".parse().expect("ip")));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("", "x"));
        assert!(!token_matches("s3crex", "s3cret"));
    }

    #[tokio::test]
    async fn messages_round_trip_and_long_lines_are_refused() {
        let mut wire = Vec::new();
        send(&mut wire, &ToAgent::Ping { id: 7 })
            .await
            .expect("send");
        let mut r = tokio::io::BufReader::new(wire.as_slice());
        match recv::<_, ToAgent>(&mut r).await.expect("recv") {
            ToAgent::Ping { id } => assert_eq!(id, 7),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            recv::<_, ToAgent>(&mut r).await,
            Err(ControlError::Closed)
        ));
        // The line reader keeps a partial line across calls.
        let mut lr = LineReader::new(&b"{\"t\":\"ping\",\"id\":1}\n{\"t\":\"stop\"}\n{\"t\""[..]);
        assert!(matches!(
            lr.next::<ToAgent>().await,
            Ok(ToAgent::Ping { id: 1 })
        ));
        assert!(matches!(lr.next::<ToAgent>().await, Ok(ToAgent::Stop)));
        assert!(matches!(
            lr.next::<ToAgent>().await,
            Err(ControlError::Closed)
        ));
        let mut bad = tokio::io::BufReader::new(&b"{\"t\":\"nope\"}\n"[..]);
        assert!(matches!(
            recv::<_, ToAgent>(&mut bad).await,
            Err(ControlError::Bad(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(3000))]

        /// The control-message decoders take any bytes from the network: a message or an error,
        /// never a panic.
        #[test]
        fn any_bytes_decode_to_a_message_or_an_error(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_line::<ToAgent>(&bytes);
            let _ = parse_line::<FromAgent>(&bytes);
            let mut line = bytes.clone();
            line.push(b'\n');
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async {
                let mut r = LineReader::new(line.as_slice());
                while let Ok(_) | Err(ControlError::Bad(_)) = r.next::<ToAgent>().await {}
            });
            let _ = decode_hist(&String::from_utf8_lossy(&bytes));
            let _ = decode_hist(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        }

        /// A real histogram with bytes changed (before or after compression) decodes or is
        /// refused; a header claiming a huge payload allocates nothing.
        #[test]
        fn mutated_histograms_decode_or_are_refused(
            at in 0usize..200,
            value in proptest::num::u8::ANY,
            inner in proptest::prelude::any::<bool>(),
        ) {
            use hdrhistogram::serialization::V2Serializer;
            let mut h = new_hist();
            for v in [1u64, 10, 1000, 59_000_000] {
                chatbench_model::hist::record(&mut h, v);
            }
            let mut raw = Vec::new();
            if inner {
                V2Serializer::new().serialize(&h, &mut raw).expect("serialize");
                let i = at % raw.len();
                raw[i] = value;
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut z, &raw).expect("deflate");
                let z = z.finish().expect("deflate");
                raw = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
                raw.extend((z.len() as u32).to_be_bytes());
                raw.extend(z);
            } else {
                V2DeflateSerializer::new().serialize(&h, &mut raw).expect("serialize");
                let i = at % raw.len();
                raw[i] = value;
            }
            let _ = decode_hist(&base64::engine::general_purpose::STANDARD.encode(&raw));
        }

        /// JSON of the right shape with arbitrary values: every `t`, every field, odd types.
        #[test]
        fn any_json_message_decodes_to_a_message_or_an_error(
            t in proptest::sample::select(vec!["hello", "ping", "setup", "start", "go", "stop", "tick", "done", "ready", "refused", "x"]),
            version in proptest::prelude::any::<i64>(),
            id in proptest::sample::select(vec!["0", "-1", "18446744073709551615", "18446744073709551616", "1e400", "\"7\"", "null", "[]"]),
            text in "(?s).{0,40}",
            hist in "[A-Za-z0-9+/=]{0,80}",
        ) {
            let text = serde_json::to_string(&text).expect("json string");
            let line = format!(
                "{{\"t\":\"{t}\",\"version\":{version},\"token\":{text},\"id\":{id},\"agent\":{id},\
                 \"agents\":{id},\"scenario\":{text},\"targets\":[{text}],\"source_first\":{id},\
                 \"start_unix_us\":{id},\"reason\":{text},\"interval\":\"{hist}\",\"phase\":{text}}}"
            );
            let _ = parse_line::<ToAgent>(line.as_bytes());
            let _ = parse_line::<FromAgent>(line.as_bytes());
            let _ = decode_hist(&hist);
        }
    }
}
