//! The seam between a run and the processes it supervises: the node-loss fault
//! (`[[fault]] kill_node`) kills a node and follows the restarts through [`NodeControl`], which
//! the harness's supervisor (`chatbench_harness::supervisor::Supervisor`) implements. The load
//! generator never starts or stops a server process itself.

use serde::Serialize;

/// What a run needs of the supervisor of the nodes it measures: its events (a node died, was
/// restarted, …), killing a node for a node-loss fault, and the pids to sample.
pub trait NodeControl: Send {
    /// Checks every node; restarts the dead ones whose time has come. Returns the events this
    /// call added.
    fn poll(&mut self) -> Vec<Event>;
    /// Every event so far.
    fn events(&self) -> &[Event];
    /// Kills node `id` (1-based) with SIGKILL. Returns the pid killed.
    fn kill(&mut self, id: u32) -> Option<u32>;
    /// How many nodes there are.
    fn node_count(&self) -> u32;
    /// Whether every node listens on one shared port (one URL for the whole cluster).
    fn shares_one_port(&self) -> bool;
    /// The pids to sample: every running node, and any helper process of the server side (a
    /// shared-port cluster's primary, a private redis-server).
    fn pids(&self) -> Vec<u32>;
}

/// Something that happened to a node.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The node.
    pub node: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Kinds of [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    /// Started (first time) with this pid.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// Killed on purpose by the harness (SIGKILL).
    Killed {
        /// The pid that was killed.
        pid: u32,
    },
    /// Found dead.
    Exited {
        /// The exit status, as text.
        status: String,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// Started again at the same addresses.
    Restarted {
        /// The new pid.
        pid: u32,
        /// Restart count of this node.
        restart: u32,
        /// From finding it dead to its announcing its address again, milliseconds.
        restart_ms: u64,
    },
    /// A restart failed; it will be tried again.
    RestartFailed {
        /// Why.
        reason: String,
    },
    /// Restarted too often: left down.
    GaveUp {
        /// Restarts within the policy's period.
        restarts: u32,
    },
}
