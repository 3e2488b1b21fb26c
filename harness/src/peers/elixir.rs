//! Building and starting the Elixir peer (`servers/peers/elixir/`, a mix project with no Hex
//! dependencies): the compile step that makes a fresh clone work, and the `elixir` command line
//! with the BEAM's schedulers sized to the server's CPUs.
//!
//! The build is cached per source content: `mix compile` runs with `MIX_BUILD_PATH` set to
//! `_build/chatbench-<hash of mix.exs and lib/>`, into a temporary folder first, renamed into
//! place when complete, so concurrent starts (parallel tests, two runs) never see half a build
//! and never rebuild what is there. Within one process, builds are serialised by a lock.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use chatbench_loadgen::faults::{Event, EventKind, NodeControl};

use super::{find_on_path, PeerError};
use crate::launcher::ServerChild;

const PEER: &str = "elixir";
/// The application's name in mix.exs (its ebin folder under the build path).
const APP: &str = "chatbench_peer";

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The program and arguments that start the Elixir peer from `dir` (`servers/peers`), with
/// `schedulers` BEAM schedulers, listening on 127.0.0.1 port 0, plus `extra` server flags.
pub(super) fn command(
    dir: &Path,
    schedulers: usize,
    extra: &[String],
) -> Result<(PathBuf, Vec<String>), PeerError> {
    node_command(dir, schedulers, &[], &[], extra)
}

/// [`command`] with `erl` flags (`erl_extra`) and `elixir` options (`elixir_opts`, e.g.
/// `--name`) for a node of a cluster.
fn node_command(
    dir: &Path,
    schedulers: usize,
    erl_extra: &[String],
    elixir_opts: &[String],
    extra: &[String],
) -> Result<(PathBuf, Vec<String>), PeerError> {
    let project = dir.join("elixir");
    let mix_exs = project.join("mix.exs");
    if !mix_exs.is_file() {
        return Err(PeerError::Missing { path: mix_exs });
    }
    // Absolute: mix runs in the project folder, and the paths it is given must not move.
    let project = std::path::absolute(&project).map_err(|_| PeerError::Missing {
        path: project.clone(),
    })?;
    let elixir = find_on_path("elixir").ok_or(PeerError::NoElixir {
        tool: "elixir",
        peer: PEER,
    })?;
    let ebin = build(&project)?;
    let schedulers = schedulers.max(1);
    let mut args = vec![
        "--erl".to_string(),
        // Schedulers sized to the CPUs the server is pinned to; no busy-waiting, so the CPU
        // the sampler measures is work (spinning schedulers would also steal the generator's
        // cores on a small machine).
        format!(
            "+S {schedulers}:{schedulers} +sbwt none +sbwtdcpu none +sbwtdio none {}",
            erl_extra.join(" ")
        ),
        "-pa".into(),
        ebin.display().to_string(),
    ];
    args.extend(elixir_opts.iter().cloned());
    args.extend([
        "-e".into(),
        "ChatbenchPeer.CLI.main(System.argv())".into(),
        "--no-halt".into(),
        "--".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]);
    args.extend(extra.iter().cloned());
    Ok((elixir, args))
}

/// A running `elixir-cluster`: N nodes of the Elixir peer joined with distributed Erlang over
/// loopback, and the epmd the run owns. Dropping it stops every node (SIGTERM, then SIGKILL)
/// and then the epmd, each by PID.
pub struct ElixirCluster {
    /// The nodes, in start order (`None` once killed with [`ElixirCluster::kill_node`]).
    pub nodes: Vec<Option<ServerChild>>,
    epmd: Option<std::process::Child>,
    /// What happened to the nodes (started, killed, exited), for a run's node-loss fault.
    events: Vec<Event>,
}

impl ElixirCluster {
    /// Starts an epmd on a free loopback port, then `n` nodes (named `cb<run>n<i>@127.0.0.1`,
    /// sharing a cookie made for this run, distribution bound to 127.0.0.1), each told to join
    /// the nodes started before it; `extra` server flags go to every node, and every node runs
    /// on `cpus` (empty: unpinned) with `schedulers` schedulers. Returns once every node's
    /// `:pg` scope has synced with every other's (`beam_pg_remote_scopes` = n − 1), or an
    /// error after 30 s.
    pub fn start(
        dir: &Path,
        n: usize,
        schedulers: usize,
        cpus: &[usize],
        extra: &[String],
    ) -> Result<ElixirCluster, PeerError> {
        let epmd_bin = find_on_path("epmd").ok_or(PeerError::NoElixir {
            tool: "epmd",
            peer: "elixir-cluster",
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| cluster_error(format!("no free loopback port for epmd: {e}")))?;
        let mut epmd = Command::new(epmd_bin);
        epmd.args(["-address", "127.0.0.1", "-port", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        chatbench_loadgen::process::die_with_parent(&mut epmd);
        let epmd = epmd
            .spawn()
            .map_err(|e| cluster_error(format!("cannot start epmd: {e}")))?;
        let mut cluster = ElixirCluster {
            nodes: Vec::new(),
            epmd: Some(epmd),
            events: Vec::new(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(cluster_error(format!(
                    "epmd did not listen on 127.0.0.1:{port} within 5 s"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let run: u32 = rand::random();
        let cookie: String = (0..32)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        let erl = vec![
            // Our epmd only: a distributed node otherwise starts `epmd -daemon` on the default
            // port and every interface, which would outlive the run.
            "-start_epmd false".to_string(),
            format!("-epmd_port {port}"),
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        ];
        let mut names: Vec<String> = Vec::new();
        for i in 0..n {
            let name = format!("cb{run:08x}n{i}@127.0.0.1");
            let opts = vec![
                "--name".to_string(),
                name.clone(),
                "--cookie".into(),
                cookie.clone(),
            ];
            let mut flags = extra.to_vec();
            if !names.is_empty() {
                flags.extend(["--join".into(), names.join(",")]);
            }
            let (program, args) = node_command(dir, schedulers, &erl, &opts, &flags)?;
            let child = ServerChild::start_command(&program, &args, cpus)
                .map_err(|e| cluster_error(format!("node {i} ({name}): {e}")))?;
            cluster
                .events
                .push(event(i as u32 + 1, EventKind::Started { pid: child.pid }));
            cluster.nodes.push(Some(child));
            names.push(name);
        }
        cluster.wait_linked(n.saturating_sub(1), std::time::Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Polls every node's `/metrics` until `beam_pg_remote_scopes` is `peers`.
    fn wait_linked(&self, peers: usize, within: std::time::Duration) -> Result<(), PeerError> {
        let deadline = std::time::Instant::now() + within;
        for addr in self.addrs() {
            loop {
                let got = remote_scopes(addr);
                if got == Some(peers as i64) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(cluster_error(format!(
                        "node {addr} did not link to the {peers} others within {within:?} \
                         (beam_pg_remote_scopes = {got:?})"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The nodes' WebSocket addresses (of those still running).
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes.iter().flatten().map(|c| c.addr).collect()
    }

    /// SIGKILLs node `i` (node loss) and reaps it.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes.get_mut(i).and_then(Option::take) {
            c.kill_now();
        }
    }

    /// Sends SIGTERM to every node (a graceful stop; [`ElixirCluster::wait`] reaps them).
    pub fn terminate(&self) {
        for c in self.nodes.iter().flatten() {
            chatbench_loadgen::process::terminate(c.pid);
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL after `grace`) and the epmd; returns how each
    /// node ended and its last stderr lines.
    pub fn stop(
        mut self,
        grace: std::time::Duration,
    ) -> Vec<(chatbench_loadgen::process::StopOutcome, String)> {
        self.stop_all(grace)
    }

    /// [`ElixirCluster::stop`] through a shared handle (the run's node control holds one).
    pub fn stop_all(
        &mut self,
        grace: std::time::Duration,
    ) -> Vec<(chatbench_loadgen::process::StopOutcome, String)> {
        let out = self
            .nodes
            .iter_mut()
            .filter_map(Option::take)
            .map(|c| c.stop(grace))
            .collect();
        self.stop_epmd();
        out
    }

    fn stop_epmd(&mut self) {
        if let Some(mut e) = self.epmd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
    }
}

fn event(node: u32, kind: EventKind) -> Event {
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Event {
        at_unix_ms,
        node,
        kind,
    }
}

/// The run's node-loss fault on `elixir-cluster`: a node is SIGKILLed and not restarted (its
/// clients reconnect to the other nodes, which still hold their rooms in `:pg`); a node that
/// dies by itself is reported once.
impl NodeControl for ElixirCluster {
    fn poll(&mut self) -> Vec<Event> {
        let mut new = Vec::new();
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            let Some(status) = slot.as_mut().and_then(ServerChild::exit_status) else {
                continue;
            };
            let tail = slot.take().map(|c| c.stderr_tail()).unwrap_or_default();
            new.push(event(
                i as u32 + 1,
                EventKind::Exited {
                    status: status.to_string(),
                    stderr_tail: tail,
                },
            ));
        }
        self.events.extend(new.iter().cloned());
        new
    }

    fn events(&self) -> &[Event] {
        &self.events
    }

    fn kill(&mut self, id: u32) -> Option<u32> {
        let i = (id as usize).checked_sub(1)?;
        let pid = self.nodes.get(i)?.as_ref()?.pid;
        self.kill_node(i);
        self.events.push(event(id, EventKind::Killed { pid }));
        Some(pid)
    }

    fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    fn shares_one_port(&self) -> bool {
        false
    }

    fn pids(&self) -> Vec<u32> {
        // The nodes, as the run's target record lists them (epmd, idle, is left out).
        self.nodes.iter().flatten().map(|c| c.pid).collect()
    }
}

impl Drop for ElixirCluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().filter_map(Option::take) {
            let _ = c.stop(std::time::Duration::from_secs(2));
        }
        self.stop_epmd();
    }
}

/// `beam_pg_remote_scopes` from a node's `/metrics` (one plain HTTP/1.1 request).
fn remote_scopes(addr: std::net::SocketAddr) -> Option<i64> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.take(1 << 20).read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("beam_pg_remote_scopes "))
        .and_then(|v| v.trim().parse().ok())
}

fn cluster_error(what: String) -> PeerError {
    PeerError::Cluster(what)
}

/// Compiles the project unless this exact source is built already; returns the ebin folder.
fn build(project: &Path) -> Result<PathBuf, PeerError> {
    let root = project
        .join("_build")
        .join(format!("chatbench-{:016x}", source_hash(project)?));
    let ebin = root.join("lib").join(APP).join("ebin");
    let app_file = ebin.join(format!("{APP}.app"));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if app_file.is_file() {
        return Ok(ebin);
    }
    let mix = find_on_path("mix").ok_or(PeerError::NoElixir {
        tool: "mix",
        peer: PEER,
    })?;
    let tmp = project.join("_build").join(format!(
        "tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let out = Command::new(mix)
        .arg("compile")
        .current_dir(project)
        .env("MIX_BUILD_PATH", &tmp)
        .env("MIX_ENV", "prod")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: "could not run mix".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    // Another process may have finished the same build first: theirs is as good as ours.
    if std::fs::rename(&tmp, &root).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if app_file.is_file() {
        Ok(ebin)
    } else {
        Err(PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: "no application file after the build".into(),
            output: format!("expected {}", app_file.display()),
        })
    }
}

/// A hash of `mix.exs` and every file under `lib/` (names and contents, in name order).
fn source_hash(project: &Path) -> Result<u64, PeerError> {
    let mut files = vec![project.join("mix.exs")];
    let mut dirs = vec![project.join("lib")];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|_| PeerError::Missing { path: d.clone() })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|_| PeerError::Missing { path: f.clone() })?;
        f.strip_prefix(project).unwrap_or(f).hash(&mut h);
        bytes.hash(&mut h);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("lib/a")).expect("mkdir");
        std::fs::write(dir.path().join("mix.exs"), "x").expect("write");
        std::fs::write(dir.path().join("lib/a/b.ex"), "1").expect("write");
        let one = source_hash(dir.path()).expect("hash");
        assert_eq!(one, source_hash(dir.path()).expect("hash"));
        std::fs::write(dir.path().join("lib/a/b.ex"), "2").expect("write");
        assert_ne!(one, source_hash(dir.path()).expect("hash"));
    }

    #[test]
    fn a_missing_project_says_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = command(dir.path(), 1, &[]).expect_err("no project");
        assert!(e.to_string().contains("mix.exs"), "{e}");
    }
}
