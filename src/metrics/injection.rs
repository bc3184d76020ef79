//! Pod injection: admissions by result, managed Secret writes, and the
//! leader's refresh loop.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::{ShardedCounter, start_at_zero};

/// The outcome of one pod admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodInjectionResult {
    /// A patch was returned.
    Injected,
    /// The pod asked for nothing, or already carries the same injection.
    Unchanged,
    /// The pod was denied.
    Denied,
    /// Injection failed and the pod's `keyhook.io/on-error: allow` admitted it unchanged.
    FailedOpen,
}

label_values!(PodInjectionResult {
    Injected => "injected",
    Unchanged => "unchanged",
    Denied => "denied",
    FailedOpen => "failed_open",
});

/// Labels of a pod admission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PodInjectionLabels {
    /// What happened.
    pub result: PodInjectionResult,
}

/// Pod admissions, on every replica. Their latency is
/// `keyhook_http_request_duration_seconds{path="/mutate-pod"}`.
#[derive(Debug, Clone)]
pub struct PodInjectionMetrics {
    /// `keyhook_injections_total{result}`.
    pub injections: Family<PodInjectionLabels, ShardedCounter>,
    /// The counter of each result, resolved once: every admission counts
    /// one, and a label lookup takes the family's lock.
    by_result: [ShardedCounter; PodInjectionResult::ALL.len()],
}

impl Default for PodInjectionMetrics {
    fn default() -> Self {
        let injections = Family::<PodInjectionLabels, ShardedCounter>::default();
        let by_result = PodInjectionResult::ALL.map(|result| {
            injections
                .get_or_create(&PodInjectionLabels { result })
                .clone()
        });
        Self {
            injections,
            by_result,
        }
    }
}

impl PodInjectionMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "injections",
            "Pod admissions by the secret injector, by result",
            metrics.injections.clone(),
        );
        metrics
    }

    /// Counts one admission.
    pub fn record(&self, result: PodInjectionResult) {
        self.by_result[result as usize].inc();
    }
}

/// A write to a managed Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretWrite {
    /// Created or replaced (server-side apply, or the file rewritten).
    Apply,
    /// Deleted by GC.
    Delete,
}

label_values!(SecretWrite { Apply => "apply", Delete => "delete" });

/// Whether a write went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteResult {
    /// It did.
    Ok,
    /// It failed; the error went to the caller (and its log).
    Failed,
}

label_values!(WriteResult { Ok => "ok", Failed => "failed" });

/// Labels of a managed Secret write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SecretWriteLabels {
    /// What was written.
    pub operation: SecretWrite,
    /// What happened.
    pub result: WriteResult,
}

/// Labels of a managed Secret write's duration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SecretWriteOperation {
    /// What was written.
    pub operation: SecretWrite,
}

/// Writes of managed Secrets, on every replica: an admission writes the
/// Secret of a pod it injects, the leader's loops refresh and delete them.
#[derive(Debug, Clone)]
pub struct SecretWriteMetrics {
    /// `keyhook_secret_writes_total{operation,result}`.
    pub writes: Family<SecretWriteLabels, Counter>,
    /// `keyhook_secret_write_duration_seconds{operation}`.
    pub duration: Family<SecretWriteOperation, Histogram>,
}

impl Default for SecretWriteMetrics {
    fn default() -> Self {
        let metrics = Self {
            writes: Family::default(),
            // 1 ms to ~33 s: a write to the apiserver, or a file on disk.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        };
        start_at_zero(
            &metrics.writes,
            SecretWrite::ALL.into_iter().flat_map(|operation| {
                WriteResult::ALL.map(|result| SecretWriteLabels { operation, result })
            }),
        );
        metrics
    }
}

impl SecretWriteMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "secret_writes",
            "Writes of managed Secrets, by operation and result",
            metrics.writes.clone(),
        );
        registry.register(
            "secret_write_duration_seconds",
            "Time one managed Secret write took, by operation",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Counts and times one write.
    pub fn record(&self, operation: SecretWrite, ok: bool, seconds: f64) {
        let result = if ok {
            WriteResult::Ok
        } else {
            WriteResult::Failed
        };
        self.writes
            .get_or_create(&SecretWriteLabels { operation, result })
            .inc();
        self.duration
            .get_or_create(&SecretWriteOperation { operation })
            .observe(seconds);
    }
}

/// The outcome of one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshResult {
    /// Fetched and written.
    Refreshed,
    /// The fetch or the write failed; retried at the next slot.
    Failed,
}

label_values!(RefreshResult { Refreshed => "refreshed", Failed => "failed" });

/// Labels of a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefreshLabels {
    /// What happened.
    pub result: RefreshResult,
}

/// Controller state of the managed Secrets. Recorded by the leader's loops
/// and exported only while [`Self::set_exporting`] is on, so a follower
/// exports none of it and replicas never report conflicting states.
#[derive(Debug, Clone)]
pub struct SecretControllerMetrics {
    exporting: Arc<AtomicBool>,
    /// `keyhook_managed_secrets`.
    pub managed: Gauge,
    /// `keyhook_refresh_total{result}`.
    pub refreshes: Family<RefreshLabels, Counter>,
    /// `keyhook_refresh_lag_seconds`: how late after its due time a Secret was refreshed.
    pub lag: Histogram,
}

impl Default for SecretControllerMetrics {
    fn default() -> Self {
        let refreshes = Family::default();
        start_at_zero(
            &refreshes,
            RefreshResult::ALL.map(|result| RefreshLabels { result }),
        );
        Self {
            exporting: Arc::new(AtomicBool::new(false)),
            managed: Gauge::default(),
            refreshes,
            // 100 ms to ~55 min.
            lag: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
        }
    }
}

impl SecretControllerMetrics {
    /// Turns the export on (a leader's term starts) or off (it ends).
    pub fn set_exporting(&self, on: bool) {
        self.exporting.store(on, Ordering::Relaxed);
    }

    /// Counts one refresh.
    pub fn record_refresh(&self, result: RefreshResult) {
        self.refreshes
            .get_or_create(&RefreshLabels { result })
            .inc();
    }
}

impl prometheus_client::collector::Collector for SecretControllerMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        if !self.exporting.load(Ordering::Relaxed) {
            return Ok(());
        }
        let managed = encoder.encode_descriptor(
            "managed_secrets",
            "Secrets keyhook materialized and keeps fresh (leader only)",
            None,
            self.managed.metric_type(),
        )?;
        self.managed.encode(managed)?;
        let refreshes = encoder.encode_descriptor(
            "refresh",
            "Refreshes of managed Secrets by result (leader only)",
            None,
            self.refreshes.metric_type(),
        )?;
        self.refreshes.encode(refreshes)?;
        let lag = encoder.encode_descriptor(
            "refresh_lag_seconds",
            "How long after its due time a managed Secret was refreshed (leader only)",
            None,
            self.lag.metric_type(),
        )?;
        self.lag.encode(lag)
    }
}
