//! The scenario model: what a run does, read from a TOML file.
//!
//! A scenario is the unit of comparison: two runs are only comparable when they ran the same
//! scenario text, so the full file text travels with the parsed value ([`ScenarioSource`]) into
//! every result. This module owns parsing, defaults and validation, and nothing else: the engine
//! reads the validated fields and never re-checks them.
//!
//! Errors are written for the person editing the file: each names the file, the line (and column
//! when the TOML parser knows it) and says how to fix the problem.
//!
//! Membership (implemented in `plan.rs`, documented in `docs/scenarios.md`): connections
//! `0 .. rooms × members_per_room` are room members, assigned round-robin (connection `i` joins
//! room `i % rooms`); the first `senders_per_room` members of each room send; the rest stay idle.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::placeholder::{Feeder, FeederPolicy, Field, SessionTemplate};
use crate::profile::{Fanout, Profile, ProfileError, ProtocolKind};
use crate::reconnect::{FaultSpec, ReconnectSettings};

/// Bytes a `msg` frame adds around its body (`{"t":"msg","room":…,"from":…,"seq":…,"ts":…,"body":…}`),
/// rounded up generously: the body must fit in `max_message_size` with this much to spare.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 200;

/// Largest accepted `payload_bytes` (1 MiB).
pub const MAX_PAYLOAD_BYTES: u32 = 1 << 20;

/// Default bound on connections in set-up at once per generator process (`max_connecting`).
pub const DEFAULT_MAX_CONNECTING: u32 = 1000;

/// Largest accepted `max_connecting`.
pub const MAX_MAX_CONNECTING: u32 = 1_000_000;

/// Smallest accepted client buffer size.
pub const MIN_BUFFER_BYTES: usize = 256;

/// Largest accepted client buffer size (64 MiB).
pub const MAX_BUFFER_BYTES: usize = 64 << 20;

/// Most connections in one run (all agents together). The plan keeps an entry per connection
/// of the whole run (about 32 bytes each, 512 MiB at this bound) in every generator process,
/// so this bounds what a scenario can make a process allocate; 16× the largest fleet measured.
pub const MAX_CONNECTIONS: u32 = 1 << 24;

/// Most `silent_connections` (slowloris sockets) in one run: far more than any server here
/// keeps handshake slots for (thread-pool's default pool is 1,024).
pub const MAX_SILENT_CONNECTIONS: u32 = 100_000;

/// Longest accepted duration of any scenario field (30 days): the engine adds durations to
/// clock readings, and a longer one would overflow them.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Accepted `ramp_rate`, new connections per second: the slowest keeps every connection's
/// ramp time representable (4 294 967 295 connections at 0.001/s is 136 000 years as a
/// `Duration`, far below its limit); the fastest is beyond any ramp a host can do.
pub const RAMP_RATE_RANGE: (f64, f64) = (1e-3, 1e9);

/// Accepted `rate_per_sender`, messages per second: the slowest sends once in 11.6 days; the
/// fastest is a send every 10 µs, beyond what one connection of any server here takes, and
/// keeps the schedule's nanosecond arithmetic exact.
pub const RATE_PER_SENDER_RANGE: (f64, f64) = (1e-6, 1e5);

/// A load scenario, as written in `scenarios/*.toml`. See `docs/scenarios.md` for the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short identifier, `[A-Za-z0-9._-]+`; used in result directory names.
    pub name: String,
    /// Free text saying what the scenario measures.
    #[serde(default)]
    pub description: String,
    /// Total WebSocket connections to open (members and idle ones).
    pub connections: u32,
    /// New connections opened per second during the ramp.
    #[serde(default = "default_ramp_rate")]
    pub ramp_rate: f64,
    /// How long one connection attempt (TCP + WebSocket handshake) may take before it counts as failed.
    #[serde(default = "default_connect_timeout", with = "duration_str")]
    pub connect_timeout: Duration,
    /// Most connections one generator process (each agent) has in set-up at once: TCP connect,
    /// WebSocket handshake and join not yet done. When the bound is reached the ramp waits for
    /// a set-up to finish and its schedule resumes from there (it backs off rather than piling
    /// up timeouts); the time it waited is `connections.ramp_held_s`.
    #[serde(default = "default_max_connecting")]
    pub max_connecting: u32,
    /// Number of rooms; 0 means every connection stays idle (memory scenarios).
    #[serde(default)]
    pub rooms: u32,
    /// Members per room; connections `0 .. rooms × members_per_room` are members of exactly one
    /// room each (round-robin: connection `i` joins room `i % rooms`), the rest stay idle.
    #[serde(default)]
    pub members_per_room: u32,
    /// Members of each room that send messages (the room's first members, i.e. connections
    /// `0 .. rooms × senders_per_room`).
    #[serde(default = "default_senders_per_room")]
    pub senders_per_room: u32,
    /// Messages per second sent by each sender, on an open-loop schedule.
    #[serde(default = "default_rate_per_sender")]
    pub rate_per_sender: f64,
    /// Spacing of a sender's scheduled sends.
    #[serde(default)]
    pub arrival: Arrival,
    /// Length of each message body in bytes.
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: u32,
    /// Wait after all connections are open and before warmup; memory is read at its end.
    #[serde(default = "default_settle", with = "duration_str")]
    pub settle: Duration,
    /// Sending before the measurement window; nothing recorded.
    #[serde(default = "default_warmup", with = "duration_str")]
    pub warmup: Duration,
    /// The measurement window: sends and deliveries in it are counted and timed.
    #[serde(default = "default_measure", with = "duration_str")]
    pub measure: Duration,
    /// After the window: senders stopped, receivers keep reading so late deliveries are counted.
    #[serde(default = "default_cooldown", with = "duration_str")]
    pub cooldown: Duration,
    /// Fraction of the non-sending members of each room that stop reading during the run
    /// (exercises the server's slow-consumer policy).
    #[serde(default)]
    pub slow_consumer_share: f64,
    /// A delivery slower than this (from the intended send time) is counted as late.
    #[serde(default = "default_late_after", with = "duration_str")]
    pub late_after: Duration,
    /// Slowloris: TCP connections the generator opens to the first target before the ramp and
    /// holds, silent (no byte sent, no handshake), until the run ends; the run then shows
    /// whether the server still let its normal connections in (`connections.ready`, and the
    /// `handshake_status_503` errors of a server that refused them). One generator process
    /// only (no `--agents`); at most [`MAX_SILENT_CONNECTIONS`].
    #[serde(default)]
    pub silent_connections: u32,
    /// Fault injection: this long after the measurement window opens, the first member
    /// connection sends `{"t":"panic"}` (a reference server started with `--fault-injection`
    /// crashes that connection's handler; a Node.js peer's handler throws, uncaught; with
    /// protocol = "socketio" the object is the message event's payload). The results then show how many *other* connections
    /// the crash took with it (`connections.closed_by_server`, `messages.lost`). Unset: no
    /// poison frame is sent.
    #[serde(default, with = "opt_duration_str")]
    pub poison_after: Option<Duration>,
    /// Seed for the send schedule and room assignment RNG; same seed, same run plan.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How connections spread over several targets (`run --target URL,URL,…`): `span` (every
    /// room has members on every target, for clusters whose rooms span nodes) or `partition`
    /// (each room lives on one target, for independent single servers). One target: no effect.
    #[serde(default)]
    pub target_policy: TargetPolicy,
    /// Which agent holds each member of a room in a fleet (`run --agents`): `spread` (every
    /// room spans the agents) or `room` (room-affine: all of a room's members on one agent).
    /// One agent: no effect.
    #[serde(default)]
    pub placement: Placement,
    /// WebSocket client settings of the load generator (table `[client]`).
    #[serde(default)]
    pub client: ClientSettings,
    /// The wire protocol the target speaks (`docs/profiles.md`): one of [`ProtocolKind::ALL`],
    /// `chatbench` by default.
    #[serde(default)]
    pub protocol: ProtocolKind,
    /// The protocol profile's options (table `[profile]`), validated by [`Profile::from_options`].
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub profile: toml::Table,
    /// What a connection does when it loses its server mid-run (table `[reconnect]`).
    #[serde(default)]
    pub reconnect: ReconnectSettings,
    /// Faults the run injects (array `[[fault]]`): `kill_node = N, at = "8s"` SIGKILLs node N
    /// of a cluster the run started (`run --serve cluster`) that long after the measurement
    /// window opens.
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSpec>,
    /// Pass/fail limits on the run's figures (table `[thresholds]`): a figure catalogue key
    /// (`docs/figures.md`) = `"OP VALUE [UNIT]"`, e.g. `p99_latency = "<= 50 ms"`; judged by
    /// [`crate::thresholds`] after the run (exit 1 when one is crossed). A figure split by kind
    /// takes a table of kinds: `connection_errors.refused = "<= 0"`
    /// ([`crate::thresholds::entries`] flattens them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub thresholds: std::collections::BTreeMap<String, toml::Value>,
    /// The profile built from `protocol` and `[profile]`: set when the scenario is parsed or
    /// validated, rebuilt on first use after deserialisation (see [`Scenario::session_profile`]).
    #[serde(skip)]
    session_profile: OnceLock<Profile>,
    /// The feeder read from `[client] feeder`: loaded when the scenario is validated.
    #[serde(skip)]
    feeder: OnceLock<Option<Arc<Feeder>>>,
    /// Where the scenario came from and its full text (recorded in results for provenance).
    #[serde(skip)]
    pub source: ScenarioSource,
}

/// Spacing of one sender's scheduled send times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced at `1 / rate_per_sender`, each sender starting at a random phase.
    #[default]
    Uniform,
    /// Exponentially distributed gaps with mean `1 / rate_per_sender` (a Poisson process).
    Poisson,
}

/// How the connections of a run spread over several targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetPolicy {
    /// Every room has members on every target (a cluster whose rooms span nodes).
    #[default]
    Span,
    /// Each room lives on one target (independent single servers).
    Partition,
}

impl TargetPolicy {
    /// The name used in scenarios and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetPolicy::Span => "span",
            TargetPolicy::Partition => "partition",
        }
    }
}

/// Which agent holds each member of a room, in a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every room spans the agents (member `slot` of room `r` on agent `(slot + r) % agents`):
    /// most deliveries cross agents.
    #[default]
    Spread,
    /// Room-affine: all of room `r`'s members on agent `r % agents`, for targets where a room's
    /// users realistically arrive together (one client host per team, a room-sharded front).
    Room,
}

/// WebSocket client settings: buffers, TLS trust, and the per-connection feeder. tungstenite's
/// defaults (128 KiB read buffer) would make the generator the memory bottleneck, so they are
/// explicit and recorded with every result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// Read buffer per connection, bytes.
    pub read_buffer_size: usize,
    /// Write buffer per connection, bytes (frames are flushed when it fills).
    pub write_buffer_size: usize,
    /// Most bytes a connection may have queued for writing; must exceed `write_buffer_size`.
    pub max_write_buffer_size: usize,
    /// Largest message the client accepts, bytes.
    pub max_message_size: usize,
    /// `wss://`: trust only the CAs in this PEM file instead of the built-in Mozilla roots
    /// (`run --ca-file`). Relative paths are from the current directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `wss://`: accept any server certificate (`run --insecure`; testing only, recorded).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// A CSV file (header row, then one row per connection) whose columns the upgrade
    /// request's `{feeder.COLUMN}` placeholders read. Relative paths are from the current
    /// directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feeder: Option<PathBuf>,
    /// More connections than feeder rows: `refuse` (the default: the scenario is refused) or
    /// `cycle` (connection `conn` takes row `conn % rows`).
    pub feeder_policy: FeederPolicy,
    /// Which code reads what the server sends (`docs/scenarios.md`): `auto` (the default: the
    /// epoll receive path for the connections it applies to, tokio for the rest), `tokio`
    /// (every connection a tokio task) or `epoll` (as `auto`, and refused where it cannot apply).
    pub receive_path: ReceivePath,
    /// OS threads of the epoll receive path, each one readiness loop over its share of the
    /// receive-only connections (1..=[`MAX_RECEIVE_THREADS`]).
    pub receive_threads: u32,
    /// Who writes a sender's frames (`docs/scenarios.md`): the pacer's own thread, for the
    /// senders the epoll receive path takes (`auto`), or a tokio task the pacer wakes (`tokio`).
    #[serde(skip_serializing_if = "SendPath::is_auto")]
    pub send_path: SendPath,
    /// What a delivery on the epoll receive path is timed to (`docs/scenarios.md`): the
    /// kernel's receive time of what the read took, or the read's return.
    pub arrival: ArrivalClock,
}

/// What a delivery read on the epoll receive path is timed to (`[client] arrival`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalClock {
    /// When the `recvmsg` that took it returned: the receiving thread's wake-up is inside the
    /// latency.
    #[default]
    Read,
    /// The kernel's receive time of the last segment that read took (`SO_TIMESTAMPNS`): the
    /// receiving thread's wake-up is left out of the latency (reads that bring no timestamp
    /// are timed to their return, and counted).
    Kernel,
}

impl ArrivalClock {
    /// The name used in scenarios and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            ArrivalClock::Read => "read",
            ArrivalClock::Kernel => "kernel",
        }
    }
}

/// Which code reads what the server sends to receive-only connections (`[client] receive_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceivePath {
    /// The epoll path for plain `ws://` receive-only connections of the `chatbench` profile
    /// without reconnects; tokio for every other connection.
    #[default]
    Auto,
    /// Every connection is a tokio task that reads its own socket.
    Tokio,
    /// As `auto`; the scenario is refused when its profile or reconnect policy rules it out.
    Epoll,
}

/// Who writes a sender's frames (`[client] send_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendPath {
    /// The pacer's thread writes the frames of the senders the epoll receive path reads (plain
    /// `ws://`, the `chatbench` profile, no reconnects); every other sender is a tokio task.
    #[default]
    Auto,
    /// Every sender is a tokio task that the pacer wakes at its intended times.
    Tokio,
}

impl SendPath {
    fn is_auto(&self) -> bool {
        *self == SendPath::Auto
    }
}

/// Most threads of the epoll receive path (`[client] receive_threads`).
pub const MAX_RECEIVE_THREADS: u32 = 64;

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            read_buffer_size: 1024,
            write_buffer_size: 4096,
            max_write_buffer_size: 1 << 20,
            max_message_size: 1 << 20,
            ca_file: None,
            insecure: false,
            feeder: None,
            feeder_policy: FeederPolicy::default(),
            receive_path: ReceivePath::Auto,
            receive_threads: 1,
            send_path: SendPath::Auto,
            arrival: ArrivalClock::default(),
        }
    }
}

/// Where a scenario was read from, and its full text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScenarioSource {
    /// The file, when loaded from one.
    pub path: Option<PathBuf>,
    /// The complete TOML text, byte for byte.
    pub text: String,
}

fn default_ramp_rate() -> f64 {
    5000.0
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connecting() -> u32 {
    DEFAULT_MAX_CONNECTING
}
fn default_senders_per_room() -> u32 {
    1
}
fn default_rate_per_sender() -> f64 {
    1.0
}
fn default_payload_bytes() -> u32 {
    64
}
fn default_settle() -> Duration {
    Duration::from_secs(2)
}
fn default_warmup() -> Duration {
    Duration::from_secs(2)
}
fn default_measure() -> Duration {
    Duration::from_secs(10)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(2)
}
fn default_late_after() -> Duration {
    Duration::from_secs(1)
}
fn default_seed() -> u64 {
    1
}

/// Durations as humantime strings (`"10s"`, `"500ms"`, `"1m 30s"`), with an error that shows the
/// accepted form.
mod opt_duration_str {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(d).map(Some)
    }
}

pub(crate) mod duration_str {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub const FORM: &str = r#"a duration string like "10s", "500ms" or "1m 30s""#;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FORM)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim()).map_err(|e| {
                    E::custom(format_args!(
                        "invalid duration {v:?} ({e}); expected {FORM}"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A place in a scenario file: `origin[:line[:column]]`, lines and columns counted from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file path, or whatever name the text was given.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// Why a scenario could not be used. Every message names the place and says how to fix it.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: cannot read scenario file: {source} (check the path; scenarios live in scenarios/*.toml)")]
    Read {
        /// The path as given.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{location}: scenario file is not valid UTF-8 (bad byte at offset {offset}); save it as UTF-8 text")]
    NotUtf8 {
        /// Where the first bad byte is.
        location: Location,
        /// Byte offset of the first bad byte.
        offset: usize,
    },
    /// A key the scenario format does not have (usually a typo).
    #[error("{location}: unknown field \"{field}\"{suggestion} (valid fields: {valid})")]
    UnknownField {
        /// Where the key is.
        location: Location,
        /// The key as written.
        field: String,
        /// `; did you mean "…"?` or empty.
        suggestion: String,
        /// Comma-separated list of accepted keys at that place.
        valid: String,
    },
    /// A required key is absent.
    #[error("{location}: missing required field \"{field}\" (add e.g. `{example}`)")]
    MissingField {
        /// The file.
        location: Location,
        /// The missing key.
        field: String,
        /// A line that would fix it.
        example: String,
    },
    /// TOML syntax error, wrong type, bad duration or unknown enum value.
    #[error("{location}: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What went wrong and the accepted form.
        message: String,
    },
    /// The file parses but the values do not make a runnable scenario.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the offending key is (no line when several keys are involved and none is set).
        location: Location,
        /// The key the rule is about.
        field: &'static str,
        /// The rule that failed and how to fix it.
        message: String,
    },
}

impl ScenarioError {
    /// The place the error points to, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ScenarioError::Read { .. } => None,
            ScenarioError::NotUtf8 { location, .. }
            | ScenarioError::UnknownField { location, .. }
            | ScenarioError::MissingField { location, .. }
            | ScenarioError::Syntax { location, .. }
            | ScenarioError::Invalid { location, .. } => Some(location),
        }
    }

    /// The 1-based line the error points to, when known.
    pub fn line(&self) -> Option<u32> {
        self.location().and_then(|l| l.line)
    }
}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ScenarioError::Read {
            path: origin.clone(),
            source,
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let (line, column) = line_col(e.as_bytes(), offset);
                return Err(ScenarioError::NotUtf8 {
                    location: Location {
                        origin,
                        line: Some(line),
                        column: Some(column),
                    },
                    offset,
                });
            }
        };
        let mut scenario = Scenario::parse(&text, &origin)?;
        scenario.source.path = Some(path.to_path_buf());
        Ok(scenario)
    }

    /// Parse and validate scenario text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|e| de_error(&e, text, origin))?;
        scenario.source = ScenarioSource {
            path: None,
            text: text.to_owned(),
        };
        let (profile, feeder) = scenario.validate_at(origin)?;
        scenario.session_profile = OnceLock::from(profile);
        scenario.feeder = OnceLock::from(feeder);
        Ok(scenario)
    }

    /// Check that the values make a runnable scenario. Called by [`Scenario::load`] and
    /// [`Scenario::parse`]; call it again after changing fields (e.g. CLI overrides).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let origin = match &self.source.path {
            Some(p) => p.display().to_string(),
            None => "<scenario>".to_owned(),
        };
        let (profile, feeder) = self.validate_at(&origin)?;
        let _ = self.session_profile.set(profile);
        let _ = self.feeder.set(feeder);
        Ok(())
    }

    /// The protocol profile (`protocol` and `[profile]`). Built when the scenario is parsed; a
    /// scenario deserialised from JSON builds it on first use (call [`Scenario::validate`]
    /// first: options it would reject fall back to the default profile here).
    pub fn session_profile(&self) -> &Profile {
        self.session_profile
            .get_or_init(|| Profile::from_options(self.protocol, &self.profile).unwrap_or_default())
    }

    /// The CSV feeder of `[client] feeder`, if any. Loaded when the scenario is parsed or
    /// validated; a scenario deserialised from JSON reads it on first use (`None` if it cannot:
    /// call [`Scenario::validate`] first for the error).
    pub fn feeder(&self) -> Option<&Feeder> {
        self.feeder
            .get_or_init(|| {
                let path = self.client.feeder.as_ref()?;
                Feeder::load(path, self.client.feeder_policy)
                    .ok()
                    .map(Arc::new)
            })
            .as_deref()
    }

    /// Validates, and returns the protocol profile the scenario describes and its feeder.
    fn validate_at(&self, origin: &str) -> Result<(Profile, Option<Arc<Feeder>>), ScenarioError> {
        let v = Validator { s: self, origin };
        v.name()?;
        v.counts()?;
        v.rooms()?;
        v.rates()?;
        v.payload_and_buffers()?;
        v.slow_consumers()?;
        v.durations()?;
        v.reconnect_and_faults()?;
        v.thresholds()?;
        v.tls()?;
        v.receive_path()?;
        let feeder = v.feeder()?;
        let profile = v.profile()?;
        v.placeholders(&profile, feeder.as_deref())?;
        Ok((profile, feeder))
    }

    /// The node-kill fault, if the scenario has one.
    pub fn kill_fault(&self) -> Option<&FaultSpec> {
        self.faults.first()
    }

    /// Whether connections reconnect after losing their server mid-run.
    pub fn reconnects(&self) -> bool {
        self.reconnect.is_enabled(self.kill_fault().is_some())
    }

    /// Connections that are members of a room (`rooms × members_per_room`).
    pub fn member_count(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.members_per_room)
    }

    /// Connections that send (`rooms × senders_per_room`, 0 without rooms).
    pub fn sender_count(&self) -> u64 {
        if self.members_per_room == 0 {
            return 0;
        }
        u64::from(self.rooms) * u64::from(self.senders_per_room)
    }

    /// Connections that are in no room.
    pub fn idle_count(&self) -> u64 {
        u64::from(self.connections).saturating_sub(self.member_count())
    }

    /// Non-sending members per room that stop reading: `round(slow_consumer_share × (members − senders))`.
    pub fn slow_consumers_per_room(&self) -> u32 {
        let receivers = self.members_per_room.saturating_sub(self.senders_per_room);
        // Bounded by `receivers` (share < 1), so the cast cannot truncate.
        (self.slow_consumer_share * f64::from(receivers)).round() as u32
    }

    /// Messages per second offered by all senders together.
    pub fn expected_msgs_per_sec(&self) -> f64 {
        self.sender_count() as f64 * self.rate_per_sender
    }

    /// Deliveries per second expected: every message reaches the other `members_per_room − 1`
    /// members (slow consumers not subtracted).
    pub fn expected_deliveries_per_sec(&self) -> f64 {
        self.expected_msgs_per_sec() * f64::from(self.members_per_room.saturating_sub(1))
    }

    /// Time the ramp needs at `ramp_rate`: `connections / ramp_rate`.
    pub fn ramp_duration(&self) -> Duration {
        let secs = f64::from(self.connections) / self.ramp_rate;
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    }

    /// When a connect phase of `connections` (this process's share, at its share of the rate:
    /// the ramp's planned time is the same for every agent) ends at the latest, from its start,
    /// given that the ramp has waited `held` for set-up slots so far: the planned ramp, the
    /// time held back, one `connect_timeout` for the last connections, and a second. The time
    /// held back counts up to twice the planned ramp (and at least one `connect_timeout`), so a
    /// target that answers nothing ends the phase in bounded time.
    pub fn connect_deadline(&self, connections: u64, held: Duration) -> Duration {
        let planned = Duration::try_from_secs_f64(connections as f64 / self.ramp_rate)
            .unwrap_or(Duration::ZERO);
        planned
            + held.min(self.max_ramp_hold(connections))
            + self.connect_timeout
            + Duration::from_secs(1)
    }

    /// The most waiting for set-up slots that [`Scenario::connect_deadline`] allows.
    pub fn max_ramp_hold(&self, connections: u64) -> Duration {
        let planned = Duration::try_from_secs_f64(connections as f64 / self.ramp_rate)
            .unwrap_or(Duration::ZERO);
        (planned * 2).max(self.connect_timeout)
    }

    /// Planned length of a run: ramp + settle + warmup + measure + cooldown (connection setup
    /// overheads not included).
    pub fn total_duration(&self) -> Duration {
        self.ramp_duration() + self.settle + self.warmup + self.measure + self.cooldown
    }
}

/// Runs the validation rules, each pointing at the key it is about.
struct Validator<'a> {
    s: &'a Scenario,
    origin: &'a str,
}

impl Validator<'_> {
    fn origin(&self) -> String {
        self.origin.to_owned()
    }

    /// An error at the line where `key` (in table `table`, "" for the top level) is set.
    fn err(&self, table: &str, key: &'static str, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            location: Location {
                origin: self.origin(),
                line: find_key_line(&self.s.source.text, table, key),
                column: None,
            },
            field: key,
            message,
        }
    }

    /// An error about several keys together: no line.
    fn err_global(&self, key: &'static str, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            location: Location {
                origin: self.origin(),
                line: None,
                column: None,
            },
            field: key,
            message,
        }
    }

    /// Each `[thresholds]` entry names a catalogue figure and reads as a limit.
    fn thresholds(&self) -> Result<(), ScenarioError> {
        use crate::thresholds::{entries, parse, ThresholdError};
        let at = |key: &str| Location {
            origin: self.origin(),
            line: find_key_line(&self.s.source.text, "thresholds", key).or_else(|| {
                let base = key.split('.').next().unwrap_or(key);
                find_key_line(&self.s.source.text, "thresholds", base)
            }),
            column: None,
        };
        let flat = entries(&self.s.thresholds).map_err(|e| {
            let key = match &e {
                ThresholdError::BadEntry { key } => key.clone(),
                _ => String::new(),
            };
            ScenarioError::Invalid {
                location: at(&key),
                field: "thresholds",
                message: format!("[thresholds] {e}"),
            }
        })?;
        for (key, expr) in &flat {
            let location = at(key);
            match parse(key, expr) {
                Ok(_) => {}
                Err(ThresholdError::UnknownKey {
                    key,
                    suggestion,
                    valid,
                }) => {
                    return Err(ScenarioError::UnknownField {
                        location,
                        field: format!("thresholds.{key}"),
                        suggestion,
                        valid,
                    })
                }
                Err(e) => {
                    return Err(ScenarioError::Invalid {
                        location,
                        field: "thresholds",
                        message: format!("[thresholds] {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> Result<(), ScenarioError> {
        let n = &self.s.name;
        let ok_chars = n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if n.is_empty() || !ok_chars || n == "." || n == ".." {
            return Err(self.err(
                "",
                "name",
                format!(
                    "name = {n:?}: use a non-empty name of letters, digits, '.', '_' and '-' only \
                     (it becomes part of result directory names), e.g. name = \"broadcast-10k\""
                ),
            ));
        }
        Ok(())
    }

    fn counts(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        if s.connections == 0 {
            return Err(self.err(
                "",
                "connections",
                "connections = 0: a run needs at least 1 connection (set connections >= 1)"
                    .to_owned(),
            ));
        }
        if s.connections > MAX_CONNECTIONS {
            return Err(self.err(
                "",
                "connections",
                format!(
                    "connections = {}: at most {MAX_CONNECTIONS} in one run (every generator \
                     process keeps the whole run's plan in memory); split the load over several runs",
                    s.connections
                ),
            ));
        }
        if s.silent_connections > MAX_SILENT_CONNECTIONS {
            return Err(self.err(
                "",
                "silent_connections",
                format!(
                    "silent_connections = {}: at most {MAX_SILENT_CONNECTIONS} (each is a socket \
                     of the generator process)",
                    s.silent_connections
                ),
            ));
        }
        let (lo, hi) = RAMP_RATE_RANGE;
        if !(s.ramp_rate.is_finite() && s.ramp_rate > 0.0) {
            return Err(self.err(
                "",
                "ramp_rate",
                format!(
                    "ramp_rate = {}: must be a positive number of new connections per second \
                     (e.g. ramp_rate = 5000.0)",
                    s.ramp_rate
                ),
            ));
        }
        if !(lo..=hi).contains(&s.ramp_rate) {
            return Err(self.err(
                "",
                "ramp_rate",
                format!(
                    "ramp_rate = {}: must be between {lo} and {hi:e} new connections per second \
                     (e.g. ramp_rate = 5000.0)",
                    s.ramp_rate
                ),
            ));
        }
        if s.max_connecting == 0 || s.max_connecting > MAX_MAX_CONNECTING {
            return Err(self.err(
                "",
                "max_connecting",
                format!(
                    "max_connecting = {}: must be 1 ..= {MAX_MAX_CONNECTING} connections in set-up at \
                     once per generator process (e.g. max_connecting = 1000)",
                    s.max_connecting
                ),
            ));
        }
        Ok(())
    }

    fn rooms(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        if s.rooms > 0 && s.members_per_room < 2 {
            return Err(self.err(
                "",
                "members_per_room",
                format!(
                    "members_per_room = {}: a room needs at least 2 members for deliveries \
                     (set members_per_room >= 2, or rooms = 0 for idle connections)",
                    s.members_per_room
                ),
            ));
        }
        if s.member_count() > u64::from(s.connections) {
            return Err(self.err_global(
                "members_per_room",
                format!(
                    "rooms × members_per_room = {} exceeds connections = {} \
                     (raise connections, or lower rooms or members_per_room)",
                    s.member_count(),
                    s.connections
                ),
            ));
        }
        if s.rooms > 0 && s.senders_per_room > s.members_per_room {
            return Err(self.err(
                "",
                "senders_per_room",
                format!(
                    "senders_per_room = {} exceeds members_per_room = {}: senders are members \
                     of the room (set senders_per_room <= members_per_room)",
                    s.senders_per_room, s.members_per_room
                ),
            ));
        }
        Ok(())
    }

    fn rates(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        if s.sender_count() > 0 && !(s.rate_per_sender.is_finite() && s.rate_per_sender > 0.0) {
            return Err(self.err(
                "",
                "rate_per_sender",
                format!(
                    "rate_per_sender = {}: must be a positive number of messages per second \
                     (e.g. rate_per_sender = 10.0), or set senders_per_room = 0 for no traffic",
                    s.rate_per_sender
                ),
            ));
        }
        let (lo, hi) = RATE_PER_SENDER_RANGE;
        if s.sender_count() > 0 && !(lo..=hi).contains(&s.rate_per_sender) {
            return Err(self.err(
                "",
                "rate_per_sender",
                format!(
                    "rate_per_sender = {}: must be between {lo:e} and {hi:e} messages per second \
                     per sender (e.g. rate_per_sender = 10.0); for more load add senders_per_room \
                     or rooms",
                    s.rate_per_sender
                ),
            ));
        }
        Ok(())
    }

    fn payload_and_buffers(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        let c = &s.client;
        for (key, value) in [
            ("read_buffer_size", c.read_buffer_size),
            ("write_buffer_size", c.write_buffer_size),
            ("max_write_buffer_size", c.max_write_buffer_size),
            ("max_message_size", c.max_message_size),
        ] {
            if !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&value) {
                return Err(self.err(
                    "client",
                    key,
                    format!(
                        "client.{key} = {value}: must be between {MIN_BUFFER_BYTES} bytes and \
                         64 MiB ({MAX_BUFFER_BYTES})"
                    ),
                ));
            }
        }
        if c.max_write_buffer_size <= c.write_buffer_size {
            return Err(self.err(
                "client",
                "max_write_buffer_size",
                format!(
                    "client.max_write_buffer_size = {} must be greater than \
                     client.write_buffer_size = {} (tungstenite requires it; e.g. 1048576)",
                    c.max_write_buffer_size, c.write_buffer_size
                ),
            ));
        }
        if s.payload_bytes > MAX_PAYLOAD_BYTES {
            return Err(self.err(
                "",
                "payload_bytes",
                format!(
                    "payload_bytes = {}: at most {MAX_PAYLOAD_BYTES} (1 MiB)",
                    s.payload_bytes
                ),
            ));
        }
        let limit = c.max_message_size.saturating_sub(ENVELOPE_OVERHEAD_BYTES);
        if s.payload_bytes as usize > limit {
            return Err(self.err(
                "",
                "payload_bytes",
                format!(
                    "payload_bytes = {}: a message must fit in client.max_message_size = {} \
                     with {ENVELOPE_OVERHEAD_BYTES} bytes for the envelope (set payload_bytes <= {limit} \
                     or raise client.max_message_size)",
                    s.payload_bytes, c.max_message_size
                ),
            ));
        }
        Ok(())
    }

    fn slow_consumers(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        let share = s.slow_consumer_share;
        if !(share.is_finite() && (0.0..1.0).contains(&share)) {
            return Err(self.err(
                "",
                "slow_consumer_share",
                format!(
                    "slow_consumer_share = {share}: must be at least 0 and below 1 \
                     (a fraction of the non-sending members, e.g. 0.05)"
                ),
            ));
        }
        if share > 0.0 && s.rooms > 0 {
            let receivers = s.members_per_room.saturating_sub(s.senders_per_room);
            let slow = s.slow_consumers_per_room();
            if slow >= receivers {
                return Err(self.err(
                    "",
                    "slow_consumer_share",
                    format!(
                        "slow_consumer_share = {share}: {slow} of the {receivers} non-sending \
                         members per room would stop reading, leaving no normal receiver \
                         (lower slow_consumer_share, or add members_per_room)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn tls(&self) -> Result<(), ScenarioError> {
        if let Some(path) = &self.s.client.ca_file {
            crate::tls::load_ca_file(path).map_err(|e| {
                self.err(
                    "client",
                    "ca_file",
                    format!("client.ca_file = {:?}: {e}", path.display().to_string()),
                )
            })?;
        }
        Ok(())
    }

    /// `receive_threads` within its bound; `receive_path = "epoll"` only where it applies.
    fn receive_path(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        let c = &s.client;
        if !(1..=MAX_RECEIVE_THREADS).contains(&c.receive_threads) {
            return Err(self.err(
                "client",
                "receive_threads",
                format!(
                    "client.receive_threads = {}: must be between 1 and {MAX_RECEIVE_THREADS} \
                     (one readiness loop per thread; 1 is enough for most runs)",
                    c.receive_threads
                ),
            ));
        }
        if c.arrival == ArrivalClock::Kernel && c.receive_path == ReceivePath::Tokio {
            return Err(self.err(
                "client",
                "arrival",
                "client.arrival = \"kernel\" with receive_path = \"tokio\": kernel receive \
                 times are taken on the epoll receive path only; use receive_path = \"auto\" \
                 or arrival = \"read\""
                    .to_string(),
            ));
        }
        if c.receive_path != ReceivePath::Epoll {
            return Ok(());
        }
        let why = if s.protocol != ProtocolKind::Chatbench {
            Some(format!("protocol = \"{}\"", s.protocol.as_str()))
        } else if s.reconnects() {
            Some("connections reconnect ([reconnect] or a [[fault]])".to_string())
        } else {
            None
        };
        match why {
            Some(why) => Err(self.err(
                "client",
                "receive_path",
                format!(
                    "client.receive_path = \"epoll\" with {why}: the epoll receive path serves \
                     plain receive-only connections of the chatbench protocol that do not \
                     reconnect; use \"auto\" (epoll where it applies) or \"tokio\""
                ),
            )),
            None => Ok(()),
        }
    }

    fn feeder(&self) -> Result<Option<Arc<Feeder>>, ScenarioError> {
        let c = &self.s.client;
        let Some(path) = &c.feeder else {
            return Ok(None);
        };
        let feeder = Feeder::load(path, c.feeder_policy)
            .map_err(|e| self.err("client", "feeder", format!("client.feeder: {e}")))?;
        if !feeder.covers(self.s.connections) {
            return Err(self.err(
                "client",
                "feeder",
                format!(
                    "client.feeder {:?} has {} rows for {} connections (one row per connection \
                     under feeder_policy = \"refuse\"): add rows, lower connections, or set \
                     feeder_policy = \"cycle\" to reuse rows",
                    path.display().to_string(),
                    feeder.len(),
                    self.s.connections
                ),
            ));
        }
        Ok(Some(Arc::new(feeder)))
    }

    /// The placeholders of the profile's request fields, against the feeder's columns.
    fn placeholders(
        &self,
        profile: &Profile,
        feeder: Option<&Feeder>,
    ) -> Result<(), ScenarioError> {
        // The URL's own path is checked with the target; here the `[profile]` fields.
        let request = profile.request("/");
        let columns = feeder.map(|f| &f.columns[..]);
        SessionTemplate::new(&request, columns).map_err(|(field, e)| {
            let (key, line) = match &field {
                Field::Path => (
                    "path",
                    find_key_line(&self.s.source.text, "profile", "path"),
                ),
                Field::Subprotocol => (
                    "subprotocol",
                    find_key_line(&self.s.source.text, "profile", "subprotocol"),
                ),
                Field::Header(name) => (
                    "headers",
                    find_key_line(&self.s.source.text, "profile", "headers")
                        .or_else(|| find_key_line(&self.s.source.text, "profile.headers", name)),
                ),
            };
            ScenarioError::Invalid {
                location: Location {
                    origin: self.origin(),
                    line,
                    column: None,
                },
                field: key,
                message: format!("profile.{key}: {e}"),
            }
        })?;
        Ok(())
    }

    fn profile(&self) -> Result<Profile, ScenarioError> {
        let s = self.s;
        let profile = Profile::from_options(s.protocol, &s.profile).map_err(|e| match e {
            ProfileError::Unknown {
                key,
                protocol,
                suggestion,
                valid,
            } => ScenarioError::UnknownField {
                location: Location {
                    origin: self.origin(),
                    line: find_key_line(&s.source.text, "profile", &key),
                    column: None,
                },
                field: format!("profile.{key}\" for protocol \"{protocol}"),
                suggestion,
                valid,
            },
            ProfileError::Invalid { key, message } => self.err("profile", key, message),
        })?;
        if profile.fanout() == Fanout::Echo
            && s.rooms > 0
            && s.senders_per_room != s.members_per_room
        {
            return Err(self.err(
                "",
                "senders_per_room",
                format!(
                    "protocol = \"echo\": every member sends and reads its own echoes, so \
                     senders_per_room must equal members_per_room = {} (set senders_per_room = {})",
                    s.members_per_room, s.members_per_room
                ),
            ));
        }
        if s.poison_after.is_some() && profile.poison_frame().is_none() {
            return Err(self.err(
                "",
                "poison_after",
                format!(
                    "poison_after sends the fault-injection frame {{\"t\":\"panic\"}}, which protocol \
                     = \"{}\" has no form of (remove poison_after, or use protocol = \"chatbench\" \
                     or \"socketio\")",
                    profile.name()
                ),
            ));
        }
        // The profile's envelope around the body, at its longest (20-digit seq and ts).
        let envelope = profile
            .writer("r4294967295", "a4294967295.c4294967295", "")
            .render(u64::MAX, u64::MAX)
            .len();
        let limit = s.client.max_message_size.saturating_sub(envelope);
        if s.payload_bytes as usize > limit {
            return Err(self.err(
                "",
                "payload_bytes",
                format!(
                    "payload_bytes = {}: a {} message must fit in client.max_message_size = {} \
                     with its {envelope}-byte envelope (set payload_bytes <= {limit} or raise \
                     client.max_message_size)",
                    s.payload_bytes,
                    profile.name(),
                    s.client.max_message_size
                ),
            ));
        }
        Ok(profile)
    }

    fn reconnect_and_faults(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        let r = &s.reconnect;
        if r.initial_backoff.is_zero() {
            return Err(self.err(
                "reconnect",
                "initial_backoff",
                "reconnect.initial_backoff = \"0s\": a zero wait makes every lost client retry \
                 at once (set e.g. initial_backoff = \"100ms\")"
                    .to_owned(),
            ));
        }
        if r.max_backoff < r.initial_backoff {
            return Err(self.err(
                "reconnect",
                "max_backoff",
                format!(
                    "reconnect.max_backoff = \"{}\" is below initial_backoff = \"{}\" \
                     (set max_backoff >= initial_backoff, e.g. \"2s\")",
                    humantime::format_duration(r.max_backoff),
                    humantime::format_duration(r.initial_backoff)
                ),
            ));
        }
        if !(r.jitter.is_finite() && (0.0..=1.0).contains(&r.jitter)) {
            return Err(self.err(
                "reconnect",
                "jitter",
                format!(
                    "reconnect.jitter = {}: must be a fraction from 0 (no jitter) to 1 \
                     (e.g. jitter = 0.5)",
                    r.jitter
                ),
            ));
        }
        if r.max_attempts == 0 {
            return Err(self.err(
                "reconnect",
                "max_attempts",
                "reconnect.max_attempts = 0: a reconnecting client needs at least one attempt \
                 (e.g. max_attempts = 20), or set enabled = false"
                    .to_owned(),
            ));
        }
        if r.deadline.is_zero() {
            return Err(self.err(
                "reconnect",
                "deadline",
                "reconnect.deadline = \"0s\": give clients time to come back (e.g. deadline = \"30s\")"
                    .to_owned(),
            ));
        }
        if s.faults.len() > 1 {
            return Err(self.err(
                "fault",
                "kill_node",
                format!(
                    "{} [[fault]] entries: a run kills one node for now (keep one [[fault]])",
                    s.faults.len()
                ),
            ));
        }
        if let Some(f) = s.faults.first() {
            if f.kill_node == 0 {
                return Err(self.err(
                    "fault",
                    "kill_node",
                    "fault.kill_node = 0: nodes are numbered from 1 (e.g. kill_node = 1)"
                        .to_owned(),
                ));
            }
            if f.at >= s.measure {
                return Err(self.err(
                    "fault",
                    "at",
                    format!(
                        "fault.at = \"{}\" is not inside the measurement window (measure = \"{}\"); \
                         set it below measure so the kill and the recovery are measured",
                        humantime::format_duration(f.at),
                        humantime::format_duration(s.measure)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn durations(&self) -> Result<(), ScenarioError> {
        let s = self.s;
        let r = &s.reconnect;
        let mut all = vec![
            ("", "connect_timeout", s.connect_timeout),
            ("", "settle", s.settle),
            ("", "warmup", s.warmup),
            ("", "measure", s.measure),
            ("", "cooldown", s.cooldown),
            ("", "late_after", s.late_after),
            ("reconnect", "initial_backoff", r.initial_backoff),
            ("reconnect", "max_backoff", r.max_backoff),
            ("reconnect", "deadline", r.deadline),
        ];
        all.extend(s.poison_after.map(|p| ("", "poison_after", p)));
        all.extend(s.faults.iter().map(|f| ("fault", "at", f.at)));
        for (table, key, d) in all {
            if d > MAX_DURATION {
                let name = if table.is_empty() {
                    key.to_owned()
                } else {
                    format!("{table}.{key}")
                };
                return Err(self.err(
                    table,
                    key,
                    format!(
                        "{name} = \"{}\": at most \"{}\" (longer durations overflow the \
                         engine's clock arithmetic; e.g. {key} = \"10s\")",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                ));
            }
        }
        if s.measure.is_zero() {
            return Err(self.err(
                "",
                "measure",
                "measure = \"0s\": the measurement window must be longer than zero \
                 (e.g. measure = \"10s\")"
                    .to_owned(),
            ));
        }
        if s.connect_timeout.is_zero() {
            return Err(self.err(
                "",
                "connect_timeout",
                "connect_timeout = \"0s\": connections need time to open (e.g. connect_timeout = \"10s\")"
                    .to_owned(),
            ));
        }
        if let Some(p) = s.poison_after {
            if p >= s.measure {
                return Err(self.err(
                    "",
                    "poison_after",
                    format!(
                        "poison_after = \"{}\" is not inside the measurement window (measure = \"{}\"); \
                         set it below measure so the crash and its aftermath are measured",
                        humantime::format_duration(p),
                        humantime::format_duration(s.measure)
                    ),
                ));
            }
            if s.rooms == 0 {
                return Err(self.err(
                    "",
                    "poison_after",
                    "poison_after needs a member connection to send the frame (set rooms and members_per_room)"
                        .to_owned(),
                ));
            }
        }
        if s.late_after.is_zero() {
            return Err(self.err(
                "",
                "late_after",
                "late_after = \"0s\": every delivery would be late (e.g. late_after = \"1s\")"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// 1-based (line, column) of byte `offset` in `bytes`.
fn line_col(bytes: &[u8], offset: usize) -> (u32, u32) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (to_u32(line), to_u32(column))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The 1-based line where `key` is set in `table` ("" = top level), by a line scan: handles
/// `[table]` headers, `key = …` and `table.key = …` at top level. Good enough for error messages.
fn find_key_line(text: &str, table: &str, key: &str) -> Option<u32> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            current = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs: String = lhs.chars().filter(|c| !c.is_whitespace()).collect();
        let lhs = lhs.trim_matches('"');
        let full = if current.is_empty() {
            lhs.to_owned()
        } else {
            format!("{current}.{lhs}")
        };
        let wanted = if table.is_empty() {
            key.to_owned()
        } else {
            format!("{table}.{key}")
        };
        if full == wanted {
            return Some(to_u32(i + 1));
        }
    }
    None
}

/// Turn a TOML/serde error into a [`ScenarioError`] with a place and a hint.
fn de_error(e: &toml::de::Error, text: &str, origin: &str) -> ScenarioError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text.as_bytes(), span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let location = Location {
        origin: origin.to_owned(),
        line,
        column,
    };
    let message = e.message().trim().to_owned();

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<String> = tail
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let suggestion = closest(field, &valid)
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        return ScenarioError::UnknownField {
            location,
            field: field.to_owned(),
            suggestion,
            valid: valid.join(", "),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest).to_owned();
        let example = match field.as_str() {
            "name" => "name = \"my-scenario\"".to_owned(),
            "connections" => "connections = 1000".to_owned(),
            other => format!("{other} = …"),
        };
        return ScenarioError::MissingField {
            location: Location {
                line: None,
                column: None,
                ..location
            },
            field,
            example,
        };
    }
    let key = line.and_then(|l| key_on_line(text, l));
    let mut message = match key {
        Some(k) if !message.contains(&k) => format!("{k}: {message}"),
        _ => message,
    };
    if message.contains("invalid type") || message.contains("invalid value") {
        message.push_str(type_hint(&message));
    }
    ScenarioError::Syntax { location, message }
}

/// The key assigned on 1-based `line`, if the line is a `key = value` line.
fn key_on_line(text: &str, line: u32) -> Option<String> {
    let l = text
        .lines()
        .nth(usize::try_from(line.checked_sub(1)?).ok()?)?;
    let (lhs, _) = l.split_once('=')?;
    let k = lhs.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_owned())
}

/// A hint for serde's "invalid type: …, expected X" messages.
fn type_hint(message: &str) -> &'static str {
    let expected = message.rsplit("expected").next().unwrap_or("");
    if expected.contains("u32") || expected.contains("u64") || expected.contains("usize") {
        " (write a whole number without quotes, e.g. 1000)"
    } else if expected.contains("f64") {
        " (write a number without quotes, e.g. 10.0)"
    } else if expected.contains("a string") {
        " (write text in double quotes)"
    } else {
        ""
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "scenarios/x.toml";

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, ORIGIN)
    }

    fn err(text: &str) -> (ScenarioError, String) {
        let e = parse(text).expect_err("scenario should be rejected");
        let msg = e.to_string();
        (e, msg)
    }

    /// A scenario of `connections` with a feeder file of `csv` and the `[profile]` lines.
    fn with_feeder(
        csv: &str,
        connections: u32,
        client: &str,
        profile: &str,
    ) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, csv).expect("write");
        let text = format!(
            "name = \"m\"\nconnections = {connections}\n[client]\nfeeder = {:?}\n{client}[profile]\n{profile}",
            path.display().to_string()
        );
        (dir, text)
    }

    #[test]
    fn feeder_placeholders_are_checked_at_parse_time_with_the_line() {
        let csv = "user,token\nu0,t0\nu1,t1\n";
        let (_d, ok) = with_feeder(csv, 2, "", "headers = { Authorization = \"Bearer {feeder.token}\" }\npath = \"/ws/{room}?c={conn}&f={from}\"\n");
        let s = parse(&ok).expect("valid");
        assert_eq!(s.feeder().map(|f| f.len()), Some(2));
        let (_d, t) = with_feeder(
            csv,
            2,
            "",
            "headers = { Authorization = \"Bearer {feeder.tokn}\" }\n",
        );
        let (e, msg) = err(&t);
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(
            msg.contains("no column \"tokn\"") && msg.contains("user, token"),
            "{msg}"
        );
        let (_d, t) = with_feeder(csv, 2, "", "subprotocol = \"v1.{conection}\"\n");
        let (e, msg) = err(&t);
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(msg.contains("unknown placeholder {conection}"), "{msg}");
        let (_d, t) = with_feeder(csv, 2, "", "path = \"/ws/{conn\"\n");
        let (_, msg) = err(&t);
        assert!(msg.contains("unbalanced brace"), "{msg}");
        // A [profile.headers] table: the header's own line.
        let (_d, t) = with_feeder(
            csv,
            2,
            "",
            "[profile.headers]\nX-Token = \"{feeder.nope}\"\n",
        );
        let (e, msg) = err(&t);
        assert_eq!(e.line(), Some(7), "{msg}");
    }

    #[test]
    fn feeder_without_enough_rows_is_refused_unless_it_cycles() {
        let csv = "token\nt0\nt1\n";
        let (_d, t) = with_feeder(csv, 3, "", "");
        let (e, msg) = err(&t);
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(
            msg.contains("2 rows for 3 connections") && msg.contains("cycle"),
            "{msg}"
        );
        let (_d, t) = with_feeder(csv, 3, "feeder_policy = \"cycle\"\n", "");
        let s = parse(&t).expect("cycle");
        assert_eq!(
            s.feeder().and_then(|f| f.row(2)).map(|r| r[0].as_str()),
            Some("t0")
        );
        let (_d, t) = with_feeder("token\n", 1, "", "");
        let (e, msg) = err(&t);
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(msg.contains("empty feeder"), "{msg}");
        let (_, msg) =
            err("name = \"m\"\nconnections = 1\n[profile]\nheaders = { A = \"{feeder.token}\" }\n");
        assert!(msg.contains("needs a feeder file"), "{msg}");
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nothing\n").expect("write");
        let (e, msg) = err(&format!(
            "name = \"m\"\nconnections = 1\n[client]\ninsecure = false\nca_file = {:?}\n",
            path.display().to_string()
        ));
        assert_eq!(e.line(), Some(5), "{msg}");
        assert!(
            msg.contains("ca.pem") && msg.contains("no certificate"),
            "{msg}"
        );
    }

    #[test]
    fn reconnect_and_kill_fault_parse_with_defaults() {
        let s = parse("name = \"k\"\nconnections = 4\nrooms = 1\nmembers_per_room = 4\n\n[[fault]]\nkill_node = 2\nat = \"3s\"\n")
            .expect("valid");
        let f = s.kill_fault().expect("a kill fault");
        assert_eq!((f.kill_node, f.at), (2, Duration::from_secs(3)));
        assert!(s.reconnects(), "a kill turns reconnects on by default");
        let s = parse("name = \"k\"\nconnections = 4\n").expect("valid");
        assert!(s.kill_fault().is_none());
        assert!(!s.reconnects(), "off without a kill");
        let s = parse("name = \"k\"\nconnections = 4\n[reconnect]\nenabled = true\ninitial_backoff = \"50ms\"\nmax_backoff = \"1s\"\njitter = 0.0\nmax_attempts = 3\ndeadline = \"5s\"\n")
            .expect("valid");
        assert!(s.reconnects());
        assert_eq!(s.reconnect.max_attempts, 3);
        assert_eq!(s.reconnect.initial_backoff, Duration::from_millis(50));
    }

    #[test]
    fn bad_reconnect_values_name_the_line_and_the_fix() {
        let base = "name = \"k\"\nconnections = 4\n[reconnect]\n";
        for (line, needle) in [
            ("initial_backoff = \"0s\"", "initial_backoff"),
            ("max_backoff = \"10ms\"", "max_backoff"),
            ("jitter = 1.5", "jitter"),
            ("max_attempts = 0", "max_attempts"),
            ("deadline = \"0s\"", "deadline"),
        ] {
            let (e, msg) = err(&format!("{base}{line}\n"));
            assert_eq!(e.line(), Some(4), "{msg}");
            assert!(msg.contains(needle) && msg.starts_with(ORIGIN), "{msg}");
        }
        let (e, msg) = err(&format!("{base}max_attempt = 3\n"));
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(msg.contains("did you mean \"max_attempts\""), "{msg}");
        let (_, msg) = err(&format!("{base}initial_backoff = \"soon\"\n"));
        assert!(msg.contains("duration"), "{msg}");
    }

    #[test]
    fn bad_kill_faults_are_rejected() {
        let base = "name = \"k\"\nconnections = 4\nmeasure = \"5s\"\n[[fault]]\n";
        let (e, msg) = err(&format!("{base}kill_node = 0\nat = \"1s\"\n"));
        assert_eq!(e.line(), Some(5), "{msg}");
        assert!(msg.contains("numbered from 1"), "{msg}");
        let (e, msg) = err(&format!("{base}kill_node = 1\nat = \"5s\"\n"));
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(msg.contains("measurement window"), "{msg}");
        let (_, msg) = err(&format!("{base}kill_node = 1\n"));
        assert!(msg.contains("at"), "{msg}");
        let (_, msg) = err(&format!(
            "{base}kill_node = 1\nat = \"1s\"\n[[fault]]\nkill_node = 2\nat = \"2s\"\n"
        ));
        assert!(msg.contains("one node"), "{msg}");
    }

    #[test]
    fn poison_after_must_fall_in_the_window_and_have_a_member() {
        let (e, msg) = err("name = \"p\"\nconnections = 4\nrooms = 1\nmembers_per_room = 4\nmeasure = \"5s\"\npoison_after = \"5s\"\n");
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(msg.contains("measurement window"), "{msg}");
        let (_, msg) = err("name = \"p\"\nconnections = 4\npoison_after = \"1s\"\n");
        assert!(msg.contains("member"), "{msg}");
        let s = parse("name = \"p\"\nconnections = 4\nrooms = 1\nmembers_per_room = 4\npoison_after = \"1s\"\n")
            .expect("valid");
        assert_eq!(s.poison_after, Some(Duration::from_secs(1)));
        assert_eq!(
            parse("name = \"p\"\nconnections = 4\n")
                .expect("valid")
                .poison_after,
            None
        );
    }

    #[test]
    fn defaults_apply_to_minimal_file() {
        let s = parse("name = \"m\"\nconnections = 10\n").expect("minimal scenario");
        assert_eq!(s.name, "m");
        assert_eq!(s.description, "");
        assert_eq!(s.connections, 10);
        assert_eq!(s.ramp_rate, 5000.0);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.rooms, 0);
        assert_eq!(s.members_per_room, 0);
        assert_eq!(s.senders_per_room, 1);
        assert_eq!(s.rate_per_sender, 1.0);
        assert_eq!(s.arrival, Arrival::Uniform);
        assert_eq!(s.payload_bytes, 64);
        assert_eq!(s.settle, Duration::from_secs(2));
        assert_eq!(s.warmup, Duration::from_secs(2));
        assert_eq!(s.measure, Duration::from_secs(10));
        assert_eq!(s.cooldown, Duration::from_secs(2));
        assert_eq!(s.slow_consumer_share, 0.0);
        assert_eq!(s.late_after, Duration::from_secs(1));
        assert_eq!(s.seed, 1);
        assert_eq!(s.client, ClientSettings::default());
        assert_eq!(s.client.read_buffer_size, 1024);
        assert_eq!(s.client.max_write_buffer_size, 1 << 20);
        assert_eq!(s.source.text, "name = \"m\"\nconnections = 10\n");
        assert_eq!(s.source.path, None);
        assert_eq!(s.member_count(), 0);
        assert_eq!(s.sender_count(), 0);
        assert_eq!(s.expected_msgs_per_sec(), 0.0);
    }

    #[test]
    fn full_file_and_derived_figures() {
        let s = parse(
            r#"
name = "b"
connections = 2500
rooms = 20
members_per_room = 100
senders_per_room = 2
rate_per_sender = 5
arrival = "poisson"
measure = "1m 30s"
ramp_rate = 1000

[client]
read_buffer_size = 8192
"#,
        )
        .expect("valid");
        assert_eq!(s.arrival, Arrival::Poisson);
        assert_eq!(s.measure, Duration::from_secs(90));
        assert_eq!(s.client.read_buffer_size, 8192);
        assert_eq!(s.client.write_buffer_size, 4096);
        assert_eq!(s.member_count(), 2000);
        assert_eq!(s.idle_count(), 500);
        assert_eq!(s.sender_count(), 40);
        assert_eq!(s.expected_msgs_per_sec(), 200.0);
        assert_eq!(s.expected_deliveries_per_sec(), 200.0 * 99.0);
        assert_eq!(s.ramp_duration(), Duration::from_millis(2500));
        assert_eq!(
            s.total_duration(),
            Duration::from_millis(2500 + 2000 + 2000 + 90_000 + 2000)
        );
    }

    #[test]
    fn serialises_durations_as_strings() {
        let s = parse("name = \"m\"\nconnections = 1\nmeasure = \"1500ms\"\n").expect("valid");
        let json = serde_json::to_value(&s).expect("serialise");
        assert_eq!(json["measure"], "1s 500ms");
        assert_eq!(json["arrival"], "uniform");
    }

    #[test]
    fn unknown_field_names_line_and_suggests() {
        let (e, msg) = err("name = \"m\"\n\nconections = 10\n");
        assert_eq!(e.line(), Some(3));
        assert!(
            msg.starts_with(
                "scenarios/x.toml:3:1: unknown field \"conections\"; did you mean \"connections\"?"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("valid fields: name, description, connections"),
            "{msg}"
        );
    }

    #[test]
    fn thresholds_name_catalogue_keys_and_limits_with_the_line() {
        let base = "name='t'\nconnections=10\n[thresholds]\n";
        let s = parse(&format!("{base}p99_latency = \"<= 50 ms\"\n")).expect("valid");
        assert_eq!(s.thresholds["p99_latency"].as_str(), Some("<= 50 ms"));
        let (e, text) = err(&format!("{base}p99_latncy = \"<= 50\"\n"));
        assert_eq!(e.line(), Some(4), "{text}");
        assert!(text.contains("did you mean \"p99_latency\""), "{text}");
        assert!(text.contains("valid fields: connections_ready"), "{text}");
        let (e, text) = err(&format!("{base}\np99_latency = \"50 ms\"\n"));
        assert_eq!(e.line(), Some(5), "{text}");
        assert!(text.contains("no comparison"), "{text}");
    }

    #[test]
    fn thresholds_by_kind_read_in_every_toml_form_and_errors_name_their_line() {
        let base = "name='t'\nconnections=10\n[thresholds]\n";
        for form in [
            format!("{base}connection_errors.refused = \"<= 0\"\n"),
            format!("{base}connection_errors = {{ refused = \"<= 0\" }}\n"),
            "name='t'\nconnections=10\n[thresholds.connection_errors]\nrefused = \"<= 0\"\n"
                .to_string(),
        ] {
            let s = parse(&form).expect("valid");
            let t = crate::thresholds::of_scenario(&s);
            assert_eq!(t.len(), 1, "{form}");
            assert_eq!(t[0].key(), "connection_errors.refused");
        }
        let (e, text) = err(&format!(
            "{base}p99_latency = 5\nconnection_errors.refusd = \"<= 0\"\n"
        ));
        assert_eq!(e.line(), Some(4), "{text}");
        assert!(text.contains("expected a limit"), "{text}");
        let (e, text) = err(&format!("{base}\nconnection_errors.refusd = \"<= 0\"\n"));
        assert_eq!(e.line(), Some(5), "{text}");
        assert!(text.contains("did you mean \"refused\""), "{text}");
    }

    #[test]
    fn unknown_field_in_client_table() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\n[client]\nread_bufer_size = 1024\n");
        assert_eq!(e.line(), Some(4));
        assert!(msg.contains("did you mean \"read_buffer_size\"?"), "{msg}");
    }

    #[test]
    fn unknown_field_without_close_match_has_no_suggestion() {
        let (_, msg) = err("name = \"m\"\nconnections = 1\nzzzzzzzz = 3\n");
        assert!(!msg.contains("did you mean"), "{msg}");
        assert!(msg.contains("valid fields:"), "{msg}");
    }

    #[test]
    fn missing_required_field() {
        let (e, msg) = err("name = \"m\"\n");
        assert!(matches!(e, ScenarioError::MissingField { .. }));
        assert!(
            msg.starts_with("scenarios/x.toml: missing required field \"connections\""),
            "{msg}"
        );
        assert!(msg.contains("connections = 1000"), "{msg}");
    }

    #[test]
    fn bad_duration_shows_accepted_form() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nwarmup = \"5 parsecs\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("invalid duration \"5 parsecs\""), "{msg}");
        assert!(msg.contains("\"10s\""), "{msg}");
        assert!(msg.contains("warmup"), "{msg}");
    }

    #[test]
    fn values_the_engine_cannot_represent_are_rejected_at_their_line() {
        // Each of these once validated and then panicked, spun or lied (issue 19).
        for (text, line, needle) in [
            (
                "connect_timeout = \"500000000000years\"\n",
                3,
                "connect_timeout = ",
            ),
            ("measure = \"500000000000years\"\n", 3, "measure = "),
            ("settle = \"31days\"\n", 3, "at most \"30days\""),
            (
                "rooms = 1\nmembers_per_room = 2\nrate_per_sender = 1e300\n",
                5,
                "between 1e-6 and 1e5",
            ),
            (
                "rooms = 1\nmembers_per_room = 2\nrate_per_sender = 1e-300\n",
                5,
                "rate_per_sender = ",
            ),
            ("ramp_rate = 1e-300\n", 3, "between 0.001 and 1e9"),
            ("ramp_rate = 1e300\n", 3, "ramp_rate = "),
            (
                "[reconnect]\ndeadline = \"100years\"\n",
                4,
                "reconnect.deadline",
            ),
            ("silent_connections = 100001\n", 3, "at most 100000"),
        ] {
            let text = format!("name = \"m\"\nconnections = 2\n{text}");
            let (e, msg) = err(&text);
            assert_eq!(e.line(), Some(line), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(msg.contains("scenarios/x.toml:"), "{text}: {msg}");
        }
        let (e, msg) = err("name = \"m\"\nconnections = 4294967295\n");
        assert_eq!(e.line(), Some(2));
        assert!(msg.contains("at most 16777216"), "{msg}");
        // The bounds themselves are accepted.
        parse(
            "name = \"m\"\nconnections = 2\nrooms = 1\nmembers_per_room = 2\n\
             rate_per_sender = 1e5\nramp_rate = 0.001\nmeasure = \"30days\"\n\
             silent_connections = 100000\n",
        )
        .expect("at the bounds");
    }

    #[test]
    fn duration_as_number_is_rejected_with_form() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nmeasure = 10\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("duration string like \"10s\""), "{msg}");
    }

    #[test]
    fn wrong_type_names_key_and_hint() {
        let (e, msg) = err("name = \"m\"\nconnections = \"many\"\n");
        assert_eq!(e.line(), Some(2));
        assert!(msg.contains("connections"), "{msg}");
        assert!(msg.contains("whole number"), "{msg}");
    }

    #[test]
    fn unknown_arrival_variant() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\narrival = \"bursty\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("uniform") && msg.contains("poisson"), "{msg}");
    }

    #[test]
    fn toml_syntax_error_has_line() {
        let (e, msg) = err("name = \"m\"\nconnections = = 1\n");
        assert_eq!(e.line(), Some(2));
        assert!(msg.starts_with("scenarios/x.toml:2:"), "{msg}");
    }

    #[test]
    fn members_per_room_too_small() {
        let text = "name = \"m\"\nconnections = 100\nrooms = 3\n\n\n\nmembers_per_room = 1\n";
        let (e, msg) = err(text);
        assert_eq!(e.line(), Some(7));
        assert_eq!(
            msg,
            "scenarios/x.toml:7: members_per_room = 1: a room needs at least 2 members for \
             deliveries (set members_per_room >= 2, or rooms = 0 for idle connections)"
        );
    }

    #[test]
    fn rooms_exceed_connections() {
        let (e, msg) =
            err("name = \"m\"\nconnections = 10000\nrooms = 120\nmembers_per_room = 100\n");
        assert_eq!(e.line(), None);
        assert!(
            msg.starts_with(
                "scenarios/x.toml: rooms × members_per_room = 12000 exceeds connections = 10000"
            ),
            "{msg}"
        );
        assert!(msg.contains("raise connections"), "{msg}");
    }

    #[test]
    fn zero_connections() {
        let (e, msg) = err("name = \"m\"\nconnections = 0\n");
        assert_eq!(e.line(), Some(2));
        assert!(msg.contains("connections >= 1"), "{msg}");
    }

    #[test]
    fn bad_ramp_rate() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nramp_rate = 0.0\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("positive number of new connections"), "{msg}");
        let (_, msg) = err("name = \"m\"\nconnections = 1\nramp_rate = inf\n");
        assert!(msg.contains("ramp_rate = inf"), "{msg}");
    }

    #[test]
    fn bad_max_connecting() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nmax_connecting = 0\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("max_connecting = 0"), "{msg}");
        assert!(msg.contains("1 ..= 1000000"), "{msg}");
        let (_, msg) = err("name = \"m\"\nconnections = 1\nmax_connecting = 2000000\n");
        assert!(msg.contains("max_connecting = 2000000"), "{msg}");
        let ok = parse("name = \"m\"\nconnections = 1\n").expect("defaults are valid");
        assert_eq!(ok.max_connecting, DEFAULT_MAX_CONNECTING);
    }

    #[test]
    fn receive_path_and_threads_are_validated_at_their_line() {
        let ok = parse("name = \"m\"\nconnections = 1\n").expect("defaults are valid");
        assert_eq!(ok.client.receive_path, ReceivePath::Auto);
        assert_eq!(ok.client.receive_threads, 1);
        let ok = parse(
            "name = \"m\"\nconnections = 1\n[client]\nreceive_path = \"epoll\"\nreceive_threads = 4\n",
        )
        .expect("epoll with the chatbench profile");
        assert_eq!(ok.client.receive_path, ReceivePath::Epoll);
        assert_eq!(ok.client.receive_threads, 4);
        parse("name = \"m\"\nconnections = 1\n[client]\nreceive_path = \"tokio\"\n")
            .expect("tokio");
        parse(&format!(
            "name = \"m\"\nconnections = 1\n[client]\nreceive_threads = {MAX_RECEIVE_THREADS}\n"
        ))
        .expect("the bound itself");
        for bad in [0, MAX_RECEIVE_THREADS + 1] {
            let (e, msg) = err(&format!(
                "name = \"m\"\nconnections = 1\n[client]\nreceive_threads = {bad}\n"
            ));
            assert_eq!(e.line(), Some(4), "{msg}");
            assert!(msg.contains("client.receive_threads"), "{msg}");
        }
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\nprotocol = \"echo\"\n[client]\nreceive_path = \"epoll\"\n",
        );
        assert_eq!(e.line(), Some(5), "{msg}");
        assert!(msg.contains("protocol = \"echo\""), "{msg}");
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\n[client]\nreceive_path = \"epoll\"\n[reconnect]\nenabled = true\n",
        );
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(msg.contains("reconnect"), "{msg}");
        let (_, msg) = err("name = \"m\"\nconnections = 1\n[client]\nreceive_path = \"uring\"\n");
        assert!(msg.contains("uring"), "{msg}");
        assert_eq!(ok.client.arrival, ArrivalClock::Read, "the default");
        let k = parse("name = \"m\"\nconnections = 1\n[client]\narrival = \"kernel\"\n")
            .expect("kernel");
        assert_eq!(k.client.arrival, ArrivalClock::Kernel);
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\n[client]\nreceive_path = \"tokio\"\narrival = \"kernel\"\n",
        );
        assert_eq!(e.line(), Some(5), "{msg}");
        assert!(msg.contains("client.arrival"), "{msg}");
        let (_, msg) = err("name = \"m\"\nconnections = 1\n[client]\narrival = \"nic\"\n");
        assert!(msg.contains("nic"), "{msg}");
    }

    #[test]
    fn senders_exceed_members() {
        let (e, msg) = err(
            "name = \"m\"\nconnections = 10\nrooms = 1\nmembers_per_room = 3\nsenders_per_room = 4\n",
        );
        assert_eq!(e.line(), Some(5));
        assert!(
            msg.contains("senders_per_room <= members_per_room"),
            "{msg}"
        );
    }

    #[test]
    fn bad_rate_only_matters_with_senders() {
        let (e, msg) = err(
            "name = \"m\"\nconnections = 10\nrooms = 1\nmembers_per_room = 3\nrate_per_sender = 0\n",
        );
        assert_eq!(e.line(), Some(5));
        assert!(
            msg.contains("positive number of messages per second"),
            "{msg}"
        );
        parse("name = \"m\"\nconnections = 10\nrate_per_sender = 0\n")
            .expect("no rooms, no senders");
        parse("name = \"m\"\nconnections = 10\nrooms = 1\nmembers_per_room = 3\nsenders_per_room = 0\nrate_per_sender = 0\n")
            .expect("no senders");
    }

    #[test]
    fn payload_limits() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\npayload_bytes = 2000000\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("at most 1048576"), "{msg}");
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\npayload_bytes = 1000\n[client]\nmax_message_size = 1100\n",
        );
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("set payload_bytes <= 900"), "{msg}");
    }

    #[test]
    fn buffer_limits() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\n[client]\nread_buffer_size = 100\n");
        assert_eq!(e.line(), Some(4));
        assert!(
            msg.contains("client.read_buffer_size = 100: must be between 256 bytes"),
            "{msg}"
        );
        let (e, msg) = err("name = \"m\"\nconnections = 1\nclient.write_buffer_size = 100000000\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("64 MiB"), "{msg}");
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\n[client]\nwrite_buffer_size = 8192\nmax_write_buffer_size = 8192\n",
        );
        assert_eq!(e.line(), Some(5));
        assert!(
            msg.contains("must be greater than client.write_buffer_size"),
            "{msg}"
        );
    }

    #[test]
    fn slow_consumer_limits() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nslow_consumer_share = 1.0\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("below 1"), "{msg}");
        // 3 members, 1 sender: 2 receivers; 0.9 × 2 rounds to 2 → none left.
        let (e, msg) = err(
            "name = \"m\"\nconnections = 3\nrooms = 1\nmembers_per_room = 3\nslow_consumer_share = 0.9\n",
        );
        assert_eq!(e.line(), Some(5));
        assert!(msg.contains("leaving no normal receiver"), "{msg}");
        let s = parse(
            "name = \"m\"\nconnections = 100\nrooms = 1\nmembers_per_room = 100\nslow_consumer_share = 0.1\n",
        )
        .expect("valid");
        assert_eq!(s.slow_consumers_per_room(), 10);
    }

    #[test]
    fn zero_measure() {
        let (e, msg) = err("name = \"m\"\nconnections = 1\nmeasure = \"0s\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(msg.contains("longer than zero"), "{msg}");
    }

    #[test]
    fn bad_names() {
        for bad in ["", "a b", "x/y", "..", "é"] {
            let text = format!("name = {bad:?}\nconnections = 1\n");
            let (e, msg) = err(&text);
            assert_eq!(e.line(), Some(1), "{bad:?}");
            assert!(msg.contains("letters, digits"), "{msg}");
        }
        parse("name = \"a.B_9-z\"\nconnections = 1\n").expect("valid name");
    }

    #[test]
    fn load_missing_file() {
        let e = Scenario::load(Path::new("/nonexistent/x.toml")).expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.starts_with("/nonexistent/x.toml: cannot read scenario file"),
            "{msg}"
        );
        assert!(msg.contains("check the path"), "{msg}");
    }

    #[test]
    fn load_not_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            b"name = \"m\"\nconnections = 1\ndescription = \"\xff\"\n",
        )
        .expect("write");
        let e = Scenario::load(&path).expect_err("not utf-8");
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("save it as UTF-8"), "{e}");
    }

    #[test]
    fn load_records_path_and_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ok.toml");
        let text = "# hi\nname = \"m\"\nconnections = 1\n";
        std::fs::write(&path, text).expect("write");
        let s = Scenario::load(&path).expect("valid");
        assert_eq!(s.source.path.as_deref(), Some(path.as_path()));
        assert_eq!(s.source.text, text);
        // Validation errors after load name the file.
        std::fs::write(&path, "name = \"m\"\nconnections = 0\n").expect("write");
        let msg = Scenario::load(&path).expect_err("invalid").to_string();
        assert!(msg.starts_with(&format!("{}:2:", path.display())), "{msg}");
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            assert_eq!(s.name, stem, "scenario name should match its file name");
            assert!(
                s.source.text.trim_start().starts_with('#'),
                "{}: start with comments",
                path.display()
            );
            seen += 1;
        }
        assert!(seen >= 4, "expected the shipped scenarios, found {seen}");
    }

    #[test]
    fn every_profile_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/profiles");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("scenarios/profiles/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            assert_eq!(s.name, stem, "scenario name should match its file name");
            seen.push(s.session_profile().name());
        }
        seen.sort_unstable();
        seen.dedup();
        let mut every = ProtocolKind::ALL.map(ProtocolKind::as_str);
        every.sort_unstable();
        assert_eq!(seen, every, "one example per profile");
    }

    #[test]
    fn protocol_and_profile_options() {
        let s = parse("name = \"m\"\nconnections = 1\n").expect("valid");
        assert_eq!(s.protocol, ProtocolKind::Chatbench);
        assert_eq!(s.session_profile(), &Profile::default());
        let s = parse(
            "name = \"m\"\nconnections = 1\nprotocol = \"socketio\"\n[profile]\nnamespace = \"/chat\"\n",
        )
        .expect("valid");
        assert_eq!(s.session_profile().name(), "socketio");
        // A scenario serialised and read back with serde (e.g. sent to an agent) rebuilds the
        // same profile.
        let text = toml::to_string(&s).expect("serialise");
        let back: Scenario = toml::from_str(&text).expect("deserialise");
        assert_eq!(back.session_profile(), s.session_profile());
        let (e, msg) = err("name = \"m\"\nconnections = 1\nprotocol = \"mqtt\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(
            msg.contains("chatbench") && msg.contains("phoenix"),
            "{msg}"
        );
        let (e, msg) = err(
            "name = \"m\"\nconnections = 1\nprotocol = \"phoenix\"\n[profile]\n\nheartbeat_interval = \"0s\"\n",
        );
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(msg.contains("profile.heartbeat_interval"), "{msg}");
        let (e, msg) = err("name = \"m\"\nconnections = 1\n[profile]\nsubprotocl = \"x\"\n");
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(
            msg.starts_with("scenarios/x.toml:4: unknown field \"profile.subprotocl\" for protocol \"chatbench\"; did you mean \"subprotocol\"?"),
            "{msg}"
        );
    }

    #[test]
    fn profile_envelope_and_fault_injection_limits() {
        let big = "message = '{\"from\":\"{from}\",\"seq\":{seq},\"ts\":{ts},\"pad\":\"".to_owned()
            + &"p".repeat(600)
            + "\",\"b\":\"{body}\"}'\n";
        let text = format!(
            "name = \"m\"\nconnections = 1\nprotocol = \"template\"\npayload_bytes = 200\n[client]\nmax_message_size = 800\n[profile]\n{big}"
        );
        let (e, msg) = err(&text);
        assert_eq!(e.line(), Some(4), "{msg}");
        assert!(msg.contains("a template message must fit"), "{msg}");
        let (e, msg) = err(
            "name = \"m\"\nconnections = 4\nrooms = 1\nmembers_per_room = 4\nprotocol = \"phoenix\"\npoison_after = \"1s\"\n",
        );
        assert_eq!(e.line(), Some(6), "{msg}");
        assert!(
            msg.contains("protocol = \"phoenix\" has no form of"),
            "{msg}"
        );
        // Socket.IO has one: the message event carrying {"t":"panic"}.
        let s = parse(
            "name = \"m\"\nconnections = 4\nrooms = 1\nmembers_per_room = 4\nprotocol = \"socketio\"\npoison_after = \"1s\"\n",
        )
        .expect("socketio can poison");
        assert_eq!(
            s.session_profile().poison_frame().as_deref(),
            Some(r#"42["message",{"t":"panic"}]"#)
        );
    }

    #[test]
    fn echo_needs_every_member_to_send() {
        let (e, msg) = err(
            "name = \"m\"\nconnections = 4\nprotocol = \"echo\"\nrooms = 2\nmembers_per_room = 2\nsenders_per_room = 1\n",
        );
        assert_eq!(e.line(), Some(6));
        assert!(msg.contains("senders_per_room = 2"), "{msg}");
    }

    #[test]
    fn profiles_doc_examples_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/profiles.md");
        let doc = std::fs::read_to_string(&path).expect("docs/profiles.md");
        let mut protocols = Vec::new();
        for block in doc.split("```toml\n").skip(1) {
            let text = &block[..block.find("```").expect("closing fence")];
            let s = Scenario::parse(text, "docs/profiles.md").unwrap_or_else(|e| panic!("{e}"));
            protocols.push(s.session_profile().name());
        }
        assert_eq!(
            protocols,
            ProtocolKind::ALL.map(ProtocolKind::as_str),
            "one example per profile, in order"
        );
    }

    #[test]
    fn reference_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scenarios.md");
        let doc = std::fs::read_to_string(&path).expect("docs/scenarios.md");
        let section = doc
            .find("## A full example")
            .expect("a full example section");
        let start = section
            + doc[section..].find("```toml\n").expect("a ```toml example")
            + "```toml\n".len();
        let len = doc[start..].find("```").expect("closing fence");
        let s = Scenario::parse(&doc[start..start + len], "docs/scenarios.md")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.expected_msgs_per_sec(), 200.0);
        assert_eq!(s.expected_deliveries_per_sec(), 19_800.0);
        assert_eq!(s.slow_consumers_per_room(), 5);
        assert_eq!(s.idle_count(), 500);
    }

    #[test]
    fn smoke_finishes_quickly() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.toml");
        let s = Scenario::load(&path).expect("smoke");
        assert!(
            s.total_duration() < Duration::from_secs(15),
            "{:?}",
            s.total_duration()
        );
    }

    #[test]
    fn find_key_line_handles_tables_and_dotted_keys() {
        let text = "a = 1\n[client]\nread_buffer_size = 2\n[other]\nb = 3\n";
        assert_eq!(find_key_line(text, "", "a"), Some(1));
        assert_eq!(find_key_line(text, "client", "read_buffer_size"), Some(3));
        assert_eq!(find_key_line(text, "", "b"), None);
        assert_eq!(find_key_line("client.x = 1\n", "client", "x"), Some(1));
    }
}
