//! Results files of a run: `summary.json` (versioned schema, `docs/summary.schema.json`),
//! `timeseries.csv` (one row per second per metric) and `latency.hgrm` (HdrHistogram
//! percentile distribution), written into `results/runs/<UTC timestamp>-<scenario>/`.
//!
//! The whole folder is written under a temporary name and renamed into place, and each file is
//! written to a temporary file and renamed, so a reader never sees a half-written run, even if
//! the process dies while writing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::provenance::Provenance;
use crate::sampler::MemoryPerConn;

/// Version of the summary schema; bump on any incompatible change.
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;
/// The schema's identifier, written into every summary.
pub const SUMMARY_SCHEMA_ID: &str = "chatbench.summary/v1";

/// Errors writing results.
#[derive(Debug, Error)]
pub enum ResultsError {
    /// A file or folder could not be written.
    #[error("cannot write results in {path}: {source} (check that the folder is writable and the disk is not full)")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Serialisation failed (a bug).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// Which file.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Whether the run ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// All phases ran.
    Complete,
    /// Stopped early (Ctrl-C): the figures cover what was measured.
    Interrupted,
    /// No connection could be made, or the target died: little or nothing was measured.
    Failed,
}

/// Percentiles of a histogram, in µs. Written as integers; read back from integers or from
/// whole-valued numbers written as floats (`1000.0`, as JSON tools that edit a summary write
/// them), rounded to the nearest µs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    #[serde(deserialize_with = "whole_us")]
    pub count: u64,
    /// Minimum.
    #[serde(deserialize_with = "whole_us")]
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    #[serde(deserialize_with = "whole_us")]
    pub p50: u64,
    /// 90th.
    #[serde(deserialize_with = "whole_us")]
    pub p90: u64,
    /// 99th.
    #[serde(deserialize_with = "whole_us")]
    pub p99: u64,
    /// 99.9th.
    #[serde(deserialize_with = "whole_us")]
    pub p999: u64,
    /// Maximum.
    #[serde(deserialize_with = "whole_us")]
    pub max: u64,
}

/// A count of µs: an integer, or a finite non-negative float rounded to the nearest integer.
fn whole_us<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    match Num::deserialize(d)? {
        Num::Int(v) => Ok(v),
        Num::Float(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(f.round() as u64),
        Num::Float(f) => Err(serde::de::Error::custom(format!(
            "{f} is not a number of microseconds (a whole number ≥ 0)"
        ))),
    }
}

impl Percentiles {
    /// Percentiles of `h`, or `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        Some(Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// The key of [`TargetInfo::settings`] holding the name the user gave the target (`chatbench
/// run --label`); the gate matches runs by it rather than by URL.
pub const TARGET_LABEL_SETTING: &str = "label";

/// The target side of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The URL the clients connected to.
    pub url: String,
    /// The reference architecture, when chatbench started the server (`run --serve`).
    pub arch: Option<String>,
    /// The server process sampled, if any (the first node of a multi-process target).
    pub pid: Option<u32>,
    /// Every process of a multi-process target (the nodes of a local cluster), sampled
    /// together: memory, CPU, threads and descriptors are their sums.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// The server's settings (flags) when chatbench started it.
    pub settings: BTreeMap<String, String>,
    /// CPUs the server was pinned to, if it was.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Every target URL, when the run had more than one (`--target URL,URL,…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// How connections spread over several targets (`span` or `partition`); absent with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_policy: Option<String>,
}

impl TargetInfo {
    /// The processes to sample: `pids` when set, else `pid`.
    pub fn sampled_pids(&self) -> Vec<u32> {
        if self.pids.is_empty() {
            self.pid.into_iter().collect()
        } else {
            self.pids.clone()
        }
    }
}

/// The generator side of a run, with its self-check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorInfo {
    /// Agent processes (1 for a single-process run).
    pub agents: u32,
    /// Source addresses the clients were spread over.
    pub source_addrs: Vec<String>,
    /// WebSocket client buffer settings.
    pub client: BTreeMap<String, u64>,
    /// CPUs the generator could run on.
    pub cpu_affinity: Vec<usize>,
    /// Generator CPU over the measurement window, in cores (1.0 = one core busy).
    pub cpu_cores_measure: Option<f64>,
    /// Pacer wake-up lateness, µs (the generator's own schedule lag).
    pub pacer_lag_us: Option<Percentiles>,
    /// Whether the pacer ran at real-time priority (SCHED_FIFO 1; needs CAP_SYS_NICE).
    pub pacer_realtime: Option<bool>,
    /// Sender lag: actual write start minus intended send time, µs.
    pub send_lag_us: Option<Percentiles>,
    /// Receive lag on the epoll receive path: the read's return minus the kernel's receive
    /// time of what it read, µs, one sample per in-window delivery (none without the path).
    #[serde(default)]
    pub receive_lag_us: Option<Percentiles>,
    /// What deliveries on the epoll receive path were timed to (`[client] arrival`):
    /// `"kernel"` (the kernel's receive time: the receiving thread's wake-up is not in the
    /// latency) or `"read"` (the read's return: it is). Deliveries on the tokio path are always
    /// timed when read. Absent in older results (they timed every delivery when read).
    #[serde(default)]
    pub arrival: Option<crate::scenario::ArrivalClock>,
    /// Reads on the epoll receive path that brought no kernel timestamp (timed to their
    /// return; absent in older results).
    #[serde(default)]
    pub unstamped_reads: Option<u64>,
    /// Generator RSS per open connection, bytes (RSS after the connect phase minus before,
    /// divided by connections).
    pub rss_per_conn_bytes: Option<f64>,
    /// The generator's CPU over the measurement window split by what its threads do, in cores
    /// (read from `/proc/self/task/*/stat` at the window's edges; a thread that ended inside
    /// the window is in no group, so the groups may add up to less than `cpu_cores_measure`).
    /// For a fleet, the sum of the agents' own splits (`distributed.agents[]`) over the
    /// `by_role_agents` agents that reported one. Absent where `/proc` cannot be read, and for
    /// a fleet none of whose agents reported a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores_by_role: Option<ByRole<f64>>,
    /// The generator's threads alive at the window's end, by the same roles (absent with
    /// `cpu_cores_by_role`; for a fleet, summed like it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_by_role: Option<ByRole<u32>>,
    /// For a fleet: how many of its `agents` the split sums (those that reported one the
    /// coordinator believed; an agent lost before its final figures, or older than the field,
    /// is left out). Absent for a one-process run and with `cpu_cores_by_role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_role_agents: Option<u32>,
}

/// A figure for each role a generator thread can have, told by its name: `receive` (the epoll
/// receive path's `chatbench-rx-N`), `pacer` (the pacer, which also writes the pacer path's
/// frames), `tokio` (the runtime's workers and blocking threads) and `other` (the rest: the
/// main thread, the readings thread, the signal thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ByRole<T> {
    /// The epoll receive path's threads.
    pub receive: T,
    /// The pacer's thread.
    pub pacer: T,
    /// The tokio runtime's threads.
    pub tokio: T,
    /// Every other thread.
    pub other: T,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Planned connections.
    pub planned: u64,
    /// Attempts started.
    pub attempted: u64,
    /// Completed the WebSocket handshake.
    pub connected: u64,
    /// Connected and joined (members) or connected (idle): counted as part of the run.
    pub ready: u64,
    /// Failed attempts by kind.
    pub errors: BTreeMap<String, u64>,
    /// Connections the server closed (or reset) during the run, by close code.
    pub closed_by_server: BTreeMap<String, u64>,
    /// Seconds from the first attempt to the last connection ready.
    pub connect_phase_s: f64,
    /// Connections ready per second over the connect phase.
    pub open_rate_per_s: f64,
    /// Seconds the ramp waited because `max_connecting` set-ups were in flight (with agents:
    /// the longest of any agent; each agent's is in `distributed.agents[]`).
    #[serde(default)]
    pub ramp_held_s: f64,
    /// Connect + handshake (+ join) time per connection, µs.
    pub connect_time_us: Option<Percentiles>,
    /// What the reconnect policy did (scenario `[reconnect]`); absent when it was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<ReconnectStats>,
    /// Connections the server closed or broke while the measurement window was on, as the
    /// clients saw it (no `--server-pid` needed).
    #[serde(default)]
    pub dropped_in_window: u64,
    /// Silent sockets (scenario `silent_connections`, slowloris) the generator opened before
    /// the ramp and held through the run; absent when the scenario had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent: Option<u64>,
    /// Connections whose receiving ran on the epoll receive path (`[client] receive_path`;
    /// summed over the agents of a fleet run); absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoll_receivers: Option<u64>,
    /// Senders whose frames the pacer's thread wrote (the send path, `[client]
    /// receive_path`: their connections read on the epoll path; summed over the agents of a
    /// fleet run); absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacer_senders: Option<u64>,
    /// With `pacer_senders`: how many times a due message found its connection's out-buffer
    /// full (the server not reading) and its sender was held, the message still due from its
    /// intended time (the send path's bounded-buffer policy, counted; summed over the agents of
    /// a fleet run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacer_send_held: Option<u64>,
}

/// The reconnect policy's counts over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconnectStats {
    /// Connections lost mid-run (settle to cooldown) that the policy took up.
    pub lost: u64,
    /// Attempts (one per target tried).
    pub attempts: u64,
    /// Connections that came back and rejoined their room.
    pub reconnected: u64,
    /// Connections that gave up.
    pub failed: u64,
    /// Failed attempts by kind.
    pub errors: BTreeMap<String, u64>,
    /// Per connection: from losing it to having rejoined, µs.
    pub time_us: Option<Percentiles>,
}

/// Message accounting over the measurement window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageStats {
    /// Messages sent in the window.
    pub sent: u64,
    /// Σ sent × (readers in the room − 1).
    pub expected: u64,
    /// Unique deliveries of window messages.
    pub delivered: u64,
    /// expected − delivered (never negative; see `extra`).
    pub lost: u64,
    /// Deliveries beyond the expected count (should be 0; a server bug if not).
    pub extra: u64,
    /// Repeated (sender, seq) deliveries, all phases.
    pub duplicated: u64,
    /// Window deliveries slower than `late_after`.
    pub late: u64,
    /// lost / expected.
    pub loss_ratio: f64,
    /// Slow consumers (excluded from expected).
    pub slow_consumers: u64,
    /// `error` frames received from the server, by code.
    pub server_errors: BTreeMap<String, u64>,
    /// Frames from the server that did not parse.
    pub bad_frames: u64,
    /// Echoes: in-window messages delivered back to their own sender by a server that should
    /// fan out to the *other* members. Counted apart: not in `delivered`, not in the latency
    /// histogram (0 with the `echo` profile, where the echo is the delivery).
    #[serde(default)]
    pub echoes: u64,
    /// In-window messages that fell due while their sender's connection was down (closed or
    /// broken by the server, not back): never sent, and counted in `expected` with their
    /// recipients, so each is lost to every other reader of its room.
    #[serde(default)]
    pub unsent_down: u64,
    /// Messages per second sent in the window.
    pub sent_per_s: f64,
    /// Deliveries per second in the window.
    pub delivered_per_s: f64,
}

/// What the sampler saw of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResources {
    /// RSS before the first connection, bytes.
    pub rss_before_bytes: Option<u64>,
    /// RSS after the connect phase settled, bytes.
    pub rss_connected_bytes: Option<u64>,
    /// Peak RSS sampled, bytes.
    pub rss_peak_bytes: Option<u64>,
    /// Memory per connection (user space and kernel apart), per the design's method.
    pub memory_per_conn: Option<MemoryPerConn>,
    /// Server CPU over the measurement window, in cores.
    pub cpu_cores_measure: Option<f64>,
    /// Server CPU-µs per delivered message over the window.
    pub cpu_us_per_delivery: Option<f64>,
    /// Threads at the end of connect.
    pub threads: Option<u64>,
    /// Open descriptors at the end of connect.
    pub open_fds: Option<u64>,
    /// TcpExt ListenOverflows during the run (dropped connection attempts at accept).
    pub listen_overflows: Option<u64>,
    /// The server's own `chatbench_*` counters from `/metrics` at the end of the window (a
    /// reference server's drops, disconnects by reason, …), summed over the target processes (a
    /// cluster's nodes); `None` when not available.
    pub server_metrics: Option<BTreeMap<String, f64>>,
    /// What else ran on the server's CPUs during the measurement window; `None` when the
    /// server was not pinned or not sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_load: Option<OtherLoad>,
    /// How long the server's threads waited for a CPU during the measurement window; `None`
    /// when not sampled or not readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_queue_wait: Option<RunQueueWait>,
}

/// The time the server's threads spent runnable but not running during the measurement window
/// (the scheduler's run-queue wait, `/proc/PID/task/*/schedstat`), summed over its threads.
/// Unlike [`OtherLoad`], which counts whole clock ticks of other work, this is what the server
/// itself lost to it, to the nanosecond: the wake-ups that waited behind a kernel thread, a
/// softirq handed to `ksoftirqd`, another process, or (unpinned) the generator. A thread that
/// exits inside the window takes its wait with it (reference servers keep theirs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunQueueWait {
    /// Seconds waited in the window, summed over the server's threads.
    pub seconds: f64,
    /// `seconds` per second of window: thread-seconds of waiting per second (above 1 only with
    /// several threads waiting at once).
    pub share: f64,
}

impl RunQueueWait {
    /// Above this share of the window spent waiting for a CPU (50 ms a second), the server's
    /// latency carries other work's share. A pinned server on a quiet VM waits 3–10 ms a second.
    pub const LIMIT_SHARE: f64 = 0.05;

    /// The wait in milliseconds per second of window, as it is shown.
    pub fn ms_per_s(&self) -> f64 {
        self.share * 1000.0
    }

    /// Why the server's latency is not its own alone, or `None` when it hardly waited.
    pub fn warning(&self) -> Option<String> {
        (self.share >= Self::LIMIT_SHARE).then(|| {
            format!(
                "machine busy: the server's threads waited for a CPU {:.0} ms per second of the window (other work, or the generator when they share CPUs); its latency includes those waits: rerun on a quiet machine, with the server on CPUs of its own, to quote it",
                self.ms_per_s()
            )
        })
    }
}

/// The run's note when its server did not have its CPUs to itself: other work's ticks on them
/// ([`OtherLoad::warning`]) or, when those say nothing (or cannot be read: the server not
/// pinned apart from the generator), its threads' wait for a CPU ([`RunQueueWait::warning`]).
pub fn busy_note(other: Option<&OtherLoad>, wait: Option<&RunQueueWait>) -> Option<String> {
    other
        .and_then(OtherLoad::warning)
        .or_else(|| wait.and_then(RunQueueWait::warning))
}

/// CPU time on the server's CPUs during the measurement window that was not the server's:
/// other processes (another build, another run), kernel work charged to no process, and time
/// the hypervisor gave the vCPUs to other guests (steal). The server's latency and CPU figures
/// are its own only when this is small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherLoad {
    /// The server's CPUs.
    pub cpus: Vec<usize>,
    /// How busy they were, in cores (`/proc/stat`: user, nice, system, irq, softirq).
    pub busy_cores: f64,
    /// Of that, not the server's processes, in cores.
    pub other_cores: f64,
    /// Stolen by the hypervisor, in cores.
    pub steal_cores: f64,
}

impl OtherLoad {
    /// Above this many cores of other load or steal, the window was not the server's alone.
    pub const LIMIT_CORES: f64 = 0.15;

    /// Why the server's figures are not its own alone, or `None` when the CPUs were quiet.
    pub fn warning(&self) -> Option<String> {
        let (other, steal) = (self.other_cores.max(0.0), self.steal_cores.max(0.0));
        if other < Self::LIMIT_CORES && steal < Self::LIMIT_CORES {
            return None;
        }
        Some(format!(
            "machine busy: other work used {other:.2} core(s) of the server's {} CPU(s) {:?} during the window{}; the server's latency and CPU figures are not its own alone: rerun on a quiet machine to quote them",
            self.cpus.len(),
            self.cpus,
            if steal >= 0.01 {
                format!(" and the hypervisor stole {steal:.2}")
            } else {
                String::new()
            }
        ))
    }
}

/// What one crashing handler took with it (scenario `poison_after`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultOutcome {
    /// The connection that sent `{"t":"panic"}`.
    pub poisoner: String,
    /// When, in seconds since the start of the run.
    pub at_s: f64,
    /// Connections open just before the frame was sent.
    pub open_before: u64,
    /// Connections open at the end of the measurement window.
    pub open_after: u64,
    /// Whether the poisoner's own connection ended.
    pub poisoner_lost: bool,
    /// Other connections that ended between the frame and the end of the window: the blast
    /// radius of one crashing handler.
    pub others_lost: u64,
}

/// Durations of each phase as run, seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Connect.
    pub connect: f64,
    /// Settle.
    pub settle: f64,
    /// Warmup.
    pub warmup: f64,
    /// Measure.
    pub measure: f64,
    /// Cooldown.
    pub cooldown: f64,
}

/// The scenario as run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRecord {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub path: Option<String>,
    /// Its full text.
    pub text: String,
    /// Overrides applied on the command line (`--set key=value`).
    pub overrides: Vec<String>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Always [`SUMMARY_SCHEMA_ID`].
    pub schema: String,
    /// Always [`SUMMARY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Folder name of the run.
    pub run_id: String,
    /// Whether all phases ran.
    pub status: RunStatus,
    /// False when the generator, not the target, limited the run (or nothing was measured).
    pub valid: bool,
    /// Why the run is invalid (empty when valid).
    pub invalid_reasons: Vec<String>,
    /// Caveats a reader must know (e.g. low message rate measures vCPU wake-up).
    pub notes: Vec<String>,
    /// The scenario.
    pub scenario: ScenarioRecord,
    /// The target.
    pub target: TargetInfo,
    /// The generator.
    pub generator: GeneratorInfo,
    /// Where and with what this ran.
    pub provenance: Provenance,
    /// Phase durations.
    pub phases: PhaseTimes,
    /// Connections.
    pub connections: ConnectionStats,
    /// Messages.
    pub messages: MessageStats,
    /// Delivery latency over the window, µs from the intended send time.
    pub latency_us: Option<Percentiles>,
    /// The target's resources.
    pub target_resources: TargetResources,
    /// The fault-injection outcome, when the scenario sets `poison_after`.
    pub fault: Option<FaultOutcome>,
    /// Distributed runs (`run --agents`): per-agent breakdown, lost agents. Absent for a
    /// one-process run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedInfo>,
    /// Node loss (scenario `[[fault]] kill_node`): what the failover cost. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::failover::FailoverOutcome>,
}

/// The distributed part of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributedInfo {
    /// One entry per agent.
    pub agents: Vec<AgentBreakdown>,
    /// Agents lost during the run.
    pub faults: Vec<AgentFault>,
    /// Whether some agent's figures are missing (the totals cover the others).
    pub partial: bool,
    /// Deliveries the agents received during their measurement windows, from every agent
    /// (Σ `agents[].delivered_window_all`): what the server made in the window, the divisor of
    /// `target_resources.cpu_us_per_delivery`.
    #[serde(default)]
    pub delivered_window_all: u64,
    /// Of `messages.delivered`, the in-window deliveries from a sender on one agent to a
    /// receiver on another, judged by the coordinator against what every sender sent.
    #[serde(default)]
    pub delivered_cross_agent: u64,
    /// Error bound of the latencies timed across agents, µs: 0 when every agent ran on one
    /// host (one wall clock); across hosts, from the measured clock offsets' round trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_us: Option<u64>,
}

/// An agent lost during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentFault {
    /// Agent id.
    pub agent: u32,
    /// Its address.
    pub address: String,
    /// Seconds since the start of the run.
    pub at_s: f64,
    /// What happened.
    pub what: String,
}

/// One agent's share of the figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentBreakdown {
    /// Agent id (`a<id>` in connection ids).
    pub agent: u32,
    /// Control address.
    pub address: String,
    /// Its pid (on its host).
    pub pid: u32,
    /// Agent clock minus coordinator clock, µs (positive: the agent's clock is ahead).
    pub clock_offset_us: i64,
    /// Round trip of the ping that measured it, µs (the offset's uncertainty is half of it).
    pub clock_rtt_us: u64,
    /// Connections in its plan.
    pub planned: u64,
    /// Connections ready.
    pub ready: u64,
    /// Failed connection attempts by kind.
    pub connect_errors: BTreeMap<String, u64>,
    /// Window messages sent.
    pub sent: u64,
    /// Expected deliveries of its messages to its receivers.
    pub expected: u64,
    /// Those delivered.
    pub delivered: u64,
    /// Messages sent, all phases.
    pub sent_all: u64,
    /// Deliveries received, all phases, from every agent.
    pub delivered_all: u64,
    /// Deliveries received during its measurement window, from every agent (up to its last
    /// report, for an agent lost on the way).
    #[serde(default)]
    pub delivered_window_all: u64,
    /// Its window latency.
    pub latency_us: Option<Percentiles>,
    /// Its CPU over the window, cores.
    pub cpu_cores_measure: Option<f64>,
    /// Its RSS per connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Seconds its ramp waited for set-up slots (`max_connecting`).
    #[serde(default)]
    pub ramp_held_s: f64,
    /// Most of its connections in set-up at once.
    #[serde(default)]
    pub connecting_peak: u64,
    /// Its senders whose frames its pacer's thread wrote (the send path; the fleet's total is
    /// `generator.pacer_senders`).
    #[serde(default)]
    pub pacer_senders: u64,
    /// How many times one of its due messages found its connection's out-buffer full and its
    /// sender was held (the fleet's total is `generator.pacer_send_held`).
    #[serde(default)]
    pub pacer_send_held: u64,
    /// Its CPU over its window split by what its threads do, cores (its own reading of its
    /// threads, as a one-process run's `generator.cpu_cores_by_role`; the fleet's sum is
    /// `generator.cpu_cores_by_role`). Absent when it sent none: lost before its final
    /// figures, older than the field, or a split the coordinator did not believe (a note says
    /// why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores_by_role: Option<ByRole<f64>>,
    /// Its threads alive at its window's end by role (present with `cpu_cores_by_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_by_role: Option<ByRole<u32>>,
    /// Whether it delivered its final figures.
    pub complete: bool,
}

/// One row of `timeseries.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesRow {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// Phase name.
    pub phase: String,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// The folder name for a run of `scenario` started at `started` (UTC).
pub fn run_id(started: chrono::DateTime<chrono::Utc>, scenario: &str) -> String {
    format!("{}-{}", started.format("%Y%m%dT%H%M%SZ"), scenario)
}

/// Writes the run folder atomically under `root`, returning its path: summary.json,
/// timeseries.csv, latency.hgrm, and `extra` files (name, bytes: `latency.hlog`, the unexpected
/// frames) in the same folder rename. If a folder of that name exists, a numeric suffix is added.
pub fn write_run(
    root: &Path,
    summary: &mut Summary,
    series: &[SeriesRow],
    latency: &Histogram<u64>,
    extra: &[(&str, &[u8])],
) -> Result<PathBuf, ResultsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ResultsError::Io { path, source }
    };
    fs::create_dir_all(root).map_err(io(root))?;
    let mut id = summary.run_id.clone();
    let mut n = 1;
    while root.join(&id).exists() {
        n += 1;
        id = format!("{}-{n}", summary.run_id);
    }
    summary.run_id = id.clone();
    let tmp = root.join(format!(".{id}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let json = serde_json::to_vec_pretty(summary).map_err(|e| ResultsError::Encode {
        what: "summary.json",
        reason: e.to_string(),
    })?;
    write_file_atomic(&tmp.join("summary.json"), &json)?;
    write_file_atomic(&tmp.join("timeseries.csv"), &series_csv(series)?)?;
    write_file_atomic(&tmp.join("latency.hgrm"), hgrm(latency, 1000.0).as_bytes())?;
    for (name, bytes) in extra {
        write_file_atomic(&tmp.join(name), bytes)?;
    }
    let dest = root.join(&id);
    fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsync, rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let io = |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn series_csv(series: &[SeriesRow]) -> Result<Vec<u8>, ResultsError> {
    let enc = |e: csv::Error| ResultsError::Encode {
        what: "timeseries.csv",
        reason: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in series {
        w.serialize(row).map_err(enc)?;
    }
    if series.is_empty() {
        w.write_record(["t_s", "phase", "metric", "value"])
            .map_err(enc)?;
    }
    w.into_inner().map_err(|e| ResultsError::Encode {
        what: "timeseries.csv",
        reason: e.to_string(),
    })
}

/// The HdrHistogram percentile-distribution text (the format of HdrHistogram's
/// `outputPercentileDistribution`, readable by its plotter), values divided by `scale` (1000
/// turns µs into ms).
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / scale;
            let total = v.count_since_last_iteration();
            let _ = total;
            let count = (q * h.len() as f64).round() as u64;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {count:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {count:10}");
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{new_hist, record};

    #[test]
    fn hgrm_has_the_hdrhistogram_layout() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            record(&mut h, v * 10);
        }
        let text = hgrm(&h, 1000.0);
        let first = text.lines().next().expect("header");
        assert!(first.contains("Value") && first.contains("1/(1-Percentile)"));
        // The max is HdrHistogram's highest equivalent value of 10,000 µs at 3 digits.
        assert!(
            text.contains("#[Max     =       10.007, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .expect("rows");
        assert!(last_row.contains("1.000000000000"), "{last_row}");
    }

    #[test]
    fn empty_histogram_still_writes_a_valid_file() {
        let text = hgrm(&new_hist(), 1000.0);
        assert!(text.contains("Total count    =            0"));
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.json");
        write_file_atomic(&p, b"{}").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"{}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn percentiles_read_whole_floats_and_refuse_others() {
        let p: Percentiles = serde_json::from_str(
            r#"{"count":3,"min":1,"mean":2.0,"p50":2,"p90":3,"p99":989.9999999,"p999":3.0,"max":3}"#,
        )
        .expect("whole floats");
        assert_eq!((p.p99, p.p999), (990, 3));
        let bad = r#"{"count":3,"min":1,"mean":2.0,"p50":2,"p90":3,"p99":-1.0,"p999":3,"max":3}"#;
        let e = serde_json::from_str::<Percentiles>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number of microseconds"), "{e}");
    }

    #[test]
    fn busy_note_prefers_other_work_then_the_servers_wait() {
        let busy_cpu = OtherLoad {
            cpus: vec![0],
            busy_cores: 0.9,
            other_cores: 0.5,
            steal_cores: 0.0,
        };
        let quiet_cpu = OtherLoad {
            other_cores: 0.01,
            ..busy_cpu.clone()
        };
        let waited = RunQueueWait {
            seconds: 0.6,
            share: 0.06,
        };
        let hardly = RunQueueWait {
            seconds: 0.05,
            share: 0.005,
        };
        let note = |o: Option<&OtherLoad>, w: Option<&RunQueueWait>| busy_note(o, w);
        assert!(note(Some(&busy_cpu), Some(&waited))
            .is_some_and(|n| n.contains("other work used 0.50 core")));
        // Quiet ticks, or none (unpinned): the wait speaks.
        for o in [Some(&quiet_cpu), None] {
            let n = note(o, Some(&waited)).expect("waited 60 ms/s");
            assert!(
                n.starts_with("machine busy: the server's threads waited for a CPU 60 ms"),
                "{n}"
            );
            assert_eq!(note(o, Some(&hardly)), None, "5 ms/s is a quiet VM");
            assert_eq!(note(o, None), None);
        }
    }
}
