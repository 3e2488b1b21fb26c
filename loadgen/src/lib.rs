//! chatbench load generator: it measures. The client engine that opens many WebSocket
//! connections and sends on an open-loop schedule, the pacer, the target sampler, the run
//! coordinator (one process, or a fleet of agents), and the run's end of the node-loss fault. What
//! a run is asked to do and what it found (scenarios, profiles' framing, summaries, results
//! files, the figure catalogue) is the results model's, `chatbench_model`.
//!
//! - [`plan`]: who each connection is (room, role); pure.
//! - [`schedule`], [`pacer`]: intended send times and the thread that keeps them.
//! - [`target`]: the target URL and one client connection; [`tls`]: `wss://` (rustls); the
//!   per-connection placeholders and the CSV feeder are the model's (`chatbench_model::placeholder`);
//!   [`session`]: a protocol profile's set-up conversation over it (open, join).
//! - [`engine`]: the connection tasks and the phases; [`failover`]: what a node loss cost,
//!   from the per-second figures.
//! - [`stats`]: histograms and counters the tasks record into.
//! - [`live_metrics`]: `run --metrics-listen`, the per-second figures as a live Prometheus
//!   `/metrics` endpoint.
//! - [`sampler`], [`sys`], [`provenance`]: reading `/proc` and the host; `readings`: the
//!   coordinator's readings of them, on a thread of their own; [`threads`]: the generator's
//!   own CPU over the window split by what its threads do (receive, pacer, tokio, other).
//! - [`lifecycle`]: the one run lifecycle (timeline, engine handle, a second's rows and
//!   progress line) that [`run`], [`agent`] and [`coordinator`] all drive.
//! - [`run`]: the driver of a single-process run (its summary built by
//!   `chatbench_model::summary`, written by `chatbench_model::results`).
//! - [`control`]: the coordinator–agent protocol; [`agent`]: `chatbench agent`;
//!   [`coordinator`]: a run spread over agents, merged exactly.
//! - [`process`]: how a long-lived child is started (pinned, its own process group, dying
//!   with its parent) and stopped (SIGTERM, then SIGKILL after a grace): the coordinator's
//!   local agents and every process `chatbench-harness` starts.
//! - [`faults`]: the node-loss fault's seam ([`faults::NodeControl`]) to the supervisor of the
//!   nodes, which `chatbench-harness` implements; [`progress`]: the display.
//!
//! Architecture invariant: this crate never depends on `chatbench-servers` nor on
//! `chatbench-harness`; it reaches a server only over the network, and starts no server process
//! (`chatbench-harness` does, through this crate's [`process`]).

pub mod agent;
#[doc(hidden)]
pub mod bench;
pub mod control;
pub mod coordinator;
pub mod engine;
pub mod failover;
pub mod fast_msg;
pub mod faults;
pub mod ledger;
pub mod lifecycle;
pub mod live_metrics;
pub mod pacer;
pub mod plan;
pub mod process;
pub mod progress;
pub mod provenance;
mod readings;
pub mod run;
mod rx;
pub mod sampler;
pub mod schedule;
pub mod session;
pub mod slowloris;
pub mod stats;
pub mod sys;
pub mod target;
pub mod threads;
pub mod tls;
mod tx;

/// Appends one masked client WebSocket frame (RFC 6455 §5.2–5.3), as the send path writes it:
/// `chatbench floor`'s plain client sender writes the generator's frames with it.
pub use rx::frame::write_masked;
