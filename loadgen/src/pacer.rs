//! The pacer: one OS thread that wakes each sender at its intended send times.
//!
//! tokio's timer wheel has a 1 ms resolution, which would add up to a millisecond of the
//! generator's own delay to every measured latency. The pacer instead sleeps with the kernel's
//! high-resolution timer (timer slack set to 1 ns) until the earliest intended time over all
//! senders, and wakes the senders that are due. A sender keeps its own copy of the same
//! schedule and sends every message that is due when it wakes, so a late wake-up delays
//! messages (and shows in their latency) but never loses them. The pacer's own lateness is the
//! generator self-check's schedule-lag figure.
//!
//! A sender whose connection writes on this thread ([`crate::tx`]) is not woken: the pacer
//! writes its due frames itself ([`crate::tx::Sender::fire`]) and takes its next time from the
//! sender's own schedule (or a retry, when its out-buffer was full).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use crate::schedule::Schedule;
use crate::tx::Fired;
use chatbench_model::hist::{new_hist, record};

/// One sender as the pacer sees it.
pub struct PacedSender {
    /// Its schedule (an identical copy of the one the sender task follows).
    pub schedule: Schedule,
    /// How to wake it.
    pub wake: Arc<Notify>,
    /// How to write its frames here, when its connection may be handed to the send path.
    pub(crate) direct: Option<crate::tx::Sender>,
}

/// What the pacer reports when it ends.
#[derive(Debug)]
pub struct PacerReport {
    /// Wake-up lateness, µs.
    pub lateness: Histogram<u64>,
    /// Whether it ran at real-time priority.
    pub realtime: bool,
}

/// Runs the pacer on the current thread until every schedule ends or `stop` is set.
pub fn run(start: Instant, senders: Vec<PacedSender>, stop: Arc<AtomicBool>) -> PacerReport {
    let realtime = tune_timer_thread();
    let mut lateness = new_hist();
    let mut schedules: Vec<Schedule> = Vec::with_capacity(senders.len());
    let mut wakes = Vec::with_capacity(senders.len());
    let mut directs = Vec::with_capacity(senders.len());
    let mut heap = BinaryHeap::with_capacity(senders.len());
    for (i, s) in senders.into_iter().enumerate() {
        let mut sched = s.schedule;
        if let Some(first) = sched.next() {
            heap.push(Reverse((first, i)));
        }
        schedules.push(sched);
        wakes.push(s.wake);
        directs.push(s.direct);
    }
    while let Some(&Reverse((offset, _))) = heap.peek() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = start + offset;
        let now = Instant::now();
        if due > now {
            // Sleep in slices of at most 100 ms so that a stop request is seen promptly.
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        record(&mut lateness, (now - due).as_micros() as u64);
        // Wake everyone due now (coalesced), and push their next times.
        // A pacer that has fallen behind finds senders due here without end: it still sees
        // a stop request at once.
        while let Some(&Reverse((off, i))) = heap.peek() {
            if start + off > now || stop.load(Ordering::Relaxed) {
                break;
            }
            heap.pop();
            let next = match directs[i].as_mut().map(|d| d.fire(now)) {
                Some(Fired::Next(next)) => next,
                None | Some(Fired::NotHere) => {
                    wakes[i].notify_one();
                    schedules[i].next()
                }
            };
            if let Some(next) = next {
                heap.push(Reverse((next, i)));
            }
        }
    }
    PacerReport { lateness, realtime }
}

/// Sets the calling thread up as the pacer runs: timer slack of 1 ns, and SCHED_FIFO 1 when
/// allowed. `true` when it got the real-time priority. The floor's plain client sender
/// (`chatbench floor`) sleeps and writes under the same settings.
pub fn tune_timer_thread() -> bool {
    set_fine_timer_slack();
    set_realtime_priority()
}

/// Best effort: run the pacer at the lowest real-time priority (SCHED_FIFO 1) so that a busy
/// tokio worker on the same CPU does not delay its wake-ups by a scheduler time slice. It
/// sleeps between wake-ups and does a few µs of work per wake-up, so it cannot starve anyone.
/// Without the privilege (CAP_SYS_NICE) it stays a normal thread; the pacer lag figure in the
/// results shows the effect either way.
fn set_realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatbench_model::scenario::Arrival;

    #[test]
    fn wakes_every_sender_and_ends() {
        let wake = Arc::new(Notify::new());
        let senders = vec![PacedSender {
            schedule: Schedule::new(Arrival::Uniform, 200.0, Duration::from_millis(100), 1),
            wake: wake.clone(),
            direct: None,
        }];
        let r = run(Instant::now(), senders, Arc::new(AtomicBool::new(false)));
        assert!(
            (19..=20).contains(&r.lateness.len()),
            "{} wake-ups",
            r.lateness.len()
        );
    }
}
