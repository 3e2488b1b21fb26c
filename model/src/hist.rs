//! The latency histograms' shape, shared by everything that records into one or reads one back
//! (`latency.hgrm`, the agents' merged histograms): microseconds, 1 µs .. 60 s at 3 significant
//! digits (the design's bounds).

use hdrhistogram::Histogram;

/// Histogram upper bound: 60 s in µs.
pub const HIST_MAX_US: u64 = 60_000_000;
/// Histogram precision.
pub const HIST_SIGFIG: u8 = 3;

/// A new, empty latency histogram with the chatbench bounds.
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("valid histogram bounds")
}

/// Records `us` into `h`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, HIST_MAX_US));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIST_MAX_US);
    }
}
