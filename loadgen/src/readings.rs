//! The coordinator's readings of the target processes and the host (`/proc`: the servers'
//! memory, CPU and descriptors; slab, sockstat, `/proc/stat`), taken on a thread of their own.
//!
//! At hundreds of thousands of sockets one reading of a dozen server processes can take
//! seconds; taken on the coordinator's control loop it once kept that loop from running for
//! ~10 s, the agents heard no heartbeat and stopped their load. Here the loop only *asks* for a
//! reading at a phase edge ([`Mark`]) and goes on; the reading comes back over a bounded channel
//! with its own time stamp, and the loop judges how far off the edge it was ([`window_cpu`]).
//! Besides the phase readings, the thread takes one light reading a second (the servers' RSS,
//! the host's slab and TCP sockets) for the time series; a second reading the loop has not
//! taken yet when the next is due is dropped and counted ([`Readings::dropped`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::sampler;
use chatbench_model::results::RunQueueWait;
use chatbench_model::sampler::{HostSample, ProcSample};

/// The phase edges at which the servers and the host are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mark {
    /// Before the agents open their connections.
    Before,
    /// Connections open (start of warmup): memory per connection.
    Connected,
    /// Start of the measurement window.
    MeasureStart,
    /// End of the measurement window.
    MeasureEnd,
}

impl Mark {
    /// For messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mark::Before => "before the run",
            Mark::Connected => "connections open",
            Mark::MeasureStart => "window start",
            Mark::MeasureEnd => "window end",
        }
    }
}

/// A reading at a phase edge.
#[derive(Debug, Clone)]
pub(crate) struct PhaseReading {
    /// Which edge.
    pub mark: Mark,
    /// The target processes (summed), if there are any and they could be read.
    pub server: Option<ProcSample>,
    /// The host.
    pub host: Option<HostSample>,
}

/// The once-a-second reading for the time series.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecondReading {
    /// The target processes' summed RSS, bytes (RSS only: listing the descriptors of every
    /// server each second costs the host as much as the servers' own work).
    pub target_rss: Option<u64>,
    /// The host.
    pub host: Option<HostSample>,
}

/// What the reading thread sends back.
#[derive(Debug)]
pub(crate) enum Reading {
    /// Answer to [`Readings::ask`].
    Phase(PhaseReading),
    /// The periodic reading.
    Second(SecondReading),
}

/// Requests the loop may have outstanding; there are four marks, so this never fills.
const ASK_CAPACITY: usize = 8;
/// Readings on their way to the loop.
const READING_CAPACITY: usize = 8;

/// The reading thread and its channels. Dropping it ends the thread once its current reading
/// is done (it is never joined: a reading stuck in `/proc` must not hold the run's end).
pub(crate) struct Readings {
    ask: std::sync::mpsc::SyncSender<Mark>,
    /// Readings, phase and periodic, in the order taken.
    pub rx: mpsc::Receiver<Reading>,
    dropped: Arc<AtomicU64>,
}

impl Readings {
    /// Starts the thread reading `pids` (may be empty: host only). `delay` is a test seam: every
    /// reading after the one [`Mark::Before`] takes that much longer (a slow `/proc`).
    pub(crate) fn start(pids: Vec<u32>, delay: Duration) -> std::io::Result<Readings> {
        let (ask, asks) = std::sync::mpsc::sync_channel::<Mark>(ASK_CAPACITY);
        let (tx, rx) = mpsc::channel(READING_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("readings".into())
            .spawn(move || reading_loop(&pids, delay, &asks, &tx, &counter))?;
        Ok(Readings { ask, rx, dropped })
    }

    /// Asks for a reading at `mark`; returns at once. `false` if the thread is gone or the
    /// requests are full (then the figures that need it are left out, with a note).
    pub(crate) fn ask(&self, mark: Mark) -> bool {
        self.ask.try_send(mark).is_ok()
    }

    /// Periodic readings dropped because the loop had not taken the previous ones.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn reading_loop(
    pids: &[u32],
    delay: Duration,
    asks: &std::sync::mpsc::Receiver<Mark>,
    tx: &mpsc::Sender<Reading>,
    dropped: &AtomicU64,
) {
    let server = || {
        if pids.is_empty() {
            None
        } else {
            sampler::sample_processes(pids).ok()
        }
    };
    let mut next_second = Instant::now() + Duration::from_secs(1);
    loop {
        let wait = next_second.saturating_duration_since(Instant::now());
        match asks.recv_timeout(wait) {
            Ok(mark) => {
                if mark != Mark::Before && !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let r = PhaseReading {
                    mark,
                    server: server(),
                    host: sampler::sample_host().ok(),
                };
                // Phase readings are never dropped; the loop takes them within a second.
                if tx.blocking_send(Reading::Phase(r)).is_err() {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let rss: Vec<u64> = pids
                    .iter()
                    .filter_map(|&p| sampler::sample_rss(p).ok())
                    .collect();
                let r = SecondReading {
                    target_rss: (!rss.is_empty()).then(|| rss.iter().sum()),
                    host: sampler::sample_host().ok(),
                };
                match tx.try_send(Reading::Second(r)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
                // A thread that fell behind does not catch up with a burst of readings.
                next_second += Duration::from_secs(1);
                let now = Instant::now();
                if next_second < now {
                    next_second = now + Duration::from_secs(1);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The target's CPU over a measurement window, from two readings taken near its edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowCpu {
    /// CPU seconds between the two readings.
    pub cpu_s: f64,
    /// Seconds between the two readings (their own time stamps).
    pub over_s: f64,
    /// How far the later-off of the two readings was from its edge, seconds.
    pub off_s: f64,
    /// The target's threads' wait for a CPU between the readings.
    pub run_queue_wait: Option<RunQueueWait>,
}

/// The target's CPU between readings `a` and `b`, meant for the window
/// `[start, end]` (times since [`sampler::clock_epoch`]). `Err` says why it cannot stand for the
/// window: a reading more than half the window off its edge, or readings out of order.
pub(crate) fn window_cpu(
    a: &ProcSample,
    b: &ProcSample,
    start: Duration,
    end: Duration,
) -> Result<WindowCpu, String> {
    let window = end.saturating_sub(start).as_secs_f64();
    let off = |at: Duration, edge: Duration| (at.as_secs_f64() - edge.as_secs_f64()).abs();
    let off_s = off(a.at, start).max(off(b.at, end));
    let over_s = b.at.saturating_sub(a.at).as_secs_f64();
    if over_s <= 0.0 || window <= 0.0 {
        return Err("the server readings of the window are not in order".into());
    }
    if off_s > window / 2.0 {
        return Err(format!(
            "the server readings came up to {off_s:.1} s off the edges of the {window:.1} s window (the reading of /proc was slow)"
        ));
    }
    Ok(WindowCpu {
        cpu_s: (b.cpu_seconds - a.cpu_seconds).max(0.0),
        over_s,
        off_s,
        run_queue_wait: chatbench_model::summary::run_queue_wait(a, b, over_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_at(at_ms: u64, cpu: f64) -> ProcSample {
        ProcSample {
            at: Duration::from_millis(at_ms),
            rss_bytes: 0,
            rss_anon_bytes: 0,
            cpu_seconds: cpu,
            threads: 1,
            open_fds: 1,
            run_delay_seconds: None,
        }
    }

    #[test]
    fn window_cpu_uses_the_readings_own_times_and_refuses_far_off_ones() {
        let (s, e) = (Duration::from_secs(10), Duration::from_secs(20));
        let w = window_cpu(&proc_at(10_100, 1.0), &proc_at(20_300, 6.0), s, e).expect("near");
        assert!((w.cpu_s - 5.0).abs() < 1e-9);
        assert!((w.over_s - 10.2).abs() < 1e-9);
        assert!((w.off_s - 0.3).abs() < 1e-9);
        let e1 = window_cpu(&proc_at(16_000, 1.0), &proc_at(21_000, 2.0), s, e).expect_err("late");
        assert!(e1.contains("6.0 s off"), "{e1}");
        assert!(window_cpu(&proc_at(20_000, 1.0), &proc_at(20_000, 2.0), s, e).is_err());
    }

    #[tokio::test]
    async fn readings_come_back_marked_and_the_thread_ends_with_its_owner() {
        let me = std::process::id();
        let mut r = Readings::start(vec![me], Duration::ZERO).expect("thread");
        assert!(r.ask(Mark::Before));
        assert!(r.ask(Mark::MeasureStart));
        let mut marks = Vec::new();
        while marks.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), r.rx.recv()).await {
                Ok(Some(Reading::Phase(p))) => {
                    assert!(p.server.is_some(), "this process can be read");
                    marks.push(p.mark);
                }
                Ok(Some(Reading::Second(_))) => {}
                other => panic!("no reading: {other:?}"),
            }
        }
        assert_eq!(marks, vec![Mark::Before, Mark::MeasureStart]);
        drop(r);
    }
}
