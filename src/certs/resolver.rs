//! The certificate rustls serves, swapped atomically for new handshakes while
//! open connections keep the one they started with.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::{server::ClientHello, server::ResolvesServerCert, sign::CertifiedKey};

use super::{Check, Error, LoadedCert, PemBundle, ServiceIdentity};
use crate::metrics::{CertKind, CertMetrics, ReloadResult};

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
    identity: ServiceIdentity,
    metrics: CertMetrics,
}

impl ServingCert {
    /// An empty holder: handshakes fail until a certificate is installed.
    pub fn new(identity: ServiceIdentity, metrics: CertMetrics) -> Self {
        Self {
            current: ArcSwapOption::empty(),
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
                self.metrics.record_reload(ReloadResult::Refused);
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

    /// The readiness checks of the served certificate at `now`.
    pub fn checks(&self, now: i64) -> Vec<Check> {
        match self.current() {
            Some(cert) => {
                let mut checks = vec![Check {
                    name: "serving_cert_loaded",
                    ok: true,
                    detail: format!("serving `{}`", cert.inspection.leaf.subject),
                }];
                checks.extend(cert.inspection.checks(&self.identity, now));
                checks
            }
            None => vec![Check {
                name: "serving_cert_loaded",
                ok: false,
                detail: "no usable serving certificate has been loaded".into(),
            }],
        }
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
