//! Target and host sampling from Linux `/proc`: memory, CPU, threads and descriptors of the
//! target process, and the kernel's socket and slab figures for the host.
//!
//! This is where the readings behind "memory per connection" and "CPU per message" come from:
//! the target's RSS, the host's `Slab`/`SUnreclaim` (idle sockets cost slab, which
//! `/proc/net/sockstat`'s `mem` does not show) and the sockstat TCP count. The reading types and
//! the figures derived from them alone (memory per connection, busy CPUs) are the results
//! model's (`chatbench_model::sampler`).
//!
//! Parsing is pure (text in, numbers out) so it is tested on sample text; reading is a thin layer
//! on top; the run coordinator takes one sample a second in its tick.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;

use chatbench_model::sampler::{CpuTicks, HostSample, ProcSample};

/// Why a sample could not be taken.
#[derive(Debug, Error)]
pub enum SamplerError {
    /// The target process does not exist (any more).
    #[error("process {pid} is gone (no /proc/{pid}); did the target exit or crash?")]
    ProcessGone {
        /// The pid that was sampled.
        pid: u32,
    },
    /// A /proc file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A /proc file did not have the expected content.
    #[error("{}: {what} not found or not a number (unexpected /proc format)", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The field that was missing.
        what: &'static str,
    },
}

/// The monotonic epoch all sample times count from: fixed at the first use in this process.
pub fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch() -> Duration {
    clock_epoch().elapsed()
}

/// Parse the per-CPU lines (`cpu0 …`, not the `cpu` total) of `/proc/stat`.
pub fn parse_proc_stat_cpus(text: &str) -> Vec<CpuTicks> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: usize = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
            let [user, nice, system, idle, iowait, irq, softirq, steal] = v.try_into().ok()?;
            let busy = user + nice + system + irq + softirq;
            Some(CpuTicks {
                cpu,
                busy,
                steal,
                total: busy + idle + iowait + steal,
            })
        })
        .collect()
}

/// Fields of `/proc/PID/status` the sampler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFields {
    /// `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// `RssAnon`, bytes (0 on kernels without it).
    pub rss_anon_bytes: u64,
    /// `Threads`.
    pub threads: u64,
}

/// Value of a `Key:   123 kB` line, in bytes (or as-is when there is no unit).
fn kv_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some(unit) if unit.eq_ignore_ascii_case("kb") => n.checked_mul(1024),
            _ => Some(n),
        }
    })
}

/// Parse `/proc/PID/status`. `VmRSS` is required (kernel threads and zombies have none).
pub fn parse_status(text: &str) -> Option<StatusFields> {
    Some(StatusFields {
        rss_bytes: kv_value(text, "VmRSS")?,
        rss_anon_bytes: kv_value(text, "RssAnon").unwrap_or(0),
        threads: kv_value(text, "Threads").unwrap_or(0),
    })
}

/// Parse `utime + stime` (clock ticks) from `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// A `/proc/PID/task/TID/schedstat` line (`<on-CPU ns> <waiting ns> <timeslices>`), parsed:
/// (on CPU, waiting for one), nanoseconds.
pub fn parse_schedstat_ns(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let run = fields.next()?.parse().ok()?;
    let wait = fields.next()?.parse().ok()?;
    fields.next()?.parse::<u64>().ok()?;
    Some((run, wait))
}

/// Parse the run-queue wait, nanoseconds, from a `/proc/PID/task/TID/schedstat` line.
pub fn parse_schedstat_wait_ns(text: &str) -> Option<u64> {
    parse_schedstat_ns(text).map(|(_, wait)| wait)
}

/// The run-queue wait of every thread of the process at `task_dir` (`/proc/PID/task`),
/// seconds, summed; `None` when the folder cannot be listed or no thread's `schedstat` can be
/// read (a kernel without `CONFIG_SCHED_INFO`). A thread that ends while the folder is listed
/// is skipped.
fn run_delay_seconds(task_dir: &Path) -> Option<f64> {
    let mut total_ns: u64 = 0;
    let mut read_any = false;
    for entry in std::fs::read_dir(task_dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = parse_schedstat_wait_ns(&text) {
            total_ns = total_ns.saturating_add(ns);
            read_any = true;
        }
    }
    read_any.then(|| total_ns as f64 / 1e9)
}

/// Parse `(Slab, SUnreclaim)` in bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    Some((kv_value(text, "Slab")?, kv_value(text, "SUnreclaim")?))
}

/// TCP line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockstatTcp {
    /// `inuse`.
    pub inuse: u64,
    /// `orphan`.
    pub orphan: u64,
    /// `tw`.
    pub tw: u64,
    /// `alloc`.
    pub alloc: u64,
    /// `mem` (pages).
    pub mem_pages: u64,
}

/// Parse the `TCP:` line of `/proc/net/sockstat` (`TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`).
pub fn parse_sockstat(text: &str) -> Option<SockstatTcp> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some(SockstatTcp {
        inuse: get("inuse")?,
        orphan: get("orphan").unwrap_or(0),
        tw: get("tw").unwrap_or(0),
        alloc: get("alloc").unwrap_or(0),
        mem_pages: get("mem").unwrap_or(0),
    })
}

/// Parse `(ListenOverflows, ListenDrops)` from `/proc/net/netstat`, where each section is a header
/// line of names followed by a line of values, both prefixed `TcpExt:`.
pub fn parse_netstat_listen(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("ListenOverflows")?, get("ListenDrops")?))
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn read_proc(path: &Path, pid: Option<u32>) -> Result<String, SamplerError> {
    std::fs::read_to_string(path).map_err(|source| match pid {
        Some(pid) if is_gone(&source) => SamplerError::ProcessGone { pid },
        _ => SamplerError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Read the processes of a multi-process target (the nodes of a local cluster) as one: memory,
/// CPU, threads and descriptors summed. Fails if any one of them cannot be read (a sum with a
/// process missing would look like a drop in memory).
pub fn sample_processes(pids: &[u32]) -> Result<ProcSample, SamplerError> {
    let mut total: Option<ProcSample> = None;
    for &pid in pids {
        let s = sample_process(pid)?;
        total = Some(match total {
            None => s,
            Some(t) => ProcSample {
                at: t.at,
                rss_bytes: t.rss_bytes + s.rss_bytes,
                rss_anon_bytes: t.rss_anon_bytes + s.rss_anon_bytes,
                cpu_seconds: t.cpu_seconds + s.cpu_seconds,
                threads: t.threads + s.threads,
                open_fds: if t.open_fds == 0 || s.open_fds == 0 {
                    0
                } else {
                    t.open_fds + s.open_fds
                },
                run_delay_seconds: t
                    .run_delay_seconds
                    .zip(s.run_delay_seconds)
                    .map(|(x, y)| x + y),
            },
        });
    }
    total.ok_or(SamplerError::ProcessGone { pid: 0 })
}

/// Open descriptors of a process from its `/proc/PID/fd`: since Linux 6.2 `stat` of that folder
/// gives the count as its size, which costs nothing; older kernels report 0 and the folder is
/// listed instead (one entry per descriptor: tens of thousands for a busy server). 0 when it
/// cannot be read.
fn count_fds(fd_dir: &Path) -> u64 {
    match std::fs::metadata(fd_dir) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => std::fs::read_dir(fd_dir)
            .map(|d| d.filter(|e| e.is_ok()).count() as u64)
            .unwrap_or(0),
    }
}

/// Read only the resident set size (`VmRSS`) of process `pid`, bytes: what a once-a-second
/// reading of a process holding tens of thousands of sockets needs, without listing its
/// descriptors (`/proc/PID/fd`) as [`sample_process`] does.
pub fn sample_rss(pid: u32) -> Result<u64, SamplerError> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = read_proc(&status_path, Some(pid))?;
    parse_status(&status)
        .map(|f| f.rss_bytes)
        .ok_or(SamplerError::Parse {
            path: status_path,
            what: "VmRSS",
        })
}

/// Read memory, CPU, threads and descriptors of process `pid`.
pub fn sample_process(pid: u32) -> Result<ProcSample, SamplerError> {
    let at = since_epoch();
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat_path = dir.join("stat");
    let stat = read_proc(&stat_path, Some(pid))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or(SamplerError::Parse {
        path: stat_path,
        what: "utime/stime",
    })?;
    let status_path = dir.join("status");
    let status = read_proc(&status_path, Some(pid))?;
    let fields = parse_status(&status).ok_or(if status.contains("State:\tZ") {
        SamplerError::ProcessGone { pid }
    } else {
        SamplerError::Parse {
            path: status_path,
            what: "VmRSS",
        }
    })?;
    let open_fds = count_fds(&dir.join("fd"));
    Ok(ProcSample {
        at,
        rss_bytes: fields.rss_bytes,
        rss_anon_bytes: fields.rss_anon_bytes,
        cpu_seconds: ticks as f64 / clock_ticks_per_sec(),
        threads: fields.threads,
        open_fds,
        run_delay_seconds: run_delay_seconds(&dir.join("task")),
    })
}

/// Read host-wide slab and TCP socket figures.
pub fn sample_host() -> Result<HostSample, SamplerError> {
    let at = since_epoch();
    let p = Path::new("/proc/meminfo");
    let (slab_bytes, sunreclaim_bytes) =
        parse_meminfo(&read_proc(p, None)?).ok_or(SamplerError::Parse {
            path: p.to_path_buf(),
            what: "Slab/SUnreclaim",
        })?;
    let p = Path::new("/proc/net/sockstat");
    let tcp = parse_sockstat(&read_proc(p, None)?).ok_or(SamplerError::Parse {
        path: p.to_path_buf(),
        what: "TCP inuse",
    })?;
    let p = Path::new("/proc/net/netstat");
    let (listen_overflows, listen_drops) =
        parse_netstat_listen(&read_proc(p, None)?).ok_or(SamplerError::Parse {
            path: p.to_path_buf(),
            what: "TcpExt ListenOverflows/ListenDrops",
        })?;
    let cpus = read_proc(Path::new("/proc/stat"), None)
        .map(|t| parse_proc_stat_cpus(&t))
        .unwrap_or_default();
    Ok(HostSample {
        at,
        cpus,
        slab_bytes,
        sunreclaim_bytes,
        tcp_inuse: tcp.inuse,
        tcp_orphan: tcp.orphan,
        tcp_tw: tcp.tw,
        tcp_alloc: tcp.alloc,
        tcp_mem_pages: tcp.mem_pages,
        listen_overflows,
        listen_drops,
    })
}

/// CPU time (user + system) this process has used, seconds (`getrusage(RUSAGE_SELF)`); 0 if it
/// cannot be read.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is writable.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatbench_model::sampler::cpus_busy_between;

    const STATUS: &str =
        "Name:\tchat server\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  10000 kB\n\
VmRSS:\t    5120 kB\nRssAnon:\t    3072 kB\nRssFile:\t    2048 kB\nThreads:\t4\n";

    #[test]
    fn proc_stat_cpus_parse_and_give_busy_cores() {
        let a = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1 2\n";
        let b = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 55 0 25 50 0 2 3 15 0 0\ncpu1 6 0 5 139 0 0 0 0 0 0\n";
        let (ca, cb) = (parse_proc_stat_cpus(a), parse_proc_stat_cpus(b));
        assert_eq!(ca.len(), 2);
        assert_eq!(
            cb[0],
            CpuTicks {
                cpu: 0,
                busy: 85,
                steal: 15,
                total: 150
            }
        );
        let host = |cpus| HostSample {
            cpus,
            ..HostSample::default()
        };
        // cpu0: 75 of 100 ticks busy, 15 stolen; cpu1: 1 of 100.
        let (busy, steal) =
            cpus_busy_between(&host(ca.clone()), &host(cb.clone()), &[0]).expect("cpu0");
        assert!((busy - 0.75).abs() < 1e-9 && (steal - 0.15).abs() < 1e-9);
        let (busy, _) =
            cpus_busy_between(&host(ca.clone()), &host(cb.clone()), &[0, 1]).expect("both");
        assert!((busy - 0.76).abs() < 1e-9);
        assert_eq!(cpus_busy_between(&host(ca), &host(cb), &[7]), None);
    }

    #[test]
    fn status_parses() {
        let s = parse_status(STATUS).expect("status");
        assert_eq!(s.rss_bytes, 5120 * 1024);
        assert_eq!(s.rss_anon_bytes, 3072 * 1024);
        assert_eq!(s.threads, 4);
    }

    #[test]
    fn status_without_rss_is_none() {
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("VmRSS: lots kB\n"), None);
    }

    #[test]
    fn stat_parses_odd_command_names() {
        // Field 2 may contain spaces and ')'.
        let text = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 \
                    1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(text), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1234 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks(""), None);
    }

    #[test]
    fn meminfo_parses() {
        let text = "MemTotal:       24000000 kB\nSlab:             200000 kB\nSReclaimable:     120000 kB\nSUnreclaim:        80000 kB\n";
        assert_eq!(parse_meminfo(text), Some((200_000 * 1024, 80_000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn sockstat_parses() {
        let text =
            "sockets: used 300\nTCP: inuse 15 orphan 1 tw 7 alloc 20 mem 3\nUDP: inuse 2 mem 1\n";
        assert_eq!(
            parse_sockstat(text),
            Some(SockstatTcp {
                inuse: 15,
                orphan: 1,
                tw: 7,
                alloc: 20,
                mem_pages: 3
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 2\n"), None);
        assert_eq!(parse_sockstat("TCP: inuse\n"), None);
    }

    #[test]
    fn netstat_parses() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\n\
                    TcpExt: 0 12 14 3\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_netstat_listen(text), Some((12, 14)));
        assert_eq!(
            parse_netstat_listen("TcpExt: ListenOverflows ListenDrops\n"),
            None
        );
        assert_eq!(parse_netstat_listen("TcpExt: A B\nTcpExt: 1 2\n"), None);
    }

    #[test]
    fn schedstat_parses() {
        assert_eq!(
            parse_schedstat_wait_ns("219534682 27815159 866\n"),
            Some(27_815_159)
        );
        assert_eq!(parse_schedstat_wait_ns("0 0 1"), Some(0));
        assert_eq!(parse_schedstat_wait_ns("219534682 27815159"), None);
        assert_eq!(parse_schedstat_wait_ns("1 -2 3"), None);
        assert_eq!(parse_schedstat_wait_ns(""), None);
        assert_eq!(
            parse_schedstat_ns("219534682 27815159 866\n"),
            Some((219_534_682, 27_815_159))
        );
        assert_eq!(parse_schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn samples_this_process() {
        let p = sample_process(std::process::id()).expect("self sample");
        assert!(p.run_delay_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.rss_bytes > 0);
        assert!(p.threads >= 1);
        assert!(p.open_fds >= 1);
        assert!(p.cpu_seconds >= 0.0);
        assert!(self_cpu_seconds() > 0.0);
        assert_eq!(
            sample_rss(std::process::id()).map(|r| r > 0).ok(),
            Some(true)
        );
    }

    #[test]
    fn counts_descriptors_as_a_listing_would() {
        // Open a known number of extra descriptors; both ways of counting see them.
        let files: Vec<_> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
            .collect();
        let dir = PathBuf::from(format!("/proc/{}/fd", std::process::id()));
        let listed = std::fs::read_dir(&dir)
            .expect("list fds")
            .filter(|e| e.is_ok())
            .count() as u64;
        let counted = count_fds(&dir);
        // Other test threads may open or close files meanwhile: allow a little drift.
        assert!(counted >= 50, "{counted}");
        assert!(counted.abs_diff(listed) <= 8, "{counted} vs {listed}");
        drop(files);
    }

    #[test]
    fn gone_process_is_named() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        let e = sample_process(pid).expect_err("reaped process");
        assert!(
            matches!(e, SamplerError::ProcessGone { pid: p } if p == pid),
            "{e}"
        );
        assert!(e.to_string().contains("is gone"));
    }

    #[test]
    fn samples_host() {
        let h = sample_host().expect("host sample");
        assert!(h.slab_bytes > 0);
    }
}
