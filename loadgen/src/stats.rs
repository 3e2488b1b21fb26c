//! Shared measurement state of one load-generator process: histograms and counters that the
//! connection tasks record into and the coordinator reads once a second.
//!
//! Histograms are sharded (a connection records into shard `index % SHARDS`) so that tasks on
//! many worker threads rarely contend; the coordinator adds the shards together — histogram
//! addition is exact, which is also how agents' histograms will be merged. Latencies are in
//! microseconds, in histograms of `chatbench_model::hist`'s shape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use chatbench_model::hist::{new_hist, record, HIST_MAX_US};

const SHARDS: usize = 16;
/// Distinct error labels kept per map before new ones are folded into "other" (a misbehaving
/// target must not grow the generator's memory).
const MAX_LABELS: usize = 64;

#[derive(Debug)]
struct Shard {
    /// Every delivery of this agent's messages, reset each second (the time series).
    interval_latency: Histogram<u64>,
    /// Deliveries of messages whose intended send time is in the measurement window.
    window_latency: Histogram<u64>,
    /// The same deliveries, reset each second (`latency.hlog`'s `window` intervals).
    interval_window: Histogram<u64>,
    /// TCP connect + WebSocket handshake time, per connection.
    connect: Histogram<u64>,
    /// Send lag: actual write start minus intended send time, first message of each wake.
    send_lag: Histogram<u64>,
    /// Time to reconnect: from losing the connection to having rejoined (reconnect policy).
    reconnect: Histogram<u64>,
    /// Receive lag: read return minus kernel arrival, one sample per in-window delivery read
    /// on the epoll path with a kernel timestamp.
    receive_lag: Histogram<u64>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            interval_latency: new_hist(),
            window_latency: new_hist(),
            interval_window: new_hist(),
            connect: new_hist(),
            send_lag: new_hist(),
            reconnect: new_hist(),
            receive_lag: new_hist(),
        }
    }
}

impl Shard {
    /// A delivery latency: every delivery's interval histogram, and the window's two when the
    /// message was due in the window.
    fn latency(&mut self, us: u64, in_window: bool) {
        record(&mut self.interval_latency, us);
        if in_window {
            record(&mut self.window_latency, us);
            record(&mut self.interval_window, us);
        }
    }
}

/// Which histogram to record into.
#[derive(Debug, Clone, Copy)]
pub enum Hist {
    /// Connection time.
    Connect,
    /// Send lag.
    SendLag,
    /// Time to reconnect.
    Reconnect,
}

/// Counters, all monotonic unless noted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connection attempts started.
    pub connect_attempts: AtomicU64,
    /// Connections that completed the WebSocket handshake.
    pub connected: AtomicU64,
    /// Members that received `joined` (and idle connections that connected).
    pub ready: AtomicU64,
    /// Connections open now (gauge).
    pub open: AtomicI64,
    /// Messages sent, all phases.
    pub sent: AtomicU64,
    /// Messages sent whose intended time is in the measurement window.
    pub sent_window: AtomicU64,
    /// Deliveries received, all phases, from any agent.
    pub delivered: AtomicU64,
    /// Deliveries of this agent's in-window messages (unique).
    pub delivered_window: AtomicU64,
    /// Deliveries whose (sender, seq) was already seen by that receiver.
    pub duplicated: AtomicU64,
    /// Echoes: a message of the room fan-out delivered back to its own sender, in-window
    /// (counted apart: never a delivery, never a latency sample).
    pub echoes: AtomicU64,
    /// In-window deliveries slower than `late_after`.
    pub late: AtomicU64,
    /// Frames from the server that did not parse or made no sense here.
    pub bad_frames: AtomicU64,
    /// Sends that failed because the connection broke.
    pub send_failures: AtomicU64,
    /// Times a sender on the pacer's send path found its connection's out-buffer full: its
    /// due message stayed due and was tried again (`loadgen/src/tx`).
    pub send_held: AtomicU64,
    /// Connections the server closed or broke while the measurement window was on.
    pub dropped_in_window: AtomicU64,
    /// Connections lost mid-run that the reconnect policy took up.
    pub disconnects: AtomicU64,
    /// Reconnect attempts (one per target tried).
    pub reconnect_attempts: AtomicU64,
    /// Connections that came back (reconnected and rejoined their room).
    pub reconnects: AtomicU64,
    /// Connections that gave up (attempts or deadline exhausted).
    pub reconnect_failures: AtomicU64,
    /// When the latest reconnect completed, µs since the engine's epoch (0: none yet).
    pub last_reconnect_us: AtomicU64,
    /// Time the ramp waited for a set-up slot (`max_connecting` reached), µs.
    pub ramp_held_us: AtomicU64,
    /// Most connections in set-up at once (TCP connect, handshake, join) seen by the ramp.
    pub connecting_peak: AtomicU64,
    /// Reads on the epoll path that brought no kernel timestamp (timed to the read's return).
    pub unstamped_reads: AtomicU64,
}

/// Errors by kind, and labelled tallies with a bounded number of labels.
#[derive(Debug, Default)]
pub struct Tallies {
    inner: Mutex<BTreeMap<String, u64>>,
}

impl Tallies {
    /// Adds one to `label` (or to "other" once [`MAX_LABELS`] labels exist).
    pub fn add(&self, label: &str) {
        let Ok(mut m) = self.inner.lock() else { return };
        if let Some(v) = m.get_mut(label) {
            *v += 1;
        } else if m.len() < MAX_LABELS {
            m.insert(label.to_string(), 1);
        } else {
            *m.entry("other".to_string()).or_insert(0) += 1;
        }
    }

    /// A copy of the tallies.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Sum of all tallies.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Everything one generator process measures.
#[derive(Debug)]
pub struct Stats {
    shards: Vec<Mutex<Shard>>,
    /// Counters.
    pub counters: Counters,
    /// Connection errors by kind (`refused`, `timeout`, `handshake_status_503`, …).
    pub connect_errors: Tallies,
    /// Connections closed by the server, by close code (`1008`, `1001`, `none` for a bare EOF).
    pub closed_by_server: Tallies,
    /// `error` frames received, by code.
    pub server_errors: Tallies,
    /// Failed reconnect attempts, by kind (`refused`, `timeout`, …).
    pub reconnect_errors: Tallies,
    /// Per room: in-window messages sent.
    pub room_sent_window: Vec<AtomicU64>,
    /// Per room: in-window unique deliveries.
    pub room_delivered_window: Vec<AtomicU64>,
    /// The first [`MAX_UNEXPECTED`] frames that made no sense here, cut to
    /// [`UNEXPECTED_BYTES`] (what the run folder's `unexpected_frames.txt` shows).
    unexpected: Mutex<Vec<String>>,
}

/// Where the figures of a judged delivery go: straight into the shared [`Stats`]
/// ([`Direct`], the tokio path: a frame per wake-up anyway) or gathered and added together
/// ([`Tally`], the epoll path: many frames per wake-up).
pub trait Sink {
    /// Counts a delivery (any phase, any agent).
    fn delivered(&mut self, stats: &Stats);
    /// Counts an in-window unique delivery in `room` (if known).
    fn delivered_window(&mut self, stats: &Stats, room: Option<u32>);
    /// Counts an in-window delivery slower than `late_after`.
    fn late(&mut self, stats: &Stats);
    /// A delivery latency, µs (`in_window`: also for the window's histograms).
    fn latency(&mut self, stats: &Stats, us: u64, in_window: bool);
}

/// Each figure into the shared [`Stats`] at once; latencies into the histogram shard of
/// connection `.0`.
pub struct Direct(pub u32);

impl Sink for Direct {
    fn delivered(&mut self, stats: &Stats) {
        Stats::inc(&stats.counters.delivered);
    }

    fn delivered_window(&mut self, stats: &Stats, room: Option<u32>) {
        Stats::inc(&stats.counters.delivered_window);
        if let Some(room) = room {
            if let Some(c) = stats.room_delivered_window.get(room as usize) {
                Stats::inc(c);
            }
        }
    }

    fn late(&mut self, stats: &Stats) {
        Stats::inc(&stats.counters.late);
    }

    fn latency(&mut self, stats: &Stats, us: u64, in_window: bool) {
        stats.record_latency(self.0, us, in_window);
    }
}

/// Latencies a [`Tally`] holds before it adds them (it adds them sooner when full).
const TALLY_LATENCIES: usize = 64;
/// Receive lags (one per read) a [`Tally`] holds before it adds them.
const TALLY_LAGS: usize = 16;
/// The in-window flag of a latency held in a [`Tally`] (latencies are far below 2⁶³ µs).
const IN_WINDOW: u64 = 1 << 63;

/// What a receiving thread judged since it last published: the per-delivery counters and
/// latencies, gathered in plain fields and added to the shared [`Stats`] together
/// ([`Tally::publish`]): one histogram-shard lock and a few atomic adds per batch (a wake-up of
/// the epoll receive path) instead of per delivery. The epoll path publishes at the end of
/// every wake-up and before it hands a connection back (a run reads its totals once every
/// connection's task has ended), so loss accounting stays exact; a reading once a second can
/// miss at most the wake-up in progress.
#[derive(Debug)]
pub struct Tally {
    /// The histogram shard it records into.
    key: u32,
    delivered: u64,
    delivered_window: u64,
    late: u64,
    /// In-window deliveries of one room, `(room, count)`, added when another room comes.
    room: (u32, u64),
    /// How many of `latencies` are held.
    held: usize,
    /// Latencies, µs, with [`IN_WINDOW`] set when the message was due in the window.
    latencies: [u64; TALLY_LATENCIES],
    /// In-window latencies taken so far (never reset: a read's share is a difference).
    window_latencies: u64,
    /// Reads without a kernel timestamp.
    unstamped: u64,
    /// How many of `lags` are held.
    lags_held: usize,
    /// Receive lags, µs, each with the in-window deliveries of its read.
    lags: [(u64, u64); TALLY_LAGS],
}

impl Tally {
    /// An empty tally whose latencies go into the histogram shard of connection `key`.
    pub fn new(key: u32) -> Tally {
        Tally {
            key,
            delivered: 0,
            delivered_window: 0,
            late: 0,
            room: (0, 0),
            held: 0,
            latencies: [0; TALLY_LATENCIES],
            window_latencies: 0,
            unstamped: 0,
            lags_held: 0,
            lags: [(0, 0); TALLY_LAGS],
        }
    }

    /// In-window latencies taken so far (what one read judged is the difference around it).
    pub fn window_latencies(&self) -> u64 {
        self.window_latencies
    }

    /// What one read's wake-up cost: its receive lag `lag_us` (read return minus kernel
    /// arrival) for each of the `deliveries` in-window deliveries it brought; `None` counts a
    /// read that brought no kernel timestamp.
    pub fn receive_lag(&mut self, stats: &Stats, lag_us: Option<u64>, deliveries: u64) {
        let Some(lag) = lag_us else {
            self.unstamped += 1;
            return;
        };
        if deliveries == 0 {
            return;
        }
        if self.lags_held == TALLY_LAGS {
            self.publish_latencies(stats);
        }
        self.lags[self.lags_held] = (lag, deliveries);
        self.lags_held += 1;
    }

    /// Adds everything held to `stats` and empties the tally.
    pub fn publish(&mut self, stats: &Stats) {
        let c = &stats.counters;
        if self.delivered != 0 {
            c.delivered.fetch_add(self.delivered, Ordering::Relaxed);
            self.delivered = 0;
        }
        if self.delivered_window != 0 {
            c.delivered_window
                .fetch_add(self.delivered_window, Ordering::Relaxed);
            self.delivered_window = 0;
        }
        if self.late != 0 {
            c.late.fetch_add(self.late, Ordering::Relaxed);
            self.late = 0;
        }
        if self.unstamped != 0 {
            c.unstamped_reads
                .fetch_add(self.unstamped, Ordering::Relaxed);
            self.unstamped = 0;
        }
        self.publish_room(stats);
        self.publish_latencies(stats);
    }

    fn publish_room(&mut self, stats: &Stats) {
        let (room, n) = self.room;
        if n != 0 {
            if let Some(c) = stats.room_delivered_window.get(room as usize) {
                c.fetch_add(n, Ordering::Relaxed);
            }
            self.room.1 = 0;
        }
    }

    fn publish_latencies(&mut self, stats: &Stats) {
        if self.held == 0 && self.lags_held == 0 {
            return;
        }
        let mut s = stats.shard(self.key);
        let mut i = 0;
        while i < self.held {
            let v = self.latencies[i];
            s.latency(v & !IN_WINDOW, v & IN_WINDOW != 0);
            i += 1;
        }
        self.held = 0;
        for &(lag, n) in &self.lags[..self.lags_held] {
            let _ = s.receive_lag.record_n(lag.clamp(1, HIST_MAX_US), n);
        }
        self.lags_held = 0;
    }
}

impl Sink for Tally {
    fn delivered(&mut self, _: &Stats) {
        self.delivered += 1;
    }

    fn delivered_window(&mut self, stats: &Stats, room: Option<u32>) {
        self.delivered_window += 1;
        let Some(room) = room else { return };
        if self.room.0 != room {
            self.publish_room(stats);
            self.room.0 = room;
        }
        self.room.1 += 1;
    }

    fn late(&mut self, _: &Stats) {
        self.late += 1;
    }

    fn latency(&mut self, stats: &Stats, us: u64, in_window: bool) {
        self.window_latencies += u64::from(in_window);
        if self.held == TALLY_LATENCIES {
            self.publish_latencies(stats);
        }
        self.latencies[self.held] = if in_window {
            us.min(!IN_WINDOW) | IN_WINDOW
        } else {
            us.min(!IN_WINDOW)
        };
        self.held += 1;
    }
}

/// Unexpected frames kept, and the bytes kept of each.
pub const MAX_UNEXPECTED: usize = 10;
/// Bytes kept of each unexpected frame.
pub const UNEXPECTED_BYTES: usize = 512;

impl Stats {
    /// Empty stats for `rooms` rooms.
    pub fn new(rooms: u32) -> Stats {
        Stats {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            counters: Counters::default(),
            connect_errors: Tallies::default(),
            closed_by_server: Tallies::default(),
            server_errors: Tallies::default(),
            reconnect_errors: Tallies::default(),
            room_sent_window: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            room_delivered_window: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            unexpected: Mutex::new(Vec::new()),
        }
    }

    fn shard(&self, key: u32) -> std::sync::MutexGuard<'_, Shard> {
        let m = &self.shards[key as usize % SHARDS];
        // A poisoned shard only means a recording task panicked; the data is still usable.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery latency from connection `key`; `in_window` also records it into the
    /// measurement-window histogram.
    pub fn record_latency(&self, key: u32, us: u64, in_window: bool) {
        self.shard(key).latency(us, in_window);
    }

    /// Records into one of the other histograms.
    pub fn record(&self, key: u32, which: Hist, us: u64) {
        let mut s = self.shard(key);
        match which {
            Hist::Connect => record(&mut s.connect, us),
            Hist::SendLag => record(&mut s.send_lag, us),
            Hist::Reconnect => record(&mut s.reconnect, us),
        }
    }

    /// Takes (and resets) the interval latency histogram of every shard, added together.
    pub fn take_interval(&self) -> Histogram<u64> {
        self.take_intervals().0
    }

    /// Takes (and resets) both interval histograms of every shard, added together: every
    /// delivery since the last take, and those of them whose message was due in the window.
    pub fn take_intervals(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut all, mut window) = (new_hist(), new_hist());
        for m in &self.shards {
            let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
            let _ = all.add(&s.interval_latency);
            let _ = window.add(&s.interval_window);
            s.interval_latency.reset();
            s.interval_window.reset();
        }
        (all, window)
    }

    fn merged(&self, pick: impl Fn(&Shard) -> &Histogram<u64>) -> Histogram<u64> {
        let mut total = new_hist();
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            let _ = total.add(pick(&s));
        }
        total
    }

    /// The measurement-window latency histogram, all shards added.
    pub fn window_latency(&self) -> Histogram<u64> {
        self.merged(|s| &s.window_latency)
    }

    /// The connection-time histogram.
    pub fn connect_time(&self) -> Histogram<u64> {
        self.merged(|s| &s.connect)
    }

    /// The send-lag histogram.
    pub fn send_lag(&self) -> Histogram<u64> {
        self.merged(|s| &s.send_lag)
    }

    /// The receive-lag histogram (epoll path: read return minus kernel arrival, per in-window
    /// delivery).
    pub fn receive_lag(&self) -> Histogram<u64> {
        self.merged(|s| &s.receive_lag)
    }

    /// The time-to-reconnect histogram.
    pub fn reconnect_time(&self) -> Histogram<u64> {
        self.merged(|s| &s.reconnect)
    }

    /// Counts a frame that made no sense here (`bad_frames`) and keeps it if it is one of the
    /// first few.
    pub fn bad_frame(&self, frame: &str) {
        Stats::inc(&self.counters.bad_frames);
        let Ok(mut kept) = self.unexpected.lock() else {
            return;
        };
        if kept.len() < MAX_UNEXPECTED {
            let mut end = frame.len().min(UNEXPECTED_BYTES);
            while !frame.is_char_boundary(end) {
                end -= 1;
            }
            kept.push(frame[..end].to_string());
        }
    }

    /// The unexpected frames kept.
    pub fn unexpected_frames(&self) -> Vec<String> {
        self.unexpected
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_exactly() {
        let s = Stats::new(1);
        for k in 0..1000u32 {
            s.record_latency(k, u64::from(k) + 1, k % 2 == 0);
        }
        let w = s.window_latency();
        assert_eq!(w.len(), 500);
        let i = s.take_interval();
        assert_eq!(i.len(), 1000);
        assert_eq!(i.max(), 1000);
        assert_eq!(s.take_interval().len(), 0, "take resets the interval");
        assert_eq!(s.window_latency().len(), 500, "the window is kept");
        s.record_latency(7, 70, true);
        s.record_latency(8, 80, false);
        let (all, window) = s.take_intervals();
        assert_eq!((all.len(), window.len()), (2, 1));
        assert_eq!(window.max(), 70, "only the in-window delivery");
        assert_eq!(
            s.take_intervals().1.len(),
            0,
            "take resets the window interval"
        );
    }

    /// More deliveries than a tally holds latencies, rooms changing, some out of the window,
    /// some late.
    fn deliver(sink: &mut dyn Sink, stats: &Stats) {
        for i in 0..(3 * TALLY_LATENCIES as u64 + 7) {
            let in_window = i % 5 != 0;
            sink.delivered(stats);
            sink.latency(stats, i * 37 + 1, in_window);
            if in_window {
                sink.delivered_window(stats, Some((i / 10 % 3) as u32));
                if i % 7 == 0 {
                    sink.late(stats);
                }
            }
        }
    }

    #[test]
    fn a_tally_adds_exactly_what_direct_recording_adds() {
        let (direct, batched) = (Stats::new(3), Stats::new(3));
        let mut tally = Tally::new(5);
        deliver(&mut Direct(5), &direct);
        deliver(&mut tally, &batched);
        assert_eq!(
            Stats::get(&batched.counters.delivered),
            0,
            "nothing before publish"
        );
        tally.publish(&batched);
        let c = |s: &Stats| {
            (
                Stats::get(&s.counters.delivered),
                Stats::get(&s.counters.delivered_window),
                Stats::get(&s.counters.late),
                s.room_delivered_window
                    .iter()
                    .map(Stats::get)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(c(&batched), c(&direct));
        assert_eq!(batched.window_latency(), direct.window_latency());
        assert_eq!(batched.take_intervals(), direct.take_intervals());
        // Publishing an empty tally adds nothing.
        tally.publish(&batched);
        assert_eq!(c(&batched), c(&direct));
    }

    #[test]
    fn a_tally_records_each_reads_receive_lag_once_per_in_window_delivery() {
        let stats = Stats::new(1);
        let mut tally = Tally::new(3);
        for read in 0..(2 * TALLY_LAGS as u64 + 3) {
            let before = tally.window_latencies();
            // Each read: two in-window deliveries and one before the window.
            tally.latency(&stats, 100, true);
            tally.latency(&stats, 100, true);
            tally.latency(&stats, 100, false);
            let n = tally.window_latencies() - before;
            tally.receive_lag(&stats, Some(read + 1), n);
        }
        // A read that judged nothing in the window adds no sample; one without a timestamp is
        // counted.
        tally.receive_lag(&stats, Some(5), 0);
        tally.receive_lag(&stats, None, 4);
        tally.publish(&stats);
        let lag = stats.receive_lag();
        assert_eq!(lag.len(), 2 * (2 * TALLY_LAGS as u64 + 3));
        assert_eq!(lag.len(), stats.window_latency().len());
        assert_eq!(lag.max(), 2 * TALLY_LAGS as u64 + 3);
        assert_eq!(Stats::get(&stats.counters.unstamped_reads), 1);
    }

    #[test]
    fn tallies_are_bounded() {
        let t = Tallies::default();
        for i in 0..200 {
            t.add(&format!("code{i}"));
        }
        let snap = t.snapshot();
        assert_eq!(snap.len(), MAX_LABELS + 1);
        assert_eq!(snap.values().sum::<u64>(), 200);
    }
}
