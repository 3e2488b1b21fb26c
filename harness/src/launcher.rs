//! Starting a reference server as a child process (`chatbench run --serve ARCH`): the server
//! must be its own process so that its memory and CPU can be sampled apart from the generator.
//!
//! The child is `chatbench serve --listen 127.0.0.1:0 …` of the same executable, or any other
//! server command (a peer under `servers/peers/`, `--serve-cmd`); its first stdout line starts
//! with the bound address. It runs in its own process group so that a
//! Ctrl-C at the terminal reaches the generator only, which then finishes the run and stops
//! the server itself (SIGTERM, then SIGKILL after a grace period).
//!
//! The wait for the address line follows the process, not only its stdout: a server that exits
//! first (a bad flag, a missing file, a crash) is reported as soon as it exits, with its exit
//! status or signal and its last output lines, bounded ([`last_words`]), even when a process it
//! started holds the pipe open. Every harness start goes through here, so `--serve`,
//! `--serve-peer`, `--serve-cmd`, compare's command columns, the statistical gate's commands
//! and cluster nodes all say it the same way.
//!
//! A child dies with the thread that started it (`PR_SET_PDEATHSIG`, SIGKILL), so a generator
//! or `cluster up` that is itself SIGKILLed leaves no server behind. Linux sends that signal when
//! the *thread* that forked exits, not the process: start children from a thread that lives as
//! long as they should (the main thread, as `chatbench run` and `cluster up` do; the supervisor
//! refuses to restart a node from any other thread).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use chatbench_loadgen::process::{die_with_parent, StopOutcome};
use chatbench_loadgen::process::{spawn_pinned, terminate_then_kill};

/// Errors starting or stopping the server child.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The executable could not be started.
    #[error("cannot start the server ({cmd}): {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited before announcing its address (a bad flag, a missing file, a crash): found as
    /// soon as it exits, not after the wait.
    #[error("the server exited before announcing its address ({status}; {cmd}); its last output:\n{output}")]
    Exited {
        /// The command line.
        cmd: String,
        /// How it ended: its exit status or the signal that killed it.
        status: std::process::ExitStatus,
        /// Its last output lines ([`last_words`]).
        output: String,
    },
    /// Its first stdout line is not an address; it was stopped.
    #[error("the server printed {line:?} instead of its address as the first word of its first stdout line ({cmd}); its last output:\n{output}")]
    NotAnAddress {
        /// The command line.
        cmd: String,
        /// The line it printed (at most [`LINE_CHARS`] characters).
        line: String,
        /// Its last output lines ([`last_words`]).
        output: String,
    },
    /// It was still running, silent on stdout, when the wait ended; it was stopped.
    #[error("the server did not announce its address within {waited:?} ({cmd}); its last output:\n{stderr}")]
    NoAddress {
        /// The command line.
        cmd: String,
        /// How long we waited.
        waited: Duration,
        /// Its last output lines ([`last_words`]).
        stderr: String,
    },
}

/// A running server child.
pub struct ServerChild {
    child: Child,
    /// Its bound address.
    pub addr: SocketAddr,
    /// Its pid.
    pub pid: u32,
    /// The arguments it was started with.
    pub args: Vec<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

const STDERR_TAIL_LINES: usize = 40;

/// A server child's stdout lines after its address line
/// ([`ServerChild::start_command_with_lines`]).
pub struct LaterLines {
    /// The lines, in order.
    pub rx: Receiver<String>,
    /// Lines dropped because the channel was full.
    pub dropped: Arc<AtomicU64>,
}

impl ServerChild {
    /// Starts `exe serve --arch ARCH --listen 127.0.0.1:0 [extra…]` and waits for its address.
    pub fn start(exe: &Path, arch: &str, extra: &[String]) -> Result<ServerChild, LaunchError> {
        let mut args = vec![
            "serve".to_string(),
            "--arch".into(),
            arch.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().cloned());
        ServerChild::start_command(exe, &args, &[])
    }

    /// Starts any server command (`program args…`) whose first stdout line starts with its
    /// bound address, like `chatbench serve` (e.g. a peer server under `servers/peers/`), and
    /// waits for that address. With `cpus`, the child runs on those CPUs only, from its first
    /// instruction (threads it starts inherit the mask).
    pub fn start_command(
        program: &Path,
        args: &[String],
        cpus: &[usize],
    ) -> Result<ServerChild, LaunchError> {
        ServerChild::start_inner(program, args, cpus, &[], None)
    }

    /// [`ServerChild::start_command`] with extra environment variables for the child (how
    /// secrets reach it: a process's environment is readable by its own user only, its command
    /// line by every local user). `env` never appears in errors.
    pub fn start_command_env(
        program: &Path,
        args: &[String],
        cpus: &[usize],
        env: &[(&str, &str)],
    ) -> Result<ServerChild, LaunchError> {
        ServerChild::start_inner(program, args, cpus, env, None)
    }

    /// [`ServerChild::start_command_env`], and the child's later stdout lines (after the
    /// address line) on a channel of at most `capacity` lines: a line that finds it full is
    /// dropped and counted in [`LaterLines::dropped`] (the reader must keep up, not the child wait).
    pub fn start_command_with_lines(
        program: &Path,
        args: &[String],
        cpus: &[usize],
        env: &[(&str, &str)],
        capacity: usize,
    ) -> Result<(ServerChild, LaterLines), LaunchError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let child =
            ServerChild::start_inner(program, args, cpus, env, Some((tx, dropped.clone())))?;
        Ok((child, LaterLines { rx, dropped }))
    }

    fn start_inner(
        program: &Path,
        args: &[String],
        cpus: &[usize],
        env: &[(&str, &str)],
        later: Option<(SyncSender<String>, Arc<AtomicU64>)>,
    ) -> Result<ServerChild, LaunchError> {
        let args = args.to_vec();
        let cmd = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut command = Command::new(program);
        command.envs(env.iter().copied());
        spawn_pinned(&mut command, cpus);
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let pid = child.id();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_reader = child
            .stderr
            .take()
            .map(|err| read_stderr(err, tail.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            read_stdout(out, tx, later);
        }
        let mut server = ServerChild {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            args,
            stderr_tail: tail,
            stderr_reader,
        };
        match await_address(&mut server.child, &rx, ANNOUNCE_WITHIN) {
            Announce::Addr(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Announce::Exited(status, first) => {
                let output = server.last_words_after_exit(first.as_deref());
                Err(LaunchError::Exited {
                    cmd,
                    status,
                    output,
                })
            }
            Announce::Other(line) => {
                server.kill_now();
                let output = server.last_words_after_exit(None);
                Err(LaunchError::NotAnAddress {
                    cmd,
                    line: clip(&line),
                    output,
                })
            }
            Announce::Silent => {
                server.kill_now();
                let stderr = server.last_words_after_exit(None);
                Err(LaunchError::NoAddress {
                    cmd,
                    waited: ANNOUNCE_WITHIN,
                    stderr,
                })
            }
        }
    }

    /// The child has exited (and is reaped): its stderr reader is given a moment to read what
    /// is left (bounded: a process it started may hold the pipe open), then [`last_words`] of
    /// its stderr, after `stdout_line` (a first stdout line that was not an address).
    fn last_words_after_exit(&mut self, stdout_line: Option<&str>) -> String {
        self.await_stderr_reader(Duration::from_millis(500));
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        last_words(stdout_line.into_iter().map(str::to_owned).chain(tail))
    }

    /// Waits up to `bound` for the stderr reader to reach the end of the pipe.
    fn await_stderr_reader(&mut self, bound: Duration) {
        if let Some(reader) = self.stderr_reader.as_ref() {
            let deadline = Instant::now() + bound;
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Why a child that announced its address has not gone on to start (`cmd` the command line
    /// to name): [`LaunchError::Exited`] when it has exited since (reaped), else
    /// [`LaunchError::NoAddress`] after `waited` (the child is left running for the caller to stop).
    pub fn startup_failure(&mut self, cmd: String, waited: Duration) -> LaunchError {
        match self.exit_status() {
            Some(status) => LaunchError::Exited {
                cmd,
                status,
                output: self.last_words_after_exit(None),
            },
            None => LaunchError::NoAddress {
                cmd,
                waited,
                stderr: last_words(self.stderr_tail().lines().map(str::to_owned)),
            },
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the child ended, if it has (reaps it).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL now, without a grace period (node-loss experiments), and reap it.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines it wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns how it ended and the last lines of
    /// its stderr.
    pub fn stop(mut self, grace: Duration) -> (StopOutcome, String) {
        let how = self.terminate(grace);
        // The child is reaped: its stderr reaches EOF soon; give the reader a moment to finish.
        self.await_stderr_reader(Duration::from_secs(1));
        (how, self.stderr_tail())
    }

    fn terminate(&mut self, grace: Duration) -> StopOutcome {
        terminate_then_kill(&mut self.child, grace)
    }
}

/// How long a server has to print its address line.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(15);

/// How often the wait for the address line looks whether the child has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A first stdout line that is not an address is often an error message before an exit: how
/// long the child is given to exit, so that the error says how it ended.
const NOT_AN_ADDRESS_GRACE: Duration = Duration::from_millis(250);

/// At most this many of a server's last output lines are quoted in an error.
const QUOTED_LINES: usize = 12;

/// A quoted output line is cut to this many characters.
pub const LINE_CHARS: usize = 240;

/// What the wait for a server's address line found.
enum Announce {
    /// Its address.
    Addr(SocketAddr),
    /// A first stdout line that is not an address, the child still running.
    Other(String),
    /// It exited first (reaped), with its first stdout line if it printed one.
    Exited(std::process::ExitStatus, Option<String>),
    /// Still running, no line, when the wait ended.
    Silent,
}

/// Waits up to `within` for the child's first stdout line (on `rx`), looking every
/// [`EXIT_POLL`] whether it exited meanwhile: a server that dies at once is reported at once,
/// even when a process it started keeps its stdout open.
fn await_address(child: &mut Child, rx: &Receiver<String>, within: Duration) -> Announce {
    let deadline = Instant::now() + within;
    let mut stdout_open = true;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if stdout_open {
            match rx.recv_timeout(EXIT_POLL.min(left)) {
                Ok(line) => {
                    let addr = line
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    // Only a line that is not an address waits for the child's exit: a
                    // server that announced itself is started (a node's restart included).
                    let Some(addr) = addr else {
                        return match exit_within(child, NOT_AN_ADDRESS_GRACE) {
                            Some(status) => Announce::Exited(status, Some(line)),
                            None => Announce::Other(line),
                        };
                    };
                    return Announce::Addr(addr);
                }
                Err(RecvTimeoutError::Disconnected) => stdout_open = false,
                Err(RecvTimeoutError::Timeout) => {}
            }
        } else {
            std::thread::sleep(EXIT_POLL.min(left));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Announce::Exited(status, None);
        }
        if left.is_zero() {
            return Announce::Silent;
        }
    }
}

/// The child's exit status if it exits within `grace` (polled; reaped), else `None`.
fn exit_within(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(EXIT_POLL),
            _ => return None,
        }
    }
}

/// Keeps the last [`STDERR_TAIL_LINES`] lines of the child's stderr in `tail`.
fn read_stderr(
    err: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

/// Sends the child's first stdout line on `first`, then its later lines to `later` (or
/// nowhere), draining the pipe so the child never blocks on it.
fn read_stdout(
    out: std::process::ChildStdout,
    first: std::sync::mpsc::Sender<String>,
    later: Option<(SyncSender<String>, Arc<AtomicU64>)>,
) {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = first.send(line);
        }
        match later {
            Some((later, dropped)) => {
                for line in lines.map_while(Result::ok) {
                    match later.try_send(line) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        // Nobody reads any more: keep draining.
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
            }
            None => for _ in lines {},
        }
    });
}

/// A server's last words as an error quotes them: its last [`QUOTED_LINES`] non-empty lines,
/// each cut to [`LINE_CHARS`] characters, or "(no output)".
pub fn last_words(lines: impl IntoIterator<Item = String>) -> String {
    let mut kept: VecDeque<String> = VecDeque::with_capacity(QUOTED_LINES);
    for line in lines.into_iter().filter(|l| !l.trim().is_empty()) {
        if kept.len() == QUOTED_LINES {
            kept.pop_front();
        }
        kept.push_back(clip(&line));
    }
    if kept.is_empty() {
        return "(no output)".into();
    }
    kept.into_iter().collect::<Vec<_>>().join("\n")
}

/// `line` cut to [`LINE_CHARS`] characters (an ellipsis says it was).
fn clip(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Result<ServerChild, LaunchError> {
        ServerChild::start_command(Path::new("sh"), &["-c".into(), script.into()], &[])
    }

    /// Ends the process whose pid a test script printed as `pid N` (one it started itself).
    fn end_printed_pid(output: &str) {
        let pid = output
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.trim().parse::<i32>().ok())
            .expect("the script printed its background pid");
        // SAFETY: kill(2) on the pid of the sleep the test's own script started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    #[test]
    fn a_server_that_exits_at_once_is_reported_at_once_with_its_status_and_last_words() {
        // The background sleep keeps stdout and stderr open after the server is gone: the
        // wait must follow the server's exit, not the pipe's end (15 s before).
        let started = Instant::now();
        let e = sh("sleep 30 & echo \"pid $!\" >&2; echo 'cannot open /nope.conf' >&2; exit 3")
            .err()
            .expect("it exits");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let LaunchError::Exited { status, output, .. } = &e else {
            panic!("{e}");
        };
        end_printed_pid(output);
        assert_eq!(status.code(), Some(3));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the server exited before announcing its address (exit status: 3; sh -c"
            ) && text.ends_with("cannot open /nope.conf"),
            "{text}"
        );
    }

    #[test]
    fn a_server_killed_by_a_signal_says_which() {
        let e = sh("echo dying >&2; kill -SEGV $$").err().expect("it dies");
        let text = e.to_string();
        assert!(
            matches!(e, LaunchError::Exited { .. })
                && text.contains("SIGSEGV")
                && text.ends_with("dying"),
            "{text}"
        );
    }

    #[test]
    fn a_first_line_that_is_not_an_address_is_quoted() {
        // Printed, then exited: the exit and the line.
        let e = sh("echo 'Error: port in use'; exit 1")
            .err()
            .expect("it exits");
        assert!(
            matches!(&e, LaunchError::Exited { status, output, .. }
                if status.code() == Some(1) && output == "Error: port in use"),
            "{e}"
        );
        // Printed, still running: stopped, the line quoted.
        let e = sh("echo 'listening soon'; exec sleep 30")
            .err()
            .expect("no address");
        assert!(
            matches!(&e, LaunchError::NotAnAddress { line, .. } if line == "listening soon"),
            "{e}"
        );
    }

    #[test]
    fn an_announced_address_is_taken_at_once_without_the_not_an_address_grace() {
        // The line is already waiting when the wait starts, and the child keeps running: the
        // wait returns the address without waiting for an exit (it once waited the grace on
        // every start, which made a cluster node's restart take 267 ms instead of 4 ms).
        let mut child = Command::new("sh")
            .args(["-c", "echo 127.0.0.1:9; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let (tx, rx) = std::sync::mpsc::channel();
        read_stdout(child.stdout.take().expect("stdout"), tx, None);
        let line_ready = Instant::now() + Duration::from_secs(10);
        let line = loop {
            match rx.try_recv() {
                Ok(line) => break line,
                Err(_) if Instant::now() < line_ready => std::thread::sleep(EXIT_POLL),
                Err(e) => panic!("no line: {e}"),
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(line).expect("requeue the line");
        let started = Instant::now();
        let found = await_address(&mut child, &rx, ANNOUNCE_WITHIN);
        let took = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(found, Announce::Addr(a) if a.port() == 9));
        assert!(took < NOT_AN_ADDRESS_GRACE, "took {took:?}");
    }

    #[test]
    fn quoted_output_is_bounded() {
        let lines = (0..100).map(|i| format!("{i} {}", "x".repeat(1000)));
        let words = last_words(lines);
        let kept: Vec<&str> = words.lines().collect();
        assert_eq!(kept.len(), QUOTED_LINES);
        assert!(kept[0].starts_with("88 ") && kept[QUOTED_LINES - 1].starts_with("99 "));
        assert!(kept.iter().all(|l| l.chars().count() == LINE_CHARS + 1));
        assert_eq!(last_words(["".to_string(), "  ".into()]), "(no output)");
    }
}
