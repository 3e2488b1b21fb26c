//! One thread of the epoll receive path: a mio readiness loop over its share of the
//! receive-only connections. Each wake-up reads every ready socket once (one `read` of up to
//! 64 KiB takes every frame that socket has), so a fan-out that lands on many sockets at once
//! costs one `epoll_wait` for all of them. The deliveries' counters and latencies gather in the
//! worker's [`Tally`] and go to the engine's statistics once per wake-up (one histogram lock
//! and a few atomic adds for all of them), before the worker waits again or hands back a
//! connection. Connections come in by [`Command::Add`] and go back to their tasks when they
//! end or when the run stops ([`Command::StopAll`]).
//!
//! Locality: at 20,000 deliveries/s over 2,000 connections each socket is read about once per
//! 100 ms, so its state has left the core's caches by then, and waiting for it was most of
//! the loop's own cost (docs/notes/2026-12-07-receive-user-space.md). The connections live
//! inline in one slab (no pointer to chase per read), and at the top of each wake-up the state
//! of every ready one is prefetched ([`prefetch`]): each read is a `recvmsg` of several µs,
//! so the lines are there before their connection's turn.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{Conn, Mask, Turn};
use super::stamp::Clock;
use super::{Ended, Exit};
use crate::engine::Shared;
use crate::stats::Tally;

/// The waker's token; connections use their slot index.
pub const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// Bytes read per `read` call (one buffer per thread, shared by its connections).
const SCRATCH: usize = 64 * 1024;

/// What the engine asks a worker.
pub enum Command {
    /// Take this connection (with the engine it belongs to).
    Add(Arc<Shared>, Box<Conn>),
    /// The run stops: hand every connection back to its task.
    StopAll,
}

/// A worker's state, owned by its thread.
pub struct Worker {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    /// The connections, inline, by slot (a slot is the connection's poll token).
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// The engine, while the worker holds any of its connections (dropped with the last one,
    /// so the engine's teardown is not held up by this thread).
    shared: Option<Arc<Shared>>,
    mask: Mask,
    /// The read buffer, one per thread.
    scratch: Vec<u8>,
    /// What this wake-up's reads judged, published at its end ([`Worker::publish`]).
    tally: Tally,

    /// Set by [`Command::StopAll`]: the run is stopping, and a connection that comes in
    /// later goes straight back (nothing would ask for it again).
    stopped: bool,
    /// Connections to read next turn without waiting for an edge: those that had more than
    /// [`super::conn::READS_PER_TURN`] buffers, and those just added.
    again: Vec<usize>,
}

impl Worker {
    /// Worker number `index`, with its poll and the receiving end of its commands; the
    /// returned waker wakes it.
    pub fn new(
        commands: mpsc::Receiver<Command>,
        index: u32,
        seed: u64,
    ) -> std::io::Result<(Worker, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        Ok((
            Worker {
                poll,
                commands,
                conns: Vec::new(),
                free: Vec::new(),
                shared: None,
                mask: Mask::new(seed),
                scratch: vec![0u8; SCRATCH],
                // Its own histogram shard (any shard adds up the same).
                tally: Tally::new(index),
                again: Vec::new(),
                stopped: false,
            },
            waker,
        ))
    }

    /// The loop; returns when the engine's pool is dropped.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = (!self.again.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("receive path: epoll_wait failed: {e}; its connections end");
                self.hand_back_all(Exit::Gone);
                return;
            }
            let pending = std::mem::take(&mut self.again);
            // The wall clock's offset from the engine's, once per wake-up (an NTP slew cannot
            // build up): what converts this wake-up's kernel timestamps.
            let clock = self.shared.as_deref().map(|s| Clock::read(s.epoch));
            let mut woken = false;
            // Every ready connection's state on its way into the cache at once: each fetch
            // overlaps the others and the reads before it.
            for ev in events.iter() {
                self.prefetch(ev.token().0);
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKE => woken = true,
                    Token(slot) => {
                        if ev.is_writable() {
                            if let Some(Some(c)) = self.conns.get_mut(slot) {
                                c.flush();
                            }
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(slot, clock.as_ref());
                        }
                    }
                }
            }
            for &slot in &pending {
                self.prefetch(slot);
            }
            for slot in pending {
                self.read(slot, clock.as_ref());
            }
            self.publish();
            if woken && !self.commands() {
                self.hand_back_all(Exit::Stop);
                return;
            }
        }
    }

    /// Asks the CPU to bring connection `slot`'s state into the cache (no effect on a slot
    /// that holds none, or the waker's token).
    fn prefetch(&self, slot: usize) {
        if let Some(c) = self.conns.get(slot) {
            prefetch(c);
        }
    }

    /// Reads connection `slot` (one turn) with this wake-up's `clock`; notes it for the next
    /// turn if it has more.
    fn read(&mut self, slot: usize, clock: Option<&Clock>) {
        let Worker {
            conns,
            shared,
            mask,
            scratch,
            again,
            tally,
            ..
        } = self;
        let (Some(shared), Some(Some(c))) = (shared.as_deref(), conns.get_mut(slot)) else {
            return;
        };
        let clock = clock.copied().unwrap_or_else(|| Clock::read(shared.epoch));
        match c.read_turn(shared, &clock, scratch, mask, tally) {
            Turn::Drained => {}
            Turn::More => {
                if !again.contains(&slot) {
                    again.push(slot);
                }
            }
            Turn::Gone => self.hand_back(slot, Exit::Gone),
        }
    }

    /// Adds what this wake-up judged to the engine's statistics.
    fn publish(&mut self) {
        if let Some(shared) = &self.shared {
            self.tally.publish(&shared.stats);
        }
    }

    /// Takes the pending commands; `false` when the pool is gone (the thread ends).
    fn commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(shared, conn)) => self.add(shared, *conn),
                Ok(Command::StopAll) => {
                    self.stopped = true;
                    self.hand_back_all(Exit::Stop);
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn add(&mut self, shared: Arc<Shared>, mut conn: Conn) {
        if self.stopped {
            let _ = conn.done.send(Ended {
                exit: Exit::Stop,
                stream: conn.stream.into(),
            });
            return;
        }
        let slot = self.free.pop().unwrap_or(self.conns.len());
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("receive path: cannot watch a connection: {e}");
            shared.stats.closed_by_server.add("reset");
            let _ = conn.done.send(Ended {
                exit: Exit::Gone,
                stream: conn.stream.into(),
            });
            if slot < self.conns.len() {
                self.free.push(slot);
            }
            return;
        }
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        self.shared.get_or_insert(shared);
        // What arrived between the hand-over and the registration may have raised no edge:
        // read it next turn.
        self.again.push(slot);
    }

    fn hand_back(&mut self, slot: usize, exit: Exit) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(slot);
        // What was judged goes out before the task hears of it (a run that stops reads its
        // totals once every task has ended) and before the engine is let go.
        self.publish();
        let _ = conn.done.send(Ended {
            exit,
            stream: conn.stream.into(),
        });
        if self.free.len() == self.conns.len() {
            self.shared = None;
        }
    }

    fn hand_back_all(&mut self, exit: Exit) {
        for slot in 0..self.conns.len() {
            self.hand_back(slot, exit);
        }
    }
}

/// Asks the CPU to bring every cache line of `*value` into its caches, without waiting for
/// them (a hint: on other architectures, nothing).
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let start = (value as *const T).cast::<i8>();
        // From the start of the line `*value` begins in to its last byte.
        let lead = start as usize % LINE;
        let first = start.wrapping_sub(lead);
        let mut at = 0;
        while at < lead + std::mem::size_of::<T>() {
            // SAFETY: a prefetch is a hint: it never faults and changes no memory. Every
            // address given lies in a cache line that `*value` occupies.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(at)) };
            at += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
