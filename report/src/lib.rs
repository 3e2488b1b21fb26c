//! chatbench reports: the comparison table and its charts (PNG, SVG) built from results files,
//! `report A B`, and the regression gate's judgement (`gate`). Figures come from the results
//! model's figure catalogue (`chatbench_model::figures`); `claims` judges a claims file against
//! a comparison's cells; `run_page` draws one run's charts and page (`report RUN`);
//! `step_summary` is one run's Markdown for a CI job page; `repeats` is how repeatable a
//! repeated step's figures were (median, bootstrap interval, CV).
//!
//! Architecture invariant: reports read results files (`summary.json`, `timeseries.csv`,
//! `latency.hgrm`) only, through `chatbench-model`; they never reach back into the load
//! generator's runtime or the servers (this crate does not depend on `chatbench-loadgen` and
//! compiles no async runtime).
//! Every number in a report carries the path of the file it came from.

pub mod caveats;
pub mod charts;
pub mod claims;
pub mod comparison;
pub mod diff;
pub mod gate;
pub mod html;
pub mod outputs;
pub mod page;
pub mod repeats;
pub mod run_page;
pub mod step_summary;
pub mod sweep_charts;
pub mod sweeps;
