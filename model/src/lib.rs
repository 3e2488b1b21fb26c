//! chatbench results model: what a run is asked to do and what it found, as data — the one
//! contract between measuring (`chatbench-loadgen`) and reporting (`chatbench-report`). No
//! async runtime and no sockets: reports build on it without compiling the load generator.
//!
//! - [`scenario`]: scenario files (TOML) and their validation; [`profile`]: the protocol
//!   profiles' options, framing and decoding (pure; the session I/O is the load generator's);
//!   [`reconnect`]: the reconnect policy and the node-kill fault settings.
//! - [`placeholder`]: per-connection placeholders in the upgrade request and the CSV feeder
//!   they read (checked when the scenario is); [`tls`]: the TLS settings as data (`ca_file`).
//! - [`results`]: `summary.json`'s types and reading/writing the results files (atomically);
//!   [`series`]: the time series' metric names, shared by the writers and the readers.
//! - [`summary`]: building a summary from what was measured — the one place that derives figures.
//! - [`figures`]: the figure catalogue — each headline figure's stable key, label, unit, better
//!   direction, how to read it from a summary and how to format it (`docs/figures.md`).
//! - [`provenance`], [`sampler`], [`failover`], [`hist`]: the data a summary records (the host
//!   and build, `/proc` readings and what derives from them alone, a node loss's cost, the
//!   latency histograms' shape); collecting them is the load generator's.
//! - [`hlog`]: `latency.hlog`, the per-second latency histograms as an HdrHistogram interval log.
//! - [`thresholds`]: pass/fail limits on the catalogue's figures (`[thresholds]`,
//!   `--threshold`), the nothing-measured floor every run must clear, and the JUnit report.

pub mod failover;
pub mod figures;
pub mod hist;
pub mod hlog;
pub mod placeholder;
pub mod profile;
pub mod provenance;
pub mod reconnect;
pub mod results;
pub mod sampler;
pub mod scenario;
pub mod series;
pub mod summary;
pub mod thresholds;
pub mod tls;
