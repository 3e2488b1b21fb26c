//! The `chatbench` binary: command-line wiring only. Flags are parsed and validated into the
//! libraries' typed configurations (`chatbench-servers`, `chatbench-loadgen`) in one step;
//! everything else lives in the libraries.
//!
//! Exit codes (also in the README): 0 ok; 1 regression (reserved for `gate`); 2 usage or input
//! error (bad flags, bad scenario, bad URL); 3 the run could not be made or measured nothing
//! (unreachable target, plan does not fit, server failed to start); 4 the run finished but is
//! invalid (the generator, not the target, was the bottleneck); 130 interrupted by Ctrl-C
//! (results written, flagged `interrupted`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Library warnings (a pool worker that could not start, an accept error, …) go to stderr;
    // RUST_LOG=debug (or any tracing filter) shows more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    cli::main()
}
