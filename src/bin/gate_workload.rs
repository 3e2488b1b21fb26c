//! `chatbench-gate-workload`: the deterministic workloads of `chatbench gate deterministic`,
//! one per process, meant to run under `setarch -R valgrind --tool=callgrind
//! --toggle-collect=chatbench_gate_measured` so that only the measured region is counted.
//!
//! Owns the measured region ([`chatbench_gate_measured`]) and a counting global allocator:
//! allocations and bytes allocated inside the region are printed with the deliveries as one
//! JSON line on stdout. Setup and a warm-up (every member sends once) happen outside the
//! region. The workload reads no clock (the `connections` workload's servers read it for their
//! own deadlines; docs/gate.md).
//!
//! Workloads: `fanout` (parse and fan out `msg` frames to a room), `connections` (open and
//! close connections one at a time through each architecture's own path), `idle` (heap bytes
//! held per open idle connection by a real server on a background thread; not meant for
//! callgrind, it counts bytes, not instructions); `generator-receive` (the load generator's
//! epoll receive path), `generator-receive-tokio` (its tokio receive path) and `generator-send`
//! (its send path; `chatbench_loadgen::bench`; `--arch` is ignored).

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use clap::Parser;

use chatbench_servers::{bench, Arch, ServerConfig};

/// Counts every allocation (and reallocation) and the bytes asked for.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed (as asked for, not as malloc rounds them).
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The measured region: callgrind counts only what runs inside this function
/// (`--toggle-collect=chatbench_gate_measured`).
#[no_mangle]
#[inline(never)]
pub fn chatbench_gate_measured(f: &mut dyn FnMut()) {
    f();
}

/// One deterministic workload (see docs/gate.md).
#[derive(Debug, Parser)]
#[command(name = "chatbench-gate-workload")]
struct Args {
    /// Workload: `fanout` (parse and fan out `msg` frames to one room), `connections` (open and
    /// close --connections connections), `idle` (heap bytes per open idle connection).
    #[arg(value_parser = [
        "fanout",
        "connections",
        "idle",
        "generator-receive",
        "generator-receive-tokio",
        "generator-send",
    ])]
    workload: String,
    /// Architecture whose code path is measured (not the generator workloads').
    #[arg(long, value_parser = parse_arch, default_value = "epoll")]
    arch: Arch,
    /// Members of the room.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Messages sent in the measured region.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Body length of each message, bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// Server option `inject_work`: busy-loop iterations per delivered message.
    #[arg(long, default_value_t = 0)]
    inject_work: u32,
    /// Connections opened (and closed) by the `connections` and `idle` workloads.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(args: &Args) -> Result<String, bench::BenchError> {
    match args.workload.as_str() {
        "connections" => connections(args),
        "idle" => idle(args),
        "generator-receive" | "generator-receive-tokio" | "generator-send" => {
            generator(args).map_err(|e| bench::BenchError::Unexpected(e.to_string()))
        }
        _ => fanout(args),
    }
}

/// The generator's receive (per delivery) or send (per message) path, one member of a room of
/// `--members`, `--messages` frames with `--body`-byte bodies; allocations counted inside the
/// measured region only.
fn generator(args: &Args) -> Result<String, chatbench_loadgen::bench::BenchError> {
    use chatbench_loadgen::bench as gen;
    let members = u32::try_from(args.members)
        .map_err(|_| gen::BenchError::Unexpected("--members is too large".into()))?;
    let (mut allocs, mut bytes) = (0u64, 0u64);
    let mut measure = |f: &mut dyn FnMut()| {
        let (a0, b0) = counters();
        chatbench_gate_measured(f);
        let (a1, b1) = counters();
        allocs += a1 - a0;
        bytes += b1 - b0;
    };
    let mut receive =
        |path| gen::receive(path, members, args.messages as u64, args.body, &mut measure);
    let (count_name, count) = if args.workload == "generator-receive" {
        ("deliveries", receive(gen::Path::Epoll)?)
    } else if args.workload == "generator-receive-tokio" {
        ("deliveries", receive(gen::Path::Tokio)?)
    } else {
        let n = gen::send(members, args.messages as u64, args.body, &mut measure)?;
        ("messages_sent", n)
    };
    let mut line = serde_json::json!({
        "workload": args.workload,
        "members": args.members,
        "body": args.body,
        "allocs": allocs,
        "alloc_bytes": bytes,
    });
    line[count_name] = count.into();
    Ok(line.to_string())
}

/// Allocation counters now: (allocations, bytes).
fn counters() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

/// Opens and closes `--connections` connections one at a time; only the server's steps are
/// inside the measured region (entered once per step), and only their allocations count.
fn connections(args: &Args) -> Result<String, bench::BenchError> {
    let config = ServerConfig {
        inject_work: args.inject_work,
        ..ServerConfig::default()
    };
    let mut w = bench::open_close(args.arch, config)?;
    // Warm-up outside the region: first-use costs (lazily grown tables, a first slab page).
    w.run(8, &mut |f: &mut dyn FnMut()| f())?;
    let (mut allocs, mut bytes) = (0u64, 0u64);
    let mut measure = |f: &mut dyn FnMut()| {
        let (a0, b0) = counters();
        chatbench_gate_measured(f);
        let (a1, b1) = counters();
        allocs += a1 - a0;
        bytes += b1 - b0;
    };
    let done = w.run(args.connections, &mut measure)?;
    if done != args.connections as u64 {
        return Err(bench::BenchError::Unexpected(format!(
            "{done} connections completed, expected {}",
            args.connections
        )));
    }
    Ok(serde_json::json!({
        "workload": args.workload,
        "arch": args.arch.as_str(),
        "connections": done,
        "allocs": allocs,
        "alloc_bytes": bytes,
    })
    .to_string())
}

/// Waits (bounded) until the live heap stops changing: the server finishes a connection's
/// set-up on its own thread right after answering it. Returns the settled value.
fn settled_live_bytes() -> Result<i64, bench::BenchError> {
    let mut last = LIVE_BYTES.load(Ordering::SeqCst);
    let mut same = 0;
    for _ in 0..1000 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = LIVE_BYTES.load(Ordering::SeqCst);
        if now == last {
            same += 1;
            if same == 20 {
                return Ok(now);
            }
        } else {
            same = 0;
            last = now;
        }
    }
    Err(bench::BenchError::Unexpected(
        "the live heap did not settle within 10 s (is the server still working?)".into(),
    ))
}

/// Heap bytes held per open idle connection: a real server of the architecture on a
/// background thread (one runtime worker; a pool large enough for every connection), a
/// warm-up of 8 connections kept open, then `--connections` more upgraded and left idle; the
/// live-heap growth divided by their number. The client side allocates nothing meanwhile.
fn idle(args: &Args) -> Result<String, bench::BenchError> {
    const WARM: usize = 8;
    let n = args.connections;
    if n == 0 {
        return Err(bench::BenchError::Unexpected(
            "--connections must be at least 1".into(),
        ));
    }
    let config = ServerConfig {
        worker_threads: Some(1),
        pool_size: (n + WARM + 16).max(ServerConfig::default().pool_size),
        ..ServerConfig::default()
    };
    let server = chatbench_servers::spawn(
        args.arch,
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let addr = server.addr;
    let mut clients: Vec<std::net::TcpStream> = Vec::with_capacity(n + WARM);
    let open = |clients: &mut Vec<std::net::TcpStream>| -> Result<(), bench::BenchError> {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(addr).map_err(|e| {
            bench::BenchError::Unexpected(format!(
                "connect to the server: {e} (out of descriptors? the idle workload holds {} sockets: raise `ulimit -n`)",
                2 * (n + WARM)
            ))
        })?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        c.write_all(bench::UPGRADE_REQUEST)?;
        let mut rest = [0u8; 64];
        if bench::read_upgrade(&mut c, &mut rest)? != 0 {
            return Err(bench::BenchError::Unexpected(
                "data after the 101 on an idle connection".into(),
            ));
        }
        clients.push(c);
        Ok(())
    };
    for _ in 0..WARM {
        open(&mut clients)?;
    }
    let before = settled_live_bytes()?;
    for _ in 0..n {
        open(&mut clients)?;
    }
    let after = settled_live_bytes()?;
    for c in &mut clients {
        use std::io::{Read, Write};
        c.write_all(bench::CLIENT_CLOSE)?;
        let mut sink = [0u8; 64];
        while c.read(&mut sink)? > 0 {}
    }
    drop(clients);
    server
        .stop()
        .map_err(|e| bench::BenchError::Unexpected(format!("server: {e}")))?;
    Ok(serde_json::json!({
        "workload": args.workload,
        "arch": args.arch.as_str(),
        "connections": n,
        "heap_bytes_held": after - before,
    })
    .to_string())
}

fn fanout(args: &Args) -> Result<String, bench::BenchError> {
    let config = ServerConfig {
        inject_work: args.inject_work,
        ..ServerConfig::default()
    };
    let mut w = bench::fan_out(args.arch, config, args.members)?;
    let warm = bench::msg_texts(args.members, args.members, args.body);
    w.run(&warm)?;
    let texts = bench::msg_texts(args.messages, args.members, args.body);
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    let mut outcome = Ok(0);
    chatbench_gate_measured(&mut || outcome = w.run(&texts));
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    let deliveries = outcome?;
    let expected = (args.messages * (args.members - 1)) as u64;
    if deliveries != expected {
        return Err(bench::BenchError::Unexpected(format!(
            "{deliveries} deliveries, expected {expected}"
        )));
    }
    Ok(serde_json::json!({
        "workload": args.workload,
        "arch": args.arch.as_str(),
        "members": args.members,
        "messages": args.messages,
        "body": args.body,
        "inject_work": args.inject_work,
        "deliveries": deliveries,
        "allocs": a1 - a0,
        "alloc_bytes": b1 - b0,
    })
    .to_string())
}
