//! chatbench harness: everything that starts and stops processes: launcher, supervisor, peers,
//! target start-up, compare's suites and sweep driver, the gate's measuring side.
//!
//! - Every child is started and ended through `chatbench_loadgen::process` (CPU pinning,
//!   death with its parent, its own process group, SIGTERM then SIGKILL), once for chatbench:
//!   the coordinator's local agents use it too.
//! - [`launcher`]: starting a reference or third-party server as a child process;
//!   [`supervisor`]: a cluster's node processes (restarts, the node-loss fault's kill, through
//!   `chatbench_loadgen::faults::NodeControl`); [`peers`]: the third-party servers under
//!   `servers/peers/`.
//! - [`target_start`]: what `chatbench run --serve`, `--serve-peer` and `--serve-cmd` start, and
//!   the target record of it.
//! - [`compare`]: `chatbench compare`'s suites and sweep driver (one `chatbench run` child per
//!   step); [`columns`]: `compare --column`, a user's own servers as columns.
//! - [`gate`]: the gate's measuring side (callgrind counts, statistical A/B runs, runs against a
//!   baseline); the judgement is `chatbench_report::gate`.
//!
//! The binary turns flags into the option structs here (`CompareOptions`, `gate::Tier`,
//! `FloorOptions`, `TargetStartOptions`) and calls one function per subcommand. Each returns
//! its own error enum (`CompareError`, `GateError`, `FloorError`, `TargetError`), which says
//! whether it is the user's mistake (exit 2); anyhow is the binary's alone.
//!
//! Dependency direction: this crate depends on `chatbench-loadgen` (never the reverse: the run
//! reaches the supervisor only through the `NodeControl` trait loadgen defines).

pub mod columns;
pub mod compare;
pub mod floor;
pub mod gate;
pub mod launcher;
pub mod peers;
pub mod supervisor;
pub mod target_start;

/// Exit code: the run could not be made or measured nothing.
pub const EXIT_RUN_FAILED: u8 = 3;

/// An error in what the user gave us (flags, files): the binary exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error and its causes on one line, each said once: a library error that already quotes its
/// cause (`cannot read X: No such file…`) is not followed by that cause again. The binary's
/// `anyhow::Error` is one too (`e.as_ref()`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
