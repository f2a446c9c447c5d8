//! A log-linear latency histogram in the manner of HdrHistogram, written here
//! rather than taken from a crate: it is ~100 lines, has no dependencies, is
//! a plain `Vec<u64>` that crosses threads and merges by addition, and its
//! bucket list goes straight into the JSON report and the plot.
//!
//! Values are microseconds. Below 128 every value has its own bucket; above,
//! each power of two is split into 64 equal buckets, so a reported value is
//! within 1/64 (1.6 %) of the true one. Values are clamped at about 71
//! minutes (2^32 µs); nothing in a load test should come near it.

use serde::Serialize;

/// Sub-bucket bits: 2^7 = 128 exact values, then 64 buckets per octave.
const SUB_BITS: u32 = 7;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB_COUNT / 2;
/// Largest recorded value; larger ones are clamped to it.
pub const MAX_VALUE: u64 = (1 << 32) - 1;
/// Number of buckets needed to cover 0..=MAX_VALUE.
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

/// The bucket holding `v` (already clamped).
const fn bucket_of(v: u64) -> usize {
    if v < SUB_COUNT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as u64; // >= SUB_BITS
    let shift = msb - (SUB_BITS as u64 - 1); // >= 1
    let sub = v >> shift; // in HALF..SUB_COUNT
    (SUB_COUNT + (shift - 1) * HALF + (sub - HALF)) as usize
}

/// The smallest and largest value that land in bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_COUNT {
        return (i, i);
    }
    let shift = (i - SUB_COUNT) / HALF + 1;
    let sub = (i - SUB_COUNT) % HALF + HALF;
    (sub << shift, ((sub + 1) << shift) - 1)
}

/// Counts of values by bucket, plus the exact count, sum, min and max.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// One non-empty bucket, for reports: values up to `le_us` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub le_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, value: u64) {
        let v = value.min(MAX_VALUE);
        self.counts[bucket_of(v)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Add every value of `other` to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        *self = Self::new();
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact largest value recorded, 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact smallest value recorded, 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value below or at which a fraction `q` (0..=1) of the recorded
    /// values lie: the top of the bucket holding the value of rank
    /// ceil(q * count), capped at the exact max. 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_range(i).1.min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// The non-empty buckets, in increasing order.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| Bucket {
                le_us: bucket_range(i).1,
                count: *c,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_the_range_of_its_bucket() {
        let mut v = 0u64;
        while v <= MAX_VALUE {
            let (lo, hi) = bucket_range(bucket_of(v));
            assert!(lo <= v && v <= hi, "{v} not in {lo}..={hi}");
            v = v * 3 / 2 + 1;
        }
        assert_eq!(bucket_range(BUCKETS - 1).1, MAX_VALUE);
    }

    #[test]
    fn buckets_tile_the_value_range_without_gaps() {
        for i in 1..BUCKETS {
            assert_eq!(bucket_range(i - 1).1 + 1, bucket_range(i).0, "bucket {i}");
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [3, 3, 7, 100] {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 3);
        assert_eq!(h.percentile(0.75), 7);
        assert_eq!(h.percentile(1.0), 100);
        assert_eq!(h.min(), 3);
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_within_two_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.percentile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "p{q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.percentile(1.0), 100_000);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);
    }

    #[test]
    fn a_single_outlier_shows_in_max_and_p99_only_when_it_is_one_percent() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(1_000);
        }
        h.record(5_000_000);
        let p99 = h.percentile(0.99);
        assert!((1_000..=1_016).contains(&p99), "{p99}");
        assert_eq!(h.max(), 5_000_000);
        for _ in 0..20 {
            h.record(5_000_000);
        }
        assert!(h.percentile(0.99) > 4_900_000);
    }

    #[test]
    fn merged_histograms_equal_one_that_saw_every_value() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..5_000u64 {
            let v = v * v;
            if v % 2 == 0 {
                a.record(v);
            } else {
                b.record(v);
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let h = Histogram::new();
        assert_eq!(h.percentile(0.99), 0);
        assert_eq!((h.min(), h.max(), h.count()), (0, 0, 0));
        assert_eq!(h.mean(), 0.0);
        assert!(h.buckets().is_empty());
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.count(), 1);
        assert_eq!(h.max(), MAX_VALUE);
        assert_eq!(h.buckets().last().map(|b| b.le_us), Some(MAX_VALUE));
    }
}
