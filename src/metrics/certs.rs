//! Certificates: TLS handshakes, reloads, expiry, rotations and caBundle
//! writes.

use std::fmt;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::start_at_zero;

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
    pub(super) fn register(registry: &mut Registry) -> Self {
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
    pub(super) fn register(registry: &mut Registry) -> Self {
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
