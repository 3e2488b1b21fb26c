//! The target and host readings a summary is built from, and what is derived from them alone:
//! [`ProcSample`] (one process), [`HostSample`] (host-wide kernel figures), how busy some CPUs
//! were between two readings, and memory per connection ([`MemoryPerConn`], the design's
//! "Memory per connection" rule: user-space memory is the target's RSS delta, kernel memory the
//! host's `Slab`/`SUnreclaim` delta, checked against the sockstat TCP count). Reading them from
//! `/proc` is the load generator's (`chatbench_loadgen::sampler`).

use std::borrow::Borrow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// When it was taken: time since the sampling clock's epoch (`chatbench_loadgen::sampler::clock_epoch`) (monotonic).
    pub at: Duration,
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Anonymous resident memory (`RssAnon`): heap and stacks, without mapped files; bytes.
    pub rss_anon_bytes: u64,
    /// User + system CPU time consumed so far, seconds.
    pub cpu_seconds: f64,
    /// Threads in the process.
    pub threads: u64,
    /// Open file descriptors. 0 means unknown: `/proc/PID/fd` of another user's process cannot be
    /// read (a live server always holds at least its listener, so 0 never is a real count).
    pub open_fds: u64,
    /// Time the process's threads alive at the reading have spent runnable but waiting for a
    /// CPU, seconds, summed over them (`/proc/PID/task/*/schedstat`, second field). `None` when
    /// it cannot be read (no `CONFIG_SCHED_INFO`, another user's process).
    #[serde(default)]
    pub run_delay_seconds: Option<f64>,
}

/// One reading of host-wide kernel figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// When it was taken: time since the sampling clock's epoch (`chatbench_loadgen::sampler::clock_epoch`) (monotonic).
    pub at: Duration,
    /// `Slab` from /proc/meminfo, bytes (socket structures live here).
    pub slab_bytes: u64,
    /// `SUnreclaim` from /proc/meminfo, bytes.
    pub sunreclaim_bytes: u64,
    /// TCP sockets in use (`/proc/net/sockstat` `TCP: inuse`).
    pub tcp_inuse: u64,
    /// Orphaned TCP sockets.
    pub tcp_orphan: u64,
    /// TCP sockets in TIME_WAIT.
    pub tcp_tw: u64,
    /// TCP sockets allocated.
    pub tcp_alloc: u64,
    /// Pages used by TCP socket buffers (sockstat `mem`; not the socket structures).
    pub tcp_mem_pages: u64,
    /// `TcpExt: ListenOverflows` (accept queue full) since boot.
    pub listen_overflows: u64,
    /// `TcpExt: ListenDrops` since boot.
    pub listen_drops: u64,
    /// Each CPU's clock ticks since boot (`/proc/stat`); empty when unreadable.
    #[serde(default)]
    pub cpus: Vec<CpuTicks>,
}

/// One CPU's clock ticks since boot, from its `/proc/stat` `cpuN` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTicks {
    /// The CPU number.
    pub cpu: usize,
    /// Ticks something ran: user + nice + system + irq + softirq. With tick accounting the
    /// task that was running is charged for them too, so a process's own CPU time can be
    /// subtracted from them.
    pub busy: u64,
    /// Ticks the hypervisor gave this vCPU to someone else.
    pub steal: u64,
    /// Every tick (busy, idle, iowait and steal).
    pub total: u64,
}

/// How busy `cpus` were between two host readings, in cores: (busy, steal), each the sum over
/// those CPUs of the share of their ticks. `None` when a reading lacks one of them or no tick
/// passed.
pub fn cpus_busy_between(a: &HostSample, b: &HostSample, cpus: &[usize]) -> Option<(f64, f64)> {
    let (mut busy, mut steal) = (0.0, 0.0);
    for &c in cpus {
        let x = a.cpus.iter().find(|t| t.cpu == c)?;
        let y = b.cpus.iter().find(|t| t.cpu == c)?;
        let total = y.total.checked_sub(x.total).filter(|&t| t > 0)? as f64;
        busy += y.busy.saturating_sub(x.busy) as f64 / total;
        steal += y.steal.saturating_sub(x.steal) as f64 / total;
    }
    (!cpus.is_empty()).then_some((busy, steal))
}

/// Memory per connection between two readings (design: "Memory per connection").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPerConn {
    /// Connections opened between the readings.
    pub connections: u64,
    /// (RSS after − RSS before) / N, bytes: the target's user-space cost.
    pub user_bytes_per_conn: f64,
    /// (RssAnon after − RssAnon before) / N, bytes.
    pub user_anon_bytes_per_conn: f64,
    /// ΔSlab / N, bytes: the kernel's cost (socket structures), host-wide.
    pub kernel_slab_bytes_per_conn: f64,
    /// ΔSUnreclaim / N, bytes.
    pub kernel_sunreclaim_bytes_per_conn: f64,
    /// Change of sockstat `TCP: inuse` between the readings.
    pub tcp_sockets_delta: i64,
    /// The socket count the caller expected to appear (2 per loopback connection, 1 otherwise).
    pub expected_tcp_sockets_delta: i64,
    /// Whether the socket count grew as expected (within 2 % or 16 sockets); when false the
    /// kernel figure includes other activity on the host and is unreliable.
    pub sockets_as_expected: bool,
    /// Why the figures should be read with care, if they should.
    pub note: Option<String>,
}

fn delta(after: u64, before: u64) -> i64 {
    (i128::from(after) - i128::from(before)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

/// Compute memory per connection from readings before the first connection and after the count
/// settled. `expected_tcp_sockets_delta` is how many TCP sockets the connections should have
/// added on this host (2 × N when client and server share the host, N when only one side does).
/// The readings may be passed owned or by reference.
pub fn memory_per_connection<P, H>(
    before: (P, H),
    after: (P, H),
    connections: u64,
    expected_tcp_sockets_delta: i64,
) -> MemoryPerConn
where
    P: Borrow<ProcSample>,
    H: Borrow<HostSample>,
{
    let (pb, hb) = (before.0.borrow(), before.1.borrow());
    let (pa, ha) = (after.0.borrow(), after.1.borrow());
    let per = |d: i64| {
        if connections == 0 {
            0.0
        } else {
            d as f64 / connections as f64
        }
    };
    let tcp_sockets_delta = delta(ha.tcp_inuse, hb.tcp_inuse);
    let tolerance = (expected_tcp_sockets_delta.unsigned_abs() / 50).max(16);
    let sockets_as_expected = tcp_sockets_delta.abs_diff(expected_tcp_sockets_delta) <= tolerance;
    let slab_delta = delta(ha.slab_bytes, hb.slab_bytes);

    let mut notes = Vec::new();
    if connections == 0 {
        notes.push("no connections between the readings: per-connection figures are 0".to_owned());
    }
    if !sockets_as_expected {
        notes.push(format!(
            "TCP sockets in use changed by {tcp_sockets_delta}, expected {expected_tcp_sockets_delta}: \
             other socket activity on the host makes the kernel figure unreliable"
        ));
    }
    if slab_delta < 0 && connections > 0 {
        notes.push(
            "slab shrank while connections were opened: the kernel reclaimed caches meanwhile, \
             so the kernel figure is unreliable"
                .to_owned(),
        );
    }
    MemoryPerConn {
        connections,
        user_bytes_per_conn: per(delta(pa.rss_bytes, pb.rss_bytes)),
        user_anon_bytes_per_conn: per(delta(pa.rss_anon_bytes, pb.rss_anon_bytes)),
        kernel_slab_bytes_per_conn: per(slab_delta),
        kernel_sunreclaim_bytes_per_conn: per(delta(ha.sunreclaim_bytes, hb.sunreclaim_bytes)),
        tcp_sockets_delta,
        expected_tcp_sockets_delta,
        sockets_as_expected,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(rss: u64, anon: u64, slab: u64, sunr: u64, tcp: u64) -> (ProcSample, HostSample) {
        (
            ProcSample {
                at: Duration::ZERO,
                rss_bytes: rss,
                rss_anon_bytes: anon,
                cpu_seconds: 0.0,
                threads: 1,
                open_fds: 0,
                run_delay_seconds: None,
            },
            HostSample {
                slab_bytes: slab,
                sunreclaim_bytes: sunr,
                tcp_inuse: tcp,
                ..HostSample::default()
            },
        )
    }

    #[test]
    fn memory_per_connection_clean() {
        let before = readings(10_000_000, 5_000_000, 100_000_000, 60_000_000, 10);
        let after = readings(
            10_000_000 + 1000 * 9728,
            5_000_000 + 1000 * 8192,
            100_000_000 + 1000 * 7680,
            60_000_000 + 1000 * 7000,
            2010,
        );
        let m = memory_per_connection(before, after, 1000, 2000);
        assert_eq!(m.user_bytes_per_conn, 9728.0);
        assert_eq!(m.user_anon_bytes_per_conn, 8192.0);
        assert_eq!(m.kernel_slab_bytes_per_conn, 7680.0);
        assert_eq!(m.kernel_sunreclaim_bytes_per_conn, 7000.0);
        assert_eq!(m.tcp_sockets_delta, 2000);
        assert!(m.sockets_as_expected);
        assert_eq!(m.note, None);
        let json = serde_json::to_string(&m).expect("serialise");
        let back: MemoryPerConn = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, m);
    }

    #[test]
    fn memory_per_connection_flags_other_load() {
        let before = readings(1000, 0, 5000, 0, 100);
        let after = readings(500, 0, 4000, 0, 900);
        let m = memory_per_connection(before, after, 1000, 2000);
        assert!(!m.sockets_as_expected);
        assert_eq!(m.user_bytes_per_conn, -0.5);
        let note = m.note.expect("note");
        assert!(note.contains("changed by 800, expected 2000"), "{note}");
        assert!(note.contains("slab shrank"), "{note}");
    }

    #[test]
    fn memory_per_connection_zero_connections() {
        let r = readings(1, 1, 1, 1, 1);
        // By reference works as well as by value.
        let m = memory_per_connection((&r.0, &r.1), (&r.0, &r.1), 0, 0);
        assert_eq!(m.user_bytes_per_conn, 0.0);
        assert!(m.sockets_as_expected);
        assert!(m.note.is_some_and(|n| n.contains("no connections")));
    }
}
