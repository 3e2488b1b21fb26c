//! Process limits and addresses: what the operating system lets one generator process do.
//!
//! Each connection holds a file descriptor, so `RLIMIT_NOFILE` caps the connections of one
//! process (hard-capped at 20,000 on the development machine, a million on users' machines);
//! and each (source IP, destination) pair has only ~28k ephemeral ports, so loopback runs spread
//! their client sockets over several 127.0.0.0/8 source addresses. Both limits are read at run
//! time, never assumed, and a plan that does not fit is refused with the way out named.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

pub use chatbench_model::provenance::NofileLimit;
use thiserror::Error;

/// Descriptors kept free for everything that is not a connection (stdio, results files, the
/// coordinator link, epoll/eventfd, /proc reads).
pub const FD_HEADROOM: u64 = 64;

/// Connections per loopback source address. Far below the ~28k ephemeral ports (32768–60999)
/// of a (source, destination) pair on purpose: the kernel's connect() searches that pair's
/// ports linearly, and with 15k connections on one source address the search took two thirds
/// of the generator's CPU and stalled connection setup for seconds (measured with perf).
pub const DEFAULT_CONNS_PER_SOURCE_ADDR: u32 = 1_000;

/// A run plan that does not fit this process.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// More connections than file descriptors.
    #[error(
        "{connections} connections need {needed} file descriptors in one process, but RLIMIT_NOFILE \
         is {soft} (hard limit {hard}; {FD_HEADROOM} kept for other files); run with more agents \
         (--agents local:{agents}, or --agents auto), lower `connections` to at most \
         {max_connections}, or raise `ulimit -n`"
    )]
    TooManyConnections {
        /// Connections planned for this process.
        connections: u64,
        /// Descriptors needed including headroom.
        needed: u64,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// Connections that would fit.
        max_connections: u64,
        /// Local agents that would hold the plan.
        agents: u64,
    },
}

fn to_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

fn getrlimit_nofile() -> io::Result<libc::rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rl)
}

/// Read `RLIMIT_NOFILE` without changing it.
pub fn current_nofile() -> io::Result<NofileLimit> {
    let rl = getrlimit_nofile()?;
    Ok(NofileLimit {
        soft: to_u64(rl.rlim_cur),
        hard: to_u64(rl.rlim_max),
        raised_from: to_u64(rl.rlim_cur),
    })
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (or to `fs.nr_open` when the hard limit is
/// unlimited) and return the result.
pub fn raise_nofile() -> io::Result<NofileLimit> {
    let rl = getrlimit_nofile()?;
    let before = rl.rlim_cur;
    let mut target = rl.rlim_max;
    if target == libc::RLIM_INFINITY {
        // The kernel refuses an infinite NOFILE; nr_open is the real ceiling.
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(1 << 20);
    }
    if target > before {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit struct; setrlimit only reads it.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let now = getrlimit_nofile()?;
    Ok(NofileLimit {
        soft: to_u64(now.rlim_cur),
        hard: to_u64(now.rlim_max),
        raised_from: to_u64(before),
    })
}

/// Check that `connections` sockets (one descriptor each) plus [`FD_HEADROOM`] fit under the soft
/// limit of one process.
pub fn fits_in_one_process(connections: u64, limit: &NofileLimit) -> Result<(), PlanError> {
    let needed = connections.saturating_add(FD_HEADROOM);
    if needed <= limit.soft {
        return Ok(());
    }
    let per_process = limit.soft.saturating_sub(FD_HEADROOM).max(1);
    Err(PlanError::TooManyConnections {
        connections,
        needed,
        soft: limit.soft,
        hard: limit.hard,
        max_connections: limit.soft.saturating_sub(FD_HEADROOM),
        agents: connections.div_ceil(per_process),
    })
}

/// Source addresses for client sockets to a loopback target: `127.0.0.2`, `127.0.0.3`, … (skipping
/// addresses ending in `.0` and `.255`), enough that no address carries more than `per_addr`
/// connections. Always at least one address; `per_addr = 0` is treated as 1.
pub fn loopback_source_addrs(connections: u64, per_addr: u32) -> Vec<IpAddr> {
    let per_addr = u64::from(per_addr.max(1));
    let count = connections.div_ceil(per_addr).max(1);
    let mut out = Vec::new();
    let mut raw = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
    while (out.len() as u64) < count && raw <= last {
        let low = raw & 0xff;
        if low != 0 && low != 255 {
            out.push(IpAddr::V4(Ipv4Addr::from(raw)));
        }
        raw += 1;
    }
    out
}

/// Sets an integer socket option (`setsockopt(2)` with a `c_int` of 1 or 0).
pub fn set_socket_flag(
    sock: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    on: bool,
) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: a valid fd and a pointer to a c_int with its size, as setsockopt(2) wants.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPUs this process may run on (`sched_getaffinity`), ascending. Empty if it cannot be read.
pub fn cpu_affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; `set` is writable and its size is passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    let max = std::mem::size_of::<libc::cpu_set_t>() * 8;
    // SAFETY: `cpu < max`, within the set's bit range.
    (0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Restrict the calling thread, and every thread it spawns afterwards, to `cpus`
/// (`sched_setaffinity`). Call it before starting a runtime so all worker threads inherit it.
pub fn set_cpu_affinity(cpus: &[usize]) -> io::Result<()> {
    let max = std::mem::size_of::<libc::cpu_set_t>() * 8;
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty CPU list: name at least one CPU",
        ));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is out of range (at most {})", max - 1),
            ));
        }
        // SAFETY: `cpu < max`, within the set's bit range.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is this thread; `set` is valid and its size is passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs online on this host (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64) -> NofileLimit {
        NofileLimit {
            soft,
            hard: 20_000,
            raised_from: 1024,
        }
    }

    #[test]
    fn raise_nofile_reaches_hard_limit() {
        let l = raise_nofile().expect("getrlimit/setrlimit");
        assert!(l.soft >= l.raised_from);
        if l.hard != u64::MAX {
            assert_eq!(l.soft, l.hard);
        }
        let c = current_nofile().expect("getrlimit");
        assert_eq!(c.soft, l.soft);
    }

    #[test]
    fn plan_fits_with_headroom() {
        assert_eq!(fits_in_one_process(19_936, &limit(20_000)), Ok(()));
        assert!(fits_in_one_process(19_937, &limit(20_000)).is_err());
        assert_eq!(fits_in_one_process(0, &limit(64)), Ok(()));
    }

    #[test]
    fn plan_error_names_limit_and_ways_out() {
        let e = fits_in_one_process(50_000, &limit(20_000)).expect_err("does not fit");
        let msg = e.to_string();
        assert!(msg.contains("RLIMIT_NOFILE is 20000"), "{msg}");
        assert!(msg.contains("--agents local:3"), "{msg}");
        assert!(
            msg.contains("lower `connections` to at most 19936"),
            "{msg}"
        );
        assert!(msg.contains("ulimit -n"), "{msg}");
    }

    #[test]
    fn plan_error_with_tiny_limit_does_not_divide_by_zero() {
        let e = fits_in_one_process(10, &limit(10)).expect_err("does not fit");
        assert!(matches!(
            e,
            PlanError::TooManyConnections { agents: 10, .. }
        ));
    }

    #[test]
    fn source_addrs_cover_connections() {
        let a = loopback_source_addrs(10, DEFAULT_CONNS_PER_SOURCE_ADDR);
        assert_eq!(a, vec!["127.0.0.2".parse::<IpAddr>().expect("ip")]);
        assert_eq!(loopback_source_addrs(0, 100).len(), 1);
        assert_eq!(loopback_source_addrs(50_001, 25_000).len(), 3);
        let many = loopback_source_addrs(300 * 1000, 1000);
        assert_eq!(many.len(), 300);
        assert!(many.iter().all(|ip| ip.is_loopback()));
        // 127.0.0.254 is followed by 127.0.1.1: .255 and .0 are skipped.
        assert_eq!(many[252], "127.0.0.254".parse::<IpAddr>().expect("ip"));
        assert_eq!(many[253], "127.0.1.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(loopback_source_addrs(5, 0).len(), 5);
    }

    #[test]
    fn set_affinity_in_a_thread() {
        let before = cpu_affinity();
        let first = before[0];
        // A fresh thread, so the test runner's threads keep their affinity.
        let after = std::thread::spawn(move || set_cpu_affinity(&[first]).map(|()| cpu_affinity()))
            .join()
            .expect("thread")
            .expect("set affinity");
        assert_eq!(after, vec![first]);
        assert!(set_cpu_affinity(&[]).is_err());
        assert!(set_cpu_affinity(&[1 << 20]).is_err());
    }

    #[test]
    fn cpus() {
        let aff = cpu_affinity();
        assert!(!aff.is_empty());
        assert!(aff.windows(2).all(|w| w[0] < w[1]));
        assert!(online_cpus() >= 1);
    }
}
