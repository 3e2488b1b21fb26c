//! The load generator's reconnect policy (scenario table `[reconnect]`) and the node-kill fault
//! (scenario `[[fault]]`): their settings, defaults, and the backoff schedule a connection
//! follows after it loses its server. Pure: no I/O; the engine (`engine.rs`) runs the policy,
//! the run (`run.rs`) applies the fault.
//!
//! Backoff: before attempt `k` (0-based) a connection waits
//! `min(max_backoff, initial_backoff × 2^k) × (1 − jitter × u)`, `u` uniform in [0, 1): full
//! exponential growth, capped, with a random cut so that thousands of clients that lost the same
//! node do not all come back in the same millisecond. Attempt `k` goes to target
//! `(lost + 1 + k) mod targets` — the next target round-robin from the one it lost, so a refusing
//! target is skipped at the next attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Scenario table `[reconnect]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSettings {
    /// Reconnect a connection lost during settle/warmup/measure/cooldown. Unset: on when the
    /// scenario has a `[[fault]]` that kills a node, off otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Wait before the first attempt (doubled for each further attempt).
    #[serde(with = "crate::scenario::duration_str")]
    pub initial_backoff: Duration,
    /// Cap of the wait between attempts.
    #[serde(with = "crate::scenario::duration_str")]
    pub max_backoff: Duration,
    /// Fraction of each wait cut at random, in [0, 1]: 0 = no jitter, 1 = anywhere from 0 to
    /// the full wait.
    pub jitter: f64,
    /// Attempts before a connection gives up (counted as a reconnect failure).
    pub max_attempts: u32,
    /// Time from losing the connection after which it gives up, attempts or not.
    #[serde(with = "crate::scenario::duration_str")]
    pub deadline: Duration,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        ReconnectSettings {
            enabled: None,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            jitter: 0.5,
            max_attempts: 20,
            deadline: Duration::from_secs(30),
        }
    }
}

impl ReconnectSettings {
    /// Whether connections reconnect, given whether the scenario kills a node.
    pub fn is_enabled(&self, kills_a_node: bool) -> bool {
        self.enabled.unwrap_or(kills_a_node)
    }

    /// The wait before attempt `attempt` (0-based), with `u` in [0, 1) the random draw.
    pub fn delay(&self, attempt: u32, u: f64) -> Duration {
        let factor = 2f64.powi(attempt.min(62) as i32);
        let full =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        let cut = self.jitter.clamp(0.0, 1.0) * u.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(full * (1.0 - cut)).unwrap_or(self.max_backoff)
    }

    /// The target of attempt `attempt` (0-based) for a connection that lost target `lost` of
    /// `targets`: the next ones round-robin.
    pub fn target_for(lost: u32, attempt: u32, targets: u32) -> u32 {
        if targets == 0 {
            return 0;
        }
        ((u64::from(lost) + 1 + u64::from(attempt)) % u64::from(targets)) as u32
    }
}

/// One entry of the scenario's `[[fault]]` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The node to SIGKILL (1-based id of a node the run started: `run --serve cluster`).
    pub kill_node: u32,
    /// When, measured from the start of the measurement window.
    #[serde(with = "crate::scenario::duration_str")]
    pub at: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(initial_ms: u64, max_ms: u64, jitter: f64) -> ReconnectSettings {
        ReconnectSettings {
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            jitter,
            ..ReconnectSettings::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_without_jitter() {
        let s = settings(100, 1000, 0.0);
        let waits: Vec<u128> = (0..7).map(|k| s.delay(k, 0.7).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(s.delay(u32::MAX, 0.3), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_cuts_at_most_its_share() {
        let s = settings(100, 1000, 0.5);
        assert_eq!(s.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(s.delay(0, 1.0), Duration::from_millis(50));
        assert_eq!(s.delay(3, 0.5), Duration::from_millis(600));
        let full = settings(100, 1000, 1.0);
        assert_eq!(full.delay(4, 1.0), Duration::ZERO);
        // Out-of-range draws are clamped, never negative or above the wait.
        assert_eq!(s.delay(0, -3.0), Duration::from_millis(100));
        assert_eq!(s.delay(0, 7.0), Duration::from_millis(50));
    }

    #[test]
    fn targets_go_round_robin_from_the_lost_one() {
        let seq: Vec<u32> = (0..5)
            .map(|k| ReconnectSettings::target_for(0, k, 3))
            .collect();
        assert_eq!(seq, vec![1, 2, 0, 1, 2]);
        assert_eq!(ReconnectSettings::target_for(2, 0, 3), 0);
        assert_eq!(ReconnectSettings::target_for(0, 0, 1), 0);
        assert_eq!(ReconnectSettings::target_for(0, 0, 0), 0);
    }

    #[test]
    fn on_by_default_only_with_a_kill() {
        let d = ReconnectSettings::default();
        assert!(!d.is_enabled(false));
        assert!(d.is_enabled(true));
        let off = ReconnectSettings {
            enabled: Some(false),
            ..d
        };
        assert!(!off.is_enabled(true));
    }
}
