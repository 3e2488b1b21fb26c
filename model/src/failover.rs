//! The `failover` section of `summary.json`: what a node loss cost (loss, latency and
//! reconnects before, during and after the kill). Computing it from what the engine recorded is
//! the load generator's (`chatbench_loadgen::failover`), which documents the periods.

use serde::{Deserialize, Serialize};

use crate::results::Percentiles;

/// Expected deliveries and how many of them did not arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossCount {
    /// Expected deliveries.
    pub expected: u64,
    /// Of which not delivered.
    pub lost: u64,
}

/// The `failover` section of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverOutcome {
    /// The node killed (1-based id).
    pub node: u32,
    /// Its pid when killed; `None` if it was not running.
    pub pid: Option<u32>,
    /// When, seconds since the run started.
    pub at_s: f64,
    /// When, seconds since the measurement window opened.
    pub at_window_s: f64,
    /// Connections open on that node just before the kill.
    pub clients_on_node: u64,
    /// Connections that came back after the kill.
    pub reconnects: u64,
    /// Reconnect attempts after the kill (one per target tried).
    pub reconnect_attempts: u64,
    /// Connections that gave up after the kill.
    pub reconnect_failures: u64,
    /// Whether every client of the killed node came back (reconnects ≥ clients on it).
    pub all_back: bool,
    /// From the kill to the last reconnect, ms (`None` if not all came back).
    pub all_back_ms: Option<f64>,
    /// Per-connection time to reconnect (loss → rejoined), µs, over the whole run.
    pub reconnect_time_us: Option<Percentiles>,
    /// Loss of messages sent from `chatbench_loadgen::failover::LOSS_LEAD` (1 s) before the kill until all were back.
    pub during: LossCount,
    /// Loss of the rest of the window (the steady state, for comparison).
    pub outside: LossCount,
    /// `outside.lost / outside.expected`.
    pub steady_loss_ratio: f64,
    /// p99 latency before the kill, µs.
    pub p99_before_us: Option<u64>,
    /// p99 latency during the failover, µs.
    pub p99_during_us: Option<u64>,
    /// p99 latency after, µs.
    pub p99_after_us: Option<u64>,
    /// The factor of `p99_recovered_ms`.
    pub p99_recovery_factor: f64,
    /// From the kill to the start of the first `P99_RECOVERY_STREAK` (3) seconds in a row whose
    /// p99 is within the factor of *before*, ms (second resolution); `None` if none did within
    /// the window.
    pub p99_recovered_ms: Option<f64>,
    /// Restarts of the killed node by the supervisor during the run.
    pub restarts: u32,
    /// The supervisor's restart time (found dead → address announced), ms.
    pub restart_ms: Option<u64>,
}
