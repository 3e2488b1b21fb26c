//! chatbench reference chat servers: the same chat behaviour (wire protocol v1) in several
//! architectures, sharing everything that is not the architecture itself.
//!
//! - [`arch`]: the architectures ([`Arch`]): each one's name, its `run` and its gate workloads,
//!   registered once.
//! - [`config`]: limits and tunables ([`ServerConfig`]).
//! - [`listener`]: binding with a large backlog.
//! - [`shutdown`]: the shutdown signal passed into every server.
//! - [`http`]: I/O-free HTTP routing (`/ws`, `/metrics`, `/healthz`) and upgrade validation.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`chat`]: the chat rules, once and I/O-free: what a frame means for a connection, and the
//!   slow-consumer rule of a fan-out. Every architecture carries out its actions.
//! - [`rooms`]: the sharded room registry.
//! - [`task_per_conn`]: a tokio task per connection.
//! - [`thread_pool`]: blocking sockets on a bounded pool of OS threads.
//! - [`epoll`]: one thread, one readiness loop.
//! - [`cluster`]: a node of a cluster: task-per-conn plus a mesh or Redis backplane.
//! - [`ws_error`]: how a tungstenite read error ends a connection (task-per-conn, thread-pool).
//! - [`work`]: injected per-delivery work (`inject_work`), for measuring the regression gate.
//! - `bench` (hidden): deterministic in-process workloads over each architecture's own fan-out
//!   path, for `chatbench gate` and the criterion benches.
//!
//! Every architecture exposes `run(listener, config, shutdown)`; [`run_arch`] dispatches on
//! [`Arch`] so the binary has one call, and [`spawn`] runs a server on a background thread for
//! tests.

pub mod arch;
#[doc(hidden)]
pub mod bench;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod epoll;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod rooms;
pub mod shutdown;
pub mod task_per_conn;
pub mod thread_pool;
pub mod work;
pub mod ws_error;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

pub use config::{
    Arch, Backplane, BackplaneConfig, ClusterConfig, ClusterSecret, ServerConfig,
    SlowConsumerPolicy,
};
pub use shutdown::Shutdown;

/// Why a server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent; the message names the setting.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The async runtime could not start (out of threads or memory).
    #[error("could not start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The listener could not be prepared (made non-blocking or registered).
    #[error("could not use the listener: {0}")]
    Listener(#[source] io::Error),
    /// A cluster node could not start its backplane (bind, or reach Redis); the message names
    /// the address.
    #[error("cluster backplane: {0}")]
    Backplane(String),
    /// The server thread panicked (a bug: connection panics are contained per connection).
    #[error("the server thread panicked")]
    Panicked,
}

/// Runs the server of architecture `arch` on `listener` until `shutdown` fires and its
/// connections have closed (or `config.shutdown_grace` has passed). Blocks the calling thread.
pub fn run_arch(
    arch: Arch,
    listener: TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    arch.run(listener, config, shutdown)
}

/// A server running on a background OS thread (see [`spawn`]).
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Triggers the server's shutdown.
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Wraps a server already running on `thread` (e.g. a cluster node).
    pub fn from_thread(
        addr: SocketAddr,
        shutdown: Shutdown,
        thread: JoinHandle<Result<(), ServerError>>,
    ) -> RunningServer {
        RunningServer {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    /// `ws://ADDR/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits for the server to return (after someone triggered [`RunningServer::shutdown`]).
    pub fn join(mut self) -> Result<(), ServerError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(ServerError::Panicked)),
            None => Ok(()),
        }
    }

    /// Triggers shutdown and waits for the server to return.
    pub fn stop(self) -> Result<(), ServerError> {
        self.shutdown.trigger();
        self.join()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` (with `config.backlog`) and runs the `arch` server on a new OS thread.
pub fn spawn(arch: Arch, config: ServerConfig, addr: SocketAddr) -> io::Result<RunningServer> {
    let listener = listener::bind(addr, config.backlog)?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name(format!("chatbench-{}", arch.as_str()))
        .spawn(move || run_arch(arch, listener, config, s))?;
    Ok(RunningServer {
        addr,
        shutdown,
        thread: Some(thread),
    })
}
