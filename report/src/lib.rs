//! chatbench reports: the comparison table and its charts (PNG, SVG) built from results files,
//! and the regression gate's judgement (`gate`).
//!
//! Architecture invariant: reports read results files (`summary.json`, `timeseries.csv`,
//! `latency.hgrm`) only; they never reach back into the load generator's runtime or the servers.
//! Every number in a report carries the path of the file it came from.

pub mod charts;
pub mod comparison;
pub mod diff;
pub mod gate;
pub mod html;
pub mod sweep_charts;
pub mod sweeps;
