//! `chatbench-gate-workload`: the deterministic workloads of `chatbench gate deterministic`,
//! one per process, meant to run under `setarch -R valgrind --tool=callgrind
//! --toggle-collect=chatbench_gate_measured` so that only the measured region is counted.
//!
//! Owns the measured region ([`chatbench_gate_measured`]) and a counting global allocator:
//! allocations and bytes allocated inside the region are printed with the deliveries as one
//! JSON line on stdout. Setup and a warm-up (every member sends once) happen outside the
//! region. No clock is read anywhere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;

use chatbench_servers::{bench, Arch, ServerConfig};

/// Counts every allocation (and reallocation) and the bytes asked for.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
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
    /// Workload: `fanout` (parse and fan out `msg` frames to one room).
    #[arg(value_parser = ["fanout"])]
    workload: String,
    /// Architecture whose code path is measured.
    #[arg(long, value_parser = parse_arch)]
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
