//! chatbench reports: the comparison table built from results files, and (later) charts and
//! the regression gate.
//!
//! Architecture invariant: reports read results files (`summary.json`) only; they never reach
//! back into the load generator's runtime or the servers. Every number in a report carries the
//! path of the file it came from.

pub mod comparison;
