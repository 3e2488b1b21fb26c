//! The architectures this crate implements, registered in one place: each one's name
//! ([`Arch::as_str`]), the `run(listener, config, shutdown)` it is started with
//! ([`crate::run_arch`]) and the gate's in-process workloads over its own paths
//! ([`crate::bench`]), and what it stands for on a comparison's page ([`Arch::meaning`],
//! [`Arch::doc_anchor`]). Adding an architecture is its module (and `pub mod` line in `lib.rs`)
//! plus a variant here and its arms below.

use std::fmt;
use std::net::TcpListener;
use std::str::FromStr;

use crate::bench::{BenchError, FanOut, OpenClose};
use crate::{ServerConfig, ServerError, Shutdown};

/// The server architectures this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// A tokio task per connection on a multi-thread runtime (the BEAM/goroutine model).
    TaskPerConn,
    /// Blocking sockets on a bounded pool of OS threads, one connection per worker for its
    /// lifetime (the Tomcat blocking connector / Puma model).
    ThreadPool,
    /// One OS thread, one readiness loop over non-blocking sockets (the Node.js / Redis model).
    Epoll,
    /// A node of a cluster: task-per-conn for its own clients plus a backplane (mesh or Redis)
    /// to the other nodes. Needs [`ServerConfig::cluster`].
    Cluster,
}

impl Arch {
    /// Every single-process architecture, in documentation order: what `compare` runs and
    /// `run --serve` starts. [`Arch::Cluster`] is not among them: it needs cluster settings.
    pub const ALL: [Arch; 3] = [Arch::TaskPerConn, Arch::ThreadPool, Arch::Epoll];

    /// The CLI and results name.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::TaskPerConn => "task-per-conn",
            Arch::ThreadPool => "thread-pool",
            Arch::Epoll => "epoll",
            Arch::Cluster => "cluster",
        }
    }

    /// What it stands for, in a sentence for readers of a comparison (a `compare` column's
    /// meaning on its page; a cluster's column says it over its backplane,
    /// [`crate::Backplane::column_meaning`]).
    pub fn meaning(self) -> &'static str {
        match self {
            Arch::TaskPerConn => "one lightweight task per connection (tokio) — the BEAM (Erlang/Elixir) process and Go goroutine model",
            Arch::ThreadPool => "blocking sockets served by a bounded pool of OS threads — the Tomcat / Puma model",
            Arch::Epoll => "one thread, one readiness loop, non-blocking sockets — the Node.js / Redis event-loop model",
            Arch::Cluster => "several task-per-conn server processes, rooms spanning them over a backplane (mesh or Redis)",
        }
    }

    /// Its section of docs/architectures.md (the heading's anchor).
    pub fn doc_anchor(self) -> &'static str {
        match self {
            Arch::TaskPerConn => "task-per-conn",
            Arch::ThreadPool => "thread-pool",
            Arch::Epoll => "epoll",
            Arch::Cluster => "cluster",
        }
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Arch::ALL
            .into_iter()
            .chain([Arch::Cluster])
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Arch::ALL
                    .iter()
                    .chain(&[Arch::Cluster])
                    .map(|a| a.as_str())
                    .collect();
                format!(
                    "unknown architecture {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Arch {
    /// Runs the server of this architecture on `listener` until `shutdown` fires (see
    /// [`crate::run_arch`]).
    pub(crate) fn run(
        self,
        listener: TcpListener,
        config: ServerConfig,
        shutdown: Shutdown,
    ) -> Result<(), ServerError> {
        match self {
            Arch::TaskPerConn => crate::task_per_conn::run(listener, config, shutdown),
            Arch::ThreadPool => crate::thread_pool::run(listener, config, shutdown),
            Arch::Epoll => crate::epoll::run(listener, config, shutdown),
            Arch::Cluster => crate::cluster::run(listener, None, config, shutdown),
        }
    }

    /// The fan-out workload over this architecture's own handler and fan-out (see
    /// [`crate::bench::fan_out`], which checks the arguments first).
    pub(crate) fn fan_out(
        self,
        config: ServerConfig,
        members: usize,
    ) -> Result<Box<dyn FanOut>, BenchError> {
        Ok(match self {
            Arch::TaskPerConn => Box::new(crate::task_per_conn::bench::Bench::new(config, members)?),
            Arch::ThreadPool => Box::new(crate::thread_pool::bench::Bench::new(config, members)?),
            Arch::Epoll => Box::new(crate::epoll::bench::Bench::new(config, members)?),
            Arch::Cluster => {
                return Err(BenchError::Unexpected(
                    "the cluster architecture has no in-process fan-out workload: its local fan-out is task-per-conn's (measure that), its backplane needs other nodes".into(),
                ))
            }
        })
    }

    /// The connection workload over this architecture's accept/upgrade/close path (see
    /// [`crate::bench::open_close`]).
    pub(crate) fn open_close(self, config: ServerConfig) -> Result<Box<dyn OpenClose>, BenchError> {
        Ok(match self {
            Arch::TaskPerConn => Box::new(crate::task_per_conn::bench::Cycle::new(config)?),
            Arch::ThreadPool => Box::new(crate::thread_pool::bench::Cycle::new(config)?),
            Arch::Epoll => Box::new(crate::epoll::bench::Cycle::new(config)?),
            Arch::Cluster => {
                return Err(BenchError::Unexpected(
                    "the cluster architecture has no in-process connection workload: its connection path is task-per-conn's (measure that)".into(),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.as_str().parse::<Arch>(), Ok(a));
        }
        assert_eq!("cluster".parse::<Arch>(), Ok(Arch::Cluster));
        assert!("nope".parse::<Arch>().is_err_and(|e| e.contains("cluster")));
    }
}
