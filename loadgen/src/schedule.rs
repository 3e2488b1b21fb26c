//! Open-loop send schedules: the intended send times of one sender, fixed before the run.
//!
//! Latency is measured from these intended times (not from when the message was actually
//! written), so a server that stalls cannot hide the stall by slowing its clients down — the
//! coordinated-omission problem that wrk2 fixed for HTTP. A schedule is an iterator over
//! offsets from the start of sending; it is deterministic for a seed.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use chatbench_model::scenario::Arrival;

/// The intended send offsets of one sender, from the start of sending until `end`.
#[derive(Debug, Clone)]
pub struct Schedule {
    rng: rand::rngs::SmallRng,
    arrival: Arrival,
    period_ns: f64,
    next_ns: f64,
    end_ns: f64,
}

impl Schedule {
    /// A schedule at `rate` messages per second ending at `end`. The first send is at a
    /// random phase within the first period so that senders do not fire in lockstep.
    pub fn new(arrival: Arrival, rate: f64, end: Duration, seed: u64) -> Schedule {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let period_ns = 1e9 / rate;
        let next_ns = match arrival {
            Arrival::Uniform => rng.random::<f64>() * period_ns,
            Arrival::Poisson => exp_gap(&mut rng, period_ns),
        };
        Schedule {
            rng,
            arrival,
            period_ns,
            next_ns,
            end_ns: end.as_nanos() as f64,
        }
    }
}

fn exp_gap(rng: &mut rand::rngs::SmallRng, mean_ns: f64) -> f64 {
    // Inverse transform: -ln(U) * mean, with U in (0, 1].
    let u: f64 = 1.0 - rng.random::<f64>();
    -u.ln() * mean_ns
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.next_ns >= self.end_ns {
            return None;
        }
        let at = Duration::from_nanos(self.next_ns as u64);
        self.next_ns += match self.arrival {
            Arrival::Uniform => self.period_ns,
            Arrival::Poisson => exp_gap(&mut self.rng, self.period_ns),
        };
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_has_the_rate_and_the_period() {
        let s: Vec<_> =
            Schedule::new(Arrival::Uniform, 100.0, Duration::from_secs(10), 7).collect();
        assert!((999..=1000).contains(&s.len()), "{}", s.len());
        for w in s.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap.as_micros().abs_diff(10_000) <= 1, "{gap:?}");
        }
    }

    #[test]
    fn poisson_has_the_mean_rate_and_is_deterministic() {
        let a: Vec<_> =
            Schedule::new(Arrival::Poisson, 1000.0, Duration::from_secs(20), 1).collect();
        let b: Vec<_> =
            Schedule::new(Arrival::Poisson, 1000.0, Duration::from_secs(20), 1).collect();
        assert_eq!(a, b);
        // 20,000 expected; the standard deviation of a Poisson count is sqrt(20000) ≈ 141.
        assert!((19_400..=20_600).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn ends_before_end() {
        let end = Duration::from_millis(500);
        assert!(Schedule::new(Arrival::Uniform, 10.0, end, 3).all(|t| t < end));
    }
}
