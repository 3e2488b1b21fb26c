//! The bounded worker pool: lazily spawned OS threads, a bounded hand-off queue from the
//! acceptor, and the supervision that replaces a worker whose handler panicked.
//!
//! Workers are created on demand up to `pool_size` and then kept (an idle pool costs no
//! stacks; a warm pool costs no `clone(2)` per connection). A worker takes one connection from
//! [`Pool::next_job`], serves it to the end, and comes back. When every worker is busy, the
//! acceptor parks the connection in the same queue for at most `pool_wait` (bounded by
//! [`MAX_WAITING`]); what is still there then is answered 503. A worker's [`WorkerGuard`]
//! runs on every exit, normal or unwinding: it unregisters the worker and, after a panic,
//! starts a replacement, so a crashing handler never shrinks the pool.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sys::Waker;
use super::{conn, Shared};
use crate::metrics::Metrics;

/// Most connections parked waiting for a worker. Beyond it a connection is refused (503) at
/// once: the wait queue is something a peer can grow, so it is bounded and counted.
pub(super) const MAX_WAITING: usize = 1024;

/// An accepted connection on its way to a worker.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) stream: TcpStream,
    pub(super) accepted: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Worker threads alive (or being started).
    live: usize,
    /// Workers blocked in `next_job`.
    idle: usize,
    /// Connections handed off and not yet taken, oldest first.
    jobs: VecDeque<Job>,
    /// Shutdown began: no new work, idle workers exit, dead ones are not replaced.
    closing: bool,
    next_worker: u64,
}

/// The pool's shared state.
#[derive(Debug, Default)]
pub(super) struct Pool {
    state: Mutex<State>,
    /// Idle workers wait here for a job.
    work: Condvar,
    /// Shutdown waits here for the last worker to exit.
    exited: Condvar,
    /// Every live worker's doorbell, so shutdown can wake busy workers.
    wakers: Mutex<HashMap<u64, Arc<Waker>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics under these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// Hands an accepted connection to an idle worker, a new worker, or the wait queue; or
    /// refuses it with 503 when the wait queue is full.
    pub(super) fn dispatch(shared: &Arc<Shared>, job: Job) {
        let pool = &shared.pool;
        let mut st = lock(&pool.state);
        if st.closing {
            return; // dropped: the server is going away
        }
        if st.jobs.len() < st.idle {
            st.jobs.push_back(job);
            pool.work.notify_one();
            return;
        }
        if st.live < shared.config.pool_size {
            st.jobs.push_back(job);
            st.live += 1;
            drop(st);
            Pool::spawn(shared);
            return;
        }
        if st.jobs.len() >= MAX_WAITING {
            drop(st);
            refuse(job.stream, &shared.metrics);
            return;
        }
        // Every worker is busy: wait for one (at most `pool_wait`, see `expire`).
        st.jobs.push_back(job);
    }

    /// Starts a worker (its `live` slot already counted). On failure the slot is given back;
    /// the job it was meant for stays queued and is served by another worker or expires.
    fn spawn(shared: &Arc<Shared>) {
        let s = shared.clone();
        let started = std::thread::Builder::new()
            .name("chatbench-pool".into())
            .stack_size(shared.config.thread_stack_bytes)
            .spawn(move || worker(s));
        if let Err(e) = started {
            tracing::warn!("could not start a pool worker: {e}");
            lock(&shared.pool.state).live -= 1;
            shared.pool.exited.notify_all();
        }
    }

    /// Blocks until there is a connection to serve; `None` when the pool is shutting down.
    fn next_job(&self) -> Option<Job> {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.jobs.pop_front() {
                return Some(job);
            }
            if st.closing {
                return None;
            }
            st.idle += 1;
            st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }

    /// When the oldest waiting connection's `pool_wait` ends, if any wait.
    pub(super) fn next_expiry(&self, pool_wait: Duration) -> Option<Instant> {
        lock(&self.state)
            .jobs
            .front()
            .map(|j| j.accepted + pool_wait)
    }

    /// Answers 503 to every connection that waited `pool_wait` without a worker.
    pub(super) fn expire(&self, pool_wait: Duration, metrics: &Metrics) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut st = lock(&self.state);
            while st
                .jobs
                .front()
                .is_some_and(|j| j.accepted + pool_wait <= now)
            {
                expired.extend(st.jobs.pop_front());
            }
        }
        for job in expired {
            refuse(job.stream, metrics);
        }
    }

    /// Begins shutdown: drops waiting connections, lets idle workers exit, and wakes busy
    /// ones so they send their client the 1001 close.
    pub(super) fn close(&self) {
        let waiting = {
            let mut st = lock(&self.state);
            st.closing = true;
            std::mem::take(&mut st.jobs)
        };
        drop(waiting);
        self.work.notify_all();
        for w in lock(&self.wakers).values() {
            w.wake();
        }
    }

    /// Waits until every worker has exited or `grace` has passed; returns how many remain.
    pub(super) fn wait_exited(&self, grace: Duration) -> usize {
        let st = lock(&self.state);
        let (st, _) = self
            .exited
            .wait_timeout_while(st, grace, |st| st.live > 0)
            .unwrap_or_else(|e| e.into_inner());
        st.live
    }
}

/// Runs on a worker thread until shutdown. A panic in a handler is not caught here: it unwinds
/// this thread, the connection's own guard cleans up its rooms, and [`WorkerGuard`] replaces
/// the thread.
fn worker(shared: Arc<Shared>) {
    let waker = match Waker::new() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            // Out of descriptors: give the slot back; queued jobs wait for another worker.
            tracing::warn!("pool worker has no eventfd: {e}");
            let mut st = lock(&shared.pool.state);
            st.live -= 1;
            drop(st);
            shared.pool.exited.notify_all();
            return;
        }
    };
    let id = {
        let mut st = lock(&shared.pool.state);
        st.next_worker += 1;
        st.next_worker
    };
    lock(&shared.pool.wakers).insert(id, waker.clone());
    let _guard = WorkerGuard {
        shared: shared.clone(),
        id,
    };
    // Registered before taking a job: a shutdown after that rings our waker, and one before
    // it is seen by `next_job` (or by the session's first look at the shutdown flag).
    while let Some(job) = shared.pool.next_job() {
        conn::serve(job, &shared, &waker);
    }
}

/// Runs when a worker thread ends, by return or by panic: unregisters it and, after a panic
/// (unless shutting down), starts a replacement so the pool keeps its size.
struct WorkerGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let pool = &self.shared.pool;
        lock(&pool.wakers).remove(&self.id);
        let replace = {
            let mut st = lock(&pool.state);
            st.live -= 1;
            let replace = std::thread::panicking() && !st.closing;
            if replace {
                st.live += 1;
            }
            replace
        };
        pool.exited.notify_all();
        if replace {
            tracing::warn!("pool worker {} panicked; starting a replacement", self.id);
            Pool::spawn(&self.shared);
        }
    }
}

/// `503 Service Unavailable` for a connection no worker could take in time. Written without
/// blocking (it fits any socket buffer); the request is drained first so that closing does
/// not turn into a reset that could discard the response at the client.
fn refuse(stream: TcpStream, metrics: &Metrics) {
    const BODY: &str = "every worker is busy; retry later\n";
    metrics.pool_rejected();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut stream = stream;
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
