//! `chatbench floor`: what the kernel alone costs to move the generator's load, measured back
//! to back with the generator's own cost at the same load, so that their ratio comes from one
//! run on one machine (issue 18; docs/methodology.md quotes it).
//!
//! Owns the plainest receiver and sender ([`plain_step`]): `N` loopback TCP connections; one
//! sender thread writes one pre-encoded `msg` WebSocket frame per `write(2)`, in bursts of a
//! room's size (a fan-out), open-loop at a fixed rate of frames per second; one receiver thread
//! does `epoll_wait` and one `read(2)` per ready socket. Each thread's own CPU
//! (`CLOCK_THREAD_CPUTIME_ID`) per frame is the receive floor and the send floor. Then the
//! generator step ([`generator_step`]) runs `chatbench run --serve ARCH` at the same
//! deliveries per second over the same connections and room size, and reads the generator's
//! CPU per delivery from its summary. On two or more CPUs the sender and the server run on the
//! first CPU, the receiver and the generator on the second (as `run --serve` pins them).
//!
//! A row is invalid when the sending side (the plain sender, or the server) was the bottleneck:
//! it fell behind the rate, lost frames, or used ≥ 90 % of its core.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use chatbench_model::results::Summary;

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
        /// `plain` or `generator`.
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
    /// Where to write floor.json and floor.md.
    pub out: PathBuf,
}

/// Share of a core above which the sending side is called the bottleneck.
const SATURATED: f64 = 0.9;
/// Share of the asked rate the sending side must reach.
const RATE_KEPT: f64 = 0.97;
/// Most events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// One run of the plain receiver and sender.
#[derive(Debug, Clone, Serialize)]
pub struct PlainRun {
    /// Frames per second asked.
    pub rate: f64,
    /// Frames per second the sender wrote (over its own elapsed time).
    pub achieved: f64,
    /// Frames received.
    pub frames: u64,
    /// Receiver thread CPU per frame, µs.
    pub recv_us: f64,
    /// Sender thread CPU per frame, µs.
    pub send_us: f64,
    /// Frames per `epoll_wait` return.
    pub frames_per_wake: f64,
    /// Sender thread CPU, cores.
    pub send_cores: f64,
    /// Why the sending side was the bottleneck (empty: valid).
    pub invalid: Vec<String>,
}

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
    let mut rows = Vec::new();
    for &rate in &o.rates {
        let mut row = RateRow {
            rate,
            plain: Vec::new(),
            generator: Vec::new(),
            recv_floor_us: None,
            send_floor_us: None,
            generator_us: None,
            receive_us: None,
            pacer_us: None,
            ratio: None,
        };
        for i in 0..o.repeat {
            eprintln!(
                "floor: {rate} deliveries/s, run {} of {}: plain receiver",
                i + 1,
                o.repeat
            );
            row.plain.push(
                plain_step(&o, rate, send_cpu, recv_cpu).map_err(FloorError::in_step("plain"))?,
            );
            if let Some(arch) = &o.arch {
                eprintln!("floor: {rate} deliveries/s, run {}: generator", i + 1);
                row.generator.push(
                    generator_step(&o, arch, rate, i).map_err(FloorError::in_step("generator"))?,
                );
            }
        }
        let ok = |inv: &Vec<String>| inv.is_empty();
        row.recv_floor_us = median(
            row.plain
                .iter()
                .filter(|p| ok(&p.invalid))
                .map(|p| p.recv_us)
                .collect(),
        );
        row.send_floor_us = median(
            row.plain
                .iter()
                .filter(|p| ok(&p.invalid))
                .map(|p| p.send_us)
                .collect(),
        );
        let valid_gen = || row.generator.iter().filter(|g| ok(&g.invalid));
        row.generator_us = median(valid_gen().map(|g| g.gen_us).collect());
        row.receive_us = median(valid_gen().filter_map(|g| g.receive_us).collect());
        row.pacer_us = median(valid_gen().filter_map(|g| g.pacer_us).collect());
        row.ratio = row.generator_us.zip(row.recv_floor_us).map(|(g, r)| g / r);
        rows.push(row);
    }
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
    let invalid = rows.iter().any(|r| {
        r.plain.iter().any(|p| !p.invalid.is_empty())
            || r.generator.iter().any(|g| !g.invalid.is_empty())
    });
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

fn fmt_us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2} µs"))
        .unwrap_or_else(|| "invalid".into())
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
            r.ratio
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "—".into()),
            part(r.receive_us, r.recv_floor_us),
            part(r.pacer_us, r.recv_floor_us),
        );
    }
    for r in rows {
        for p in r.plain.iter().filter(|p| !p.invalid.is_empty()) {
            let _ = writeln!(
                s,
                "\ninvalid plain run at {:.0}/s: {}",
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

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A `msg` frame as a server sends it: the encoder's text in an unmasked WebSocket text frame.
fn wire_frame(payload: usize) -> Vec<u8> {
    let text = chatbench_protocol::encode_msg(
        "r0",
        "a0.c1",
        1_000_000,
        1_000_000_000,
        &"x".repeat(payload),
    );
    let mut out = vec![0x81];
    match text.len() {
        n @ 0..=125 => out.push(n as u8),
        n => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// `connections` loopback pairs: (the server side, written to; the client side, read).
fn pairs(connections: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>), FloorError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(FloorError::Bind)?;
    let addr = listener.local_addr().map_err(FloorError::Socket)?;
    let mut servers = Vec::with_capacity(connections);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let c = TcpStream::connect(addr).map_err(|source| FloorError::Connect {
            pair: clients.len(),
            source,
        })?;
        let (s, _) = listener.accept().map_err(FloorError::Accept)?;
        s.set_nodelay(true).map_err(FloorError::Socket)?;
        // A receiver that stopped reading must not block the sender for ever.
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(FloorError::Socket)?;
        c.set_nonblocking(true).map_err(FloorError::Socket)?;
        servers.push(s);
        clients.push(c);
    }
    Ok((servers, clients))
}

/// The sender: bursts of `members` frames, one `write` each, open loop at `rate` frames/s
/// for `seconds`. Returns (frames, elapsed, CPU).
fn send_loop(
    servers: &mut [TcpStream],
    frame: &[u8],
    members: usize,
    rate: f64,
    seconds: u64,
    cpu: Option<usize>,
) -> std::io::Result<(u64, Duration, Duration)> {
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    let rooms = servers.len() / members;
    let interval = Duration::from_secs_f64(members as f64 / rate);
    let bursts = ((rate * seconds as f64) / members as f64).ceil() as u64;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut frames = 0u64;
    for b in 0..bursts {
        let due = start + interval.mul_f64(b as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let room = (b as usize) % rooms;
        for s in &mut servers[room * members..(room + 1) * members] {
            s.write_all(frame)?;
            frames += 1;
        }
    }
    Ok((frames, start.elapsed(), thread_cpu().saturating_sub(cpu0)))
}

/// The receiver: `epoll_wait`, one `read` per ready socket, until `expected` bytes arrived,
/// `stop` is set, or `deadline`. Returns (bytes, wake-ups, CPU).
fn recv_loop(
    clients: &[TcpStream],
    expected: &std::sync::atomic::AtomicU64,
    stop: &AtomicBool,
    deadline: Instant,
    cpu: Option<usize>,
) -> std::io::Result<(u64, u64, Duration)> {
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    // SAFETY: plain syscall; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ep` is ours from here on and closed once below.
    let ep = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ep) };
    for (i, c) in clients.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` is valid for the call.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, c.as_raw_fd(), &mut ev) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut wakes) = (0u64, 0u64);
    let cpu0 = thread_cpu();
    loop {
        if bytes >= expected.load(Ordering::Acquire) || Instant::now() >= deadline {
            break;
        }
        // SAFETY: `events` has EVENTS writable entries.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 20) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if stop.load(Ordering::Acquire) {
                break;
            }
            continue;
        }
        wakes += 1;
        for ev in &events[..n as usize] {
            let mut c = &clients[ev.u64 as usize];
            match c.read(&mut buf) {
                // End of file: the peer is gone; stop watching it (it would be ready forever).
                Ok(0) => {
                    // SAFETY: both descriptors are open; a null event is allowed for DEL.
                    unsafe {
                        libc::epoll_ctl(
                            ep.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            c.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                }
                Ok(k) => bytes += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((bytes, wakes, thread_cpu().saturating_sub(cpu0)))
}

/// The plainest receiver and sender at `rate` frames per second.
pub fn plain_step(
    o: &FloorOptions,
    rate: f64,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<PlainRun, FloorError> {
    let (mut servers, clients) = pairs(o.connections)?;
    let frame = wire_frame(o.payload);
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(o.seconds + 10);
    let (e2, s2) = (expected.clone(), stop.clone());
    let receiver = std::thread::spawn(move || recv_loop(&clients, &e2, &s2, deadline, recv_cpu));
    let (members, seconds, len) = (o.members, o.seconds, frame.len() as u64);
    // The sending sockets come back open: closed before the receiver is told how much to
    // expect, they would wake it with end-of-file on every socket (counted as wake-ups and CPU).
    let (sent, servers) = std::thread::spawn(move || {
        let sent = send_loop(&mut servers, &frame, members, rate, seconds, send_cpu);
        (sent, servers)
    })
    .join()
    .map_err(|_| FloorError::Panicked("sender"))?;
    let sent = match sent {
        Ok(s) => {
            expected.store(s.0 * len, Ordering::Release);
            Ok(s)
        }
        Err(e) => {
            stop.store(true, Ordering::Release);
            Err(e)
        }
    };
    stop.store(true, Ordering::Release);
    let got = receiver
        .join()
        .map_err(|_| FloorError::Panicked("receiver"))?
        .map_err(FloorError::Receive)?;
    drop(servers);
    let (frames, elapsed, send_cpu_t) = sent.map_err(FloorError::Send)?;
    let (bytes, wakes, recv_cpu_t) = got;
    let received = bytes / len;
    let achieved = frames as f64 / elapsed.as_secs_f64().max(1e-9);
    let send_cores = send_cpu_t.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    let invalid = judge_plain(rate, achieved, send_cores, bytes, frames * len);
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Ok(PlainRun {
        rate,
        achieved,
        frames: received,
        recv_us: per(recv_cpu_t, received),
        send_us: per(send_cpu_t, frames),
        frames_per_wake: received as f64 / wakes.max(1) as f64,
        send_cores,
        invalid,
    })
}

/// Why the plain sender was the bottleneck: it fell behind `rate`, saturated its core, or
/// the receiver did not get every byte written (empty: valid).
fn judge_plain(rate: f64, achieved: f64, send_cores: f64, got: u64, written: u64) -> Vec<String> {
    let mut invalid = Vec::new();
    if achieved < RATE_KEPT * rate {
        invalid.push(format!(
            "the sender wrote {achieved:.0} frames/s of the {rate:.0} asked: it, not the receiver, was the bottleneck"
        ));
    }
    if send_cores >= SATURATED {
        invalid.push(format!(
            "the sender used {:.0} % of its core",
            send_cores * 100.0
        ));
    }
    if got != written {
        invalid.push(format!("received {got} bytes of the {written} written"));
    }
    invalid
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

    fn opts() -> FloorOptions {
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
    fn the_wire_frame_is_a_server_text_frame_of_a_msg() {
        // (header length, payload length) of an unmasked server frame.
        let head = |f: &[u8]| match f[1] {
            126 => (4, u16::from_be_bytes([f[2], f[3]]) as usize),
            n => (2, n as usize),
        };
        for body in [0, 64, 300] {
            let f = wire_frame(body);
            assert_eq!(f[0], 0x81);
            let (h, len) = head(&f);
            assert_eq!(f.len(), h + len);
            let text = std::str::from_utf8(&f[h..]).expect("utf-8");
            assert!(chatbench_loadgen::fast_msg::parse(text).is_some(), "{text}");
        }
        assert_eq!(head(&wire_frame(0)).0, 2);
        assert_eq!(head(&wire_frame(300)).0, 4);
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
    fn a_plain_step_moves_every_frame_and_measures_both_sides() {
        let o = opts();
        let r = plain_step(&o, 2000.0, None, None).expect("plain step");
        assert_eq!(r.frames, 2000, "{r:?}");
        assert!(r.recv_us > 0.0 && r.send_us > 0.0, "{r:?}");
        // At least one wake-up read data; how many frames each read is the machine's (a
        // frame can span reads), so only its sign is behaviour.
        assert!(r.frames_per_wake > 0.0, "{r:?}");
    }

    #[test]
    fn a_sender_that_falls_behind_or_saturates_makes_the_row_invalid() {
        assert!(judge_plain(20_000.0, 19_900.0, 0.3, 100, 100).is_empty());
        let behind = judge_plain(80_000.0, 60_000.0, 0.5, 100, 100);
        assert!(behind[0].contains("bottleneck"), "{behind:?}");
        assert_eq!(judge_plain(20_000.0, 20_000.0, 0.95, 100, 100).len(), 1);
        assert_eq!(judge_plain(20_000.0, 20_000.0, 0.5, 90, 100).len(), 1);
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

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
