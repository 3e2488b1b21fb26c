//! chatbench load generator: the scenario model, the client engine that opens many WebSocket
//! connections and sends on an open-loop schedule, the pacer, the target sampler, and the
//! results writer.
//!
//! - [`scenario`]: scenario files (TOML) and their validation.
//! - [`plan`]: who each connection is (room, role); pure.
//! - [`schedule`], [`pacer`]: intended send times and the thread that keeps them.
//! - [`target`]: the target URL and one client connection.
//! - [`profile`]: protocol profiles (chatbench, echo, template, socketio, phoenix): how a session
//!   opens, joins, frames messages and reads deliveries.
//! - [`engine`]: the connection tasks and the phases; [`reconnect`]: the reconnect policy and
//!   the node-kill fault; [`failover`]: what a node loss cost, from the per-second figures.
//! - [`stats`]: histograms and counters the tasks record into.
//! - [`sampler`], [`sys`], [`provenance`]: what is read from `/proc` and the host; `readings`:
//!   the coordinator's readings of them, on a thread of their own.
//! - [`run`]: the coordinator of a single-process run; [`results`]: the files it writes;
//!   [`summary`]: the summary's figures, derived alike for one process and for agents.
//! - [`control`]: the coordinator–agent protocol; [`agent`]: `chatbench agent`;
//!   [`coordinator`]: a run spread over agents, merged exactly.
//! - [`launcher`]: starting a reference server as a child process; [`peers`]: the third-party
//!   servers under `servers/peers/` it can start too; [`progress`]: the display.
//!
//! Architecture invariant: this crate never depends on `chatbench-servers`; it reaches a server
//! only over the network (and, for `--serve`, by starting the `chatbench` executable).

pub mod agent;
pub mod control;
pub mod coordinator;
pub mod engine;
pub mod failover;
pub mod launcher;
pub mod pacer;
pub mod peers;
pub mod plan;
pub mod progress;
pub mod provenance;
mod readings;
pub mod run;
pub mod sampler;
pub mod session;
pub mod schedule;
pub mod stats;
pub mod supervisor;
pub mod sys;
pub mod target;
