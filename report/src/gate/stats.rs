//! The statistics of the gate's statistical tier and of a comparison's repeated steps, free of
//! I/O: medians, the coefficient of variation, a percentile-bootstrap interval of the median
//! (deterministic: a fixed seed and a generator written here), the Mann–Whitney U test (exact
//! for small samples without ties, normal approximation with tie correction otherwise), the
//! Wilcoxon signed-rank test (exact) for paired rounds, Holm's step-down correction over
//! several metrics, and the number of runs a given noise level needs.

/// The median of `xs` (mean of the two middle values for an even count); `None` when empty or
/// when a value is NaN.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Coefficient of variation (sample standard deviation / mean); `None` for fewer than two
/// values or a zero mean.
pub fn cv(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return None;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt() / mean.abs())
}

/// Resamples drawn by [`bootstrap_median`] for the comparison's repeated steps.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// The seed of [`bootstrap_median`] for the comparison's repeated steps: fixed, so that a
/// report rebuilt from the same files is the same byte for byte.
pub const BOOTSTRAP_SEED: u64 = 0x6368_6174_6265_6e63; // "chatbenc"

/// SplitMix64 (Steele, Lea and Flood 2014; Vigna's reference constants): a 64-bit generator
/// small enough to keep here, so the bootstrap's resamples never change with a dependency's
/// version (the `rand` crates reserve the right to change their value streams).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by the multiply-shift map: its bias, at most n / 2⁶⁴, is
    /// far below what 10,000 resamples can show.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The percentile-bootstrap interval of the median of `xs` at `level` (0.95 for 95 %):
/// `resamples` samples of `xs.len()` values drawn from `xs` with replacement by
/// [`SplitMix64`] from `seed`, the [`median`] of each, and the `(1 − level)/2` and
/// `(1 + level)/2` quantiles of those medians (nearest rank). The same inputs always give the
/// same interval. `None` when `xs` is empty, holds NaN, `resamples` is 0 or `level` is not in
/// (0, 1); one value gives that value twice.
///
/// With few values the bootstrap distribution of a median has few atoms: up to 5 values, the
/// 95 % interval is the range of the values (the median of a resample is the smallest value
/// with a chance above 2.5 %); it narrows from 6 on.
pub fn bootstrap_median(xs: &[f64], level: f64, resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) || resamples == 0 {
        return None;
    }
    if !(level > 0.0 && level < 1.0) {
        return None;
    }
    let n = xs.len();
    let mut rng = SplitMix64::new(seed);
    let mut sample = vec![0.0; n];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for v in sample.iter_mut() {
            *v = xs[rng.below(n)];
        }
        medians.push(median(&sample)?);
    }
    medians.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        // Nearest rank: the smallest value with at least q of the medians at or below it.
        // (1 − 0.95) / 2 is a hair above 0.025 in binary: the slack keeps the rank exact.
        let k = (q * resamples as f64 - 1e-9).ceil() as usize;
        medians[k.clamp(1, resamples) - 1]
    };
    Some((rank((1.0 - level) / 2.0), rank((1.0 + level) / 2.0)))
}

/// The result of a Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// Two-sided p-value (exact).
    pub p: f64,
    /// Non-zero differences tested.
    pub n: usize,
}

/// Two-sided Wilcoxon signed-rank test of the paired differences `d` against zero: zeros are
/// dropped, tied magnitudes get their mean rank, and the null distribution of W+ is counted
/// exactly over all 2ⁿ sign patterns (on doubled ranks, which are integers even with ties).
/// `None` when no non-zero difference is left, a value is NaN, or there are more than 64.
pub fn signed_rank(d: &[f64]) -> Option<SignedRank> {
    if d.iter().any(|x| x.is_nan()) {
        return None;
    }
    let v: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = v.len();
    if n == 0 || n > 64 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| v[i].abs().total_cmp(&v[j].abs()));
    // Doubled mean ranks: positions i..=j (0-based) share rank (i + j + 2) / 2.
    let mut r2 = vec![0usize; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && v[order[j + 1]].abs() == v[order[i]].abs() {
            j += 1;
        }
        for &k in &order[i..=j] {
            r2[k] = i + j + 2;
        }
        i = j + 1;
    }
    let total: usize = r2.iter().sum();
    let w2: usize = (0..n).filter(|&k| v[k] > 0.0).map(|k| r2[k]).sum();
    // counts[s]: sign patterns whose positive doubled-rank sum is s.
    let mut counts = vec![0f64; total + 1];
    counts[0] = 1.0;
    for &r in &r2 {
        for s in (r..=total).rev() {
            counts[s] += counts[s - r];
        }
    }
    let all: f64 = counts.iter().sum();
    let mid = total as f64 / 2.0;
    let dev = (w2 as f64 - mid).abs();
    let tail: f64 = counts
        .iter()
        .enumerate()
        .filter(|(s, _)| (*s as f64 - mid).abs() >= dev - 1e-9)
        .map(|(_, c)| c)
        .sum();
    Some(SignedRank {
        w_plus: w2 as f64 / 2.0,
        p: (tail / all).min(1.0),
        n,
    })
}

/// The result of a Mann–Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: the number of pairs (x from a, y from b) with x > y, ties
    /// counted one half.
    pub u: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// Whether `p` is exact (small samples, no ties) or the normal approximation.
    pub exact: bool,
}

/// Samples up to this size (each) without ties get the exact distribution of U.
const EXACT_MAX: usize = 25;

/// Two-sided Mann–Whitney U test. `None` when a sample is empty or holds NaN.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|x| x.is_nan()) {
        return None;
    }
    let (n1, n2) = (a.len(), b.len());
    // Ranks of the pooled sample, ties given their mean rank.
    let mut pooled: Vec<(f64, usize)> = a
        .iter()
        .map(|&x| (x, 0))
        .chain(b.iter().map(|&y| (y, 1)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = pooled.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over tie groups
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for item in &pooled[i..=j] {
            if item.1 == 0 {
                rank_sum_a += rank;
            }
        }
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum_a - (n1 * (n1 + 1)) as f64 / 2.0;
    let (f1, f2) = (n1 as f64, n2 as f64);
    if tie_term == 0.0 && n1 <= EXACT_MAX && n2 <= EXACT_MAX {
        let dist = u_distribution(n1, n2);
        let total: f64 = dist.iter().sum();
        let u_int = u.round() as usize;
        let lo = u_int.min(n1 * n2 - u_int);
        let tail: f64 = dist[..=lo].iter().sum();
        return Some(MannWhitney {
            u,
            p: (2.0 * tail / total).min(1.0),
            exact: true,
        });
    }
    let mean = f1 * f2 / 2.0;
    let nf = f1 + f2;
    let var = f1 * f2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        // Every value equal: no evidence of any difference.
        return Some(MannWhitney {
            u,
            p: 1.0,
            exact: false,
        });
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some(MannWhitney {
        u,
        p: (2.0 * (1.0 - normal_cdf(z))).min(1.0),
        exact: false,
    })
}

/// Number of arrangements giving each value of U (index) for samples of n1 and n2 without
/// ties: f(n1, n2, u) = f(n1 − 1, n2, u − n2) + f(n1, n2 − 1, u).
fn u_distribution(n1: usize, n2: usize) -> Vec<f64> {
    let max = n1 * n2;
    // table[i][j] = distribution for sizes (i, j), built row by row.
    let mut prev: Vec<Vec<f64>> = (0..=n2).map(|_| vec![1.0]).collect(); // i = 0: U = 0
    for i in 1..=n1 {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(n2 + 1);
        cur.push(vec![1.0]); // j = 0
        for j in 1..=n2 {
            let mut d = vec![0.0; i * j + 1];
            for (u, c) in prev[j].iter().enumerate() {
                d[u + j] += c; // the largest value is from the first sample: adds j
            }
            for (u, c) in cur[j - 1].iter().enumerate() {
                d[u] += c;
            }
            cur.push(d);
        }
        prev = cur;
    }
    let mut d = prev.swap_remove(n2);
    d.resize(max + 1, 0.0);
    d
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Inverse of [`normal_cdf`] by bisection (plenty for run planning).
pub fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// Holm's step-down adjustment: adjusted p-values, in the input order, to compare with the
/// family-wise α directly.
pub fn holm(ps: &[f64]) -> Vec<f64> {
    let m = ps.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| ps[i].total_cmp(&ps[j]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        let a = ((m - k) as f64 * ps[i]).min(1.0);
        running = running.max(a);
        adjusted[i] = running;
    }
    adjusted
}

/// Runs per arm needed to detect a relative change `effect` (0.10 = 10 %) in a metric whose
/// run-to-run coefficient of variation is `cv`, at family-wise `alpha` over `metrics` metrics
/// (Bonferroni, two-sided) with power `power`, using the two-sample normal formula
/// n = 2 (z₁₋α/(2m) + z_power)² cv² / effect², divided by 0.955 (the Mann–Whitney test's
/// asymptotic relative efficiency against the t test for normal data). At least 3.
pub fn runs_needed(cv: f64, effect: f64, alpha: f64, metrics: usize, power: f64) -> usize {
    let za = normal_quantile(1.0 - alpha / (2.0 * metrics.max(1) as f64));
    let zb = normal_quantile(power);
    let n = 2.0 * (za + zb).powi(2) * cv * cv / (effect * effect) / 0.955;
    (n.ceil() as usize).max(3)
}

/// The smallest two-sided p-value the exact Mann–Whitney test can give with `n1` and `n2`
/// observations (no ties, complete separation): 2 / C(n1 + n2, n1). With 3 + 3 it is 0.1: no
/// difference, however large, is significant at 0.05.
pub fn mann_whitney_min_p(n1: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    // C(n1 + n2, k) for the smaller k, as a float (no overflow for the sizes gates use).
    let k = n1.min(n2);
    let n = n1 + n2;
    let mut c = 1.0_f64;
    for i in 0..k {
        c = c * (n - i) as f64 / (i + 1) as f64;
    }
    (2.0 / c).min(1.0)
}

/// Whether `n1` + `n2` runs can reach significance for a figure judged with Holm over
/// `metrics` figures at family-wise `alpha`: even the most extreme outcome on every figure
/// (each at the smallest possible p) must come out below `alpha` after the correction
/// (`metrics` × that p).
pub fn can_reach(n1: usize, n2: usize, alpha: f64, metrics: usize) -> bool {
    metrics.max(1) as f64 * mann_whitney_min_p(n1, n2) < alpha
}

/// The fewest runs on one side, given `other` on the other, that [`can_reach`] significance
/// (`None` beyond 1,000).
pub fn min_runs_against(other: usize, alpha: f64, metrics: usize) -> Option<usize> {
    (1..=1000).find(|&n| can_reach(other, n, alpha, metrics))
}

/// The fewest runs per side, the same on both, that [`can_reach`] significance.
pub fn min_runs_each(alpha: f64, metrics: usize) -> usize {
    (1..=1000)
        .find(|&n| can_reach(n, n, alpha, metrics))
        .unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_smallest_p_decides_how_many_runs_can_be_significant() {
        use super::*;
        // The arithmetic: 3 + 3 gives at best 0.1, × 3 figures for Holm.
        assert!((mann_whitney_min_p(3, 3) - 0.1).abs() < 1e-12);
        assert!((mann_whitney_min_p(4, 4) - 2.0 / 70.0).abs() < 1e-12);
        assert!(!can_reach(3, 3, 0.05, 3));
        assert!(!can_reach(4, 4, 0.05, 3), "2/70 × 3 = 0.086");
        assert!(can_reach(5, 5, 0.05, 3), "2/252 × 3 = 0.024");
        assert_eq!(min_runs_each(0.05, 3), 5);
        assert_eq!(min_runs_each(0.05, 1), 4, "2/70 = 0.029");
        // Against a 3-run baseline: C(3 + n, 3) must exceed 120.
        assert_eq!(min_runs_against(3, 0.05, 3), Some(8));
        // Cross-check the closed form against the exact test on separated samples.
        let a: Vec<f64> = (0..5).map(f64::from).collect();
        let b: Vec<f64> = (10..15).map(f64::from).collect();
        let p = mann_whitney(&a, &b).expect("p").p;
        assert!((p - mann_whitney_min_p(5, 5)).abs() < 1e-12, "{p}");
    }

    #[test]
    fn signed_rank_exact_values() {
        // Checked against an independent enumeration of all 2^n sign patterns.
        let all_up: Vec<f64> = (1..=10).map(f64::from).collect();
        let t = signed_rank(&all_up).unwrap();
        assert!(close(t.p, 2.0 / 1024.0, 1e-12), "{t:?}");
        assert_eq!((t.w_plus, t.n), (55.0, 10));
        let d = [0.1, 0.2, -0.05, 0.3, 0.15, 0.25, 0.12, -0.02, 0.4, 0.22];
        assert!(close(signed_rank(&d).unwrap().p, 0.009765625, 1e-12));
        // Ties get mean ranks, zeros are dropped: 7 differences left.
        let t = signed_rank(&[1.0, -1.0, 2.0, 2.0, -3.0, 4.0, 0.0, 5.0]).unwrap();
        assert_eq!(t.n, 7);
        assert!(close(t.p, 0.25, 1e-12), "{t:?}");
        // Symmetric: flipping every sign gives the same p.
        let flipped: Vec<f64> = d.iter().map(|x| -x).collect();
        assert!(close(signed_rank(&flipped).unwrap().p, 0.009765625, 1e-12));
        assert!(signed_rank(&[0.0, 0.0]).is_none());
        assert!(signed_rank(&[1.0, f64::NAN]).is_none());
    }

    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn medians_and_cv() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
        // mean 2, sd 1
        assert!(close(cv(&[1.0, 2.0, 3.0]).unwrap(), 0.5, 1e-12));
    }

    #[test]
    fn splitmix64_gives_the_reference_stream() {
        // Vigna's splitmix64.c from seed 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(g.next_u64(), 0x06C4_5D18_8009_454F);
        let mut g = SplitMix64::new(7);
        assert!((0..1000).all(|_| g.below(5) < 5));
    }

    #[test]
    fn the_bootstrap_interval_holds_the_median_narrows_with_n_and_repeats_itself() {
        let boot = |xs: &[f64]| {
            bootstrap_median(xs, 0.95, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED).expect("interval")
        };
        // Few values: the interval of a median is their range (its bootstrap has few atoms).
        let five = [1.10, 1.32, 1.25, 1.18, 1.40];
        assert_eq!(boot(&five), (1.10, 1.40));
        assert_eq!(boot(&[3.0, 1.0, 2.0]), (1.0, 3.0));
        // Six values: the first to come inside the range.
        let (lo6, hi6) = boot(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(lo6 > 1.0 && hi6 < 6.0, "{lo6}–{hi6}");
        // Deterministic: the same inputs, the same interval, bit for bit.
        let spread: Vec<f64> = (0..25).map(|i| 10.0 + f64::from((i * 7) % 25)).collect();
        let (lo, hi) = boot(&spread);
        assert_eq!((lo, hi), boot(&spread));
        // It holds the median, and is narrower than the range once there are enough runs.
        let m = median(&spread).expect("median");
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert!(lo > 10.0 && hi < 34.0, "{lo} {hi}");
        // Narrows with n: the same spread of values, sampled 5, 25 and 101 times.
        let width = |n: usize| {
            let xs: Vec<f64> = (0..n)
                .map(|i| 10.0 + 24.0 * i as f64 / (n - 1) as f64)
                .collect();
            let (lo, hi) = boot(&xs);
            assert!(lo <= 22.0 && 22.0 <= hi, "n {n}: {lo}–{hi}");
            hi - lo
        };
        let (w5, w25, w101) = (width(5), width(25), width(101));
        assert!(w5 > w25 && w25 > w101, "{w5} {w25} {w101}");
        // One value: that value; nothing to draw from: none.
        assert_eq!(boot(&[4.2]), (4.2, 4.2));
        assert!(bootstrap_median(&[], 0.95, 100, 1).is_none());
        assert!(bootstrap_median(&[1.0, f64::NAN], 0.95, 100, 1).is_none());
        assert!(bootstrap_median(&[1.0], 1.0, 100, 1).is_none());
        // Another seed gives another (close) interval: the seed is what makes it repeat.
        let other = bootstrap_median(&spread, 0.95, BOOTSTRAP_RESAMPLES, 1).expect("other");
        assert!((other.0 - lo).abs() <= 2.0 && (other.1 - hi).abs() <= 2.0);
    }

    #[test]
    fn exact_u_distribution_matches_known_counts() {
        // n1 = n2 = 5: C(10,5) = 252 arrangements; P(U = 0) = 1/252.
        let d = u_distribution(5, 5);
        assert_eq!(d.len(), 26);
        assert_eq!(d.iter().sum::<f64>(), 252.0);
        assert_eq!(&d[..4], &[1.0, 1.0, 2.0, 3.0]);
        // Symmetric.
        assert!(d.iter().zip(d.iter().rev()).all(|(a, b)| a == b));
        let d = u_distribution(3, 4);
        assert_eq!(d.iter().sum::<f64>(), 35.0);
    }

    #[test]
    fn mann_whitney_known_values() {
        // Complete separation, 5 v 5: two-sided exact p = 2/252.
        let r = mann_whitney(&[1., 2., 3., 4., 5.], &[6., 7., 8., 9., 10.]).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 0.0);
        assert!(close(r.p, 2.0 / 252.0, 1e-12));
        // Reversed: U = 25, same p.
        let r = mann_whitney(&[6., 7., 8., 9., 10.], &[1., 2., 3., 4., 5.]).unwrap();
        assert_eq!(r.u, 25.0);
        assert!(close(r.p, 2.0 / 252.0, 1e-12));
        // U = 10: P(U ≤ 10) = 87/252 (cumulative counts 1 1 2 3 5 7 9 11 14 16 18), p = 2·87/252.
        let r = mann_whitney(&[1., 3., 5., 7., 9.], &[2., 4., 6., 8., 10.]).unwrap();
        assert_eq!(r.u, 10.0);
        assert!(close(r.p, 0.690_476, 1e-5), "{}", r.p);
        // With ties: normal approximation with tie and continuity correction.
        // Rank sum 12.5 → U = 2.5; tie term 24 + 6 = 30; var = 16/12 (9 − 30/56) = 11.286;
        // z = (5.5 − 0.5)/3.3594 = 1.4884 → p = 0.13666 (as scipy's asymptotic method).
        let r = mann_whitney(&[1., 2., 2., 3.], &[2., 3., 4., 5.]).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 2.5);
        assert!(close(r.p, 0.136_658, 1e-5), "{}", r.p);
        // All equal: p = 1.
        assert_eq!(mann_whitney(&[1., 1.], &[1., 1.]).unwrap().p, 1.0);
        assert!(mann_whitney(&[], &[1.]).is_none());
    }

    #[test]
    fn normal_cdf_and_quantile() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(1.959_964), 0.975, 1e-6));
        assert!(close(normal_cdf(-1.644_854), 0.05, 1e-6));
        assert!(close(normal_quantile(0.975), 1.959_964, 1e-4));
    }

    #[test]
    fn holm_adjusts_step_down() {
        let a = holm(&[0.01, 0.04, 0.03]);
        assert!(close(a[0], 0.03, 1e-12));
        assert!(close(a[1], 0.06, 1e-12));
        assert!(close(a[2], 0.06, 1e-12));
        assert_eq!(holm(&[0.9]), vec![0.9]);
    }

    #[test]
    fn runs_needed_grows_with_noise() {
        // cv 10 %, effect 25 %, α 0.05 over 3 metrics, power 0.95:
        // 2 (2.394 + 1.645)² 0.01 / 0.0625 / 0.955 = 5.47 → 6.
        assert_eq!(runs_needed(0.10, 0.25, 0.05, 3, 0.95), 6);
        assert!(runs_needed(0.20, 0.25, 0.05, 3, 0.95) > 20);
        assert_eq!(runs_needed(0.001, 0.25, 0.05, 3, 0.95), 3);
    }
}
