//! The certificate rustls serves, swapped atomically for new handshakes while
//! open connections keep the one they started with.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::{server::ClientHello, server::ResolvesServerCert, sign::CertifiedKey};

use super::{Check, Error, LoadedCert, PemBundle, ServiceIdentity};
use crate::metrics::{CertKind, CertMetrics, ReloadResult};
use crate::readiness::ReadinessCheck;

/// Why a candidate certificate was not installed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// It does not parse, or its key does not match.
    #[error("unusable certificate: {0}")]
    Unusable(#[from] Error),
    /// It parses but fails the checks, while the served one passes them.
    #[error("certificate fails its checks: {}", .0.join("; "))]
    FailsChecks(Vec<String>),
}

/// The serving certificate, shared by the TLS acceptor and `/readyz`.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwapOption<LoadedCert>,
    source: ArcSwapOption<Check>,
    identity: ServiceIdentity,
    metrics: CertMetrics,
}

impl ServingCert {
    /// An empty holder: handshakes fail until a certificate is installed.
    pub fn new(identity: ServiceIdentity, metrics: CertMetrics) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            source: ArcSwapOption::empty(),
            identity,
            metrics,
        }
    }

    /// The certificate being served, if any.
    pub fn current(&self) -> Option<Arc<LoadedCert>> {
        self.current.load_full()
    }

    /// The service whose names the certificate must cover.
    pub fn identity(&self) -> &ServiceIdentity {
        &self.identity
    }

    /// Offers a new bundle. It is installed when it passes every check, or
    /// when it is at least usable and nothing passing is served now (so a
    /// bad certificate can still be diagnosed over TLS). Returns whether the
    /// served certificate changed; an identical bundle is a no-op.
    pub fn offer(&self, bundle: PemBundle, now: i64) -> Result<bool, Refusal> {
        let current = self.current();
        if current.as_ref().is_some_and(|c| c.bundle == bundle) {
            return Ok(false);
        }
        let outcome = self.judge(bundle, current.as_deref(), now);
        match outcome {
            Ok(candidate) => {
                self.metrics
                    .set_not_after(CertKind::Serving, candidate.inspection.leaf.not_after);
                if let Some(ca_not_after) =
                    candidate.inspection.cas.iter().map(|ca| ca.not_after).max()
                {
                    self.metrics.set_not_after(CertKind::Ca, ca_not_after);
                }
                self.current.store(Some(Arc::new(candidate)));
                self.metrics.record_reload(ReloadResult::Installed);
                Ok(true)
            }
            Err(refusal) => {
                self.record_refused();
                Err(refusal)
            }
        }
    }

    fn judge(
        &self,
        bundle: PemBundle,
        current: Option<&LoadedCert>,
        now: i64,
    ) -> Result<LoadedCert, Refusal> {
        let candidate = LoadedCert::load(bundle)?;
        let problems = candidate.problems(&self.identity, now);
        let current_is_good = current.is_some_and(|c| c.problems(&self.identity, now).is_empty());
        if problems.is_empty() || !current_is_good {
            Ok(candidate)
        } else {
            Err(Refusal::FailsChecks(problems))
        }
    }

    /// Counts a candidate refused before it could be offered, e.g. an
    /// unreadable cert directory.
    pub fn record_refused(&self) {
        self.metrics.record_reload(ReloadResult::Refused);
    }

    /// Reports the state of where certificates are read from (e.g. the
    /// cert directory); shown beside the certificate's own checks.
    pub fn report_source(&self, check: Check) {
        self.source.store(Some(Arc::new(check)));
    }
}

impl ReadinessCheck for ServingCert {
    /// The checks of the served certificate at `now`, and of its source.
    fn checks(&self, now: i64) -> Vec<Check> {
        let mut checks = match self.current() {
            Some(cert) => {
                let mut checks = vec![Check::passed(
                    "serving_cert_loaded",
                    format!("serving `{}`", cert.inspection.leaf.subject),
                )];
                checks.extend(cert.inspection.checks(&self.identity, now));
                checks
            }
            None => vec![Check::failed(
                "serving_cert_loaded",
                "no usable serving certificate has been loaded",
            )],
        };
        checks.extend(self.source.load().as_deref().cloned());
        checks
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|cert| cert.certified_key.clone())
    }
}
