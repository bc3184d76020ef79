//! Every Prometheus metric keyhook exports, defined and registered once.
//!
//! Each area gets a small struct of metric handles, in a file of its own
//! ([`http`], [`connections`], [`certs`], [`injection`], [`providers`]), that
//! is cloned into the code that updates it; the [`Metrics`] value owns the
//! registry `/metrics` encodes, and [`sharded`] the per-core counters that
//! every request writes. Label values are bounded sets: route templates,
//! status codes, fixed enums — never a secret, never a name a client chooses.

pub mod providers;
pub mod sharded;

use std::fmt;
use std::sync::Arc;

use prometheus_client::{metrics::family::Family, registry::Registry};

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

// After the macro, which they use.
pub mod certs;
pub mod connections;
pub mod http;
pub mod injection;

pub use certs::{
    CertKind, CertLabels, CertMetrics, ClusterMetrics, InjectionKind, InjectionLabels,
    InjectionResult, ReloadLabels, ReloadResult,
};
pub use connections::{CloseReason, ConnectionMetrics, Listener, ServerMetrics};
pub use http::{HttpMetrics, PathLabels, RequestLabels, RouteMetrics};
pub use injection::{
    PodInjectionLabels, PodInjectionMetrics, PodInjectionResult, RefreshLabels, RefreshResult,
    SecretControllerMetrics, SecretWrite, SecretWriteLabels, SecretWriteMetrics,
    SecretWriteOperation, WriteResult,
};
pub use sharded::{ShardedCounter, ShardedHistogram};

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
