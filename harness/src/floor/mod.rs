//! `chatbench floor`: what the kernel alone costs to move the generator's load, measured back
//! to back with the generator's own cost at the same load, so that their ratio comes from one
//! run on one machine (issue 18; docs/methodology.md quotes it).
//!
//! Owns the steps and what is made of them. Each turn of a rate runs:
//! - the plain step ([`plain_step`], module `plain`): the plainest epoll receiver and
//!   one-write-per-frame sender over `N` loopback connections, the sender's bursts back to
//!   back; each thread's own CPU per frame is the receive floor and the send floor;
//! - the generator step ([`generator_step`]): `chatbench run --serve ARCH` at the same
//!   deliveries per second over the same connections and room size; the generator's CPU per
//!   delivery from its summary;
//! - the client send step ([`client_send_step`], module `client_send`): the plainest client
//!   sending the generator step's messages (one timed `write` each, from the receiver's CPU)
//!   into the plainest server and the plain receiver; the client's CPU per delivery is the
//!   client send floor;
//! - the paced step ([`Pace`]): the plain step again, its writer at the server's pace in that
//!   generator run (or a fixed one), since the receive floor depends on how fast its writer is;
//! - the target step ([`target_step`], module `target`): the plainest client (the client
//!   sender and the plain receiver) against the generator step's own server at the same load;
//!   what it pays is what any client of that server pays, so the generator over it is the
//!   instrument's own share.
//!
//! Then the medians per row, the ratios and the tables. On two or more CPUs the sender and
//! the server run on the first CPU, the receiver and the generator on the second (as
//! `run --serve` pins them).
//!
//! A row is invalid when the sending side (the plain sender, the plain client sender, or the
//! server) was the bottleneck: it fell behind the rate, lost frames, or used ≥ 90 % of its core.

mod client_send;
mod plain;
mod target;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use chatbench_model::results::Summary;

pub use client_send::{client_send_step, ClientSendRun};
pub use plain::{plain_step, PlainRun};
pub use target::{target_step, TargetRun};

/// Why `chatbench floor` could not measure: a bad option (exit 2, [`FloorError::is_usage`]) or
/// a step that failed (exit 3), each naming what and where.
#[derive(Debug, Error)]
pub enum FloorError {
    /// `--connections` and `--members` do not make whole rooms.
    #[error("--connections must be a multiple of --members, and --members at least 2")]
    Rooms,
    /// Too many connections for one process.
    #[error("--connections is at most 100000 (two sockets each, in one process)")]
    TooManyConnections,
    /// A `--rate` out of range.
    #[error("--rate must be between 1 and 2000000 deliveries/s")]
    Rate,
    /// `--seconds` out of range.
    #[error("--seconds must be between 1 and 120")]
    Seconds,
    /// `--repeat` out of range.
    #[error("--repeat must be between 1 and 9")]
    Repeat,
    /// `--payload` too large.
    #[error("--payload is at most 4096 bytes")]
    Payload,
    /// A `--writer-pace` out of range.
    #[error(
        "--writer-pace must be `server`, `off`, or microseconds per frame between 0.1 and 1000 \
         (e.g. --writer-pace 8.5)"
    )]
    Pace,
    /// A `--generator-set` that is not `client.KEY=VALUE`.
    #[error(
        "--generator-set {0:?}: expected client.KEY=VALUE, e.g. --generator-set \
         client.arrival='\"kernel\"' (the floor sets the load itself; only the generator's \
         [client] settings may differ)"
    )]
    GeneratorSet(String),
    /// One step of a rate failed.
    #[error("the {step} step")]
    Step {
        /// `plain`, `client send`, `generator`, `target` or `paced plain`.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<FloorError>,
    },
    /// The loopback listener could not be bound.
    #[error("binding 127.0.0.1:0")]
    Bind(#[source] std::io::Error),
    /// A loopback connection could not be made.
    #[error("connecting pair {pair} (out of descriptors? raise `ulimit -n`)")]
    Connect {
        /// Pairs made before it.
        pair: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A loopback connection could not be accepted.
    #[error("accepting")]
    Accept(#[source] std::io::Error),
    /// A loopback socket could not be set up (address, no-delay, timeout, non-blocking).
    #[error("setting up a loopback socket")]
    Socket(#[source] std::io::Error),
    /// A thread of the plain step panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The plain receiver failed.
    #[error("receiving")]
    Receive(#[source] std::io::Error),
    /// The plain sender failed.
    #[error("sending")]
    Send(#[source] std::io::Error),
    /// `current_exe` failed: the generator step runs this executable by default.
    #[error("locating the chatbench executable")]
    Exe(#[source] std::io::Error),
    /// A file or folder could not be created, cleared, written or read.
    #[error("{what} {}", path.display())]
    File {
        /// `creating`, `clearing`, `writing`, `reading`.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// floor.json could not be encoded.
    #[error("encoding floor.json")]
    Encode(#[source] serde_json::Error),
    /// The generator's run could not be started.
    #[error("running {}", bin.display())]
    Spawn {
        /// The chatbench executable.
        bin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The generator's run failed (neither valid nor generator-limited).
    #[error("{} run failed ({status})", bin.display())]
    RunFailed {
        /// The chatbench executable.
        bin: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// The run's summary.json is not a summary.
    #[error("parsing {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The server of the target step could not be started.
    #[error("starting the server")]
    Launch(#[source] crate::launcher::LaunchError),
    /// A connection of the target step could not be set up.
    #[error("setting up connection {conn} to the server")]
    TargetSetup {
        /// Connections set up before it.
        conn: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server answered a connection's upgrade or `join` with something else.
    #[error(
        "connection {conn}: the server answered the WebSocket upgrade or the `join` with \
         {reply:?}, not `101` and `joined`"
    )]
    TargetRefused {
        /// Connections set up before it.
        conn: usize,
        /// The first line of what it answered.
        reply: String,
    },
    /// A target step failed, and the server had said something on stderr (what failed is
    /// the source).
    #[error("the server's last words: {tail}")]
    TargetSaid {
        /// What failed.
        source: Box<FloorError>,
        /// The end of the server's stderr.
        tail: String,
    },
    /// The run wrote no run folder.
    #[error("{}: the run wrote no folder", .0.display())]
    NoRunFolder(PathBuf),
    /// The run wrote several run folders.
    #[error("{}: more than one run folder", .0.display())]
    SeveralRunFolders(PathBuf),
    /// The summary lacks the generator's CPU.
    #[error("{0}: the summary has no generator CPU")]
    NoGeneratorCpu(String),
    /// The run delivered nothing.
    #[error("{0}: nothing was delivered")]
    NothingDelivered(String),
}

impl FloorError {
    /// The user's mistake (an option out of range): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FloorError::Rooms
                | FloorError::TooManyConnections
                | FloorError::Rate
                | FloorError::Seconds
                | FloorError::Repeat
                | FloorError::Payload
                | FloorError::Pace
                | FloorError::GeneratorSet(_)
        )
    }

    fn file(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FloorError {
        let path = path.to_path_buf();
        move |source| FloorError::File { what, path, source }
    }

    fn in_step(step: &'static str) -> impl FnOnce(FloorError) -> FloorError {
        move |e| FloorError::Step {
            step,
            source: Box::new(e),
        }
    }
}

/// What `chatbench floor` is asked to do (the binary's flags document each field).
#[derive(Debug, Clone)]
pub struct FloorOptions {
    /// Loopback connections.
    pub connections: usize,
    /// Members per room (burst size).
    pub members: usize,
    /// Deliveries (frames) per second, one step each.
    pub rates: Vec<f64>,
    /// Seconds each step measures.
    pub seconds: u64,
    /// Body bytes of each message.
    pub payload: usize,
    /// Runs of each step (the table shows the median).
    pub repeat: usize,
    /// Server architecture of the generator step; `None` skips that step.
    pub arch: Option<String>,
    /// The chatbench binary whose generator is measured; default: this executable.
    pub generator_bin: Option<PathBuf>,
    /// `client.KEY=VALUE` overrides passed to the generator's run as `--set` (its `[client]`
    /// settings: the receive path, its threads, what arrivals are timed to).
    pub generator_set: Vec<String>,
    /// The writer's pace of the second, paced plain step.
    pub pace: Pace,
    /// Where to write floor.json and floor.md.
    pub out: PathBuf,
}

/// The pace of the floor's paced plain step: after each generator run, the plain receiver is
/// measured again, fed by a writer that writes one frame every `pace` within a burst instead
/// of back to back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The server's own pace in the generator run just before: its CPU µs per delivery (its
    /// pace within a fan-out while it is busy). No paced step without a generator step.
    Server,
    /// No paced step.
    Off,
    /// This many µs per frame, in every run.
    Fixed(f64),
}

impl std::str::FromStr for Pace {
    type Err = FloorError;

    fn from_str(s: &str) -> Result<Pace, FloorError> {
        match s {
            "server" => Ok(Pace::Server),
            "off" => Ok(Pace::Off),
            _ => match s.parse::<f64>() {
                Ok(us) if (0.1..=1000.0).contains(&us) => Ok(Pace::Fixed(us)),
                _ => Err(FloorError::Pace),
            },
        }
    }
}

impl Pace {
    /// The pace of a paced run after `generator` (the generator run of the same turn, if any):
    /// `None` for no paced run.
    fn after(self, generator: Option<&GeneratorRun>) -> Option<Duration> {
        let us = match self {
            Pace::Off => return None,
            Pace::Fixed(us) => us,
            Pace::Server => {
                let g = generator?;
                g.server_cores? * 1e6 / g.delivered_per_s.max(1e-9)
            }
        };
        (us.is_finite() && us > 0.0).then(|| Duration::from_secs_f64(us / 1e6))
    }
}

/// Share of a core above which the sending side is called the bottleneck.
const SATURATED: f64 = 0.9;
/// Share of the asked rate the sending side must reach.
const RATE_KEPT: f64 = 0.97;

/// One run of the generator at the same load.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorRun {
    /// Deliveries per second asked.
    pub rate: f64,
    /// Deliveries per second in the window.
    pub delivered_per_s: f64,
    /// Generator CPU per delivery, µs.
    pub gen_us: f64,
    /// Of which its receive threads' (`chatbench-rx-N`), µs per delivery: from the run's
    /// `generator.cpu_cores_by_role` (absent when the run could not split its CPU by thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_us: Option<f64>,
    /// Of which its pacer's, µs per delivery (as `receive_us`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacer_us: Option<f64>,
    /// Server CPU over the window, cores.
    pub server_cores: Option<f64>,
    /// Loss ratio.
    pub loss_ratio: f64,
    /// The run folder.
    pub run_dir: String,
    /// Why the server side was the bottleneck (empty: valid).
    pub invalid: Vec<String>,
    /// The run's own invalid reasons (generator-limited), if any.
    pub run_invalid: Vec<String>,
}

/// One rate's runs and medians.
#[derive(Debug, Clone, Serialize)]
pub struct RateRow {
    /// Deliveries per second.
    pub rate: f64,
    /// The plain runs.
    pub plain: Vec<PlainRun>,
    /// The generator runs.
    pub generator: Vec<GeneratorRun>,
    /// Median receive floor, µs per delivery (valid runs).
    pub recv_floor_us: Option<f64>,
    /// Median send floor, µs per frame (valid runs).
    pub send_floor_us: Option<f64>,
    /// Median generator CPU per delivery, µs (valid runs).
    pub generator_us: Option<f64>,
    /// Median of the generator's receive threads' CPU per delivery, µs (valid runs that split
    /// their CPU by thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_us: Option<f64>,
    /// Median of the generator's pacer's CPU per delivery, µs (as `receive_us`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacer_us: Option<f64>,
    /// Generator ÷ receive floor.
    pub ratio: Option<f64>,
    /// The plain client sender's runs at the generator step's message rate.
    pub client_send: Vec<ClientSendRun>,
    /// Median client send floor of its valid runs, µs per delivery.
    pub client_send_floor_us: Option<f64>,
    /// Generator ÷ (receive floor + client send floor): the generator against the plainest
    /// client that both receives and sends its load.
    pub whole_ratio: Option<f64>,
    /// The paced plain runs (the receive floor fed at a pace, [`Pace`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paced: Vec<PlainRun>,
    /// Median pace of the valid paced runs, µs per frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pace_us: Option<f64>,
    /// Median receive floor of the valid paced runs, µs per delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced_floor_us: Option<f64>,
    /// Generator ÷ the paced receive floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced_ratio: Option<f64>,
    /// The plainest client's runs against the generator step's server ([`target_step`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<TargetRun>,
    /// Median receive CPU per frame of its valid runs, µs: the receive floor against the
    /// server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_recv_us: Option<f64>,
    /// Median send CPU per delivery of its valid runs, µs: the client send floor against the
    /// server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_send_us: Option<f64>,
    /// Generator ÷ (target receive + target send): the generator against the plainest client
    /// of the same server at the same load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ratio: Option<f64>,
}

impl RateRow {
    /// A row with no runs yet.
    fn new(rate: f64) -> RateRow {
        RateRow {
            rate,
            plain: Vec::new(),
            generator: Vec::new(),
            recv_floor_us: None,
            send_floor_us: None,
            generator_us: None,
            receive_us: None,
            pacer_us: None,
            ratio: None,
            client_send: Vec::new(),
            client_send_floor_us: None,
            whole_ratio: None,
            paced: Vec::new(),
            pace_us: None,
            paced_floor_us: None,
            paced_ratio: None,
            target: Vec::new(),
            target_recv_us: None,
            target_send_us: None,
            target_ratio: None,
        }
    }

    /// The medians over the valid runs, and the ratios.
    fn summarise(&mut self) {
        let valid = |p: &&PlainRun| p.invalid.is_empty();
        self.recv_floor_us = median(self.plain.iter().filter(valid).map(|p| p.recv_us).collect());
        self.send_floor_us = median(self.plain.iter().filter(valid).map(|p| p.send_us).collect());
        let valid_gen = || self.generator.iter().filter(|g| g.invalid.is_empty());
        self.generator_us = median(valid_gen().map(|g| g.gen_us).collect());
        self.receive_us = median(valid_gen().filter_map(|g| g.receive_us).collect());
        self.pacer_us = median(valid_gen().filter_map(|g| g.pacer_us).collect());
        self.ratio = self
            .generator_us
            .zip(self.recv_floor_us)
            .map(|(g, r)| g / r);
        self.client_send_floor_us = median(
            self.client_send
                .iter()
                .filter(|c| c.invalid.is_empty())
                .map(|c| c.send_us_per_delivery)
                .collect(),
        );
        self.whole_ratio = self
            .generator_us
            .zip(self.recv_floor_us.zip(self.client_send_floor_us))
            .map(|(g, (r, c))| g / (r + c));
        let paced = || self.paced.iter().filter(valid);
        self.pace_us = median(paced().filter_map(|p| p.pace_us).collect());
        self.paced_floor_us = median(paced().map(|p| p.recv_us).collect());
        self.paced_ratio = self
            .generator_us
            .zip(self.paced_floor_us)
            .map(|(g, r)| g / r);
        let target = || self.target.iter().filter(|t| t.invalid.is_empty());
        self.target_recv_us = median(target().map(|t| t.recv_us).collect());
        self.target_send_us = median(target().map(|t| t.send_us_per_delivery).collect());
        self.target_ratio = self
            .generator_us
            .zip(self.target_recv_us.zip(self.target_send_us))
            .map(|(g, (r, c))| g / (r + c));
    }

    /// Whether any run of the row is invalid.
    fn any_invalid(&self) -> bool {
        self.plain
            .iter()
            .chain(&self.paced)
            .any(|p| !p.invalid.is_empty())
            || self.client_send.iter().any(|c| !c.invalid.is_empty())
            || self.target.iter().any(|t| !t.invalid.is_empty())
            || self.generator.iter().any(|g| !g.invalid.is_empty())
    }
}

/// One rate's runs: `repeat` turns of the plain step, the client send step, the generator step
/// and the paced step.
fn measure_row(
    o: &FloorOptions,
    rate: f64,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<RateRow, FloorError> {
    let mut row = RateRow::new(rate);
    for i in 0..o.repeat {
        let turn = format!("floor: {rate} deliveries/s, run {} of {}", i + 1, o.repeat);
        eprintln!("{turn}: plain receiver");
        row.plain.push(
            plain_step(o, rate, None, send_cpu, recv_cpu).map_err(FloorError::in_step("plain"))?,
        );
        eprintln!("{turn}: plain client sender");
        row.client_send.push(
            client_send_step(o, rate, send_cpu, recv_cpu)
                .map_err(FloorError::in_step("client send"))?,
        );
        if let Some(arch) = &o.arch {
            eprintln!("{turn}: generator");
            row.generator
                .push(generator_step(o, arch, rate, i).map_err(FloorError::in_step("generator"))?);
            eprintln!("{turn}: plain client of the {arch} server");
            row.target.push(
                target_step(o, arch, rate, send_cpu, recv_cpu)
                    .map_err(FloorError::in_step("target"))?,
            );
        }
        let generator = row.generator.get(i);
        if let Some(pace) = o.pace.after(generator) {
            eprintln!(
                "{turn}: plain receiver, the writer at {:.2} µs per frame",
                pace.as_secs_f64() * 1e6
            );
            row.paced.push(
                plain_step(o, rate, Some(pace), send_cpu, recv_cpu)
                    .map_err(FloorError::in_step("paced plain"))?,
            );
        }
    }
    row.summarise();
    Ok(row)
}

fn median(v: Vec<f64>) -> Option<f64> {
    chatbench_report::gate::stats::median(&v)
}

/// Checks the options; a usage error names the flag.
fn validate(o: &FloorOptions) -> Result<(), FloorError> {
    if o.members < 2 || o.connections < o.members || !o.connections.is_multiple_of(o.members) {
        return Err(FloorError::Rooms);
    }
    if o.connections > 100_000 {
        return Err(FloorError::TooManyConnections);
    }
    if o.rates.is_empty() || o.rates.iter().any(|r| !(1.0..=2_000_000.0).contains(r)) {
        return Err(FloorError::Rate);
    }
    if !(1..=120).contains(&o.seconds) {
        return Err(FloorError::Seconds);
    }
    if !(1..=9).contains(&o.repeat) {
        return Err(FloorError::Repeat);
    }
    if o.payload > 4096 {
        return Err(FloorError::Payload);
    }
    if let Some(bad) = o.generator_set.iter().find(|kv| {
        !kv.split_once('=')
            .is_some_and(|(k, _)| k.len() > "client.".len() && k.starts_with("client."))
    }) {
        return Err(FloorError::GeneratorSet(bad.clone()));
    }
    Ok(())
}

/// Runs every step and writes the table; exit 0, or 4 when a row is invalid.
pub fn floor(o: FloorOptions) -> Result<ExitCode, FloorError> {
    validate(&o)?;
    let _ = chatbench_loadgen::sys::raise_nofile();
    let cpus = chatbench_loadgen::sys::cpu_affinity();
    let (send_cpu, recv_cpu) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    let rows = o
        .rates
        .iter()
        .map(|&rate| measure_row(&o, rate, send_cpu, recv_cpu))
        .collect::<Result<Vec<_>, _>>()?;
    let md = markdown(&o, &rows, send_cpu, recv_cpu);
    print!("{md}");
    std::fs::create_dir_all(&o.out).map_err(FloorError::file("creating", &o.out))?;
    let md_path = o.out.join("floor.md");
    std::fs::write(&md_path, &md).map_err(FloorError::file("writing", &md_path))?;
    let json = serde_json::json!({
        "connections": o.connections,
        "members": o.members,
        "seconds": o.seconds,
        "payload_bytes": o.payload,
        "repeat": o.repeat,
        "arch": o.arch,
        "writer_pace": match o.pace {
            Pace::Server => serde_json::json!("server"),
            Pace::Off => serde_json::json!("off"),
            Pace::Fixed(us) => serde_json::json!(us),
        },
        "sender_cpu": send_cpu,
        "receiver_cpu": recv_cpu,
        "rows": rows,
    });
    let json_path = o.out.join("floor.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).map_err(FloorError::Encode)? + "\n",
    )
    .map_err(FloorError::file("writing", &json_path))?;
    eprintln!("floor: wrote {}/floor.md and floor.json", o.out.display());
    let invalid = rows.iter().any(RateRow::any_invalid);
    Ok(ExitCode::from(if invalid { 4 } else { 0 }))
}

/// A part of the generator's cost per delivery and its share of the receive floor; "—" when
/// the runs did not split their CPU by thread.
fn part(us: Option<f64>, floor: Option<f64>) -> String {
    let Some(us) = us else {
        return "—".into();
    };
    match floor {
        Some(f) if f > 0.0 => format!("{us:.2} µs ({:.2}×)", us / f),
        _ => format!("{us:.2} µs"),
    }
}

/// A ratio as the tables show it, "—" when there is none.
fn fmt_ratio(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "—".into())
}

fn fmt_us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2} µs"))
        .unwrap_or_else(|| "invalid".into())
}

/// The table of the client send floor: the plainest client sending the generator step's
/// messages, and the generator against the floor of both its jobs (receiving and sending).
fn client_send_table(s: &mut String, o: &FloorOptions, rows: &[RateRow]) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\nThe client send floor: the plainest client sending the generator's messages (one \
         sender per room, {} deliveries each; one timed `write` per message, on the receiver's \
         CPU as the pacer) into the plainest server (one `write` per member) and the plain \
         receiver, and the generator against the floor of both its jobs:\n",
        o.members - 1
    );
    let _ = writeln!(
        s,
        "| deliveries/s | messages/s | client send floor, per message | per delivery | receive, in this loop | generator ÷ (receive + client send floor) | its pacer ÷ client send floor |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let valid = || r.client_send.iter().filter(|c| c.invalid.is_empty());
        let per_message = median(valid().map(|c| c.send_us_per_message).collect());
        let recv = median(valid().map(|c| c.recv_us).collect());
        let per_s = median(r.client_send.iter().map(|c| c.messages_per_s).collect());
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} | {} |",
            r.rate,
            per_s.map(|m| format!("{m:.1}")).unwrap_or_default(),
            fmt_us(per_message),
            fmt_us(r.client_send_floor_us),
            fmt_us(recv),
            fmt_ratio(r.whole_ratio),
            fmt_ratio(r.pacer_us.zip(r.client_send_floor_us).map(|(p, c)| p / c)),
        );
    }
}

/// The second table: the receive floor with its writer paced ([`Pace`]), and the generator
/// against it (nothing when no row has a paced run).
fn paced_table(s: &mut String, o: &FloorOptions, rows: &[RateRow]) {
    use std::fmt::Write;
    if rows.iter().all(|r| r.paced.is_empty()) {
        return;
    }
    let whose = match o.pace {
        Pace::Server => {
            "the server's own pace (its CPU µs per delivery in the generator run before)"
        }
        _ => "a fixed pace (--writer-pace)",
    };
    let _ = writeln!(
        s,
        "\nThe receive floor again, its writer writing each burst at {whose} instead of back to back:\n"
    );
    let _ = writeln!(
        s,
        "| deliveries/s | writer's pace | receive floor, paced | frames per wake-up | generator ÷ paced floor | its receive threads ÷ paced floor |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| !r.paced.is_empty()) {
        let wake = median(r.paced.iter().map(|p| p.frames_per_wake).collect());
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} |",
            r.rate,
            r.pace_us
                .map(|p| format!("{p:.2} µs per frame"))
                .unwrap_or_else(|| "—".into()),
            fmt_us(r.paced_floor_us),
            wake.map(|w| format!("{w:.2}")).unwrap_or_default(),
            fmt_ratio(r.paced_ratio),
            fmt_ratio(r.receive_us.zip(r.paced_floor_us).map(|(g, f)| g / f)),
        );
    }
}

/// The fourth table: the plainest client against the generator step's own server, and the
/// generator against it (nothing when no row has such a run).
fn target_table(s: &mut String, o: &FloorOptions, rows: &[RateRow]) {
    use std::fmt::Write;
    let Some(arch) = o
        .arch
        .as_deref()
        .filter(|_| rows.iter().any(|r| !r.target.is_empty()))
    else {
        return;
    };
    let _ = writeln!(
        s,
        "\nThe plainest client of the same server: the client sender and the plain receiver \
         against `chatbench serve --arch {arch}` at the generator's load, and the generator \
         against it (what any client of this server pays; the rest is the instrument's own):\n"
    );
    let _ = writeln!(
        s,
        "| deliveries/s | server cores | receive, per frame | frames per wake-up | send, per delivery | generator ÷ (receive + send) | its receive threads ÷ receive | its pacer ÷ send |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| !r.target.is_empty()) {
        let valid = || r.target.iter().filter(|t| t.invalid.is_empty());
        let cores = median(valid().filter_map(|t| t.server_cores).collect());
        let wake = median(valid().map(|t| t.frames_per_wake).collect());
        let over = |part: Option<f64>, of: Option<f64>| fmt_ratio(part.zip(of).map(|(p, f)| p / f));
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.rate,
            cores
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "—".into()),
            fmt_us(r.target_recv_us),
            wake.map(|w| format!("{w:.2}")).unwrap_or_default(),
            fmt_us(r.target_send_us),
            fmt_ratio(r.target_ratio),
            over(r.receive_us, r.target_recv_us),
            over(r.pacer_us, r.target_send_us),
        );
    }
}

fn markdown(
    o: &FloorOptions,
    rows: &[RateRow],
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let pin = match (send_cpu, recv_cpu) {
        (Some(a), Some(b)) => {
            format!("sender and server on CPU{a}, receiver and generator on CPU{b}")
        }
        _ => "unpinned (one CPU)".into(),
    };
    let _ = writeln!(
        s,
        "# Floor: {} loopback connections, rooms of {}, {}-byte bodies, {} s per step, median of {} ({pin})\n",
        o.connections, o.members, o.payload, o.seconds, o.repeat
    );
    if !o.generator_set.is_empty() {
        let _ = writeln!(
            s,
            "The generator ran with `--set {}`.\n",
            o.generator_set.join("` `--set ")
        );
    }
    let _ = writeln!(
        s,
        "| deliveries/s | receive floor | send floor | frames per wake-up | generator ({}) | generator ÷ receive floor | its receive threads (÷ floor) | its pacer (÷ floor) |",
        o.arch.as_deref().unwrap_or("not run")
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let wake = median(r.plain.iter().map(|p| p.frames_per_wake).collect());
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.rate,
            fmt_us(r.recv_floor_us),
            fmt_us(r.send_floor_us),
            wake.map(|w| format!("{w:.2}")).unwrap_or_default(),
            if o.arch.is_some() {
                fmt_us(r.generator_us)
            } else {
                "—".into()
            },
            fmt_ratio(r.ratio),
            part(r.receive_us, r.recv_floor_us),
            part(r.pacer_us, r.recv_floor_us),
        );
    }
    client_send_table(&mut s, o, rows);
    paced_table(&mut s, o, rows);
    target_table(&mut s, o, rows);
    for r in rows {
        for c in r.client_send.iter().filter(|c| !c.invalid.is_empty()) {
            let _ = writeln!(
                s,
                "\ninvalid client send run at {:.0}/s: {}",
                r.rate,
                c.invalid.join("; ")
            );
        }
        for (what, p) in r
            .plain
            .iter()
            .map(|p| ("plain", p))
            .chain(r.paced.iter().map(|p| ("paced plain", p)))
            .filter(|(_, p)| !p.invalid.is_empty())
        {
            let _ = writeln!(
                s,
                "\ninvalid {what} run at {:.0}/s: {}",
                r.rate,
                p.invalid.join("; ")
            );
        }
        for g in &r.generator {
            if !g.invalid.is_empty() {
                let _ = writeln!(
                    s,
                    "\ninvalid generator run at {:.0}/s: {}",
                    r.rate,
                    g.invalid.join("; ")
                );
            }
            if !g.run_invalid.is_empty() {
                let _ = writeln!(
                    s,
                    "\nnote, generator run at {:.0}/s ({}): {}",
                    r.rate,
                    g.run_dir,
                    g.run_invalid.join("; ")
                );
            }
        }
    }
    s
}

/// The scenario of the generator step: the plain step's connections, rooms and rate, one
/// sender per room.
fn generator_scenario(o: &FloorOptions, rate: f64) -> String {
    let rooms = o.connections / o.members;
    let per_sender = rate / (rooms as f64 * (o.members - 1) as f64);
    format!(
        "name = \"floor-generator\"\n\
         description = \"chatbench floor: the generator at {rate:.0} deliveries/s\"\n\
         connections = {}\nrooms = {rooms}\nmembers_per_room = {}\nsenders_per_room = 1\n\
         rate_per_sender = {per_sender}\npayload_bytes = {}\n\
         settle = \"1s\"\nwarmup = \"2s\"\nmeasure = \"{}s\"\ncooldown = \"1s\"\n",
        o.connections, o.members, o.payload, o.seconds
    )
}

/// The generator against `arch` at `rate` deliveries per second: `chatbench run --serve`.
pub fn generator_step(
    o: &FloorOptions,
    arch: &str,
    rate: f64,
    i: usize,
) -> Result<GeneratorRun, FloorError> {
    let bin = match &o.generator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(FloorError::Exe)?,
    };
    let dir = o.out.join(format!("generator-{rate:.0}-{i}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(FloorError::file("clearing", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(FloorError::file("creating", &dir))?;
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, generator_scenario(o, rate))
        .map_err(FloorError::file("writing", &scenario))?;
    let out = dir.join("runs");
    let status = Command::new(&bin)
        .args(["run", "--serve", arch, "--progress", "quiet", "--scenario"])
        .arg(&scenario)
        .args(o.generator_set.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|source| FloorError::Spawn {
            bin: bin.clone(),
            source,
        })?;
    // 0: valid; 4: generator-limited (still measured).
    if !matches!(status.code(), Some(0 | 4)) {
        return Err(FloorError::RunFailed { bin, status });
    }
    let run_dir = only_subdir(&out)?;
    let path = run_dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(FloorError::file("reading", &path))?;
    let s: Summary = serde_json::from_str(&text).map_err(|source| FloorError::Parse {
        path: path.clone(),
        source,
    })?;
    judge_generator(&s, rate, run_dir.display().to_string())
}

fn only_subdir(dir: &Path) -> Result<PathBuf, FloorError> {
    let mut dirs = std::fs::read_dir(dir)
        .map_err(FloorError::file("reading", dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir());
    let first = dirs
        .next()
        .ok_or_else(|| FloorError::NoRunFolder(dir.to_path_buf()))?;
    if dirs.next().is_some() {
        return Err(FloorError::SeveralRunFolders(dir.to_path_buf()));
    }
    Ok(first)
}

/// The generator's CPU per delivery from a run summary, and whether the server side was the
/// bottleneck.
fn judge_generator(s: &Summary, rate: f64, run_dir: String) -> Result<GeneratorRun, FloorError> {
    let Some(cores) = s.generator.cpu_cores_measure else {
        return Err(FloorError::NoGeneratorCpu(run_dir));
    };
    let per_s = s.messages.delivered_per_s;
    if per_s <= 0.0 {
        return Err(FloorError::NothingDelivered(run_dir));
    }
    let server = s.target_resources.cpu_cores_measure;
    let mut invalid = Vec::new();
    if per_s < RATE_KEPT * rate {
        invalid.push(format!("{per_s:.0} deliveries/s of the {rate:.0} asked"));
    }
    if s.messages.loss_ratio > 0.0 {
        invalid.push(format!("loss {:.4} %", s.messages.loss_ratio * 100.0));
    }
    if let Some(c) = server.filter(|c| *c >= SATURATED) {
        invalid.push(format!(
            "the server used {:.0} % of a core: it was the bottleneck",
            c * 100.0
        ));
    }
    let by_role = s.generator.cpu_cores_by_role.as_ref();
    Ok(GeneratorRun {
        rate,
        delivered_per_s: per_s,
        gen_us: cores * 1e6 / per_s,
        receive_us: by_role.map(|c| c.receive * 1e6 / per_s),
        pacer_us: by_role.map(|c| c.pacer * 1e6 / per_s),
        server_cores: server,
        loss_ratio: s.messages.loss_ratio,
        run_dir,
        invalid,
        run_invalid: s.invalid_reasons.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn opts() -> FloorOptions {
        FloorOptions {
            connections: 40,
            members: 10,
            rates: vec![2000.0],
            seconds: 1,
            payload: 64,
            repeat: 1,
            arch: None,
            generator_bin: None,
            generator_set: Vec::new(),
            pace: Pace::Off,
            out: PathBuf::from("unused"),
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(validate(&opts()).is_ok());
        let mut o = opts();
        o.connections = 45;
        assert!(matches!(validate(&o), Err(FloorError::Rooms)));
        let mut o = opts();
        o.members = 1;
        o.connections = 1;
        assert!(matches!(validate(&o), Err(FloorError::Rooms)));
        let mut o = opts();
        o.rates = vec![0.0];
        assert!(matches!(validate(&o), Err(FloorError::Rate)));
        let mut o = opts();
        o.seconds = 0;
        let e = validate(&o).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--seconds"), "{e}");
        let mut o = opts();
        o.generator_set = vec![
            "client.arrival=\"kernel\"".into(),
            "client.receive_threads=2".into(),
        ];
        assert!(validate(&o).is_ok());
        for bad in [
            "connections=5",
            "client.=1",
            "client.arrival",
            "measure=\"1s\"",
        ] {
            let mut o = opts();
            o.generator_set = vec![bad.into()];
            let e = validate(&o).unwrap_err();
            assert!(
                e.is_usage() && e.to_string().contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
        // A failed step is not the user's mistake, and says which step.
        let e = FloorError::in_step("generator")(FloorError::NoRunFolder("out".into()));
        assert!(!e.is_usage());
        assert_eq!(
            crate::error_chain(&e),
            "the generator step: out: the run wrote no folder"
        );
    }

    #[test]
    fn the_generator_scenario_matches_the_plain_load() {
        let text = generator_scenario(&opts(), 2000.0);
        let s = chatbench_model::scenario::Scenario::parse(&text, "floor").expect("valid");
        // 4 rooms × 9 receivers × rate = 2000 deliveries/s.
        let deliveries = s.rate_per_sender * 4.0 * 9.0;
        assert!((deliveries - 2000.0).abs() < 1e-6, "{deliveries}");
    }

    #[test]
    fn the_generators_receive_threads_and_pacer_are_priced_per_delivery() {
        use chatbench_model::results::ByRole;
        use chatbench_model::summary::{build, testing::input};
        let scenario =
            chatbench_model::scenario::Scenario::parse("name='t'\nconnections=10\n", "t")
                .expect("valid");
        let hist = chatbench_model::hist::new_hist();
        let run = |split: Option<ByRole<f64>>| {
            let mut i = input(&scenario, &hist);
            i.generator.cpu_cores_measure = Some(0.2);
            i.generator.cpu_cores_by_role = split;
            let mut s = build(i);
            s.messages.delivered_per_s = 20_000.0;
            s.messages.loss_ratio = 0.0;
            judge_generator(&s, 20_000.0, "r".into()).expect("judged")
        };
        let g = run(Some(ByRole {
            receive: 0.1,
            pacer: 0.02,
            tokio: 0.0,
            other: 0.01,
        }));
        assert!((g.gen_us - 10.0).abs() < 1e-9, "{g:?}");
        assert!((g.receive_us.expect("receive") - 5.0).abs() < 1e-9, "{g:?}");
        assert!((g.pacer_us.expect("pacer") - 1.0).abs() < 1e-9, "{g:?}");
        let old = run(None);
        assert_eq!((old.receive_us, old.pacer_us), (None, None));
        let json = serde_json::to_value(&old).expect("json");
        assert!(json.get("receive_us").is_none(), "absent, not null: {json}");
        assert_eq!(part(Some(5.0), Some(4.0)), "5.00 µs (1.25×)");
        assert_eq!(part(Some(5.0), None), "5.00 µs");
        assert_eq!(part(None, Some(4.0)), "—");
    }

    fn generator_run(server_cores: Option<f64>, gen_us: f64) -> GeneratorRun {
        GeneratorRun {
            rate: 20_000.0,
            delivered_per_s: 20_000.0,
            gen_us,
            receive_us: Some(gen_us * 0.9),
            pacer_us: None,
            server_cores,
            loss_ratio: 0.0,
            run_dir: "r".into(),
            invalid: Vec::new(),
            run_invalid: Vec::new(),
        }
    }

    #[test]
    fn the_writer_pace_parses_and_follows_the_server() {
        assert_eq!("server".parse::<Pace>().ok(), Some(Pace::Server));
        assert_eq!("off".parse::<Pace>().ok(), Some(Pace::Off));
        assert_eq!("8.5".parse::<Pace>().ok(), Some(Pace::Fixed(8.5)));
        for bad in ["0", "-3", "1001", "NaN", "inf", "fast", ""] {
            let e = bad.parse::<Pace>().expect_err(bad);
            assert!(e.to_string().contains("--writer-pace"), "{bad}: {e}");
            assert!(e.is_usage(), "{bad}: a usage error");
        }
        let us = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6 * 1000.0).round() / 1000.0);
        // The server's CPU µs per delivery: 0.2 cores over 20,000 deliveries/s.
        let g = generator_run(Some(0.2), 9.0);
        assert_eq!(us(Pace::Server.after(Some(&g))), Some(10.0));
        assert_eq!(
            Pace::Server.after(None),
            None,
            "no generator step, no server pace"
        );
        assert_eq!(Pace::Server.after(Some(&generator_run(None, 9.0))), None);
        assert_eq!(
            Pace::Server.after(Some(&generator_run(Some(0.0), 9.0))),
            None
        );
        assert_eq!(us(Pace::Fixed(2.5).after(None)), Some(2.5));
        assert_eq!(Pace::Off.after(Some(&g)), None);
    }

    #[test]
    fn a_row_with_paced_runs_has_their_floor_ratio_and_table() {
        let plain = |recv_us: f64, pace_us: Option<f64>, invalid: Vec<String>| PlainRun {
            rate: 20_000.0,
            achieved: 20_000.0,
            frames: 200_000,
            recv_us,
            send_us: 7.0,
            pace_us,
            frames_per_wake: 2.0,
            send_cores: 0.2,
            invalid,
        };
        let mut row = RateRow::new(20_000.0);
        row.plain = vec![plain(5.0, None, Vec::new())];
        row.generator = vec![generator_run(Some(0.2), 7.0)];
        row.paced = vec![
            plain(6.0, Some(10.0), Vec::new()),
            plain(6.4, Some(9.0), Vec::new()),
            plain(1.0, Some(99.0), vec!["the sender fell behind".into()]),
        ];
        row.summarise();
        assert_eq!(row.ratio, Some(7.0 / 5.0));
        assert_eq!(row.pace_us, Some(9.5), "the invalid run is left out");
        assert_eq!(row.paced_floor_us, Some(6.2));
        assert_eq!(row.paced_ratio, Some(7.0 / 6.2));
        assert!(row.any_invalid());
        let o = FloorOptions {
            pace: Pace::Server,
            ..opts()
        };
        let md = markdown(&o, std::slice::from_ref(&row), None, None);
        assert!(
            md.contains("| 20000 | 9.50 µs per frame | 6.20 µs | 2.00 | 1.13× | 1.02× |"),
            "{md}"
        );
        assert!(
            md.contains("invalid paced plain run at 20000/s: the sender fell behind"),
            "{md}"
        );
        let json = serde_json::to_value(&row).expect("json");
        assert_eq!(json["paced_floor_us"], serde_json::json!(6.2));
        row.paced.clear();
        row.summarise();
        let md = markdown(&o, std::slice::from_ref(&row), None, None);
        assert!(
            !md.contains("paced floor"),
            "no paced runs, no second table: {md}"
        );
        let json = serde_json::to_value(&row).expect("json");
        assert!(
            json.get("paced").is_none() && json.get("paced_ratio").is_none(),
            "{json}"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
