//! `chatbench compare`: runs a suite of scenarios against every chosen architecture (each
//! server started by `chatbench run --serve`, one process per run, so no run inherits another's
//! heap) and writes the comparison table built from the results files.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use thiserror::Error;

use chatbench_model::results::write_file_atomic;
use chatbench_model::results::{ResultsError, RunStatus};
use chatbench_report::comparison::{
    build_suite, ComparisonProvenance, Runs, Step, StepResult, Superseded,
};
use chatbench_report::outputs;
use chatbench_report::page::ColumnDoc;

use chatbench_servers::{Arch, Backplane};

use crate::columns::ColumnError;
use crate::peers::Peer;
use crate::supervisor::{Program, REDIS_SERVER};

mod retry;

use retry::Outcome;

/// Why `chatbench compare` could not run its suite or write its comparison: a request that
/// cannot be met (exit 2, [`CompareError::is_usage`]) or a comparison that could not be made
/// (exit 3). A step that fails is not an error: it is a row of the Failures section.
#[derive(Debug, Error)]
pub enum CompareError {
    /// `--slo-p99-ms` is not a positive number.
    #[error("--slo-p99-ms {0}: expected a positive number of milliseconds, e.g. --slo-p99-ms 100")]
    Slo(f64),
    /// A bad `--column`.
    #[error(transparent)]
    Column(#[from] ColumnError),
    /// A column needs a program that is not installed.
    #[error("{flag} needs `{}` on PATH (Debian: `apt-get install {}`); the run starts a private instance on a loopback port", program.name, program.debian_package)]
    NotInstalled {
        /// The flag and column, e.g. `--archs cluster-redis`.
        flag: String,
        /// What it needs.
        program: Program,
    },
    /// `current_exe` failed: every step runs this executable.
    #[error("locating the chatbench executable")]
    Exe(#[source] std::io::Error),
    /// The comparison's folders could not be created.
    #[error("creating {}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the comparison (a suite scenario, comparison.md/json, report.html) could not
    /// be written.
    #[error(transparent)]
    Write(#[from] ResultsError),
    /// The claims could not be judged.
    #[error(transparent)]
    Claims(#[from] chatbench_report::claims::ClaimsError),
    /// comparison.json could not be encoded.
    #[error("encoding comparison.json")]
    Encode(#[source] serde_json::Error),
}

impl CompareError {
    /// The user's mistake (flags, a missing program): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CompareError::Slo(_) | CompareError::Column(_) | CompareError::NotInstalled { .. }
        )
    }
}

/// A built-in column: one of this project's servers, as `chatbench run --serve` starts it. Its
/// name is its architecture's ([`Arch::as_str`]) or its backplane's cluster column
/// ([`Backplane::column`]): adding an architecture or a backplane adds its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    /// A single-process architecture.
    Single(Arch),
    /// A cluster of task-per-conn nodes ([`CLUSTER_NODES`] outside the scaling step) whose
    /// rooms span the nodes over this backplane.
    Cluster(Backplane),
}

impl BuiltIn {
    /// Every built-in column in table order: the single-process architectures, then a cluster
    /// over each backplane.
    pub fn all() -> impl Iterator<Item = BuiltIn> {
        Arch::ALL
            .into_iter()
            .map(BuiltIn::Single)
            .chain(Backplane::ALL.into_iter().map(BuiltIn::Cluster))
    }

    /// Its name: in `--archs`, the table, the run folders.
    pub fn name(self) -> &'static str {
        match self {
            BuiltIn::Single(a) => a.as_str(),
            BuiltIn::Cluster(b) => b.column(),
        }
    }

    /// What it stands for on the comparison's page: its architecture's meaning and section of
    /// docs/architectures.md, or for a cluster its backplane's column meaning in the cluster's
    /// section.
    pub fn doc(self) -> ColumnDoc {
        match self {
            BuiltIn::Single(a) => ColumnDoc {
                meaning: a.meaning(),
                anchor: a.doc_anchor(),
            },
            BuiltIn::Cluster(b) => ColumnDoc {
                meaning: b.column_meaning(),
                anchor: Arch::Cluster.doc_anchor(),
            },
        }
    }

    /// What its runs need installed besides chatbench (the supervisor starts it).
    fn needs(self) -> Option<Program> {
        match self {
            BuiltIn::Single(_) => None,
            BuiltIn::Cluster(b) => crate::supervisor::needs(b),
        }
    }
}

impl std::str::FromStr for BuiltIn {
    type Err = String;
    fn from_str(name: &str) -> Result<BuiltIn, String> {
        BuiltIn::all().find(|b| b.name() == name).ok_or_else(|| {
            format!(
                "unknown column {name:?} (expected one of: {})",
                column_names().join(", ")
            )
        })
    }
}

impl std::fmt::Display for BuiltIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Nodes of a cluster column outside the scaling step (the cross-node hop on every message
/// of a room of 100 spread over three nodes).
const CLUSTER_NODES: u32 = 3;

/// Node counts of the scaling step.
const SCALING_NODES: [u32; 3] = [1, 2, 4];

/// The names `--archs` accepts: every built-in column's.
pub fn column_names() -> Vec<&'static str> {
    BuiltIn::all().map(BuiltIn::name).collect()
}

/// What the column called `name` stands for on a comparison's page (the report's
/// [`chatbench_report::page::ColumnDocs`]): a built-in column's ([`BuiltIn::doc`]) or a peer's
/// ([`Peer::meaning`]); `None` for any other name (a column given by name, `--column`).
pub fn column_doc(name: &str) -> Option<ColumnDoc> {
    if let Some(b) = BuiltIn::all().find(|b| b.name() == name) {
        return Some(b.doc());
    }
    Peer::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .map(|p| ColumnDoc {
            meaning: p.meaning(),
            anchor: "",
        })
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The suites (the binary's `--suite` documents each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Idle memory at 5,000 connections, a 40,000 deliveries/s broadcast, one crashing
    /// handler: a few minutes for every architecture on a 2-core machine.
    Quick,
    /// The serious run: memory over an idle ramp (1k … 19k connections) and at 15,000,
    /// capacity in steps until a limit stops it, a load sweep to the knee, rooms of 10, 100
    /// and 1,000, the broadcast step repeated (median), the crashing handler. About 5–6 minutes
    /// per architecture on a 2-core machine.
    Full,
}

impl Suite {
    fn as_str(self) -> &'static str {
        match self {
            Suite::Quick => "quick",
            Suite::Full => "full",
        }
    }
}

/// What `chatbench compare` is asked to do (the binary's `CompareArgs` documents each field as
/// a flag).
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Built-in columns to compare; empty: every one whose needs are installed
    /// (`cluster-redis` needs `redis-server`).
    pub archs: Vec<BuiltIn>,
    /// Which suite to run.
    pub suite: Suite,
    /// Folder that receives the comparison folder.
    pub out: PathBuf,
    /// Latency SLO of the sweeps, p99 in milliseconds.
    pub slo_p99_ms: f64,
    /// Runs of the broadcast step; `None`: the suite's default.
    pub repeats: Option<u32>,
    /// Third-party servers to measure beside the architectures.
    pub peer: Vec<Peer>,
    /// Folder of the peer servers.
    pub peers_dir: PathBuf,
    /// Every step shrunk to seconds (checks the harness end to end).
    pub tiny: bool,
    /// A claims file to judge (its name and text, checked by `chatbench_report::claims::parse`);
    /// `None`: the shipped claims/elixir-vs-node.toml when the comparison has one of its columns.
    pub claims: Option<(String, String)>,
    /// `--column NAME=ws://URL` / `NAME=COMMAND` as given: the user's own servers as columns
    /// (parsed and checked by [`crate::columns`]). With only these, no built-in column is added.
    pub columns: Vec<String>,
}

/// The peers a comparison runs when no column is named: every one whose runtime is
/// installed, and a note naming the others with the one `apt-get install` line that adds what
/// they lack (and `npm ci` when Node.js is there but the peers' modules are not).
/// `installed` says whether a program is on PATH.
fn installed_peers(
    peers_dir: &Path,
    installed: impl Fn(&str) -> bool,
) -> (Vec<Peer>, Option<String>) {
    let node = installed("node");
    let modules = peers_dir.join("node_modules").is_dir();
    let elixir = installed("elixir") && installed("epmd");
    let redis = installed("redis-server");
    let mut peers = Vec::new();
    let mut left_out = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    let mut npm = false;
    for p in Peer::ALL {
        // (installed, what, the Debian packages that add it)
        let mut needs: Vec<(bool, &str, &[&str])> = match p {
            Peer::NodeWs | Peer::SocketIo | Peer::SocketIoCluster => {
                vec![(node, "Node.js", &["nodejs", "npm"])]
            }
            Peer::Elixir | Peer::ElixirCluster => {
                vec![(
                    elixir,
                    "Elixir",
                    &["elixir", "erlang-cowlib", "erlang-jiffy"],
                )]
            }
        };
        if p == Peer::SocketIoCluster {
            needs.push((redis, "redis-server", &["redis-server"]));
        }
        let mut lacks: Vec<&str> = Vec::new();
        for (have, what, pkgs) in needs {
            if !have {
                lacks.push(what);
                for k in pkgs {
                    if !packages.contains(k) {
                        packages.push(k);
                    }
                }
            }
        }
        if node && !modules && !matches!(p, Peer::Elixir | Peer::ElixirCluster) {
            lacks.push("its npm modules");
            npm = true;
        }
        if lacks.is_empty() {
            peers.push(p);
        } else {
            left_out.push(format!("{} ({})", p.as_str(), lacks.join(", ")));
        }
    }
    let note = (!left_out.is_empty()).then(|| {
        let mut fix = Vec::new();
        if !packages.is_empty() {
            fix.push(format!("`apt-get install {}`", packages.join(" ")));
        }
        if npm || packages.contains(&"npm") {
            fix.push(format!("`npm ci --prefix {}`", peers_dir.display()));
        }
        format!(
            "Peer columns left out, their runtime not installed: {}. To add them: {}.",
            left_out.join("; "),
            fix.join(", then ")
        )
    });
    (peers, note)
}

/// Server flags an architecture needs for the suite to measure it at the suite's sizes: the
/// thread pool must have a worker per connection of the largest step (its default, 1,024,
/// answers the rest with 503); the full suite's capacity steps go to 19,000. The slowloris
/// step runs every server with its defaults: what silent sockets do to the default pool is
/// what it measures.
fn arch_args(column: BuiltIn, suite: Suite, step: Step) -> &'static [&'static str] {
    match (column, suite) {
        _ if step == Step::Slowloris => &[],
        (BuiltIn::Single(Arch::ThreadPool), Suite::Quick) => &["--server-arg=--pool-size=5120"],
        (BuiltIn::Single(Arch::ThreadPool), Suite::Full) => &["--server-arg=--pool-size=20000"],
        _ => &[],
    }
}

/// One step of a suite: a scenario run once per point (a sweep) or `repeats` times.
struct SuiteStep {
    step: Step,
    file: &'static str,
    text: &'static str,
    server_args: &'static [&'static str],
    /// `--set` overrides of each point, in order; one empty list for a single-point step.
    points: Vec<Vec<String>>,
    /// Runs per point.
    repeats: u32,
    /// Whether the sweep stops at its first point that does not pass.
    stop_at_first_failure: bool,
    /// Server processes of each point (the scaling step), `None` for the column's default.
    nodes: Vec<Option<u32>>,
}

fn single(
    step: Step,
    file: &'static str,
    text: &'static str,
    server_args: &'static [&'static str],
    repeats: u32,
) -> SuiteStep {
    SuiteStep {
        step,
        file,
        text,
        server_args,
        points: vec![Vec::new()],
        repeats,
        stop_at_first_failure: false,
        nodes: vec![None],
    }
}

fn sweep(
    step: Step,
    file: &'static str,
    text: &'static str,
    points: Vec<Vec<String>>,
    stop_at_first_failure: bool,
) -> SuiteStep {
    let nodes = vec![None; points.len()];
    SuiteStep {
        step,
        file,
        text,
        server_args: &[],
        points,
        repeats: 1,
        stop_at_first_failure,
        nodes,
    }
}

fn sets(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

const POISON_ARGS: &[&str] = &["--server-arg=--fault-injection"];

/// The scaling step: the broadcast load against 1, 2 and 4 server processes.
fn scaling(file: &'static str, text: &'static str) -> SuiteStep {
    SuiteStep {
        step: Step::Scaling,
        file,
        text,
        server_args: &[],
        points: vec![Vec::new(); SCALING_NODES.len()],
        repeats: 1,
        stop_at_first_failure: false,
        nodes: SCALING_NODES.map(Some).to_vec(),
    }
}

/// The steps of a suite, with their points (`tiny`: a few hundred connections).
fn suite_steps(suite: Suite, tiny: bool, repeats: u32) -> Vec<SuiteStep> {
    match suite {
        Suite::Quick => quick_steps(repeats),
        Suite::Full => full_steps(tiny, repeats),
    }
}

/// The quick suite: one run of each single step (`repeats` of the broadcast) and the scaling.
fn quick_steps(repeats: u32) -> Vec<SuiteStep> {
    vec![
        single(
            Step::Idle,
            "quick-idle.toml",
            include_str!("../../scenarios/suite/quick-idle.toml"),
            &[],
            1,
        ),
        single(
            Step::Broadcast,
            "quick-broadcast.toml",
            include_str!("../../scenarios/suite/quick-broadcast.toml"),
            &[],
            repeats,
        ),
        single(
            Step::Poison,
            "quick-poison.toml",
            include_str!("../../scenarios/suite/quick-poison.toml"),
            POISON_ARGS,
            1,
        ),
        single(
            Step::Slowloris,
            "quick-slowloris.toml",
            include_str!("../../scenarios/suite/quick-slowloris.toml"),
            &[],
            1,
        ),
        scaling(
            "quick-scaling.toml",
            include_str!("../../scenarios/suite/quick-scaling.toml"),
        ),
        single(
            Step::NodeLoss,
            "quick-node-loss.toml",
            include_str!("../../scenarios/suite/quick-node-loss.toml"),
            &[],
            1,
        ),
    ]
}

/// The points of the full suite's four sweeps, each point its `--set` overrides.
struct FullSweeps {
    ramp: Vec<Vec<String>>,
    capacity: Vec<Vec<String>>,
    load: Vec<Vec<String>>,
    room: Vec<Vec<String>>,
}

impl FullSweeps {
    /// The sweeps' points: a few small ones under `--tiny`, the measuring ones otherwise.
    fn new(tiny: bool) -> FullSweeps {
        if tiny {
            FullSweeps {
                ramp: conns_points(&[100, 200]),
                capacity: capacity_points(&[100, 200]),
                load: rate_points(&[5.0, 10.0]),
                room: room_points(&[(20, 10, 11.0), (2, 100, 10.0)]),
            }
        } else {
            FullSweeps {
                ramp: conns_points(&[1_000, 5_000, 10_000, 15_000, 19_000]),
                // The last step needs more than one generator process: it runs with
                // `--agents auto` (see `needs_agents`), so what stops it is the server.
                capacity: capacity_points(&[
                    2_500, 5_000, 7_500, 10_000, 12_500, 15_000, 17_500, 19_000, 22_500,
                ]),
                // Up to ≈495,000 deliveries/s: on a 2-vCPU machine the epoll server stays under
                // the SLO past 396,000, where one generator core is all but used
                // (docs/notes/2026-12-07-knee-session13.md), so the sweep ends where one of them
                // does, not at its own last step.
                load: rate_points(&[
                    10.0, 20.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 200.0, 250.0,
                ]),
                room: room_points(&[(200, 10, 22.0), (20, 100, 20.0), (2, 1_000, 20.0)]),
            }
        }
    }
}

/// One point per connection count.
fn conns_points(list: &[u32]) -> Vec<Vec<String>> {
    list.iter()
        .map(|n| sets(&[("connections", n.to_string())]))
        .collect()
}

/// One point per connection count, with a room per 100 connections.
fn capacity_points(list: &[u32]) -> Vec<Vec<String>> {
    list.iter()
        .map(|n| {
            sets(&[
                ("connections", n.to_string()),
                ("rooms", (n / 100).to_string()),
            ])
        })
        .collect()
}

/// One point per message rate per sender.
fn rate_points(list: &[f64]) -> Vec<Vec<String>> {
    list.iter()
        .map(|r| sets(&[("rate_per_sender", format!("{r:.1}"))]))
        .collect()
}

/// One point per (rooms, members, msg/s per room): about the same deliveries/s for each size.
fn room_points(list: &[(u32, u32, f64)]) -> Vec<Vec<String>> {
    list.iter()
        .map(|(r, m, rate)| {
            sets(&[
                ("connections", (r * m).to_string()),
                ("rooms", r.to_string()),
                ("members_per_room", m.to_string()),
                ("rate_per_sender", format!("{rate:.1}")),
            ])
        })
        .collect()
}

/// The full suite: the idle step, the four sweeps, then the single steps and the scaling.
fn full_steps(tiny: bool, repeats: u32) -> Vec<SuiteStep> {
    let points = FullSweeps::new(tiny);
    vec![
        single(
            Step::Idle,
            "full-idle.toml",
            include_str!("../../scenarios/suite/full-idle.toml"),
            &[],
            1,
        ),
        sweep(
            Step::IdleRamp,
            "full-idle-ramp.toml",
            include_str!("../../scenarios/suite/full-idle-ramp.toml"),
            points.ramp,
            true,
        ),
        sweep(
            Step::Capacity,
            "full-capacity.toml",
            include_str!("../../scenarios/suite/full-capacity.toml"),
            points.capacity,
            true,
        ),
        sweep(
            Step::LoadSweep,
            "full-load-sweep.toml",
            include_str!("../../scenarios/suite/full-load-sweep.toml"),
            points.load,
            true,
        ),
        sweep(
            Step::RoomSize,
            "full-room-size.toml",
            include_str!("../../scenarios/suite/full-room-size.toml"),
            points.room,
            false,
        ),
        single(
            Step::Broadcast,
            "full-broadcast.toml",
            include_str!("../../scenarios/suite/full-broadcast.toml"),
            &[],
            repeats,
        ),
        single(
            Step::Poison,
            "full-poison.toml",
            include_str!("../../scenarios/suite/full-poison.toml"),
            POISON_ARGS,
            1,
        ),
        single(
            Step::Slowloris,
            "full-slowloris.toml",
            include_str!("../../scenarios/suite/full-slowloris.toml"),
            &[],
            1,
        ),
        scaling(
            "full-scaling.toml",
            include_str!("../../scenarios/suite/full-scaling.toml"),
        ),
        single(
            Step::NodeLoss,
            "full-node-loss.toml",
            include_str!("../../scenarios/suite/full-node-loss.toml"),
            &[],
            1,
        ),
    ]
}

/// Whether a point's connections need more than one generator process (the descriptor
/// limit): such a point runs with `--agents auto`, local agent processes whose results are
/// merged exactly, so that the generator is not what stops a capacity sweep.
fn needs_agents(
    point: &[String],
    limit: Option<&chatbench_model::provenance::NofileLimit>,
) -> bool {
    let connections = point
        .iter()
        .find_map(|o| o.strip_prefix("connections="))
        .and_then(|n| n.parse::<u64>().ok());
    match (connections, limit) {
        (Some(n), Some(l)) => chatbench_loadgen::sys::fits_in_one_process(n, l).is_err(),
        _ => false,
    }
}

/// `--tiny` overrides per step (the points' own overrides come after and win).
fn tiny_overrides(step: Step, suite: Suite) -> &'static [&'static str] {
    match step {
        Step::Idle => &["connections=200", "settle=\"1s\"", "measure=\"1s\""],
        Step::IdleRamp => &["settle=\"1s\"", "measure=\"1s\""],
        // The full suite's kill comes 8 s into the window (full-node-loss.toml; a `[[fault]]`
        // entry cannot be overridden): 11 s see it through.
        Step::NodeLoss if suite == Suite::Full => &[
            "connections=300",
            "rooms=3",
            "members_per_room=100",
            "settle=\"1s\"",
            "warmup=\"1s\"",
            "measure=\"11s\"",
            "cooldown=\"1s\"",
        ],
        // The kill comes 3 s into the window (quick-node-loss.toml); 6 s see it through.
        Step::NodeLoss => &[
            "connections=300",
            "rooms=3",
            "members_per_room=100",
            "settle=\"1s\"",
            "warmup=\"1s\"",
            "measure=\"6s\"",
            "cooldown=\"1s\"",
        ],
        // Scaling partitions rooms over up to 4 servers: every one needs a room.
        Step::Scaling => &[
            "connections=200",
            "rooms=4",
            "members_per_room=50",
            "settle=\"1s\"",
            "warmup=\"1s\"",
            "measure=\"1s\"",
            "cooldown=\"1s\"",
        ],
        Step::Broadcast | Step::LoadSweep | Step::RoomSize | Step::Capacity => &[
            "connections=200",
            "rooms=2",
            "members_per_room=100",
            "settle=\"1s\"",
            "warmup=\"1s\"",
            "measure=\"1s\"",
            "cooldown=\"1s\"",
        ],
        // The silent sockets stay at 1,500: more than thread-pool's default pool.
        Step::Slowloris => &[
            "connections=50",
            "rooms=5",
            "members_per_room=10",
            "settle=\"1s\"",
            "warmup=\"1s\"",
            "measure=\"1s\"",
            "cooldown=\"1s\"",
        ],
        Step::Poison => &[
            "connections=100",
            "rooms=5",
            "members_per_room=20",
            "measure=\"3s\"",
            "poison_after=\"1s\"",
        ],
    }
}

/// Runs the suite against every column and writes the comparison: exit code 0, or
/// [`crate::EXIT_RUN_FAILED`] when a step failed.
pub fn compare(args: CompareOptions) -> Result<ExitCode, CompareError> {
    if !(args.slo_p99_ms.is_finite() && args.slo_p99_ms > 0.0) {
        return Err(CompareError::Slo(args.slo_p99_ms));
    }
    let chosen = Columns::choose(&args)?;
    let repeats = args.repeats.unwrap_or(match args.suite {
        Suite::Quick => 1,
        Suite::Full => 3,
    });
    let steps = suite_steps(args.suite, args.tiny, repeats);
    let started_at = chatbench_model::provenance::now_rfc3339();
    let folder = Folder::create(&args, &steps)?;
    let suite = SuiteRun {
        args: &args,
        folder: &folder,
        exe: std::env::current_exe().map_err(CompareError::Exe)?,
        // What one generator process may open (the run raises its soft limit to the hard one).
        nofile: chatbench_loadgen::sys::current_nofile()
            .ok()
            .map(|l| chatbench_model::provenance::NofileLimit { soft: l.hard, ..l }),
    };
    let columns = chosen.names();
    let mut runs = Runs::new();
    let mut superseded = Vec::new();
    for column in chosen.each() {
        for s in &steps {
            if !column.skips(s.step, args.suite) {
                suite.run_points(&column, s, &mut runs, &mut superseded);
            }
        }
    }
    let mut notes = chosen.notes;
    notes.extend(superseded.iter().map(Superseded::note));
    write_comparison(
        &args,
        &folder.dir,
        &columns,
        (&runs, superseded),
        notes,
        started_at,
    )
}

/// The columns a comparison runs and the notes their choice leaves for the reader.
struct Columns {
    /// Built-in architectures and cluster columns.
    archs: Vec<BuiltIn>,
    /// Third-party servers.
    peers: Vec<Peer>,
    /// The user's own servers (`--column`).
    user: Vec<crate::columns::UserColumn>,
    /// What was left out and why, and what each user column is.
    notes: Vec<String>,
}

impl Columns {
    /// The columns `args` name, or every built-in one (and every installed peer) when none is
    /// named; a usage error when a column needs `redis-server` and it is not installed.
    fn choose(args: &CompareOptions) -> Result<Columns, CompareError> {
        let builtin: Vec<&str> = column_names()
            .into_iter()
            .chain(Peer::ALL.iter().map(|p| p.as_str()))
            .collect();
        let user = crate::columns::parse_all(&args.columns, &builtin)?;
        let mut notes: Vec<String> = user.iter().map(|u| u.note()).collect();
        let missing = |b: &BuiltIn| b.needs().filter(|p| !on_path(p.name));
        let archs: Vec<BuiltIn> = if args.archs.is_empty() && !user.is_empty() {
            Vec::new()
        } else if args.archs.is_empty() {
            let mut all: Vec<BuiltIn> = BuiltIn::all().collect();
            all.retain(|b| {
                let Some(p) = missing(b) else {
                    return true;
                };
                let note = format!(
                    "The {b} column was left out: `{}` is not installed (Debian: `apt-get install {}`; the run starts a private instance on a loopback port).",
                    p.name, p.debian_package
                );
                eprintln!("compare: {note}");
                notes.push(note);
                false
            });
            all
        } else {
            if let Some((b, program)) = args.archs.iter().find_map(|b| missing(b).map(|p| (b, p))) {
                return Err(CompareError::NotInstalled {
                    flag: format!("--archs {b}"),
                    program,
                });
            }
            args.archs.clone()
        };
        // No column named: every peer whose runtime is installed, too.
        let peers: Vec<Peer> = if args.archs.is_empty() && args.peer.is_empty() && user.is_empty() {
            let (peers, note) = installed_peers(&args.peers_dir, on_path);
            if let Some(note) = note {
                eprintln!("compare: {note}");
                notes.push(note);
            }
            peers
        } else {
            args.peer.clone()
        };
        if peers.contains(&Peer::SocketIoCluster) && !on_path(REDIS_SERVER.name) {
            return Err(CompareError::NotInstalled {
                flag: "--peer socketio-cluster".into(),
                program: REDIS_SERVER,
            });
        }
        Ok(Columns {
            archs,
            peers,
            user,
            notes,
        })
    }

    /// Every column in table order: the architectures, the peers, then the user's.
    fn each(&self) -> Vec<Column<'_>> {
        let archs = self.archs.iter().map(|&b| Column {
            name: b.name().to_string(),
            kind: Kind::BuiltIn(b),
        });
        let peers = self.peers.iter().map(|&p| Column {
            name: p.as_str().to_string(),
            kind: Kind::Peer(p),
        });
        let user = self.user.iter().map(|u| Column {
            name: u.name.clone(),
            kind: Kind::User(u),
        });
        archs.chain(peers).chain(user).collect()
    }

    /// Every column's name in table order.
    fn names(&self) -> Vec<String> {
        self.each().into_iter().map(|c| c.name).collect()
    }
}

/// What kind of server one column is.
enum Kind<'a> {
    /// One of ours.
    BuiltIn(BuiltIn),
    /// A third-party server (those of several processes get the scaling and node-loss steps:
    /// [`Peer::several_nodes`]).
    Peer(Peer),
    /// The user's own (`--column`).
    User(&'a crate::columns::UserColumn),
}

/// One column: its name in the table, and what kind of server it is, for the steps it runs
/// and the flags that start it.
struct Column<'a> {
    name: String,
    kind: Kind<'a>,
}

impl Column<'_> {
    /// Whether this column leaves `step` of `suite` out.
    fn skips(&self, step: Step, suite: Suite) -> bool {
        let cluster = match self.kind {
            Kind::BuiltIn(b) => matches!(b, BuiltIn::Cluster(_)),
            Kind::Peer(p) => p.several_nodes(),
            Kind::User(_) => false,
        };
        let peer = matches!(self.kind, Kind::Peer(_));
        // Scaling: the cluster columns in every suite; single-process architectures (as
        // independent servers, rooms partitioned) in the full suite; never the
        // single-process peers.
        if step == Step::Scaling && !cluster && (peer || suite == Suite::Quick) {
            return true;
        }
        // Node loss: a cluster's; a single server's loss is a whole outage.
        if step == Step::NodeLoss && !cluster {
            return true;
        }
        matches!(self.kind, Kind::User(u) if !u.runs(step))
    }

    /// The `chatbench run` flags that start (or name) this column's server for point `i` of
    /// `s`.
    fn target_args(&self, s: &SuiteStep, i: usize, args: &CompareOptions) -> Vec<String> {
        let nodes = s.nodes[i];
        match self.kind {
            Kind::User(u) => u.run_args(),
            Kind::Peer(peer) => {
                let mut e = vec![
                    "--serve-peer".to_string(),
                    peer.as_str().to_string(),
                    "--peers-dir".into(),
                    args.peers_dir.display().to_string(),
                ];
                if let Some(p) = peer.compare_protocol() {
                    e.extend(["--set".into(), format!("protocol={:?}", p.as_str())]);
                }
                if peer.several_nodes() {
                    let nodes = nodes.unwrap_or(CLUSTER_NODES);
                    e.extend(["--nodes".into(), nodes.to_string()]);
                }
                e.extend(s.server_args.iter().map(|a| a.to_string()));
                e
            }
            Kind::BuiltIn(b) => {
                let mut e = match b {
                    BuiltIn::Cluster(backplane) => vec![
                        "--serve".to_string(),
                        Arch::Cluster.as_str().into(),
                        "--backplane".into(),
                        backplane.as_str().into(),
                        "--nodes".into(),
                        nodes.unwrap_or(CLUSTER_NODES).to_string(),
                    ],
                    BuiltIn::Single(a) => {
                        let mut e = vec!["--serve".to_string(), a.as_str().into()];
                        if let Some(n) = nodes {
                            e.extend(["--nodes".into(), n.to_string()]);
                        }
                        e
                    }
                };
                e.extend(
                    s.server_args
                        .iter()
                        .chain(arch_args(b, args.suite, s.step))
                        .map(|a| a.to_string()),
                );
                e
            }
        }
    }
}

/// The comparison's folder: `runs/` receives every run, `scenarios/` the suite's files.
struct Folder {
    dir: PathBuf,
    runs: PathBuf,
    scenarios: PathBuf,
}

impl Folder {
    /// Creates `<out>/<time>-compare-<suite>[-tiny]/` with its `runs/` and `scenarios/` (the
    /// latter filled with `steps`' scenario files).
    fn create(args: &CompareOptions, steps: &[SuiteStep]) -> Result<Folder, CompareError> {
        let id = format!(
            "{}-compare-{}{}",
            chrono_like_now(),
            args.suite.as_str(),
            if args.tiny { "-tiny" } else { "" }
        );
        let dir = args.out.join(&id);
        let runs = dir.join("runs");
        let scenarios = dir.join("scenarios");
        for d in [&runs, &scenarios] {
            std::fs::create_dir_all(d).map_err(|source| CompareError::CreateDir {
                path: d.clone(),
                source,
            })?;
        }
        for s in steps {
            write_file_atomic(&scenarios.join(s.file), s.text.as_bytes())?;
        }
        Ok(Folder {
            dir,
            runs,
            scenarios,
        })
    }
}

/// What running one column's step needs: the options, the folder, the executable and what
/// one generator process may open.
struct SuiteRun<'a> {
    args: &'a CompareOptions,
    folder: &'a Folder,
    exe: PathBuf,
    nofile: Option<chatbench_model::provenance::NofileLimit>,
}

impl SuiteRun<'_> {
    /// Runs every point of `s` (each `s.repeats` times) against `column`, in order, until a
    /// point that stops the sweep ([`retry::Driver::drive`]); adds each result to `runs`. A run
    /// that a retry replaced is kept out of `runs` and recorded in `superseded`.
    fn run_points(
        &self,
        column: &Column<'_>,
        s: &SuiteStep,
        runs: &mut Runs,
        superseded: &mut Vec<Superseded>,
    ) {
        let mut run = |i: usize| {
            run_step(
                &self.exe,
                &self.folder.scenarios.join(s.file),
                &self.point_args(column, s, i),
                &self.folder.runs,
                &column.name,
            )
        };
        let driver = retry::Driver {
            s,
            column: &column.name,
            slo_p99_ms: self.args.slo_p99_ms,
            base: &self.folder.dir,
        };
        let (ran, replaced) = driver.drive(&mut run);
        runs.entry((column.name.clone(), s.step))
            .or_default()
            .extend(ran);
        superseded.extend(replaced);
    }

    /// Every flag of the run of point `i` of `s` against `column`: the target's, `--agents
    /// auto` when a capacity point needs more than one generator process, then the `--tiny`
    /// and the point's `--set` overrides.
    fn point_args(&self, column: &Column<'_>, s: &SuiteStep, i: usize) -> Vec<String> {
        let point = &s.points[i];
        let mut extra = column.target_args(s, i, self.args);
        if s.step == Step::Capacity && needs_agents(point, self.nofile.as_ref()) {
            extra.extend(["--agents".into(), "auto".into()]);
        }
        let tiny = if self.args.tiny {
            tiny_overrides(s.step, self.args.suite)
        } else {
            &[]
        };
        for o in tiny
            .iter()
            .map(|o| o.to_string())
            .chain(point.iter().cloned())
        {
            extra.push("--set".into());
            extra.push(o);
        }
        extra
    }
}

/// The progress line's verdict on one run of `point` of `s` (a failed run's reason gets the
/// point's overrides in front), how it came out for the sweep and why it did not pass.
fn judge_point(
    s: &SuiteStep,
    point: &[String],
    result: &mut StepResult,
    slo_p99_ms: f64,
) -> (String, Outcome, Option<String>) {
    if let StepResult::Failed { reason } = result {
        if !point.is_empty() {
            *reason = format!("at {}: {reason}", point.join(" "));
        }
    }
    let (outcome, why) = Outcome::of(s.step, result, slo_p99_ms);
    let line = match result {
        StepResult::Ran { summary, .. } => format!(
            "{}{}",
            match summary.status {
                RunStatus::Complete => "complete",
                RunStatus::Interrupted => "interrupted",
                RunStatus::Failed => "failed",
            },
            if summary.valid {
                ""
            } else {
                " (invalid: generator-bound)"
            },
        ),
        StepResult::Failed { reason } => format!("FAILED: {reason}"),
    };
    (line, outcome, why)
}

/// Builds the comparison of `runs`, judges its claims, draws its charts, writes its files into
/// `dir` and prints the table: exit code 0, or [`crate::EXIT_RUN_FAILED`] when a step failed.
fn write_comparison(
    args: &CompareOptions,
    dir: &Path,
    columns: &[String],
    (runs, superseded): (&Runs, Vec<Superseded>),
    notes: Vec<String>,
    started_at: String,
) -> Result<ExitCode, CompareError> {
    let mut comparison = build_suite(
        args.suite.as_str(),
        columns,
        runs,
        dir,
        Some(args.slo_p99_ms),
    );
    comparison.notes.extend(notes);
    comparison.superseded = superseded;
    comparison.tiny = args.tiny;
    comparison.provenance = Some(ComparisonProvenance::of(
        (runs, &comparison.superseded),
        columns,
        dir,
        std::env::args().collect(),
        started_at,
        chatbench_model::provenance::now_rfc3339(),
    ));
    let results = chatbench_report::sweeps::headline(runs);
    let claims = args.claims.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    // The text judged is kept in the folder (claims.toml), so `report DIR` rebuilds the same
    // section once the file has moved or changed.
    let judged = chatbench_report::claims::attach(&mut comparison, claims, &results)?;
    let drawn = draw_charts(dir, columns, &results, runs, args.slo_p99_ms, args.tiny);
    let docs = outputs::docs_link(dir);
    let files = outputs::render(
        &comparison,
        &results,
        &drawn,
        docs.as_deref(),
        column_doc,
        judged,
    )
    .map_err(CompareError::Encode)?;
    outputs::write(dir, &files)?;
    println!("{}", chatbench_report::page::terminal(&comparison));
    if !comparison.failures.is_empty() {
        eprintln!(
            "compare: {} step(s) failed (see the Failures section)",
            comparison.failures.len()
        );
    }
    println!("comparison written to {}", dir.display());
    // The last line: the page to open.
    println!("report: {}", dir.join("report.html").display());
    if comparison.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(crate::EXIT_RUN_FAILED))
    }
}

/// " [connections=5000 (2/8)]", " [repeat 2/3]" or "" — which run of a step this is, for the
/// log.
fn point_label(s: &SuiteStep, point: usize, repeat: u32) -> String {
    let text = point_text(s, point, repeat);
    if text.is_empty() {
        text
    } else {
        format!(" [{text}]")
    }
}

/// "connections=5000 (2/8)", "repeat 2/3", both, or "" for a step of one run.
fn point_text(s: &SuiteStep, point: usize, repeat: u32) -> String {
    let mut parts = Vec::new();
    if s.points.len() > 1 {
        let mut what = s.points[point].clone();
        if let Some(n) = s.nodes[point] {
            what.push(format!("nodes={n}"));
        }
        parts.push(format!(
            "{} ({}/{})",
            what.join(" "),
            point + 1,
            s.points.len()
        ));
    }
    if s.repeats > 1 {
        parts.push(format!("repeat {}/{}", repeat + 1, s.repeats));
    }
    parts.join(", ")
}

/// Draws the charts into `dir/charts/` ([`outputs::draw_charts`]) and says on stderr how many
/// were drawn and which could not be, with why (the table stands either way).
pub fn draw_charts(
    dir: &Path,
    archs: &[String],
    results: &chatbench_report::comparison::Results,
    runs: &Runs,
    slo_p99_ms: f64,
    tiny: bool,
) -> chatbench_report::charts::Drawn {
    let drawn = outputs::draw_charts(dir, archs, results, runs, slo_p99_ms, tiny);
    eprintln!(
        "compare: {} chart files in {}",
        drawn.files.len(),
        dir.join("charts").display()
    );
    for s in &drawn.skipped {
        eprintln!("compare: chart not drawn: {s}");
    }
    drawn
}

/// Runs one step as a child `chatbench run` (`extra` names the server: `--serve ARCH …` or
/// `--serve-peer PEER …`), finds the run folder it wrote and names it with its column
/// ([`with_column`]).
fn run_step(
    exe: &Path,
    scenario: &Path,
    extra: &[String],
    runs: &Path,
    column: &str,
) -> StepResult {
    let before: Vec<PathBuf> = list_dirs(runs);
    let output = Command::new(exe)
        .args(["run", "--progress", "quiet", "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(runs)
        .args(extra)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            return StepResult::Failed {
                reason: format!("cannot start chatbench run: {e}"),
            }
        }
    };
    let new: Vec<PathBuf> = list_dirs(runs)
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    match new.as_slice() {
        [dir] => match StepResult::load(&with_column(dir, column)) {
            Ok(r) => r,
            Err(e) => StepResult::Failed {
                reason: e.to_string(),
            },
        },
        _ => {
            // The whole error, with the server's last words it quotes (a column's command
            // that exited at once says why), on one line.
            let cause = crate::run_failure_cause(&String::from_utf8_lossy(&output.stderr));
            let reason = match cause.trim_start_matches("error: ") {
                "" => "no output",
                r => r,
            };
            StepResult::Failed {
                reason: format!("{reason} (exit {:?})", output.status.code()),
            }
        }
    }
}

/// Renames run folder `dir` (`<time>-<scenario>`) to `<time>-<column>-<scenario>`, so that
/// five `…-quick-idle` folders say whose they are (folder-name order stays the order they
/// ran). Returns the folder's path, the old one if it could not be renamed.
fn with_column(dir: &Path, column: &str) -> PathBuf {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return dir.to_path_buf();
    };
    let Some((time, rest)) = name.split_once('-') else {
        return dir.to_path_buf();
    };
    let to = dir.with_file_name(format!("{time}-{}-{rest}", file_safe(column)));
    if to.exists() || std::fs::rename(dir, &to).is_err() {
        return dir.to_path_buf();
    }
    to
}

/// `column` with anything but letters, digits, `-` and `_` replaced by `_`.
fn file_safe(column: &str) -> String {
    column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn list_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn chrono_like_now() -> String {
    chatbench_model::results::run_id(chrono::Utc::now(), "x")
        .trim_end_matches("-x")
        .to_string()
}

#[cfg(test)]
mod tests {

    /// `--tiny` shortens every step's window: each suite's node-loss scenario must still see
    /// its kill inside the window (a `[[fault]]` entry cannot be overridden), or the step fails.
    #[test]
    fn tiny_node_loss_windows_see_each_suites_kill() {
        for (suite, text) in [
            (
                Suite::Quick,
                include_str!("../../scenarios/suite/quick-node-loss.toml"),
            ),
            (
                Suite::Full,
                include_str!("../../scenarios/suite/full-node-loss.toml"),
            ),
        ] {
            let mut table: toml::Table = text.parse().expect("suite scenario");
            for o in tiny_overrides(Step::NodeLoss, suite) {
                let (k, v) = o.split_once('=').expect("KEY=VALUE");
                let v: toml::Table = format!("v = {v}").parse().expect("value");
                table.insert(k.to_string(), v["v"].clone());
            }
            let merged = toml::to_string(&table).expect("toml");
            if let Err(e) = chatbench_model::scenario::Scenario::parse(&merged, "tiny") {
                panic!("{suite:?}: {e}");
            }
        }
    }
    use super::*;

    #[test]
    fn every_built_in_column_reads_back_from_its_name_and_has_a_meaning() {
        let names = column_names();
        assert_eq!(
            names,
            [
                "task-per-conn",
                "thread-pool",
                "epoll",
                "cluster-mesh",
                "cluster-redis"
            ]
        );
        for b in BuiltIn::all() {
            assert_eq!(b.name().parse::<BuiltIn>(), Ok(b));
            // The page says what each stands for, in its section of docs/architectures.md.
            assert_eq!(column_doc(b.name()), Some(b.doc()));
            assert!(!b.doc().anchor.is_empty(), "{b}");
        }
        let e = "cluster".parse::<BuiltIn>().unwrap_err();
        assert!(e.contains("cluster-mesh"), "{e}");
        assert_eq!(
            BuiltIn::Cluster(Backplane::Redis).needs(),
            Some(REDIS_SERVER)
        );
        assert_eq!(BuiltIn::Cluster(Backplane::Mesh).needs(), None);
    }

    /// Every built-in column and peer, a column given by name and a bare `cluster` (a run
    /// whose backplane is unknown): the page's columns section, as it read when
    /// report/src/page.rs kept the descriptions in a table by name.
    #[test]
    fn the_columns_section_is_as_it_was_for_every_built_in_column_and_peer() {
        use chatbench_report::comparison::{build, render_markdown, Results};
        let mut archs: Vec<String> = column_names().into_iter().map(String::from).collect();
        archs.extend(Peer::ALL.iter().map(|p| p.as_str().to_string()));
        archs.extend(["mine".to_string(), "cluster".to_string()]);
        let c = build("quick", &archs, &Results::new(), Path::new(""));
        let md = render_markdown(&c, column_doc);
        let from = md.find("## The columns\n").expect("a columns section");
        let to = md.find("## The table").expect("a table");
        assert_eq!(&md[from..to], COLUMNS_MD);
        let drawn = chatbench_report::charts::Drawn::default();
        let docs = Some("../docs/architectures.md");
        let html = chatbench_report::html::render(&c, &Results::new(), &drawn, docs, column_doc);
        let from = html.find("<h2 id=\"columns\">").expect("a columns section");
        let to = from + html[from..].find("</dl>\n").expect("its end") + "</dl>\n".len();
        assert_eq!(&html[from..to], COLUMNS_HTML);
    }

    const COLUMNS_MD: &str = r#"## The columns

- **task-per-conn** — one lightweight task per connection (tokio) — the BEAM (Erlang/Elixir) process and Go goroutine model
- **thread-pool** — blocking sockets served by a bounded pool of OS threads — the Tomcat / Puma model
- **epoll** — one thread, one readiness loop, non-blocking sockets — the Node.js / Redis event-loop model
- **cluster-mesh** — several task-per-conn server processes, rooms spanning them over a peer-to-peer mesh backplane — like Erlang's :pg or Phoenix PubSub across nodes
- **cluster-redis** — several task-per-conn server processes, rooms spanning them through a Redis broker — like the Socket.IO Redis adapter
- **node-ws** — a real Node.js server on the `ws` library (third-party peer)
- **socketio** — a real Socket.IO 4 server on Node.js (third-party peer)
- **socketio-cluster** — Socket.IO on Node.js `cluster` workers behind one port, joined by the Redis adapter (third-party peer)
- **elixir** — a real Elixir/OTP server: one process per connection, rooms as :pg groups (third-party peer)
- **elixir-cluster** — several Elixir/OTP nodes, rooms as :pg groups across them (third-party peer)
- **mine** — a server given by name (not a built-in architecture)
- **cluster** — a server given by name (not a built-in architecture)

Each is described in docs/architectures.md of the chatbench repository.

"#;

    const COLUMNS_HTML: &str = r#"<h2 id="columns">The columns</h2>
<dl class="columns">
<dt>task-per-conn</dt><dd>one lightweight task per connection (tokio) — the BEAM (Erlang/Elixir) process and Go goroutine model (<a href="../docs/architectures.md#task-per-conn">docs/architectures.md</a>)</dd>
<dt>thread-pool</dt><dd>blocking sockets served by a bounded pool of OS threads — the Tomcat / Puma model (<a href="../docs/architectures.md#thread-pool">docs/architectures.md</a>)</dd>
<dt>epoll</dt><dd>one thread, one readiness loop, non-blocking sockets — the Node.js / Redis event-loop model (<a href="../docs/architectures.md#epoll">docs/architectures.md</a>)</dd>
<dt>cluster-mesh</dt><dd>several task-per-conn server processes, rooms spanning them over a peer-to-peer mesh backplane — like Erlang&#39;s :pg or Phoenix PubSub across nodes (<a href="../docs/architectures.md#cluster">docs/architectures.md</a>)</dd>
<dt>cluster-redis</dt><dd>several task-per-conn server processes, rooms spanning them through a Redis broker — like the Socket.IO Redis adapter (<a href="../docs/architectures.md#cluster">docs/architectures.md</a>)</dd>
<dt>node-ws</dt><dd>a real Node.js server on the <code>ws</code> library (third-party peer)</dd>
<dt>socketio</dt><dd>a real Socket.IO 4 server on Node.js (third-party peer)</dd>
<dt>socketio-cluster</dt><dd>Socket.IO on Node.js <code>cluster</code> workers behind one port, joined by the Redis adapter (third-party peer)</dd>
<dt>elixir</dt><dd>a real Elixir/OTP server: one process per connection, rooms as :pg groups (third-party peer)</dd>
<dt>elixir-cluster</dt><dd>several Elixir/OTP nodes, rooms as :pg groups across them (third-party peer)</dd>
<dt>mine</dt><dd>a server given by name (not a built-in architecture)</dd>
<dt>cluster</dt><dd>a server given by name (not a built-in architecture)</dd>
</dl>
"#;

    #[test]
    fn a_cluster_column_is_started_over_its_backplane() {
        let args = CompareOptions {
            archs: Vec::new(),
            suite: Suite::Quick,
            out: PathBuf::from("out"),
            slo_p99_ms: 100.0,
            repeats: None,
            peer: Vec::new(),
            peers_dir: PathBuf::from("peers"),
            tiny: false,
            claims: None,
            columns: Vec::new(),
        };
        let steps = suite_steps(Suite::Quick, false, 1);
        let idle = steps
            .iter()
            .find(|s| s.step == Step::Idle)
            .expect("idle step");
        let column = |b: BuiltIn| Column {
            name: b.name().to_string(),
            kind: Kind::BuiltIn(b),
        };
        let redis = column(BuiltIn::Cluster(Backplane::Redis)).target_args(idle, 0, &args);
        assert_eq!(
            redis[..6],
            ["--serve", "cluster", "--backplane", "redis", "--nodes", "3"]
        );
        let pool = column(BuiltIn::Single(Arch::ThreadPool)).target_args(idle, 0, &args);
        assert_eq!(pool[..2], ["--serve", "thread-pool"]);
        assert!(
            pool.contains(&"--server-arg=--pool-size=5120".to_string()),
            "{pool:?}"
        );
        assert!(column(BuiltIn::Single(Arch::Epoll)).skips(Step::NodeLoss, Suite::Quick));
        assert!(!column(BuiltIn::Cluster(Backplane::Mesh)).skips(Step::NodeLoss, Suite::Quick));
    }

    #[test]
    fn a_run_folder_is_named_with_its_column_and_keeps_its_time_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("20261128T012420Z-quick-idle");
        std::fs::create_dir_all(&run).expect("mkdir");
        let named = with_column(&run, "cluster-mesh");
        assert_eq!(
            named.file_name().and_then(|n| n.to_str()),
            Some("20261128T012420Z-cluster-mesh-quick-idle")
        );
        assert!(named.is_dir() && !run.exists());
        // A name taken already: the folder stays where it is.
        let other = dir.path().join("20261128T012420Z-quick-poison");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("20261128T012420Z-epoll-quick-poison"))
            .expect("mkdir");
        assert_eq!(with_column(&other, "epoll"), other);
    }

    #[test]
    fn every_installed_peer_is_a_column_and_the_others_are_named_with_their_install_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Nothing installed: no peer, one apt-get line for all of them.
        let (peers, note) = installed_peers(dir.path(), |_| false);
        assert!(peers.is_empty(), "{peers:?}");
        let note = note.expect("a note");
        for p in Peer::ALL {
            assert!(note.contains(p.as_str()), "{note}");
        }
        assert!(
            note.contains(
                "`apt-get install nodejs npm redis-server elixir erlang-cowlib erlang-jiffy`"
            ),
            "{note}"
        );
        assert!(note.contains("then `npm ci --prefix"), "{note}");
        // Elixir and Node.js but no redis-server and no npm modules yet.
        let (peers, note) = installed_peers(dir.path(), |p| p != "redis-server");
        assert_eq!(peers, [Peer::Elixir, Peer::ElixirCluster]);
        let note = note.expect("a note");
        assert!(
            note.contains("socketio-cluster (redis-server, its npm modules)"),
            "{note}"
        );
        assert!(
            note.contains("`apt-get install redis-server`, then `npm ci"),
            "{note}"
        );
        // Everything: every peer, no note.
        std::fs::create_dir(dir.path().join("node_modules")).expect("mkdir");
        let (peers, note) = installed_peers(dir.path(), |_| true);
        assert_eq!(peers, Peer::ALL);
        assert_eq!(note, None);
    }

    #[test]
    fn only_points_past_one_process_need_agents() {
        let limit = chatbench_model::provenance::NofileLimit {
            soft: 20_000,
            hard: 20_000,
            raised_from: 1_024,
        };
        let point = |n: u32| vec![format!("connections={n}"), "rooms=10".to_string()];
        assert!(!needs_agents(&point(19_000), Some(&limit)));
        assert!(needs_agents(&point(22_500), Some(&limit)));
        assert!(!needs_agents(
            &["rate_per_sender=10.0".to_string()],
            Some(&limit)
        ));
        assert!(!needs_agents(&point(22_500), None));
    }

    #[test]
    fn the_full_capacity_sweep_goes_past_one_generator_process() {
        let steps = suite_steps(Suite::Full, false, 1);
        let cap = steps
            .iter()
            .find(|s| s.step == Step::Capacity)
            .expect("capacity");
        let last = cap.points.last().expect("points");
        assert!(last.contains(&"connections=22500".to_string()), "{last:?}");
    }
}
