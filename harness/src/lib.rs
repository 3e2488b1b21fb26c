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
//! - [`run_failure_cause`]: why a `chatbench run` child failed, on one line, for compare's
//!   steps and the statistical gate's rounds alike.
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

/// The longest cause of a failed run kept in a report row, in characters.
const MAX_CAUSE: usize = 600;

/// Why a `chatbench run` child failed (a compare step, a statistical gate round), from its
/// stderr: its error message from the first `error:` line on (a server's own last words, which
/// it quotes, included), else its last lines; on one line, at most [`MAX_CAUSE`] characters.
pub fn run_failure_cause(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(3));
    let cause = lines[from..].join(" ");
    match cause.char_indices().nth(MAX_CAUSE) {
        Some((at, _)) => format!("{} …", &cause[..at]),
        None => cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_runs_cause_is_its_error_message_on_one_line() {
        let stderr = "warning: something\nerror: the server exited before announcing its address \
                      (exit status: 2; chatbench serve --no-such-flag); its last output:\n\
                      error: unexpected argument '--no-such-flag' found\n\nUsage: chatbench serve\n\n\
                      For more information, try '--help'.\n";
        assert_eq!(
            run_failure_cause(stderr),
            "error: the server exited before announcing its address (exit status: 2; chatbench \
             serve --no-such-flag); its last output: error: unexpected argument '--no-such-flag' found Usage: chatbench serve For more information, try '--help'."
        );
        assert_eq!(
            run_failure_cause("a\nb\nc\nd\n"),
            "b c d",
            "no error line: the last lines"
        );
        assert_eq!(run_failure_cause(""), "");
        let long = format!("error: {}", "x".repeat(2 * MAX_CAUSE));
        assert_eq!(run_failure_cause(&long).chars().count(), MAX_CAUSE + 2);
    }
}
