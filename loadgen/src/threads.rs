//! The generator's CPU split by what its threads do: the one rule that turns two readings of
//! this process's threads (`/proc/self/task/*/schedstat` and `stat`, taken at the measurement
//! window's edges)
//! into cores per role (`receive`, `pacer`, `tokio`, `other`, told by the thread's name).
//!
//! What `/proc` can tell, and so what the split counts:
//! - a thread alive at both edges: what it used between them;
//! - a thread that started inside the window (only in the second reading): everything it used,
//!   all of it inside the window;
//! - a thread that ended inside the window (only in the first reading): **lost** — its task
//!   entry is gone with whatever it used after the first reading, so it is in no group. The
//!   process's total (`generator.cpu_cores_measure`, from `getrusage`) still has it, which is
//!   why the split is reported beside the total and the groups may add up to less.
//!
//! A thread's time is its `schedstat` on-CPU nanoseconds (the scheduler's own clock, exact).
//! Only a kernel without `CONFIG_SCHED_INFO` falls back to `stat`'s `utime + stime`, in clock
//! ticks (`_SC_CLK_TCK`, 100 a second on common builds): good to a tick, so there a short
//! window's small shares are coarse (a pacer's 140 ms in 10 s is ± 7 %).
//!
//! [`split`] is the pure rule; [`Snapshot::read`] the reading (`None` off Linux or when
//! `/proc/self/task` cannot be read). A one-process run splits its own window; in a fleet each
//! agent splits its own (its threads are its process's) and sends the [`Split`] in its final
//! figures, where the coordinator, for which it is untrusted input, checks it
//! ([`Split::check`]: what a real reading can be) and adds the agents' ([`Split::add`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use chatbench_model::results::ByRole;

/// Most threads of one role a split may count (an agent's report claiming more is not
/// believed). No generator gets near it: each thread's stack takes two of the 65,530 memory
/// maps `vm.max_map_count` gives a process by default.
pub const MAX_THREADS_PER_ROLE: u32 = 65_536;

/// How many cores a role's threads may show per thread: one (a thread runs on one CPU at a
/// time), doubled for the clock tick each thread's figure is rounded to (in a window of a
/// second, a tick is a hundredth of a core; this leaves room down to windows of 10 ms).
pub const MAX_CORES_PER_THREAD: f64 = 2.0;

/// The window's CPU by role with the threads of each role: what [`split`] gives, what an agent
/// sends the coordinator (`control::Final::thread_split`), and what the coordinator sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Cores by role over the window.
    pub cores: ByRole<f64>,
    /// Threads by role alive at the window's end.
    pub threads: ByRole<u32>,
}

/// Why a split read from the network is not believed ([`Split::check`]).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Implausible {
    /// A role's cores are not a finite number at or above 0.
    #[error("{role} cores {} are not a finite number at or above 0", shown(*.cores))]
    Cores {
        /// The role.
        role: &'static str,
        /// What was claimed.
        cores: f64,
    },
    /// More threads of a role than any process has.
    #[error("{role} threads {threads} are more than {MAX_THREADS_PER_ROLE}")]
    Threads {
        /// The role.
        role: &'static str,
        /// What was claimed.
        threads: u32,
    },
    /// More cores than the role's threads can use.
    #[error(
        "{role} cores {} are more than its {threads} thread(s) can use \
         (at most {MAX_CORES_PER_THREAD} each, with the clock tick's rounding)",
        shown(*.cores)
    )]
    CoresOverThreads {
        /// The role.
        role: &'static str,
        /// Cores claimed.
        cores: f64,
        /// Threads claimed.
        threads: u32,
    },
}

/// A claimed figure as a message shows it: as it is, or in exponent form when it is huge (a
/// hostile `1e300` is not printed as 301 digits).
fn shown(v: f64) -> String {
    if v.abs() < 1e9 {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

impl Split {
    /// Each role's name, cores and threads.
    fn roles(&self) -> [(&'static str, f64, u32); 4] {
        let (c, t) = (&self.cores, &self.threads);
        [
            ("receive", c.receive, t.receive),
            ("pacer", c.pacer, t.pacer),
            ("tokio", c.tokio, t.tokio),
            ("other", c.other, t.other),
        ]
    }

    /// Whether this could be a real reading: every role's cores finite and at or above 0, its
    /// threads at most [`MAX_THREADS_PER_ROLE`], its cores at most [`MAX_CORES_PER_THREAD`]
    /// per thread (a role's cores come only from the threads counted at the window's end, so
    /// cores without threads are impossible). The first role that fails says why.
    pub fn check(&self) -> Result<(), Implausible> {
        for (role, cores, threads) in self.roles() {
            if !cores.is_finite() || cores < 0.0 {
                return Err(Implausible::Cores { role, cores });
            }
            if threads > MAX_THREADS_PER_ROLE {
                return Err(Implausible::Threads { role, threads });
            }
            if cores > f64::from(threads) * MAX_CORES_PER_THREAD {
                return Err(Implausible::CoresOverThreads {
                    role,
                    cores,
                    threads,
                });
            }
        }
        Ok(())
    }

    /// Adds another process's split (a fleet's sum over its agents): cores added, threads
    /// added (saturating; checked splits are far from the limit).
    pub fn add(&mut self, o: &Split) {
        let (c, t) = (&mut self.cores, &mut self.threads);
        c.receive += o.cores.receive;
        c.pacer += o.cores.pacer;
        c.tokio += o.cores.tokio;
        c.other += o.cores.other;
        t.receive = t.receive.saturating_add(o.threads.receive);
        t.pacer = t.pacer.saturating_add(o.threads.pacer);
        t.tokio = t.tokio.saturating_add(o.threads.tokio);
        t.other = t.other.saturating_add(o.threads.other);
    }
}

/// A split from arrays in role order (receive, pacer, tokio, other), for tests.
#[cfg(test)]
pub(crate) fn test_split(cores: [f64; 4], threads: [u32; 4]) -> Split {
    Split {
        cores: ByRole {
            receive: cores[0],
            pacer: cores[1],
            tokio: cores[2],
            other: cores[3],
        },
        threads: ByRole {
            receive: threads[0],
            pacer: threads[1],
            tokio: threads[2],
            other: threads[3],
        },
    }
}

/// What a thread does, from its name (`comm`, at most 15 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The epoll receive path's threads, `chatbench-rx-N`.
    Receive,
    /// The pacer's thread, `pacer`.
    Pacer,
    /// The tokio runtime's threads (`tokio-runtime-w…` as the kernel keeps the default name).
    Tokio,
    /// Anything else: the main thread, `readings`, `signals`.
    Other,
}

impl Role {
    /// The role of a thread named `comm`.
    pub fn of(comm: &str) -> Role {
        if comm.starts_with("chatbench-rx") {
            Role::Receive
        } else if comm == "pacer" {
            Role::Pacer
        } else if comm.starts_with("tokio") {
            Role::Tokio
        } else {
            Role::Other
        }
    }
}

/// One thread as one reading saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Its name.
    pub comm: String,
    /// CPU time it has used, nanoseconds.
    pub ns: u64,
}

/// Parses a `/proc/PID/task/TID/stat` line into the thread's name and `utime + stime` in
/// nanoseconds at `ns_per_tick`. The name is between the first `(` and the last `)` (it may
/// itself hold spaces and parentheses); utime and stime are the 14th and 15th fields. `None`
/// for anything else.
pub fn parse_task_stat(text: &str, ns_per_tick: u64) -> Option<ThreadCpu> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let ticks = crate::sampler::parse_stat_cpu_ticks(text)?;
    Some(ThreadCpu {
        comm: comm.to_string(),
        ns: ticks.saturating_mul(ns_per_tick),
    })
}

/// Every thread of this process at one moment, by thread id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Each thread that could be read.
    pub threads: BTreeMap<u32, ThreadCpu>,
}

impl Snapshot {
    /// Reads `/proc/self/task/*/stat` (the name) and `schedstat` (the time; `stat`'s ticks
    /// when it cannot be read). A thread that ends while it is read is skipped; `None` when the
    /// folder cannot be listed or no thread could be read (not Linux, no `/proc`).
    pub fn read() -> Option<Snapshot> {
        let dir = std::fs::read_dir("/proc/self/task").ok()?;
        let ns_per_tick = (1e9 / ticks_per_second()).round() as u64;
        let mut threads = BTreeMap::new();
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(mut t) = parse_task_stat(&text, ns_per_tick) else {
                continue;
            };
            if let Some((run_ns, _)) = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|l| crate::sampler::parse_schedstat_ns(&l))
            {
                t.ns = run_ns;
            }
            threads.insert(tid, t);
        }
        (!threads.is_empty()).then_some(Snapshot { threads })
    }
}

/// The kernel's clock ticks per second (`_SC_CLK_TCK`; 100 if it cannot say).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The split of a window from its two readings: cores per role (nanoseconds ÷ 10⁹ ÷ `wall_s`)
/// and the threads of each role in the second reading. A thread in both readings counts what
/// it used between them; one only in the second, all it used (it started inside the window; so
/// does a thread id reused by a new thread, told by its time going back); one only in the first
/// counts nothing (lost, see the module's comment). The role is the one the second reading
/// names.
pub fn split(a: &Snapshot, b: &Snapshot, wall_s: f64) -> Split {
    let mut ns = ByRole::<u64>::default();
    let mut count = ByRole::<u32>::default();
    for (tid, t) in &b.threads {
        let used = match a.threads.get(tid) {
            Some(before) if before.ns <= t.ns => t.ns - before.ns,
            _ => t.ns,
        };
        let (slot, n) = match Role::of(&t.comm) {
            Role::Receive => (&mut ns.receive, &mut count.receive),
            Role::Pacer => (&mut ns.pacer, &mut count.pacer),
            Role::Tokio => (&mut ns.tokio, &mut count.tokio),
            Role::Other => (&mut ns.other, &mut count.other),
        };
        *slot = slot.saturating_add(used);
        *n += 1;
    }
    let per = 1e9 * wall_s.max(1e-9);
    let cores = ByRole {
        receive: ns.receive as f64 / per,
        pacer: ns.pacer as f64 / per,
        tokio: ns.tokio as f64 / per,
        other: ns.other as f64 / per,
    };
    Split {
        cores,
        threads: count,
    }
}

/// The window's split from its two readings, when both were taken.
pub fn window_split(a: Option<&Snapshot>, b: Option<&Snapshot>, wall_s: f64) -> Option<Split> {
    Some(split(a?, b?, wall_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task stat line with the given name and utime/stime (the fields between are made up).
    fn line(tid: u32, comm: &str, utime: u64, stime: u64) -> String {
        format!(
            "{tid} ({comm}) S 1 1 1 0 -1 4194368 100 0 0 0 {utime} {stime} 0 0 20 0 8 0 1234 1000000 500 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 -1 1 0 0 0 0 0"
        )
    }

    fn snap(lines: &[(u32, String)]) -> Snapshot {
        Snapshot {
            threads: lines
                .iter()
                .filter_map(|(tid, l)| Some((*tid, parse_task_stat(l, 10_000_000)?)))
                .collect(),
        }
    }

    #[test]
    fn a_stat_line_gives_the_name_between_the_first_and_last_parenthesis() {
        let t = parse_task_stat(&line(7, "odd) (name", 30, 12), 10).expect("parses");
        assert_eq!(t.comm, "odd) (name");
        assert_eq!(t.ns, 420);
        let t = parse_task_stat(&line(8, "with space", 1, 2), 10_000_000).expect("parses");
        assert_eq!((t.comm.as_str(), t.ns), ("with space", 30_000_000));
        assert_eq!(parse_task_stat("", 10), None);
        assert_eq!(
            parse_task_stat("12 (cut) S 1 2", 10),
            None,
            "too few fields"
        );
        assert_eq!(parse_task_stat("12 no parentheses 1 2 3", 10), None);
        assert_eq!(parse_task_stat(") backwards (", 10), None);
        assert_eq!(
            parse_task_stat(
                &line(9, "x", 1, 2).replace(" 1 2 0 0 20", " 1 two 0 0 20"),
                10
            ),
            None,
            "stime not a number"
        );
    }

    #[test]
    fn roles_come_from_the_thread_name() {
        assert_eq!(Role::of("chatbench-rx-0"), Role::Receive);
        assert_eq!(Role::of("chatbench-rx-12"), Role::Receive);
        assert_eq!(Role::of("pacer"), Role::Pacer);
        assert_eq!(Role::of("pacer2"), Role::Other);
        assert_eq!(Role::of("tokio-runtime-w"), Role::Tokio);
        assert_eq!(Role::of("chatbench"), Role::Other);
        assert_eq!(Role::of("readings"), Role::Other);
    }

    #[test]
    fn two_readings_split_into_cores_by_role() {
        let a = snap(&[
            (1, line(1, "chatbench", 50, 50)),
            (2, line(2, "tokio-runtime-w", 10, 0)),
            (3, line(3, "chatbench-rx-0", 100, 100)),
            (4, line(4, "pacer", 5, 5)),
            // Ends inside the window: lost.
            (5, line(5, "tokio-runtime-w", 70, 0)),
            (6, line(6, "odd) (name", 1, 1)),
            // Its id is reused by a new thread inside the window.
            (8, line(8, "chatbench-rx-1", 900, 0)),
        ]);
        let b = snap(&[
            (1, line(1, "chatbench", 50, 51)),
            (2, line(2, "tokio-runtime-w", 30, 0)),
            (3, line(3, "chatbench-rx-0", 250, 250)),
            (4, line(4, "pacer", 25, 5)),
            (6, line(6, "odd) (name", 2, 1)),
            // Starts inside the window: all it used counts.
            (7, line(7, "chatbench-rx-1", 40, 10)),
            (8, line(8, "chatbench-rx-2", 10, 0)),
        ]);
        let Split { cores, threads } = split(&a, &b, 2.0);
        // receive: 300 + 50 + 10 ticks; pacer 20; tokio 20; other 1 + 1; over 200 ticks.
        assert_eq!(
            cores,
            ByRole {
                receive: 1.8,
                pacer: 0.1,
                tokio: 0.1,
                other: 0.01
            }
        );
        assert_eq!(
            threads,
            ByRole {
                receive: 3,
                pacer: 1,
                tokio: 1,
                other: 2
            }
        );
    }

    #[test]
    fn an_empty_or_missing_reading_splits_into_nothing() {
        let s = split(&Snapshot::default(), &Snapshot::default(), 1.0);
        assert_eq!(s, Split::default());
        assert_eq!(window_split(None, Some(&Snapshot::default()), 1.0), None);
    }

    #[test]
    fn splits_add_role_by_role() {
        let mut sum = Split::default();
        sum.add(&test_split([0.5, 0.1, 0.25, 0.0], [2, 1, 3, 4]));
        sum.add(&test_split([0.25, 0.2, 0.0, 0.5], [2, 1, 2, 5]));
        assert_eq!(
            sum,
            test_split([0.75, 0.30000000000000004, 0.25, 0.5], [4, 2, 5, 9])
        );
        sum.add(&test_split([0.0; 4], [u32::MAX, 0, 0, 0]));
        assert_eq!(sum.threads.receive, u32::MAX, "threads saturate");
    }

    #[test]
    fn a_real_split_passes_the_check_and_hostile_ones_do_not() {
        assert_eq!(Split::default().check(), Ok(()));
        assert_eq!(
            test_split([1.8, 0.1, 0.1, 0.01], [3, 1, 1, 2]).check(),
            Ok(())
        );
        // A thread busy the whole window, its ticks rounded up.
        assert_eq!(
            test_split([1.01, 0.0, 0.0, 0.0], [1, 0, 0, 0]).check(),
            Ok(())
        );
        let why = |cores, threads| test_split(cores, threads).check().expect_err("refused");
        assert_eq!(
            why([0.1, -0.5, 0.0, 0.0], [1, 1, 0, 0]),
            Implausible::Cores {
                role: "pacer",
                cores: -0.5
            }
        );
        assert!(matches!(
            why([0.0, 0.0, f64::NAN, 0.0], [0, 0, 1, 0]),
            Implausible::Cores { role: "tokio", .. }
        ));
        for bad in [f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                why([0.0, 0.0, 0.0, bad], [0, 0, 0, 1]),
                Implausible::Cores { role: "other", .. }
            ));
        }
        assert_eq!(
            why([0.0; 4], [MAX_THREADS_PER_ROLE + 1, 0, 0, 0]),
            Implausible::Threads {
                role: "receive",
                threads: MAX_THREADS_PER_ROLE + 1
            }
        );
        assert_eq!(
            test_split([0.0; 4], [MAX_THREADS_PER_ROLE; 4]).check(),
            Ok(())
        );
        // Cores with no thread to have used them, and more than the threads can use.
        assert!(matches!(
            why([0.0, 0.01, 0.0, 0.0], [0, 0, 0, 0]),
            Implausible::CoresOverThreads {
                role: "pacer",
                threads: 0,
                ..
            }
        ));
        let e = why([0.0, 0.0, 1e300, 0.0], [0, 0, 8, 0]);
        assert!(
            e.to_string()
                .contains("tokio cores 1e300 are more than its 8 thread(s)"),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_its_own_threads() {
        let s = Snapshot::read().expect("/proc/self/task on Linux");
        assert!(!s.threads.is_empty());
        assert!(ticks_per_second() > 0.0);
        // A thread that used 30 ms of CPU reads as such from `schedstat`, to the nanosecond:
        // the tick fallback reads a multiple of 10 ms. The spin counts the thread's own CPU
        // clock, not wall time, since a busy machine may give it a fraction of the wall;
        // `schedstat` may lag that clock by up to one scheduler tick (≤ 10 ms at HZ ≥ 100).
        let spin = std::thread::Builder::new()
            .name("spin-30ms".into())
            .spawn(|| {
                let wall = std::time::Instant::now();
                while own_cpu_ns() < 30_000_000 && wall.elapsed().as_secs() < 20 {
                    std::hint::spin_loop();
                }
                let snap = Snapshot::read().expect("a reading");
                (own_cpu_ns(), snap)
            })
            .expect("spawn")
            .join()
            .expect("join");
        let (cpu, snap) = spin;
        assert!(cpu >= 30_000_000, "the spin got {cpu} ns of CPU in 20 s");
        let t = snap
            .threads
            .values()
            .find(|t| t.comm == "spin-30ms")
            .expect("the thread");
        assert!(
            t.ns >= 15_000_000 && t.ns <= cpu && t.ns % 10_000_000 != 0,
            "{} ns of the thread's {cpu} ns: not the scheduler's own clock",
            t.ns
        );
    }

    /// The calling thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), in ns.
    fn own_cpu_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}
