//! Injected work: a deterministic busy loop run per delivered message when
//! [`ServerConfig::inject_work`](crate::ServerConfig::inject_work) is set. It exists to measure
//! the regression gate's power (a known extra cost per delivery, e.g. +5 %, +10 %, +25 %) and
//! costs one branch per fan-out when off (the default, 0).

use std::hint::black_box;

/// Runs `per_delivery × deliveries` iterations of a fixed arithmetic loop that the optimiser
/// cannot remove (`black_box`). The same number of instructions every time: no clock, no
/// allocation, no memory traffic beyond one register-sized value.
#[inline(never)]
pub fn inject(per_delivery: u32, deliveries: u64) {
    if per_delivery == 0 || deliveries == 0 {
        return;
    }
    let n = black_box(u64::from(per_delivery).saturating_mul(deliveries));
    #[cfg(test)]
    INJECTED.with(|c| c.set(c.get() + n));
    // xorshift64: no closed form, so the optimiser must run every iteration; plain operators
    // (no calls) keep one iteration small in debug builds too (≈ 10 instructions), which makes
    // the injected cost fine-grained.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0u64;
    while i < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    black_box(x);
}

#[cfg(test)]
thread_local! {
    /// Iterations injected on this thread (tests check that every fan-out path injects).
    pub(crate) static INJECTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_free_and_nonzero_returns() {
        inject(0, 1_000_000);
        inject(10, 0);
        inject(3, 7);
    }
}
