//! The `cluster` architecture: a node that serves its own clients with the task-per-conn engine
//! and reaches the members of its rooms on other nodes over a backplane.
//!
//! - [`mesh`]: one TCP link per pair of nodes, interest exchange, heartbeats (peer-to-peer,
//!   like Erlang `:pg`); its frames are in [`wire`], its authentication (HMAC challenge–response
//!   with the cluster's shared secret, per-frame tags) in [`auth`].
//! - [`redis`](self::redis): Redis pub/sub, one channel per room (a broker, like the Socket.IO
//!   Redis adapter).
//!
//! Both plug into task-per-conn through its [`Hook`](crate::task_per_conn::Hook): a room that
//! gains its first local member is advertised (mesh) or subscribed (redis) before its `joined`
//! is sent; a published `msg` is fanned out locally first, then handed to the backplane once;
//! a message from another node is fanned out to the local members of its room, byte-for-byte,
//! and never forwarded again (full mesh / one broker: no relays). So a `msg` reaches each member
//! on each node once, and crosses to each other node at most once.

pub mod auth;
pub mod mesh;
pub mod redis;
pub mod wire;

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{BackplaneConfig, ServerConfig};
use crate::metrics::Metrics;
use crate::task_per_conn::{self, Hook, LocalRooms};
use crate::{RunningServer, ServerError, Shutdown};

/// Binds the mesh listener of `config` (the `--cluster-listen` address; `None` for other
/// backplanes). The binary calls this before [`run`] so it can print the bound address.
pub fn bind(config: &ServerConfig) -> Result<Option<StdListener>, ServerError> {
    match config.cluster.as_ref().map(|c| &c.backplane) {
        Some(BackplaneConfig::Mesh { listen, .. }) => crate::listener::bind(*listen, 1024)
            .map(Some)
            .map_err(|e| ServerError::Backplane(format!("cannot listen on {listen}: {e}"))),
        _ => Ok(None),
    }
}

/// Checks, before the node announces itself, what can be checked up front: that Redis answers
/// at the configured URL (redis backplane). The error names the URL.
pub fn preflight(config: &ServerConfig) -> Result<(), ServerError> {
    match config.cluster.as_ref().map(|c| &c.backplane) {
        Some(BackplaneConfig::Redis { url }) => redis::ping(url, Duration::from_secs(2)),
        _ => Ok(()),
    }
}

/// Runs a cluster node until `shutdown` fires: clients on `listener`, the mesh on
/// `cluster_listener` (bound from the configuration when `None`). Blocks the calling thread.
pub fn run(
    listener: StdListener,
    cluster_listener: Option<StdListener>,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    run_node(
        listener,
        cluster_listener,
        config,
        shutdown,
        Arc::new(FaultSwitch::default()),
    )
}

fn run_node(
    listener: StdListener,
    cluster_listener: Option<StdListener>,
    config: ServerConfig,
    shutdown: Shutdown,
    fault: Arc<FaultSwitch>,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let Some(cluster) = config.cluster.clone() else {
        return Err(ServerError::Config(
            "the cluster architecture needs --node-id and --backplane".into(),
        ));
    };
    let cluster_listener = match cluster_listener {
        Some(l) => Some(l),
        None => bind(&config)?,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .thread_name("chatbench-node")
        .build()
        .map_err(ServerError::Runtime)?;
    let metrics = Arc::new(Metrics::cluster(
        cluster.backplane.kind().as_str(),
        cluster.node_id,
    ));
    let result = runtime.block_on(async {
        type Attach = Box<dyn FnOnce(LocalRooms) + Send>;
        let mut mesh_node = None;
        let (hook, attach): (Arc<dyn Hook>, Attach) = match &cluster.backplane {
            BackplaneConfig::Mesh { peers, .. } => {
                let l = cluster_listener.ok_or_else(|| {
                    ServerError::Backplane("the mesh backplane has no listener".into())
                })?;
                let m = mesh::Mesh::start(
                    l,
                    peers.clone(),
                    cluster.clone(),
                    config.max_frame_bytes,
                    metrics.clone(),
                    fault,
                )?;
                let m2 = m.clone();
                mesh_node = Some(m.clone());
                (m, Box::new(move |local| m2.attach(local)))
            }
            BackplaneConfig::Redis { url } => {
                let r = redis::RedisBackplane::start(url, cluster.clone(), metrics.clone()).await?;
                let r2 = r.clone();
                (r, Box::new(move |local| r2.attach(local)))
            }
        };
        let served =
            task_per_conn::serve_with_hook(listener, config, shutdown, metrics, move |local| {
                attach(local);
                Some(hook)
            })
            .await;
        if let Some(mesh) = mesh_node {
            mesh.leave(Duration::from_millis(500)).await;
        }
        served
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// A cluster node running on a background thread (see [`spawn_node`]).
#[derive(Debug)]
pub struct ClusterNode {
    /// The client-facing server (address, shutdown).
    pub server: RunningServer,
    /// The mesh listener's bound address (`None` for redis).
    pub cluster_addr: Option<SocketAddr>,
    fault: Arc<FaultSwitch>,
    fault_injection: bool,
}

impl ClusterNode {
    /// Fault injection (needs `fault_injection` in the configuration): while `true`, the node
    /// closes every mesh link and refuses new ones, as if the network between it and every
    /// peer were cut; `false` restores it (links come back with the usual reconnect backoff).
    pub fn partition(&self, cut: bool) -> Result<(), ServerError> {
        if !self.fault_injection {
            return Err(ServerError::Config(
                "partition() needs fault_injection in the server configuration".into(),
            ));
        }
        self.fault.set(cut);
        Ok(())
    }
}

/// Binds `addr` for clients (and the mesh listener of `config`) and runs a cluster node on a
/// new OS thread. For tests and in-process clusters.
pub fn spawn_node(config: ServerConfig, addr: SocketAddr) -> Result<ClusterNode, ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let listener = crate::listener::bind(addr, config.backlog).map_err(ServerError::Listener)?;
    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    let cluster_listener = bind(&config)?;
    let cluster_addr = match &cluster_listener {
        Some(l) => Some(l.local_addr().map_err(ServerError::Listener)?),
        None => None,
    };
    let fault = Arc::new(FaultSwitch::default());
    let fault_injection = config.fault_injection;
    let shutdown = Shutdown::new();
    let (s, f) = (shutdown.clone(), fault.clone());
    let thread = std::thread::Builder::new()
        .name("chatbench-cluster".into())
        .spawn(move || run_node(listener, cluster_listener, config, s, f))
        .map_err(ServerError::Runtime)?;
    Ok(ClusterNode {
        server: RunningServer::from_thread(addr, shutdown, thread),
        cluster_addr,
        fault,
        fault_injection,
    })
}

/// The fault-injection switch of [`ClusterNode::partition`].
#[derive(Debug, Default)]
pub struct FaultSwitch {
    cut: AtomicBool,
    changed: Notify,
}

impl FaultSwitch {
    fn set(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether the node is cut off now.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Completes once the node is cut off.
    pub async fn wait_cut(&self) {
        wait_until(&self.changed, || self.is_cut()).await;
    }
}

/// Waits on `notify` until `done()` holds, without missing a wake-up between the check and the
/// wait (`notify_waiters` keeps no permit).
pub(crate) async fn wait_until(notify: &Notify, mut done: impl FnMut() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// Exponential backoff between reconnection attempts.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// Sleeps the current delay, then doubles it (up to the maximum).
    pub(crate) fn wait(&mut self) -> impl Future<Output = ()> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::time::sleep(d)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}
