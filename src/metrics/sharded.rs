//! A counter and a histogram for what every request records, sharded by
//! thread and summed when `/metrics` is read.
//!
//! prometheus-client's histogram takes a write lock for each observation
//! and its counter is one atomic: written by every request on every worker,
//! the same cache lines bounce between cores, which costs keyhook more the
//! more connections its requests arrive on. Here each thread writes its own
//! shard, on a cache line of its own.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Shards per metric: enough that threads rarely share one.
const SHARDS: usize = 16;

/// Aligned to the cache-line pairs that x86 prefetches together, so that no
/// two shards share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// The shard of the calling thread, assigned round robin on first use.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// A monotonic counter.
#[derive(Debug, Clone, Default)]
pub struct ShardedCounter {
    shards: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's share of a histogram.
#[derive(Debug)]
struct HistogramShard {
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Observations per bucket (not cumulative), the last one `+Inf`.
    buckets: Box<[AtomicU64]>,
}

/// A histogram with fixed bucket bounds.
#[derive(Debug, Clone)]
pub struct ShardedHistogram {
    /// Upper bounds, ascending; `f64::MAX` last stands for `+Inf`.
    bounds: Arc<[f64]>,
    shards: Arc<[Padded<HistogramShard>]>,
}

impl ShardedHistogram {
    /// A histogram with these bucket bounds (ascending) and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(HistogramShard {
                    sum: AtomicU64::new(0f64.to_bits()),
                    count: AtomicU64::new(0),
                    buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                })
            })
            .collect();
        Self { bounds, shards }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let shard = &self.shards[shard()].0;
        // Only this thread writes this shard's sum: the update never retries
        // unless two threads share a shard.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        shard.count.fetch_add(1, Ordering::Relaxed);
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len() - 1);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum, count and per-bucket counts over every shard.
    pub fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in self.shards.iter() {
            sum += f64::from_bits(shard.0.sum.load(Ordering::Relaxed));
            count += shard.0.count.load(Ordering::Relaxed);
            for (total, bucket) in buckets.iter_mut().zip(shard.0.buckets.iter()) {
                total.1 += bucket.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::{
        encoding::text::encode, metrics::histogram::Histogram, registry::Registry,
    };

    /// What threads record on their shards reads as prometheus-client's own
    /// metrics read with the same observations.
    #[test]
    fn shards_add_up_to_what_one_metric_would_show() {
        let bounds = [0.001, 0.01, 0.1, 1.0];
        let sharded = ShardedHistogram::new(bounds);
        let counter = ShardedCounter::default();
        let reference = Histogram::new(bounds);
        let values: Vec<f64> = (0..400).map(|i| f64::from(i) / 150.0).collect();
        std::thread::scope(|scope| {
            for chunk in values.chunks(50) {
                let (sharded, counter) = (&sharded, &counter);
                scope.spawn(move || {
                    for value in chunk {
                        sharded.observe(*value);
                        counter.inc();
                    }
                });
            }
        });
        for value in &values {
            reference.observe(*value);
        }
        let text = |histogram: &dyn Fn(&mut Registry)| {
            let mut registry = Registry::default();
            histogram(&mut registry);
            let mut text = String::new();
            encode(&mut text, &registry).unwrap();
            text
        };
        let ours = text(&|r| r.register("latency", "Latency", sharded.clone()));
        let theirs = text(&|r| r.register("latency", "Latency", reference.clone()));
        // The sums are added in another order: compare all but the sum line.
        let without_sum = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("latency_sum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_sum(&ours), without_sum(&theirs));
        assert!((sharded.totals().0 - values.iter().sum::<f64>()).abs() < 1e-9);
        assert_eq!(counter.get(), 400);
        let counted = text(&|r| r.register("requests", "Requests", counter.clone()));
        assert!(counted.contains("requests_total 400"), "{counted}");
    }
}
