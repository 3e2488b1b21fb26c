//! Starting a reference server as a child process (`chatbench run --serve ARCH`): the server
//! must be its own process so that its memory and CPU can be sampled apart from the generator.
//!
//! The child is `chatbench serve --listen 127.0.0.1:0 …` of the same executable, or any other
//! server command (a peer under `servers/peers/`, `--serve-cmd`); its first stdout line starts
//! with the bound address. It runs in its own process group so that a
//! Ctrl-C at the terminal reaches the generator only, which then finishes the run and stops
//! the server itself (SIGTERM, then SIGKILL after a grace period).
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
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
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
    /// It exited or printed something else before announcing its address.
    #[error("the server did not announce its address within {waited:?} ({cmd}); its last output:\n{stderr}")]
    NoAddress {
        /// The command line.
        cmd: String,
        /// How long we waited.
        waited: Duration,
        /// The tail of its stderr.
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
        let cmd = format!("{} {}", program.display(), args.join(" "));
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
        let mut stderr_reader = None;
        if let Some(err) = child.stderr.take() {
            let tail = tail.clone();
            stderr_reader = Some(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            }));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Keep draining so the child never blocks on a full pipe.
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
        let waited = Duration::from_secs(15);
        let addr = rx.recv_timeout(waited).ok().and_then(|line| {
            line.split_whitespace()
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        match addr {
            Some(addr) => Ok(ServerChild {
                child,
                addr,
                pid,
                args,
                stderr_tail: tail,
                stderr_reader,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                let stderr = tail
                    .lock()
                    .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                Err(LaunchError::NoAddress {
                    cmd,
                    waited,
                    stderr,
                })
            }
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
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        (how, self.stderr_tail())
    }

    fn terminate(&mut self, grace: Duration) -> StopOutcome {
        terminate_then_kill(&mut self.child, grace)
    }
}
