//! `latency.hlog`: a run's per-second delivery latencies as an HdrHistogram interval log (the
//! `hdrhistogram` crate's `interval_log` format, the Java `HistogramLogWriter`'s), so that the
//! seconds can be merged and re-percentiled later — the time series keeps only p50/p99/max.
//!
//! Values are microseconds. Each second of the run gives up to two intervals, in time order:
//! - untagged: every delivery received in that second (what the time series' latency rows are
//!   computed from);
//! - tagged `window`: the deliveries received in that second of messages whose intended send
//!   time is in the measurement window. Their sum is exactly the summary's latency histogram
//!   (`latency.hgrm`), so `latency_us` can be re-derived from this file alone.
//!
//! The log is built in memory while the run goes (each interval V2+deflate encoded when it is
//! added, a few hundred bytes to a few KiB) and written with the run's other files. It is
//! bounded: past [`MAX_LOG_BYTES`] (hours of seconds) no more intervals are added, and the file
//! says where it was cut in a comment line (`#[truncated at …]`).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use thiserror::Error;

use crate::hist::new_hist;

/// The file name in a run folder.
pub const HLOG_FILE: &str = "latency.hlog";
/// The most the log holds in memory; later intervals are left out.
pub const MAX_LOG_BYTES: usize = 64 << 20;
/// The tag of the intervals that hold only in-window deliveries.
pub const WINDOW_TAG: &str = "window";

/// Errors building or reading an interval log.
#[derive(Debug, Error)]
pub enum HlogError {
    /// A histogram could not be encoded (a bug: the histograms are the run's own).
    #[error("cannot encode a latency interval: {0}")]
    Encode(String),
    /// The file is not an interval log, or one of its histograms does not decode.
    #[error("{what}: not a valid HdrHistogram interval log: {reason} (latency.hlog is written by `chatbench run`; was the file edited or truncated?)")]
    Parse {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
}

/// An interval log being built: the header, then one line per interval.
pub struct LatencyLog {
    text: Vec<u8>,
    serializer: V2DeflateSerializer,
    intervals: usize,
    limit: usize,
    truncated: bool,
}

impl std::fmt::Debug for LatencyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyLog")
            .field("intervals", &self.intervals)
            .field("bytes", &self.text.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl LatencyLog {
    /// Starts a log whose interval timestamps are seconds since `start` (the run's start).
    pub fn new(start: SystemTime) -> LatencyLog {
        LatencyLog::with_limit(start, MAX_LOG_BYTES)
    }

    /// [`LatencyLog::new`] holding at most `limit` bytes.
    pub fn with_limit(start: SystemTime, limit: usize) -> LatencyLog {
        let mut text = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        // Writing the header into a Vec cannot fail.
        let _ = IntervalLogWriterBuilder::new()
            .add_comment("chatbench delivery latency, microseconds from the intended send time")
            .add_comment("untagged: every delivery received in the interval; tag=window: those of messages due in the measurement window")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut text, &mut serializer);
        LatencyLog {
            text,
            serializer,
            intervals: 0,
            limit,
            truncated: false,
        }
    }

    /// Adds one interval: `h` recorded from `from` to `to` (since the start), tagged `window` or
    /// not. Empty histograms are written too, so every second of the run is in the log. Once
    /// the log is full, nothing is added: returns false (the first time, the cut is noted in the
    /// log).
    pub fn push(
        &mut self,
        h: &Histogram<u64>,
        from: Duration,
        to: Duration,
        window: bool,
    ) -> Result<bool, HlogError> {
        if self.truncated {
            return Ok(false);
        }
        if self.text.len() >= self.limit {
            self.truncated = true;
            let note = format!(
                "#[truncated at {:.3} s: the log reached its {} MiB bound; later seconds are not in it]\n",
                from.as_secs_f64(),
                self.limit >> 20
            );
            self.text.extend_from_slice(note.as_bytes());
            return Ok(false);
        }
        // A header-less writer appending to the text: the builder writes nothing without
        // comments or times.
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.text, &mut self.serializer)
            .map_err(|e| HlogError::Encode(e.to_string()))?;
        let tag = if window { Tag::new(WINDOW_TAG) } else { None };
        w.write_histogram(h, from, to.saturating_sub(from), tag)
            .map_err(|e| HlogError::Encode(format!("{e:?}")))?;
        self.intervals += 1;
        Ok(true)
    }

    /// Whether intervals were left out (the log reached its bound).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// How many intervals the log holds.
    pub fn len(&self) -> usize {
        self.intervals
    }

    /// Whether the log holds no interval.
    pub fn is_empty(&self) -> bool {
        self.intervals == 0
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }
}

/// One interval read back.
#[derive(Debug)]
pub struct Interval {
    /// Seconds since the log's base time.
    pub start: Duration,
    /// Its length.
    pub duration: Duration,
    /// Whether it is tagged `window`.
    pub window: bool,
    /// Its histogram.
    pub hist: Histogram<u64>,
}

/// Reads an interval log's intervals (`what` names the file in errors). Meant for the run's own
/// files: a histogram's declared size is not bounded here (the agents' control messages, which
/// come from the network, are decoded with bounds by `chatbench_loadgen::control`).
pub fn read(what: &str, bytes: &[u8]) -> Result<Vec<Interval>, HlogError> {
    let bad = |reason: String| HlogError::Parse {
        what: what.to_string(),
        reason,
    };
    let mut out = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| bad(format!("{e:?}")))?;
        let LogEntry::Interval(i) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .map_err(|e| bad(e.to_string()))?;
        let hist: Histogram<u64> = de
            .deserialize(&mut raw.as_slice())
            .map_err(|e| bad(format!("{e:?}")))?;
        out.push(Interval {
            start: i.start_timestamp(),
            duration: i.duration(),
            window: i.tag().map(|t| t.as_str()) == Some(WINDOW_TAG),
            hist,
        });
    }
    Ok(out)
}

/// The sum of the intervals tagged `window` (or of the untagged ones): for the window, the
/// summary's latency histogram.
pub fn sum(intervals: &[Interval], window: bool) -> Histogram<u64> {
    let mut total = new_hist();
    for i in intervals.iter().filter(|i| i.window == window) {
        // Every interval has the run's bounds; a histogram read from a foreign file that does
        // not fit is left out rather than clamped.
        let _ = total.add(&i.hist);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::record;

    #[test]
    fn window_intervals_add_up_to_the_window_histogram() {
        let mut log = LatencyLog::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let mut window = new_hist();
        for s in 0..5u64 {
            let (mut all, mut win) = (new_hist(), new_hist());
            for k in 0..(100 * (s + 1)) {
                let us = 50 + k * 37 + s * 1000;
                record(&mut all, us);
                if (1..=3).contains(&s) {
                    record(&mut win, us);
                    record(&mut window, us);
                }
            }
            let (from, to) = (Duration::from_secs(s), Duration::from_secs(s + 1));
            log.push(&all, from, to, false).expect("encodes");
            log.push(&win, from, to, true).expect("encodes");
        }
        assert_eq!(log.len(), 10);
        let back = read("test", log.bytes()).expect("reads back");
        assert_eq!(back.len(), 10);
        assert_eq!(back[2].start, Duration::from_secs(1));
        assert!(back[1].window && !back[0].window);
        let w = sum(&back, true);
        assert_eq!(
            w, window,
            "the window intervals sum to the window histogram"
        );
        for q in [50.0, 99.0, 99.9] {
            assert_eq!(w.value_at_percentile(q), window.value_at_percentile(q));
        }
        assert_eq!(sum(&back, false).len(), 100 + 200 + 300 + 400 + 500);
    }

    #[test]
    fn the_log_is_bounded_and_says_where_it_was_cut() {
        let mut log = LatencyLog::with_limit(SystemTime::UNIX_EPOCH, 2000);
        let mut h = new_hist();
        for v in 1..500 {
            record(&mut h, v * 17);
        }
        let mut added = 0;
        for s in 0..100u64 {
            let (from, to) = (Duration::from_secs(s), Duration::from_secs(s + 1));
            if log.push(&h, from, to, false).expect("encodes") {
                added += 1;
            }
        }
        assert!(
            log.truncated() && added < 100 && added == log.len(),
            "{added}"
        );
        assert!(log.bytes().len() < 2000 + 1000, "{}", log.bytes().len());
        let text = String::from_utf8(log.bytes().to_vec()).expect("utf-8");
        assert_eq!(text.matches("#[truncated at").count(), 1, "{text}");
        let back = read("t", log.bytes()).expect("still a valid log");
        assert_eq!(back.len(), added);
    }

    #[test]
    fn a_damaged_log_is_an_error_that_names_the_file() {
        let mut log = LatencyLog::new(SystemTime::UNIX_EPOCH);
        let mut h = new_hist();
        record(&mut h, 10);
        log.push(&h, Duration::ZERO, Duration::from_secs(1), false)
            .expect("encodes");
        let text = String::from_utf8(log.bytes().to_vec()).expect("utf-8");
        let broken = text.replace("HISTF", "H!STF");
        let err = read("run/latency.hlog", broken.as_bytes()).expect_err("damaged");
        assert!(err.to_string().contains("run/latency.hlog"), "{err}");
    }
}
