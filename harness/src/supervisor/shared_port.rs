//! Shared-port clusters: one primary process whose workers share its listening port and which
//! re-forks a dead worker itself (Node's `cluster` module; the `socketio-cluster` peer). The
//! supervisor starts the primary (and the private redis-server its workers meet on), reads what
//! happens to the workers from the primary's stdout lines (the format is in
//! `servers/peers/socketio-cluster.js`), kills a worker by its PID for a node-loss experiment,
//! and stops the primary, which stops its workers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::{
    last_lines, Backplane, ClusterSpec, Event, EventKind, Node, Primary, RedisChild, Supervisor,
    SupervisorError, WorkerReport, PRIMARY_LINES, REDIS_URL_ENV,
};
use crate::launcher::{LaunchError, ServerChild, StopOutcome};

/// How long the primary may take to list its workers after announcing its address.
const WORKERS_LISTED: Duration = Duration::from_secs(10);

/// How often the wait for the workers looks whether the primary has exited.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// One line of the primary's stdout about a worker.
#[derive(Debug, PartialEq, Eq)]
enum WorkerLine {
    /// `worker ID started pid=P restart=K restart_ms=MS`.
    Started {
        id: u32,
        pid: u32,
        restart: u32,
        restart_ms: u64,
    },
    /// `worker ID exited pid=P status=S`.
    Exited { id: u32, status: String },
    /// `worker ID gave_up restarts=K`.
    GaveUp { id: u32, restarts: u32 },
    /// `worker ID report pid=P connections=… peak=… rooms=… peak_rooms=… published=…`.
    Report { id: u32, report: WorkerReport },
}

/// The value of `key=` among `words`.
fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn number<T: std::str::FromStr>(words: &[&str], key: &str) -> Option<T> {
    field(words, key).and_then(|v| v.parse().ok())
}

impl WorkerLine {
    fn parse(line: &str) -> Option<WorkerLine> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (&"worker", Some(id), Some(&what)) = (words.first()?, words.get(1), words.get(2))
        else {
            return None;
        };
        let id: u32 = id.parse().ok()?;
        let rest = &words[3..];
        Some(match what {
            "started" => WorkerLine::Started {
                id,
                pid: number(rest, "pid")?,
                restart: number(rest, "restart")?,
                restart_ms: number(rest, "restart_ms")?,
            },
            "exited" => WorkerLine::Exited {
                id,
                // "exit 1" is two words: everything after `status=`.
                status: line.split_once("status=")?.1.trim().to_string(),
            },
            "gave_up" => WorkerLine::GaveUp {
                id,
                restarts: number(rest, "restarts")?,
            },
            "report" => WorkerLine::Report {
                id,
                report: WorkerReport {
                    connections: number(rest, "connections")?,
                    peak: number(rest, "peak")?,
                    rooms: number(rest, "rooms")?,
                    peak_rooms: number(rest, "peak_rooms")?,
                    published: number(rest, "published")?,
                },
            },
            _ => return None,
        })
    }
}

impl Supervisor {
    /// Starts a shared-port cluster: `spec.exe` with `spec.server_args` (the primary's command
    /// line, listening on 127.0.0.1 port 0) and `--workers N`, on
    /// `spec.node_cpus` (the workers inherit them); the Redis URL in `CHATBENCH_REDIS_URL`. The backplane must be redis (a private
    /// redis-server when it has no URL). Waits until the primary has listed its N workers.
    pub fn start_shared_port(spec: ClusterSpec) -> Result<Supervisor, SupervisorError> {
        if spec.nodes == 0 {
            return Err(SupervisorError::Invalid(
                "a cluster needs at least one node (--nodes 1 or more)".into(),
            ));
        }
        let (redis, redis_url) = match spec.backplane {
            Backplane::Redis => RedisChild::broker(&spec)?,
            Backplane::Mesh => {
                return Err(SupervisorError::Invalid(format!(
                    "{} spans rooms over Redis only (its workers use @socket.io/redis-adapter), not a mesh",
                    spec.arch
                )))
            }
        };
        let mut args = spec.server_args.clone();
        args.extend(["--workers".into(), spec.nodes.to_string()]);
        // The URL (with the private redis-server's password) goes in the environment, never on
        // the command line, which every local user can read in /proc.
        let started = ServerChild::start_command_with_lines(
            &spec.exe,
            &args,
            &spec.node_cpus,
            &[(REDIS_URL_ENV, redis_url.as_str())],
            PRIMARY_LINES,
        );
        let (child, lines) = match started {
            Ok(c) => c,
            Err(source) => {
                if let Some(r) = redis {
                    r.stop();
                }
                return Err(SupervisorError::Node { node: 0, source });
            }
        };
        let addr = child.addr;
        let nodes = (1..=spec.nodes).map(|id| worker_node(id, addr)).collect();
        let mut sup = Supervisor {
            spec,
            nodes,
            redis,
            redis_url: Some(redis_url),
            // Its workers share a Redis, not a mesh: no mesh secret.
            secret: None,
            events: Vec::new(),
            thread: std::thread::current().id(),
            primary: Some(Primary {
                child: Some(child),
                lines,
                unparsed: 0,
            }),
        };
        if let Err(e) = sup.await_workers() {
            sup.stop(Duration::from_secs(2));
            return Err(e);
        }
        Ok(sup)
    }

    /// Reads the primary's first lines until every worker has started.
    fn await_workers(&mut self) -> Result<(), SupervisorError> {
        let deadline = Instant::now() + WORKERS_LISTED;
        while self.nodes.iter().any(|n| n.info.pid.is_none()) {
            let Some(p) = self.primary.as_mut() else {
                break;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // Polled, so a primary that dies at once is reported at once even while a worker
            // it forked holds its stdout open.
            match p.lines.rx.recv_timeout(left.min(EXIT_POLL)) {
                Ok(line) => self.apply_line(&line),
                Err(RecvTimeoutError::Timeout)
                    if !left.is_zero() && p.child.as_mut().is_some_and(ServerChild::is_running) => {
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let cmd = format!(
                        "{} (its workers: {} of {} listed)",
                        self.spec.exe.display(),
                        self.nodes.iter().filter(|n| n.info.pid.is_some()).count(),
                        self.nodes.len()
                    );
                    let source = match p.child.as_mut() {
                        Some(c) => c.startup_failure(cmd, WORKERS_LISTED),
                        None => LaunchError::NoAddress {
                            cmd,
                            waited: WORKERS_LISTED,
                            stderr: String::new(),
                        },
                    };
                    return Err(SupervisorError::Node { node: 0, source });
                }
            }
        }
        Ok(())
    }

    /// Applies one line of the primary's stdout.
    fn apply_line(&mut self, line: &str) {
        let Some(parsed) = WorkerLine::parse(line) else {
            if let Some(p) = self.primary.as_mut() {
                p.unparsed += 1;
            }
            return;
        };
        let id = match &parsed {
            WorkerLine::Started { id, .. }
            | WorkerLine::Exited { id, .. }
            | WorkerLine::GaveUp { id, .. }
            | WorkerLine::Report { id, .. } => *id,
        };
        let Some(i) = self.nodes.iter().position(|n| n.info.id == id) else {
            if let Some(p) = self.primary.as_mut() {
                p.unparsed += 1;
            }
            return;
        };
        let kind = match parsed {
            WorkerLine::Started {
                pid,
                restart,
                restart_ms,
                ..
            } => {
                let node = &mut self.nodes[i].info;
                node.pid = Some(pid);
                if restart == 0 {
                    EventKind::Started { pid }
                } else {
                    node.restarts += 1;
                    EventKind::Restarted {
                        pid,
                        restart: node.restarts,
                        restart_ms,
                    }
                }
            }
            WorkerLine::Exited { status, .. } => {
                self.nodes[i].info.pid = None;
                let tail = self
                    .primary
                    .as_ref()
                    .and_then(|p| p.child.as_ref())
                    .map(|c| last_lines(&c.stderr_tail(), 5))
                    .unwrap_or_default();
                EventKind::Exited {
                    status,
                    stderr_tail: tail,
                }
            }
            WorkerLine::GaveUp { restarts, .. } => {
                self.nodes[i].info.given_up = true;
                EventKind::GaveUp { restarts }
            }
            WorkerLine::Report { report, .. } => {
                self.nodes[i].info.report = Some(report);
                return;
            }
        };
        self.push(id, kind);
    }

    /// Reads what the primary said since the last call; a primary found dead takes every
    /// worker with it (each gets an `Exited` event). Returns the events this call added.
    pub(super) fn poll_shared_port(&mut self) -> Vec<Event> {
        let first_new = self.events.len();
        let mut lines = Vec::new();
        if let Some(p) = self.primary.as_mut() {
            while let Ok(line) = p.lines.rx.try_recv() {
                lines.push(line);
            }
        }
        for line in &lines {
            self.apply_line(line);
        }
        let ended = self.primary.as_mut().and_then(|p| {
            let c = p.child.as_mut()?;
            let status = c.exit_status()?;
            let tail = last_lines(&c.stderr_tail(), 5);
            p.child = None;
            Some((status, tail))
        });
        if let Some((status, tail)) = ended {
            for i in 0..self.nodes.len() {
                if self.nodes[i].info.pid.take().is_some() {
                    let id = self.nodes[i].info.id;
                    self.push(
                        id,
                        EventKind::Exited {
                            status: format!("its primary exited: {status}"),
                            stderr_tail: tail.clone(),
                        },
                    );
                }
            }
        }
        self.events[first_new..].to_vec()
    }

    /// SIGKILLs worker `id` by its PID (its primary re-forks it). Returns the pid killed.
    pub(super) fn kill_worker(&mut self, id: u32) -> Option<u32> {
        // The latest word on the worker's pid first.
        self.poll_shared_port();
        let pid = self.nodes.iter().find(|n| n.info.id == id)?.info.pid?;
        // SAFETY: kill(2) on a plain pid: a worker of our own child, which its primary reported
        // running and has not reported exited (the primary reports an exit as it reaps the
        // worker, so the pid can only have been reused in the moment since this poll).
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        if rc != 0 {
            return None;
        }
        self.push(id, EventKind::Killed { pid });
        Some(pid)
    }

    /// Stops the primary (SIGTERM: it stops its workers, then exits; SIGKILL after `grace`).
    /// Returns how it ended, as node 0.
    pub(super) fn stop_shared_port(&mut self, grace: Duration) -> Vec<(u32, StopOutcome)> {
        let mut out = Vec::new();
        if let Some(child) = self.primary.as_mut().and_then(|p| p.child.take()) {
            let (how, _) = child.stop(grace);
            out.push((0, how));
        }
        for n in &mut self.nodes {
            n.info.pid = None;
        }
        out
    }

    /// The primary's pid while it runs (sampled with the workers: it accepts every connection).
    pub fn primary_pid(&self) -> Option<u32> {
        self.primary
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .map(|c| c.pid)
    }

    /// Whether the nodes share one port (one client URL): the clients of a killed node are not
    /// known by URL, only by the connections the kill took.
    pub fn shares_one_port(&self) -> bool {
        self.primary.is_some()
    }

    /// The primary's state for cluster.json: its pid, the lines it could not parse or that
    /// were dropped.
    pub(super) fn primary_json(&self) -> Option<serde_json::Value> {
        let p = self.primary.as_ref()?;
        Some(serde_json::json!({
            "pid": p.child.as_ref().map(|c| c.pid),
            "restarts_by": "primary",
            "unparsed_lines": p.unparsed,
            "dropped_lines": p.lines.dropped.load(Ordering::Relaxed),
        }))
    }
}

/// Worker `id` of a cluster at `addr` (one URL for all; no backplane address of its own).
fn worker_node(id: u32, addr: SocketAddr) -> Node {
    Node::new(id, format!("ws://{addr}/socket.io/"), addr, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::RestartPolicy;

    fn spec(nodes: u32, backplane: Backplane) -> ClusterSpec {
        ClusterSpec {
            exe: "node".into(),
            arch: "socketio-cluster".into(),
            nodes,
            backplane,
            redis_url: None,
            server_args: Vec::new(),
            restart: RestartPolicy::default(),
            redis_cpus: Vec::new(),
            node_cpus: Vec::new(),
        }
    }

    #[test]
    fn a_shared_port_cluster_needs_redis_and_a_worker() {
        let e = Supervisor::start_shared_port(spec(3, Backplane::Mesh))
            .err()
            .expect("no mesh");
        assert!(e.to_string().contains("over Redis only"), "{e}");
        let e = Supervisor::start_shared_port(spec(0, Backplane::Redis))
            .err()
            .expect("no workers");
        assert!(e.to_string().contains("--nodes 1 or more"), "{e}");
    }

    #[test]
    fn the_primary_s_lines_parse() {
        assert_eq!(
            WorkerLine::parse("worker 2 started pid=77 restart=1 restart_ms=88"),
            Some(WorkerLine::Started {
                id: 2,
                pid: 77,
                restart: 1,
                restart_ms: 88
            })
        );
        assert_eq!(
            WorkerLine::parse("worker 3 exited pid=9 status=exit 1"),
            Some(WorkerLine::Exited {
                id: 3,
                status: "exit 1".into()
            })
        );
        assert_eq!(
            WorkerLine::parse("worker 1 gave_up restarts=5"),
            Some(WorkerLine::GaveUp { id: 1, restarts: 5 })
        );
        assert_eq!(
            WorkerLine::parse(
                "worker 1 report pid=5 connections=100 peak=101 rooms=5 peak_rooms=6 published=40"
            ),
            Some(WorkerLine::Report {
                id: 1,
                report: WorkerReport {
                    connections: 100,
                    peak: 101,
                    rooms: 5,
                    peak_rooms: 6,
                    published: 40
                }
            })
        );
        for bad in [
            "",
            "worker",
            "worker x started pid=1 restart=0 restart_ms=0",
            "worker 1 started pid=1",
            "worker 1 danced",
            "127.0.0.1:5 ws://127.0.0.1:5/socket.io/ arch=socketio-cluster pid=1 workers=3",
        ] {
            assert_eq!(WorkerLine::parse(bad), None, "{bad:?}");
        }
    }
}
