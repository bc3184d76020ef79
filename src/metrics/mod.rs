//! Every Prometheus metric keyhook exports, defined and registered once.
//!
//! Each area gets a small struct of metric handles that is cloned into the
//! code that updates it; the [`Metrics`] value owns the registry `/metrics`
//! encodes. Label values are bounded sets: route templates, status codes,
//! fixed enums — never a secret, never a name a client chooses.

pub mod providers;
pub mod sharded;

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

/// All of keyhook's metrics and the registry they are exported from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhook HTTP traffic.
    pub http: HttpMetrics,
    /// Connections of both listeners and the request-memory budget.
    pub server: ServerMetrics,
    /// TLS handshakes and certificates.
    pub certs: CertMetrics,
    /// Certificates in the cluster: leadership, rotations, caBundle writes.
    pub cluster: ClusterMetrics,
    /// The provider layer (`keyhook_provider_*`).
    pub providers: Arc<providers::ProviderMetrics>,
    /// Pod admissions by the injector (every replica).
    pub injections: PodInjectionMetrics,
    /// Managed Secrets, refresh and GC (exported by the leader only).
    pub secrets: SecretControllerMetrics,
    /// Writes of managed Secrets (every replica: admissions write them too).
    pub secret_writes: SecretWriteMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // The provider metrics carry their full `keyhook_provider_*` names.
        let providers = Arc::new(providers::ProviderMetrics::register(&mut registry));
        let prefixed = registry.sub_registry_with_prefix("keyhook");
        let http = HttpMetrics::register(prefixed);
        let server = ServerMetrics::register(prefixed);
        let certs = CertMetrics::register(prefixed);
        let cluster = ClusterMetrics::register(prefixed);
        let injections = PodInjectionMetrics::register(prefixed);
        let secrets = SecretControllerMetrics::default();
        prefixed.register_collector(Box::new(secrets.clone()));
        let secret_writes = SecretWriteMetrics::register(prefixed);
        Self {
            registry,
            http,
            server,
            certs,
            cluster,
            providers,
            injections,
            secrets,
            secret_writes,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Labels of a webhook request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/mutate-pod`), or `unmatched`.
    pub path: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathLabels {
    /// The route template, or `unmatched`.
    pub path: &'static str,
}

/// Webhook HTTP traffic. Written by every request: sharded.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `keyhook_http_requests_total{path,status}`.
    pub requests: Family<RequestLabels, ShardedCounter>,
    /// `keyhook_http_request_duration_seconds{path}`.
    pub duration: Family<PathLabels, ShardedHistogram>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        registry.register(
            "http_requests",
            "Webhook HTTP requests by route and status",
            requests.clone(),
        );
        // 100 µs to ~3.3 s: admission answers in well under a millisecond when
        // nothing is fetched, and must finish before the 10 s apiserver deadline.
        let duration = Family::<PathLabels, ShardedHistogram>::new_with_constructor(|| {
            ShardedHistogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Webhook request latency by route",
            duration.clone(),
        );
        Self { requests, duration }
    }

    /// The handles of one route, resolved once: recording a request that
    /// ends in the route's `usual` status then takes no lock and no label
    /// lookup.
    pub fn route(&self, path: &'static str, usual: u16) -> RouteMetrics {
        RouteMetrics {
            path,
            duration: self.duration.get_or_create(&PathLabels { path }).clone(),
            usual,
            usual_count: self
                .requests
                .get_or_create(&RequestLabels {
                    path,
                    status: usual,
                })
                .clone(),
            requests: self.requests.clone(),
        }
    }
}

/// One route's request metrics, from [`HttpMetrics::route`].
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    path: &'static str,
    duration: ShardedHistogram,
    usual: u16,
    usual_count: ShardedCounter,
    requests: Family<RequestLabels, ShardedCounter>,
}

impl RouteMetrics {
    /// The route template these metrics are labelled with.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Counts one answered request and observes how long it took.
    pub fn record(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        if status == self.usual {
            self.usual_count.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    path: self.path,
                    status,
                })
                .inc();
        }
    }
}

/// Which certificate a metric is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// The serving certificate.
    Serving,
    /// The CA certificate.
    Ca,
}

/// Labels naming a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertLabels {
    /// Which certificate.
    pub cert: CertKind,
}

/// The outcome of offering a new certificate to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// Now served to new handshakes.
    Installed,
    /// Broken; the previous certificate is still served.
    Refused,
}

/// Creates each of `labels`' series in `family` at zero (see
/// `label_values!` for why).
fn start_at_zero<S, M, C>(family: &Family<S, M, C>, labels: impl IntoIterator<Item = S>)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    for label in labels {
        // The returned guard only reads the series just created.
        drop(family.get_or_create(&label));
    }
}

/// Label values are lowercase words, as Prometheus convention has them.
/// `ALL` lists every value (in the order given here, which is declaration
/// order) so that counters can be created at 0: a series that first appears
/// at 1 is invisible to `increase()` and `rate()`, and the alert on its
/// first failure would never fire.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $value:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value of this label.
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                fmt::Write::write_str(encoder, match self { $(Self::$variant => $value),+ })
            }
        }
    };
}

// After the macro, which it uses.
pub mod connections;

pub use connections::{CloseReason, ConnectionMetrics, Listener, ServerMetrics};
pub use sharded::{ShardedCounter, ShardedHistogram};

label_values!(CertKind { Serving => "serving", Ca => "ca" });
label_values!(ReloadResult { Installed => "installed", Refused => "refused" });

/// Labels of a certificate reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// What happened to the candidate.
    pub result: ReloadResult,
}

/// TLS handshakes and certificates.
#[derive(Debug, Clone)]
pub struct CertMetrics {
    /// `keyhook_tls_handshake_failures_total`.
    pub handshake_failures: Counter,
    /// `keyhook_cert_reloads_total{result}`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `keyhook_cert_not_after_seconds{cert}`: end of validity, Unix time.
    pub not_after: Family<CertLabels, Gauge>,
}

impl CertMetrics {
    fn register(registry: &mut Registry) -> Self {
        let handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the webhook listener that failed or timed out",
            handshake_failures.clone(),
        );
        let reloads = Family::default();
        start_at_zero(
            &reloads,
            ReloadResult::ALL.map(|result| ReloadLabels { result }),
        );
        registry.register(
            "cert_reloads",
            "Serving certificates offered to the server, installed or refused as broken",
            reloads.clone(),
        );
        let not_after = Family::default();
        registry.register(
            "cert_not_after_seconds",
            "End of validity of the served certificate and of its CA, Unix time",
            not_after.clone(),
        );
        Self {
            handshake_failures,
            reloads,
            not_after,
        }
    }

    /// Counts one reload outcome.
    pub fn record_reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Sets the `notAfter` gauge of one certificate.
    pub fn set_not_after(&self, cert: CertKind, unix: i64) {
        self.not_after.get_or_create(&CertLabels { cert }).set(unix);
    }
}

/// Which kind of object a caBundle was written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InjectionKind {
    /// A `MutatingWebhookConfiguration`.
    Mutating,
    /// A `ValidatingWebhookConfiguration`.
    Validating,
    /// A `CustomResourceDefinition`'s conversion webhook.
    Crd,
}

/// The outcome of one caBundle write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectionResult {
    /// The apiserver accepted the apply.
    Applied,
    /// The apiserver refused it, or could not be reached.
    Failed,
}

label_values!(InjectionKind {
    Mutating => "MutatingWebhookConfiguration",
    Validating => "ValidatingWebhookConfiguration",
    Crd => "CustomResourceDefinition",
});
label_values!(InjectionResult { Applied => "applied", Failed => "failed" });

/// Labels of a caBundle write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct InjectionLabels {
    /// The kind of the object written.
    pub kind: InjectionKind,
    /// What happened.
    pub result: InjectionResult,
}

/// Certificates in the cluster: leadership, rotations and caBundle writes.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// `keyhook_leader`: 1 on the replica holding the Lease, else 0.
    pub leader: Gauge,
    /// `keyhook_cert_rotations_total{cert}`: certificates this leader issued.
    pub rotations: Family<CertLabels, Counter>,
    /// `keyhook_cabundle_injections_total{kind,result}`.
    pub injections: Family<InjectionLabels, Counter>,
}

impl ClusterMetrics {
    fn register(registry: &mut Registry) -> Self {
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica holds the leader Lease and runs the controllers (1) or not (0)",
            leader.clone(),
        );
        let rotations = Family::default();
        start_at_zero(&rotations, CertKind::ALL.map(|cert| CertLabels { cert }));
        registry.register(
            "cert_rotations",
            "Certificates issued by the leader (a new CA or a new serving certificate)",
            rotations.clone(),
        );
        let injections = Family::default();
        start_at_zero(
            &injections,
            InjectionKind::ALL.into_iter().flat_map(|kind| {
                InjectionResult::ALL.map(|result| InjectionLabels { kind, result })
            }),
        );
        registry.register(
            "cabundle_injections",
            "caBundle writes into webhook configurations and CRDs, by kind and result",
            injections.clone(),
        );
        Self {
            leader,
            rotations,
            injections,
        }
    }

    /// Sets `keyhook_leader`.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts one issued certificate.
    pub fn record_rotation(&self, cert: CertKind) {
        self.rotations.get_or_create(&CertLabels { cert }).inc();
    }

    /// Counts one caBundle write.
    pub fn record_injection(&self, kind: InjectionKind, result: InjectionResult) {
        self.injections
            .get_or_create(&InjectionLabels { kind, result })
            .inc();
    }
}

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
    fn register(registry: &mut Registry) -> Self {
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
    fn register(registry: &mut Registry) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_state_is_exported_by_the_leader_only() {
        let metrics = Metrics::new();
        metrics.injections.record(PodInjectionResult::Injected);
        metrics.secrets.managed.set(3);
        metrics.secrets.record_refresh(RefreshResult::Refreshed);
        let follower = metrics.encode().unwrap();
        assert!(
            follower.contains(r#"keyhook_injections_total{result="injected"} 1"#),
            "{follower}"
        );
        for name in [
            "keyhook_managed_secrets",
            "keyhook_refresh_total",
            "keyhook_refresh_lag_seconds",
        ] {
            assert!(!follower.contains(name), "a follower exports {name}");
        }
        metrics.secrets.set_exporting(true);
        let leader = metrics.encode().unwrap();
        for line in [
            "keyhook_managed_secrets 3",
            r#"keyhook_refresh_total{result="refreshed"} 1"#,
            "keyhook_refresh_lag_seconds_bucket",
            "keyhook_provider_coalesced_total 0",
        ] {
            assert!(leader.contains(line), "{line} missing from {leader}");
        }
    }

    #[test]
    fn each_injection_result_counts_under_its_own_label() {
        for (position, result) in PodInjectionResult::ALL.into_iter().enumerate() {
            assert_eq!(result as usize, position, "{result:?}");
        }
        let metrics = Metrics::new();
        metrics.injections.record(PodInjectionResult::FailedOpen);
        metrics.injections.record(PodInjectionResult::Unchanged);
        metrics.injections.record(PodInjectionResult::Unchanged);
        let text = metrics.encode().unwrap();
        for line in [
            r#"keyhook_injections_total{result="failed_open"} 1"#,
            r#"keyhook_injections_total{result="unchanged"} 2"#,
            r#"keyhook_injections_total{result="injected"} 0"#,
            r#"keyhook_injections_total{result="denied"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics
            .http
            .requests
            .get_or_create(&RequestLabels {
                path: "/mutate-pod",
                status: 200,
            })
            .inc();
        metrics.certs.record_reload(ReloadResult::Refused);
        metrics
            .certs
            .set_not_after(CertKind::Serving, 1_900_000_000);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"keyhook_http_requests_total{path="/mutate-pod",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyhook_cert_reloads_total{result="refused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyhook_cert_not_after_seconds{cert="serving"} 1900000000"#),
            "{text}"
        );
        assert!(
            text.contains("keyhook_tls_handshake_failures_total 0"),
            "{text}"
        );
    }

    #[test]
    fn every_bounded_counter_starts_at_zero() {
        let metrics = Metrics::new();
        metrics.secrets.set_exporting(true);
        let text = metrics.encode().unwrap();
        for line in [
            r#"keyhook_cert_reloads_total{result="refused"} 0"#,
            r#"keyhook_cert_rotations_total{cert="serving"} 0"#,
            r#"keyhook_cabundle_injections_total{kind="ValidatingWebhookConfiguration",result="failed"} 0"#,
            r#"keyhook_injections_total{result="failed_open"} 0"#,
            r#"keyhook_secret_writes_total{operation="delete",result="failed"} 0"#,
            r#"keyhook_refresh_total{result="failed"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // A gauge of 0 would read as a certificate that expired in 1970.
        assert!(!text.contains("keyhook_cert_not_after_seconds{"), "{text}");
    }

    #[test]
    fn cluster_metrics_carry_bounded_labels() {
        let metrics = Metrics::new();
        metrics.cluster.set_leader(true);
        metrics.cluster.record_rotation(CertKind::Ca);
        metrics
            .cluster
            .record_injection(InjectionKind::Crd, InjectionResult::Applied);
        let text = metrics.encode().unwrap();
        for line in [
            "keyhook_leader 1",
            r#"keyhook_cert_rotations_total{cert="ca"} 1"#,
            r#"keyhook_cabundle_injections_total{kind="CustomResourceDefinition",result="applied"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
