//! The generator's CPU split by what its threads do: the one rule that turns two readings of
//! this process's threads (`/proc/self/task/*/stat`, taken at the measurement window's edges)
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
//! The kernel counts a thread's time in clock ticks (`_SC_CLK_TCK`, 100 a second on common
//! builds): each thread's figure is good to a tick, so a short window's small shares are coarse.
//!
//! [`split`] is the pure rule; [`Snapshot::read`] the reading (`None` off Linux or when
//! `/proc/self/task` cannot be read).

use std::collections::BTreeMap;

use chatbench_model::results::ByRole;

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
pub struct ThreadTicks {
    /// Its name.
    pub comm: String,
    /// `utime + stime`, clock ticks.
    pub ticks: u64,
}

/// Parses a `/proc/PID/task/TID/stat` line into the thread's name and `utime + stime`. The
/// name is between the first `(` and the last `)` (it may itself hold spaces and parentheses);
/// utime and stime are the 14th and 15th fields. `None` for anything else.
pub fn parse_task_stat(text: &str) -> Option<ThreadTicks> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let ticks = crate::sampler::parse_stat_cpu_ticks(text)?;
    Some(ThreadTicks {
        comm: comm.to_string(),
        ticks,
    })
}

/// Every thread of this process at one moment, by thread id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Each thread that could be read.
    pub threads: BTreeMap<u32, ThreadTicks>,
}

impl Snapshot {
    /// Reads `/proc/self/task/*/stat`. A thread that ends while it is read is skipped; `None`
    /// when the folder cannot be listed or no thread could be read (not Linux, no `/proc`).
    pub fn read() -> Option<Snapshot> {
        let dir = std::fs::read_dir("/proc/self/task").ok()?;
        let mut threads = BTreeMap::new();
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(t) = parse_task_stat(&text) {
                threads.insert(tid, t);
            }
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

/// The split of a window from its two readings: cores per role (ticks ÷ `ticks_per_s` ÷
/// `wall_s`) and the threads of each role in the second reading. A thread in both readings
/// counts what it used between them; one only in the second, all it used (it started inside
/// the window; so does a thread id reused by a new thread, told by its ticks going back); one
/// only in the first counts nothing (lost, see the module's comment). The role is the one the
/// second reading names.
pub fn split(
    a: &Snapshot,
    b: &Snapshot,
    ticks_per_s: f64,
    wall_s: f64,
) -> (ByRole<f64>, ByRole<u32>) {
    let mut ticks = ByRole::<u64>::default();
    let mut count = ByRole::<u32>::default();
    for (tid, t) in &b.threads {
        let used = match a.threads.get(tid) {
            Some(before) if before.ticks <= t.ticks => t.ticks - before.ticks,
            _ => t.ticks,
        };
        let (slot, n) = match Role::of(&t.comm) {
            Role::Receive => (&mut ticks.receive, &mut count.receive),
            Role::Pacer => (&mut ticks.pacer, &mut count.pacer),
            Role::Tokio => (&mut ticks.tokio, &mut count.tokio),
            Role::Other => (&mut ticks.other, &mut count.other),
        };
        *slot = slot.saturating_add(used);
        *n += 1;
    }
    let per = ticks_per_s.max(1e-9) * wall_s.max(1e-9);
    let cores = ByRole {
        receive: ticks.receive as f64 / per,
        pacer: ticks.pacer as f64 / per,
        tokio: ticks.tokio as f64 / per,
        other: ticks.other as f64 / per,
    };
    (cores, count)
}

/// The window's split from its two readings, when both were taken.
pub fn window_split(
    a: Option<&Snapshot>,
    b: Option<&Snapshot>,
    wall_s: f64,
) -> Option<(ByRole<f64>, ByRole<u32>)> {
    Some(split(a?, b?, ticks_per_second(), wall_s))
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
                .filter_map(|(tid, l)| Some((*tid, parse_task_stat(l)?)))
                .collect(),
        }
    }

    #[test]
    fn a_stat_line_gives_the_name_between_the_first_and_last_parenthesis() {
        let t = parse_task_stat(&line(7, "odd) (name", 30, 12)).expect("parses");
        assert_eq!(t.comm, "odd) (name");
        assert_eq!(t.ticks, 42);
        let t = parse_task_stat(&line(8, "with space", 1, 2)).expect("parses");
        assert_eq!((t.comm.as_str(), t.ticks), ("with space", 3));
        assert_eq!(parse_task_stat(""), None);
        assert_eq!(parse_task_stat("12 (cut) S 1 2"), None, "too few fields");
        assert_eq!(parse_task_stat("12 no parentheses 1 2 3"), None);
        assert_eq!(parse_task_stat(") backwards ("), None);
        assert_eq!(
            parse_task_stat(&line(9, "x", 1, 2).replace(" 1 2 0 0 20", " 1 two 0 0 20")),
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
        let (cores, threads) = split(&a, &b, 100.0, 2.0);
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
        let (cores, threads) = split(&Snapshot::default(), &Snapshot::default(), 100.0, 1.0);
        assert_eq!((cores, threads), (ByRole::default(), ByRole::default()));
        assert_eq!(window_split(None, Some(&Snapshot::default()), 1.0), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_its_own_threads() {
        let s = Snapshot::read().expect("/proc/self/task on Linux");
        assert!(!s.threads.is_empty());
        assert!(ticks_per_second() > 0.0);
    }
}
