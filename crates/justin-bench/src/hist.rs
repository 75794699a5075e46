//! A latency histogram of bounded size, so that recording a request costs one array increment
//! and no allocation, whatever the request rate.
//!
//! Values are microseconds. Below 1,024 µs every value has a bucket of its own; above, each
//! power of two is split into 512 buckets, so a reported value is at most 0.2 % above the true
//! one (percentiles report a bucket's upper end, clamped to the largest value seen). The
//! largest value is kept exactly.

/// Values below this many microseconds are counted exactly.
const LINEAR: u64 = 1024;
/// log2 of the buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped to this (about 19 hours): far beyond any request's timeout.
const CLAMP: u64 = (1 << 36) - 1;

/// Counts of latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let sub = value >> shift;
    (LINEAR + u64::from(shift - 1) * SUB + (sub - SUB)) as usize
}

/// The largest value that falls into bucket `index`.
fn upper(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = (index - LINEAR) / SUB + 1;
    let sub = (index - LINEAR) % SUB + SUB;
    ((sub + 1) << shift) - 1
}

impl Histogram {
    /// An empty histogram; its buckets are allocated here, once.
    pub fn new() -> Self {
        Self {
            counts: vec![0; index(CLAMP) + 1],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    /// Counts one latency.
    pub fn record(&mut self, micros: u64) {
        let value = micros.min(CLAMP);
        if let Some(count) = self.counts.get_mut(index(value)) {
            *count += 1;
        }
        self.total += 1;
        self.sum += u128::from(value);
        self.max = self.max.max(value);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest latency recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean latency (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The latency at quantile `q` (0 < q ≤ 1): the smallest recorded value with at least
    /// `q` of the values at or below it (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps_or_overlaps() {
        let mut previous_upper = None;
        for i in 0..=index(CLAMP) {
            let lower = previous_upper.map_or(0, |u: u64| u + 1);
            assert_eq!(index(lower), i, "bucket {i} starts at {lower}");
            assert_eq!(index(upper(i)), i, "bucket {i} ends at {}", upper(i));
            previous_upper = Some(upper(i));
        }
        assert_eq!(previous_upper, Some(CLAMP));
    }

    #[test]
    fn small_values_are_exact_and_large_ones_within_a_fifth_of_a_percent() {
        for value in [0, 1, 999, 1023] {
            assert_eq!(upper(index(value)), value);
        }
        for value in [1024, 1500, 2047, 2048, 123_456, 9_999_999, 30_000_000] {
            let reported = upper(index(value));
            assert!(reported >= value);
            assert!(
                (reported - value) as f64 <= value as f64 / 500.0,
                "{value} -> {reported}"
            );
        }
    }

    #[test]
    fn quantiles_follow_the_ranks() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn a_quantile_never_exceeds_the_largest_value() {
        let mut h = Histogram::new();
        h.record(5000);
        assert_eq!(h.quantile(0.5), 5000);
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_largest_value() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(20);
        b.record(30_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 30_000);
        assert_eq!(a.quantile(0.5), 20);
    }

    #[test]
    fn an_empty_histogram_reports_zeroes() {
        let h = Histogram::new();
        assert_eq!((h.count(), h.quantile(0.99), h.max()), (0, 0, 0));
        assert_eq!(h.mean(), 0.0);
    }
}
