//! `chatbench compare`'s flags, turned into `chatbench_harness::compare::CompareOptions`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use chatbench_harness::compare::{BuiltIn, CompareOptions, Suite};

/// The names `--archs` accepts, read as the built-in columns they name.
fn column_names() -> impl clap::builder::TypedValueParser<Value = BuiltIn> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(chatbench_harness::compare::column_names())
        .try_map(|name| name.parse::<BuiltIn>())
}

/// The suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteArg {
    /// Idle memory at 5,000 connections, a 40,000 deliveries/s broadcast, one crashing
    /// handler: a few minutes for every architecture on a 2-core machine.
    Quick,
    /// The serious run: memory over an idle ramp (1k … 19k connections) and at 15,000,
    /// capacity in steps until a limit stops it, a load sweep to the knee, rooms of 10, 100
    /// and 1,000, the broadcast step repeated (median), the crashing handler. About 5–6 minutes
    /// per architecture on a 2-core machine.
    Full,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Architectures to compare, comma-separated: the single-process ones, and `cluster-mesh`
    /// / `cluster-redis` (a 3-node cluster whose rooms span the nodes over that backplane;
    /// these columns also get the scaling step, 1/2/4 nodes). Default: every one built in;
    /// `cluster-redis` only when `redis-server` is installed (the run starts a private one).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = column_names())]
    archs: Vec<BuiltIn>,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = SuiteArg::Quick)]
    suite: SuiteArg,
    /// Folder that receives the comparison folder.
    #[arg(long, value_name = "DIR", default_value = "results/runs")]
    out: PathBuf,
    /// Latency SLO of the sweeps (capacity, load sweep): a step passes with p99 at most this
    /// many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = chatbench_report::sweeps::DEFAULT_SLO_P99_MS)]
    slo_p99_ms: f64,
    /// How many times the broadcast step runs (each a fresh server); the table shows the
    /// median run by p99 and the range. Default: 1 in the quick suite, 3 in the full one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    repeats: Option<u32>,
    /// Third-party servers to measure beside the architectures, comma-separated (from
    /// servers/peers/, Node.js: `node-ws`, `socketio`, `socketio-cluster`; Elixir: `elixir`,
    /// `elixir-cluster`); each gets a column, measured with the same sampler. Default, when
    /// neither --archs nor --peer is given: every peer whose runtime is installed (a note
    /// names the others and the `apt-get install` line that adds them).
    /// `socketio-cluster` (3 workers over a private redis-server) and `elixir-cluster` (3 nodes
    /// joined by distributed Erlang) also get the cluster columns' scaling (1/2/4 nodes) and
    /// node-loss steps. Their poison step runs them with
    /// `--fault-injection` (every peer has it): the Node.js peers
    /// throw from the message handler, uncaught, as a plain Node server does; the Elixir peer
    /// raises in that connection's process.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::peer_parser())]
    peer: Vec<chatbench_harness::peers::Peer>,
    /// Folder of the peer servers (package.json, node_modules: `npm ci --prefix servers/peers`).
    #[arg(long, value_name = "DIR", default_value = "servers/peers")]
    peers_dir: PathBuf,
    /// Shrink every step to a few hundred connections and 1–3 s windows: checks the harness
    /// end to end in seconds (the tests use it). The figures are not meaningful.
    #[arg(long)]
    tiny: bool,
    /// A claims file (docs/claims.md) to judge from the comparison's cells: its Claims section
    /// heads comparison.md and report.html, and the text judged is kept in the folder as
    /// claims.toml (for `report DIR`). Default: the shipped claims/elixir-vs-node.toml when the
    /// comparison has one of its columns.
    #[arg(long, value_name = "FILE")]
    claims: Option<PathBuf>,
    /// Your own server as a column (repeatable), to A/B two builds of it: NAME=ws://HOST:PORT/PATH
    /// for one already running (every step runs against it; not sampled), or NAME=COMMAND to
    /// start it for every run (as `run --serve-cmd`: split on spaces, it prints its HOST:PORT
    /// first), e.g. --column main="./main/my-server --port 0" --column next="./next/my-server
    /// --port 0". The crashing-handler and cluster steps are not run on these. With only
    /// --column, no built-in or peer column is added.
    #[arg(long = "column", value_name = "NAME=URL|COMMAND")]
    columns: Vec<String>,
}

/// `chatbench compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    // A claims file is checked before anything is measured.
    let claims = super::report::read_claims(args.claims.as_deref())?;
    Ok(chatbench_harness::compare::compare(CompareOptions {
        archs: args.archs,
        suite: match args.suite {
            SuiteArg::Quick => Suite::Quick,
            SuiteArg::Full => Suite::Full,
        },
        out: args.out,
        slo_p99_ms: args.slo_p99_ms,
        repeats: args.repeats,
        peer: args.peer,
        peers_dir: args.peers_dir,
        tiny: args.tiny,
        claims,
        columns: args.columns,
    })?)
}
