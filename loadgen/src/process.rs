//! How chatbench starts and stops a long-lived child process, written once: every child the
//! harness starts (a server, a cluster node, the private redis-server, an Elixir node and its
//! epmd) and every local agent the coordinator starts is prepared here and ended here. It lives
//! in the load generator, the lowest crate that starts processes, so that both use it
//! (`chatbench-harness` depends on this crate, never the reverse).
//!
//! - [`die_with_parent`]: the child receives SIGKILL when the thread that started it exits
//!   (`PR_SET_PDEATHSIG`), so a SIGKILLed generator or `cluster up` leaves no orphan behind.
//! - [`pin_to_cpus`]: the child runs on the given CPUs from its first instruction (threads it
//!   starts inherit the mask).
//! - [`spawn_pinned`]: both, in that order, and a process group of its own (a Ctrl-C at the
//!   terminal reaches the generator only, which then stops its children itself).
//! - [`terminate`] and [`terminate_then_kill`]: SIGTERM by PID to our own child, then SIGKILL
//!   after a grace period; [`StopOutcome`] says which of the three ways it ended.
//!
//! Linux sends the death signal when the *thread* that forked exits, not the process: start
//! children from a thread that lives as long as they should.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How often a stopping child is polled for its exit.
const POLL: Duration = Duration::from_millis(20);

/// Makes the child `command` starts receive SIGKILL when the thread that starts it exits
/// (`PR_SET_PDEATHSIG`): a SIGKILLed parent leaves no orphan behind. If the parent is already
/// gone by the time the child asks, the child does not start.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: getpid(2) before the fork; plain value.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec the closure makes two async-signal-safe system calls
    // (prctl, getppid) on plain values and builds an error without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: nobody would ever stop this child.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Makes the child `command` starts run on `cpus` only, from its first instruction; an empty
/// list leaves it unpinned. CPUs beyond what a `cpu_set_t` holds are left out.
pub fn pin_to_cpus(command: &mut Command, cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = std::mem::size_of::<libc::cpu_set_t>() * 8;
    for &cpu in cpus.iter().filter(|&&c| c < max) {
        // SAFETY: `cpu < max`, within the set's bit range.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: between fork and exec the closure only makes one system call on data prepared
    // before the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Prepares `command` the way the harness starts a long-lived child: pinned to `cpus` (empty:
/// unpinned), dying with this thread, in a process group of its own. The caller sets its
/// arguments and standard streams and spawns it.
pub fn spawn_pinned(command: &mut Command, cpus: &[usize]) {
    pin_to_cpus(command, cpus);
    command.process_group(0);
    die_with_parent(command);
}

/// Sends SIGTERM to `pid`, which must be a child of ours that has not been reaped yet (so the
/// PID cannot have been reused): the start of a graceful stop.
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Stops `child`: SIGTERM, up to `grace` for it to exit, then SIGKILL; always reaps it.
pub fn terminate_then_kill(child: &mut Child, grace: Duration) -> StopOutcome {
    if let Ok(Some(status)) = child.try_wait() {
        return StopOutcome::AlreadyExited(status);
    }
    terminate(child.id());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return StopOutcome::Terminated(status);
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    StopOutcome::Killed { grace }
}

/// How a child ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It had exited before it was asked to stop (a crash, or it never started).
    AlreadyExited(std::process::ExitStatus),
    /// It stopped on SIGTERM within the grace, with this status.
    Terminated(std::process::ExitStatus),
    /// It did not stop within `grace` of SIGTERM and was killed.
    Killed {
        /// The grace it had.
        grace: Duration,
    },
}

impl StopOutcome {
    /// Stopped on SIGTERM and exited 0: the graceful stop every server promises.
    pub fn is_clean(&self) -> bool {
        matches!(self, StopOutcome::Terminated(s) if s.success())
    }

    /// It was gone before the stop (so its last words say why).
    pub fn had_already_exited(&self) -> bool {
        matches!(self, StopOutcome::AlreadyExited(_))
    }
}

impl std::fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopOutcome::AlreadyExited(status) => write!(f, "had already exited: {status}"),
            StopOutcome::Terminated(status) => write!(f, "stopped by SIGTERM: {status}"),
            StopOutcome::Killed { grace } => {
                write!(f, "did not stop within {grace:?} of SIGTERM; killed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    #[test]
    fn a_child_that_stops_on_sigterm_is_terminated_not_killed() {
        let mut c = sh("trap 'exit 0' TERM; while :; do sleep 0.01; done");
        spawn_pinned(&mut c, &[]);
        let mut child = c.spawn().expect("sh");
        // Let the shell install its trap before it is signalled.
        std::thread::sleep(Duration::from_millis(200));
        let how = terminate_then_kill(&mut child, Duration::from_secs(5));
        assert!(how.is_clean(), "{how}");
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut c = sh("trap '' TERM; while :; do sleep 0.01; done");
        spawn_pinned(&mut c, &[]);
        let mut child = c.spawn().expect("sh");
        std::thread::sleep(Duration::from_millis(200));
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        let how = terminate_then_kill(&mut child, grace);
        assert_eq!(how, StopOutcome::Killed { grace });
        assert!(started.elapsed() >= grace);
        assert!(child.try_wait().expect("reaped").is_some());
    }

    #[test]
    fn a_child_gone_before_the_stop_says_so() {
        let mut child = sh("exit 3").spawn().expect("sh");
        let _ = child.wait();
        // Reaped already: try_wait gives the cached status.
        let how = terminate_then_kill(&mut child, Duration::from_secs(1));
        assert!(how.had_already_exited(), "{how}");
    }

    #[test]
    fn a_pinned_child_runs_on_its_cpu_only() {
        let mut c = Command::new("sh");
        c.args(["-c", "grep Cpus_allowed_list /proc/self/status"])
            .stdout(Stdio::piped());
        pin_to_cpus(&mut c, &[0]);
        let out = c.output().expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().nth(1), Some("0"), "{text}");
    }
}
