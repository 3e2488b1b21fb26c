//! `chatbench floor`'s flags, turned into `chatbench_harness::floor::FloorOptions` (the
//! benchmark itself is `chatbench_harness::floor`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use chatbench_harness::floor::{FloorOptions, Pace};

/// The plainest receiver and sender over loopback, then the generator at the same load.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chatbench floor\n  chatbench floor --rate 20000 --rate 80000 --repeat 3 --arch epoll\n\nExit codes: 0 every row valid, 2 usage error, 3 a step failed, 4 a row invalid (the sending side or the server was the bottleneck)."
)]
pub struct FloorArgs {
    /// Loopback connections (a multiple of --members).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Members per room: the sender's burst size, and the generator's room size.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Deliveries per second (repeatable: one step each).
    #[arg(long = "rate", value_name = "PER_S", default_values_t = [20000.0])]
    rates: Vec<f64>,
    /// Seconds each step measures.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Body bytes of each message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Runs of each step; the table shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Server architecture the generator step runs against (`chatbench run --serve ARCH`).
    #[arg(long, value_name = "ARCH", default_value = "epoll", value_parser = super::arch_names())]
    arch: String,
    /// Measure only the plain receiver and sender.
    #[arg(long)]
    no_generator: bool,
    /// The chatbench binary whose generator is measured (e.g. an older build); default: this one.
    #[arg(long, value_name = "PATH")]
    generator_bin: Option<PathBuf>,
    /// A `[client]` setting for the generator's run (repeatable), passed to it as `--set`, e.g.
    /// `--generator-set client.arrival='"kernel"'`; the floor sets the load itself.
    #[arg(long, value_name = "client.KEY=VALUE")]
    generator_set: Vec<String>,
    /// The writer's pace of a second plain step after each generator run: `server` (the
    /// server's CPU µs per delivery in that run: the receive floor fed as fast as that server
    /// writes), `off`, or microseconds per frame.
    #[arg(long, value_name = "server|off|US", default_value = "server", value_parser = parse_pace)]
    writer_pace: Pace,
    /// Folder for floor.md, floor.json and the generator's run folders.
    #[arg(long, value_name = "DIR", default_value = "results/floor")]
    out: PathBuf,
}

/// Runs the floor benchmark.
pub fn floor(a: FloorArgs) -> anyhow::Result<ExitCode> {
    Ok(chatbench_harness::floor::floor(FloorOptions {
        connections: a.connections,
        members: a.members,
        rates: a.rates,
        seconds: a.seconds,
        payload: a.payload,
        repeat: a.repeat,
        arch: (!a.no_generator).then_some(a.arch),
        generator_bin: a.generator_bin,
        generator_set: a.generator_set,
        pace: a.writer_pace,
        out: a.out,
    })?)
}

fn parse_pace(s: &str) -> Result<Pace, String> {
    s.parse()
        .map_err(|e: chatbench_harness::floor::FloorError| e.to_string())
}
