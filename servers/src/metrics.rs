//! Counters every architecture keeps, and their Prometheus text rendering for `GET /metrics`.
//!
//! One [`Metrics`] value per server, shared by reference (`Arc`) with every connection; all
//! fields are relaxed atomics, so counting costs one uncontended-ish atomic add and no lock.
//! Label values are closed enums ([`DisconnectReason`], [`HttpPath`], protocol `ErrorCode`), so
//! no peer can grow the label set. Process metrics (RSS, CPU, fds, threads) are read from
//! `/proc/self` at render time, the same names the Prometheus client libraries use, so the load
//! generator's sampler and an external Prometheus read one format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use chatbench_protocol::ErrorCode;

/// Why a WebSocket connection ended: the `reason` label of `chatbench_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client closed (close frame, or EOF after its close).
    ClientClose,
    /// Disconnected by the server under the `disconnect` slow-consumer policy.
    SlowConsumer,
    /// Sent a frame that is not a JSON object.
    BadJson,
    /// Sent a frame with a missing or mistyped field.
    BadField,
    /// Sent a bad room name.
    BadRoom,
    /// Sent a message over `max_frame_bytes`.
    FrameTooLarge,
    /// Sent a text message that is not UTF-8.
    InvalidUtf8,
    /// Sent a binary message.
    BinaryFrame,
    /// Broke WebSocket framing rules.
    ProtocolError,
    /// The socket failed or was reset without a close handshake.
    IoError,
    /// Closed by server shutdown.
    Shutdown,
    /// The connection's handler panicked (fault injection).
    Panic,
}

impl DisconnectReason {
    /// Every reason, in rendering order.
    pub const ALL: [DisconnectReason; 12] = [
        DisconnectReason::ClientClose,
        DisconnectReason::SlowConsumer,
        DisconnectReason::BadJson,
        DisconnectReason::BadField,
        DisconnectReason::BadRoom,
        DisconnectReason::FrameTooLarge,
        DisconnectReason::InvalidUtf8,
        DisconnectReason::BinaryFrame,
        DisconnectReason::ProtocolError,
        DisconnectReason::IoError,
        DisconnectReason::Shutdown,
        DisconnectReason::Panic,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClose => "client_close",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::BadJson => "bad_json",
            DisconnectReason::BadField => "bad_field",
            DisconnectReason::BadRoom => "bad_room",
            DisconnectReason::FrameTooLarge => "frame_too_large",
            DisconnectReason::InvalidUtf8 => "invalid_utf8",
            DisconnectReason::BinaryFrame => "binary_frame",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::IoError => "io_error",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Panic => "panic",
        }
    }

    /// The reason a fatal protocol error code ends a connection with, `None` for non-fatal codes.
    pub fn for_error(code: ErrorCode) -> Option<DisconnectReason> {
        Some(match code {
            ErrorCode::BadJson => DisconnectReason::BadJson,
            ErrorCode::BadField => DisconnectReason::BadField,
            ErrorCode::BadRoom => DisconnectReason::BadRoom,
            ErrorCode::FrameTooLarge => DisconnectReason::FrameTooLarge,
            ErrorCode::InvalidUtf8 => DisconnectReason::InvalidUtf8,
            ErrorCode::BinaryFrame => DisconnectReason::BinaryFrame,
            ErrorCode::SlowConsumer => DisconnectReason::SlowConsumer,
            ErrorCode::ProtocolError => DisconnectReason::ProtocolError,
            ErrorCode::UnknownType | ErrorCode::NotJoined | ErrorCode::TooManyRooms => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The bounded `path` label of `chatbench_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpPath {
    /// `/ws` upgrades.
    Ws,
    /// `/metrics`
    Metrics,
    /// `/healthz`
    Healthz,
    /// Any other path or method (404/405).
    Other,
    /// Refused heads (400/426/431).
    Bad,
}

impl HttpPath {
    /// Every label, in rendering order.
    pub const ALL: [HttpPath; 5] = [
        HttpPath::Ws,
        HttpPath::Metrics,
        HttpPath::Healthz,
        HttpPath::Other,
        HttpPath::Bad,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpPath::Ws => "/ws",
            HttpPath::Metrics => "/metrics",
            HttpPath::Healthz => "/healthz",
            HttpPath::Other => "other",
            HttpPath::Bad => "bad",
        }
    }
}

/// The server's counters. Methods are named after what happened; each documents its metric.
#[derive(Debug)]
pub struct Metrics {
    arch: &'static str,
    connections: AtomicI64,
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    rooms: AtomicI64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    deliveries: AtomicU64,
    drops_queue_full: AtomicU64,
    drops_queue_bytes: AtomicU64,
    outbound_bytes: AtomicI64,
    disconnects: [AtomicU64; DisconnectReason::ALL.len()],
    errors_sent: [AtomicU64; ErrorCode::ALL.len()],
    handshake_timeouts: AtomicU64,
    http_requests: [AtomicU64; HttpPath::ALL.len()],
    pool_rejections: AtomicU64,
    backplane: Option<BackplaneMetrics>,
}

/// Counters of a cluster node's backplane (`chatbench_backplane_*`), rendered after the
/// server's own when the node has one. Every message that should have crossed to another node
/// and did not is counted in exactly one of `dropped` (a full send queue) or `lost` (the peer
/// link or Redis was down, or the publish failed).
#[derive(Debug)]
pub struct BackplaneMetrics {
    kind: &'static str,
    node_id: u64,
    forwarded: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    peers_up: AtomicI64,
    reconnects: AtomicU64,
    refused: AtomicU64,
    invalid: AtomicU64,
    interest_rooms: AtomicI64,
    peer_rooms: AtomicI64,
}

impl BackplaneMetrics {
    fn new(kind: &'static str, node_id: u64) -> BackplaneMetrics {
        BackplaneMetrics {
            kind,
            node_id,
            forwarded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            peers_up: AtomicI64::new(0),
            reconnects: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            interest_rooms: AtomicI64::new(0),
            peer_rooms: AtomicI64::new(0),
        }
    }
    /// `n` messages were handed to a peer link or published to Redis
    /// (`chatbench_backplane_forwarded_total`).
    pub fn forwarded(&self, n: u64) {
        self.forwarded.fetch_add(n, Relaxed);
    }
    /// A message from another node arrived and was fanned out here
    /// (`chatbench_backplane_received_total`).
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    /// `n` messages were not forwarded because a send queue was full
    /// (`chatbench_backplane_dropped_total`).
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }
    /// `n` messages could not cross: the peer link or Redis was down, or the publish failed
    /// (`chatbench_backplane_lost_total`).
    pub fn lost(&self, n: u64) {
        self.lost.fetch_add(n, Relaxed);
    }
    /// A peer link (or the Redis connection) came up (`chatbench_backplane_peers_up` +1).
    pub fn peer_up(&self) {
        self.peers_up.fetch_add(1, Relaxed);
    }
    /// A peer link (or the Redis connection) went down (`chatbench_backplane_peers_up` −1).
    pub fn peer_down(&self) {
        self.peers_up.fetch_sub(1, Relaxed);
    }
    /// A lost link or Redis connection was re-established
    /// (`chatbench_backplane_reconnects_total`).
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    /// A link was refused at its hello or authentication (version or node id mismatch, failed
    /// proof, a live node's id claimed again, too many pending handshakes, handshake timeout)
    /// (`chatbench_backplane_refused_total`).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }
    /// An established link was closed because its peer sent a frame that breaks the format or
    /// a limit (`chatbench_backplane_invalid_total`).
    pub fn invalid(&self) {
        self.invalid.fetch_add(1, Relaxed);
    }
    /// Rooms declared by peers changed by `delta` (`chatbench_backplane_peer_rooms`).
    pub fn add_peer_rooms(&self, delta: i64) {
        self.peer_rooms.fetch_add(delta, Relaxed);
    }
    /// Sets `chatbench_backplane_interest_rooms`: rooms this node advertises or subscribes to.
    pub fn set_interest_rooms(&self, n: usize) {
        self.interest_rooms
            .store(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
    }
    /// Links (or Redis connections) up now.
    pub fn peers_up(&self) -> i64 {
        self.peers_up.load(Relaxed)
    }

    fn render(&self, o: &mut String) {
        let c = |a: &AtomicU64| a.load(Relaxed);
        head(
            o,
            "chatbench_backplane_info",
            "gauge",
            "The cluster node's backplane and node id.",
        );
        let _ = writeln!(
            o,
            "chatbench_backplane_info{{backplane=\"{}\",node=\"{}\"}} 1",
            self.kind, self.node_id
        );
        simple(
            o,
            "chatbench_backplane_forwarded_total",
            "counter",
            "Messages handed to a peer link (mesh: once per peer) or published to Redis.",
            c(&self.forwarded),
        );
        simple(
            o,
            "chatbench_backplane_received_total",
            "counter",
            "Messages from other nodes fanned out to local members.",
            c(&self.received),
        );
        simple(
            o,
            "chatbench_backplane_dropped_total",
            "counter",
            "Messages not forwarded because a send queue was full.",
            c(&self.dropped),
        );
        simple(
            o,
            "chatbench_backplane_lost_total",
            "counter",
            "Messages that could not cross: peer link or Redis down, or publish failed.",
            c(&self.lost),
        );
        simple(
            o,
            "chatbench_backplane_peers_up",
            "gauge",
            "Peer links up (mesh) or Redis connections up (redis: 2 when healthy).",
            self.peers_up.load(Relaxed),
        );
        simple(
            o,
            "chatbench_backplane_reconnects_total",
            "counter",
            "Peer links or Redis connections re-established after a loss.",
            c(&self.reconnects),
        );
        simple(
            o,
            "chatbench_backplane_refused_total",
            "counter",
            "Links refused at the hello or authentication (version, node id, proof, pending limit, timeout).",
            c(&self.refused),
        );
        simple(
            o,
            "chatbench_backplane_invalid_total",
            "counter",
            "Links closed because the peer sent a frame that breaks the format or a limit.",
            c(&self.invalid),
        );
        simple(
            o,
            "chatbench_backplane_interest_rooms",
            "gauge",
            "Rooms this node advertises (mesh) or subscribes to (redis).",
            self.interest_rooms.load(Relaxed),
        );
        simple(
            o,
            "chatbench_backplane_peer_rooms",
            "gauge",
            "Rooms other nodes declared interest in, summed over the peers this node keeps (mesh).",
            self.peer_rooms.load(Relaxed),
        );
    }
}

impl Metrics {
    /// Zeroed counters for a server of architecture `arch` (the `chatbench_info` label).
    pub fn new(arch: &'static str) -> Metrics {
        Metrics {
            arch,
            connections: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            rooms: AtomicI64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            drops_queue_full: AtomicU64::new(0),
            drops_queue_bytes: AtomicU64::new(0),
            outbound_bytes: AtomicI64::new(0),
            disconnects: Default::default(),
            errors_sent: Default::default(),
            handshake_timeouts: AtomicU64::new(0),
            http_requests: Default::default(),
            pool_rejections: AtomicU64::new(0),
            backplane: None,
        }
    }

    /// Counters for a cluster node (`chatbench_info{arch="cluster"}`) with backplane `kind`
    /// (`mesh`, `redis`), including the `chatbench_backplane_*` family.
    pub fn cluster(kind: &'static str, node_id: u64) -> Metrics {
        Metrics {
            backplane: Some(BackplaneMetrics::new(kind, node_id)),
            ..Metrics::new("cluster")
        }
    }

    /// The backplane counters of a cluster node.
    pub fn backplane(&self) -> Option<&BackplaneMetrics> {
        self.backplane.as_ref()
    }

    /// A TCP connection was accepted (`chatbench_connections_accepted_total`).
    pub fn tcp_accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }
    /// `accept(2)` failed, e.g. out of descriptors (`chatbench_accept_errors_total`).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }
    /// A WebSocket upgrade completed (`chatbench_connections` +1).
    pub fn ws_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
    /// A WebSocket connection ended (`chatbench_connections` −1, `chatbench_disconnects_total`).
    pub fn ws_closed(&self, reason: DisconnectReason) {
        self.connections.fetch_sub(1, Relaxed);
        self.disconnects[reason.index()].fetch_add(1, Relaxed);
    }
    /// A room was created (`chatbench_rooms` +1).
    pub fn room_created(&self) {
        self.rooms.fetch_add(1, Relaxed);
    }
    /// A room was removed when its last member left (`chatbench_rooms` −1).
    pub fn room_removed(&self) {
        self.rooms.fetch_sub(1, Relaxed);
    }
    /// A data message was read from a client (`chatbench_frames_in_total`).
    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Relaxed);
    }
    /// `n` data messages were written to a client socket (`chatbench_frames_out_total`).
    pub fn frames_out(&self, n: u64) {
        self.frames_out.fetch_add(n, Relaxed);
    }
    /// `n` forwarded `msg` frames were queued to recipients (`chatbench_deliveries_total`).
    pub fn deliveries(&self, n: u64) {
        self.deliveries.fetch_add(n, Relaxed);
    }
    /// `n` frames were dropped because recipients' queues were full
    /// (`chatbench_drops_total{reason="queue_full"}`).
    pub fn dropped_queue_full(&self, n: u64) {
        self.drops_queue_full.fetch_add(n, Relaxed);
    }
    /// `n` frames were dropped because they would have taken recipients' queues past their
    /// byte bound (`chatbench_drops_total{reason="queue_bytes"}`).
    pub fn dropped_queue_bytes(&self, n: u64) {
        self.drops_queue_bytes.fetch_add(n, Relaxed);
    }
    /// `n` bytes were queued to clients (`chatbench_outbound_queued_bytes` +n).
    pub fn outbound_queued(&self, n: usize) {
        self.outbound_bytes.fetch_add(n as i64, Relaxed);
    }
    /// `n` queued bytes were written, or dropped with their connection
    /// (`chatbench_outbound_queued_bytes` −n).
    pub fn outbound_released(&self, n: usize) {
        if n > 0 {
            self.outbound_bytes.fetch_sub(n as i64, Relaxed);
        }
    }
    /// Bytes queued to clients and not yet written, over every connection.
    pub fn outbound_bytes(&self) -> i64 {
        self.outbound_bytes.load(Relaxed)
    }
    /// An `error` frame was sent (`chatbench_errors_sent_total{code}`).
    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.errors_sent[i].fetch_add(1, Relaxed);
        }
    }
    /// A client did not complete its HTTP head in time (`chatbench_handshake_timeouts_total`).
    pub fn handshake_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Relaxed);
    }
    /// An HTTP request was routed (`chatbench_http_requests_total{path}`).
    pub fn http_request(&self, path: HttpPath) {
        self.http_requests[path as usize].fetch_add(1, Relaxed);
    }

    /// A connection was refused with HTTP 503 because every worker of a bounded pool stayed
    /// busy for the whole wait (`chatbench_pool_rejections_total`; thread-pool only).
    pub fn pool_rejected(&self) {
        self.pool_rejections.fetch_add(1, Relaxed);
    }

    /// Live WebSocket connections.
    pub fn connections(&self) -> i64 {
        self.connections.load(Relaxed)
    }
    /// Live rooms.
    pub fn rooms(&self) -> i64 {
        self.rooms.load(Relaxed)
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_connections(&mut out);
        self.render_traffic(&mut out);
        self.render_http(&mut out);
        if let Some(b) = &self.backplane {
            b.render(&mut out);
        }
        render_process(&mut out);
        out
    }

    /// The server's identity, its connections and rooms.
    fn render_connections(&self, o: &mut String) {
        let g = |a: &AtomicI64| a.load(Relaxed);
        let c = |a: &AtomicU64| a.load(Relaxed);
        head(
            o,
            "chatbench_info",
            "gauge",
            "Server architecture and version.",
        );
        let _ = writeln!(
            o,
            "chatbench_info{{arch=\"{}\",version=\"{}\"}} 1",
            self.arch,
            env!("CARGO_PKG_VERSION")
        );
        simple(
            o,
            "chatbench_connections",
            "gauge",
            "Live WebSocket connections.",
            g(&self.connections),
        );
        simple(
            o,
            "chatbench_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            c(&self.accepted),
        );
        simple(
            o,
            "chatbench_accept_errors_total",
            "counter",
            "accept(2) failures (e.g. out of file descriptors).",
            c(&self.accept_errors),
        );
        simple(
            o,
            "chatbench_rooms",
            "gauge",
            "Rooms with at least one member.",
            g(&self.rooms),
        );
    }

    /// Frames in and out, deliveries and drops, the outbound queues, disconnects and errors.
    fn render_traffic(&self, o: &mut String) {
        let g = |a: &AtomicI64| a.load(Relaxed);
        let c = |a: &AtomicU64| a.load(Relaxed);
        simple(
            o,
            "chatbench_frames_in_total",
            "counter",
            "WebSocket data messages received.",
            c(&self.frames_in),
        );
        simple(
            o,
            "chatbench_frames_out_total",
            "counter",
            "WebSocket data messages written (forwarded msgs, acks, errors).",
            c(&self.frames_out),
        );
        simple(
            o,
            "chatbench_deliveries_total",
            "counter",
            "Forwarded msg frames queued to recipients.",
            c(&self.deliveries),
        );
        head(
            o,
            "chatbench_drops_total",
            "counter",
            "Frames dropped for a recipient, by reason.",
        );
        let _ = writeln!(
            o,
            "chatbench_drops_total{{reason=\"queue_full\"}} {}",
            c(&self.drops_queue_full)
        );
        let _ = writeln!(
            o,
            "chatbench_drops_total{{reason=\"queue_bytes\"}} {}",
            c(&self.drops_queue_bytes)
        );
        simple(
            o,
            "chatbench_outbound_queued_bytes",
            "gauge",
            "Bytes queued to clients and not yet written, over every connection's outbound queue.",
            g(&self.outbound_bytes),
        );
        head(
            o,
            "chatbench_disconnects_total",
            "counter",
            "WebSocket connections ended, by reason.",
        );
        for r in DisconnectReason::ALL {
            let _ = writeln!(
                o,
                "chatbench_disconnects_total{{reason=\"{}\"}} {}",
                r.as_str(),
                c(&self.disconnects[r.index()])
            );
        }
        head(
            o,
            "chatbench_errors_sent_total",
            "counter",
            "error frames sent, by code.",
        );
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let _ = writeln!(
                o,
                "chatbench_errors_sent_total{{code=\"{}\"}} {}",
                code.as_str(),
                c(&self.errors_sent[i])
            );
        }
    }

    /// The HTTP side: handshake timeouts, requests by path, the pool's rejections.
    fn render_http(&self, o: &mut String) {
        let c = |a: &AtomicU64| a.load(Relaxed);
        simple(
            o,
            "chatbench_handshake_timeouts_total",
            "counter",
            "Connections dropped for not completing the HTTP request head in time.",
            c(&self.handshake_timeouts),
        );
        head(
            o,
            "chatbench_http_requests_total",
            "counter",
            "HTTP requests, by path.",
        );
        for p in HttpPath::ALL {
            let _ = writeln!(
                o,
                "chatbench_http_requests_total{{path=\"{}\"}} {}",
                p.as_str(),
                c(&self.http_requests[p as usize])
            );
        }
        simple(
            o,
            "chatbench_pool_rejections_total",
            "counter",
            "Connections answered 503 because every pool worker stayed busy (thread-pool only).",
            c(&self.pool_rejections),
        );
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Process figures from `/proc/self`, as the Prometheus client libraries name them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes.
    pub resident_memory_bytes: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft RLIMIT_NOFILE.
    pub max_fds: u64,
    /// OS threads.
    pub threads: u64,
}

impl ProcessStats {
    /// Reads the calling process's figures; fields that cannot be read stay 0.
    pub fn read() -> ProcessStats {
        let mut s = ProcessStats::default();
        // SAFETY: sysconf has no preconditions.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            if let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
            {
                s.resident_memory_bytes = pages * page.max(0) as u64;
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name start at field 3 (state).
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |k: usize| {
                    f.get(k - 3)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if ticks > 0 {
                    s.cpu_seconds = (num(14) + num(15)) as f64 / ticks as f64;
                }
                s.threads = num(20);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Minus the descriptor read_dir itself holds open.
            s.open_fds = (dir.count() as u64).saturating_sub(1);
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            s.max_fds = lim.rlim_cur;
        }
        s
    }
}

fn render_process(out: &mut String) {
    let p = ProcessStats::read();
    simple(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_memory_bytes,
    );
    simple(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    simple(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    simple(
        out,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds,
    );
    simple(
        out,
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads,
    );
}

/// Finds the value of the sample `name` (with its labels exactly as rendered, e.g.
/// `chatbench_drops_total{reason="queue_full"}`) in Prometheus text. For tests and the sampler.
pub fn sample_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let m = Metrics::new("task-per-conn");
        m.tcp_accepted();
        m.ws_opened();
        m.ws_opened();
        m.ws_closed(DisconnectReason::SlowConsumer);
        m.room_created();
        m.deliveries(5);
        m.dropped_queue_full(2);
        m.error_sent(ErrorCode::NotJoined);
        m.http_request(HttpPath::Healthz);
        m.frames_out(3);
        let text = m.render();
        for family in [
            "chatbench_info",
            "chatbench_connections",
            "chatbench_connections_accepted_total",
            "chatbench_rooms",
            "chatbench_frames_in_total",
            "chatbench_frames_out_total",
            "chatbench_deliveries_total",
            "chatbench_drops_total",
            "chatbench_disconnects_total",
            "chatbench_errors_sent_total",
            "chatbench_handshake_timeouts_total",
            "chatbench_http_requests_total",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
        let v = |n: &str| sample_value(&text, n);
        assert_eq!(v("chatbench_connections"), Some(1.0));
        assert_eq!(v("chatbench_connections_accepted_total"), Some(1.0));
        assert_eq!(v("chatbench_rooms"), Some(1.0));
        assert_eq!(v("chatbench_deliveries_total"), Some(5.0));
        assert_eq!(v("chatbench_frames_out_total"), Some(3.0));
        assert_eq!(v("chatbench_drops_total{reason=\"queue_full\"}"), Some(2.0));
        assert_eq!(
            v("chatbench_disconnects_total{reason=\"slow_consumer\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("chatbench_disconnects_total{reason=\"panic\"}"),
            Some(0.0)
        );
        assert_eq!(
            v("chatbench_errors_sent_total{code=\"not_joined\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("chatbench_http_requests_total{path=\"/healthz\"}"),
            Some(1.0)
        );
        assert!(text.contains("chatbench_info{arch=\"task-per-conn\",version=\""));
        assert!(v("process_resident_memory_bytes").unwrap() > 0.0);
        assert!(v("process_threads").unwrap() >= 1.0);
        assert!(v("process_open_fds").unwrap() >= 1.0);
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn backplane_family_only_on_cluster_nodes() {
        assert!(!Metrics::new("epoll")
            .render()
            .contains("chatbench_backplane"));
        let m = Metrics::cluster("mesh", 7);
        let b = m.backplane().unwrap();
        b.forwarded(3);
        b.lost(2);
        b.peer_up();
        b.set_interest_rooms(4);
        let text = m.render();
        let v = |n: &str| sample_value(&text, n);
        assert!(text.contains("chatbench_info{arch=\"cluster\""));
        assert_eq!(
            v("chatbench_backplane_info{backplane=\"mesh\",node=\"7\"}"),
            Some(1.0)
        );
        assert_eq!(v("chatbench_backplane_forwarded_total"), Some(3.0));
        assert_eq!(v("chatbench_backplane_lost_total"), Some(2.0));
        assert_eq!(v("chatbench_backplane_dropped_total"), Some(0.0));
        assert_eq!(v("chatbench_backplane_peers_up"), Some(1.0));
        assert_eq!(v("chatbench_backplane_interest_rooms"), Some(4.0));
    }

    #[test]
    fn every_fatal_error_code_has_a_disconnect_reason() {
        for code in ErrorCode::ALL {
            assert_eq!(
                DisconnectReason::for_error(code).is_some(),
                code.is_fatal(),
                "{code}"
            );
        }
    }
}
