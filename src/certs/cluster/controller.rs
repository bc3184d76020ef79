//! The certificate controller of `--cert-mode self-managed`, run by the
//! leader only: keeps the Secret holding a valid CA and serving certificate
//! (creating or repairing it), injects its `ca.crt` into every managed
//! object, and walks the rotation steps of [`super::rotation`].

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    ca_bundle::{CaBundleInjector, ManagedSnapshot},
    rotation::{self, IssuePolicy, Plan},
    secret::{ApiError, CertSecret},
};
use crate::certs::{Error, ServiceIdentity};
use crate::{clock::Clock, metrics::ClusterMetrics};

/// Longest wait between two looks, so a clock jump is noticed within it.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Wait after a failed round.
const RETRY: Duration = Duration::from_secs(5);

/// Why a round of the controller failed; the next round retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The apiserver refused a request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A certificate could not be generated.
    #[error(transparent)]
    Certs(#[from] Error),
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// The Secret was written; look again at once.
    Wrote,
    /// Nothing was due; look again after this long, or on a change.
    Wait(Duration),
}

/// The leader's certificate controller.
#[derive(Debug, Clone)]
pub struct CertController {
    store: CertSecret,
    injector: CaBundleInjector,
    managed: watch::Receiver<ManagedSnapshot>,
    secret_changes: watch::Receiver<u64>,
    policy: IssuePolicy,
    service: ServiceIdentity,
    clock: Arc<dyn Clock>,
    metrics: ClusterMetrics,
}

impl CertController {
    /// A controller of the Secret in `store`. `managed` and `secret_changes`
    /// come from the watches every replica runs; a change wakes the
    /// controller.
    #[allow(clippy::too_many_arguments)] // each is a distinct collaborator
    pub fn new(
        store: CertSecret,
        injector: CaBundleInjector,
        managed: watch::Receiver<ManagedSnapshot>,
        secret_changes: watch::Receiver<u64>,
        policy: IssuePolicy,
        service: ServiceIdentity,
        clock: Arc<dyn Clock>,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            store,
            injector,
            managed,
            secret_changes,
            policy,
            service,
            clock,
            metrics,
        }
    }

    /// Runs rounds until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            // A round in flight when leadership ends is dropped rather than
            // finished: a former leader must not write after its successor.
            let round = tokio::select! {
                () = stop.cancelled() => return,
                round = self.round() => round,
            };
            let wait = match round {
                Ok(Round::Wrote) => continue,
                Ok(Round::Wait(wait)) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "certificate controller round failed; retrying");
                    RETRY
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                Ok(()) = self.managed.changed() => {}
                Ok(()) = self.secret_changes.changed() => {}
            }
        }
    }

    /// One round: read the Secret, inject its bundle where missing, then
    /// write the next step if one is due.
    pub async fn round(&mut self) -> Result<Round, RoundError> {
        // Mark the changes seen so far before reading: one that lands while
        // the Secret is read then wakes the next wait, rather than being
        // marked seen and acted on with the data read before it.
        self.secret_changes.borrow_and_update();
        let snapshot = self.managed.borrow_and_update().clone();
        let read = self.store.read().await?;
        let mut injection_failed = None;
        if let Some(Ok(stored)) = read.as_ref().map(|r| r.certs.as_ref())
            && snapshot.is_synced()
            && let Err(e) = self
                .injector
                .inject_all(&snapshot, &stored.bundle.ca_crt)
                .await
        {
            injection_failed = Some(e);
        }
        let all_injected = match read.as_ref().map(|r| r.certs.as_ref()) {
            Some(Ok(stored)) => snapshot.all_carry(&stored.bundle.ca_crt, &self.service),
            _ => false,
        };
        let current = read
            .as_ref()
            .map(|r| r.certs.as_ref().map_err(String::as_str));
        let now = self.clock.now();
        match rotation::plan(current, all_injected, &self.policy, now)? {
            Plan::Write {
                certs,
                issued,
                reason,
            } => {
                self.store
                    .write(&certs, read.as_ref().map(|r| &r.metadata))
                    .await?;
                for cert in issued {
                    self.metrics.record_rotation(cert);
                }
                tracing::info!(phase = ?certs.phase, %reason, "wrote the certificate Secret");
                Ok(Round::Wrote)
            }
            Plan::Keep {
                next_check,
                waiting_for,
            } => {
                if let Some(e) = injection_failed {
                    return Err(e.into());
                }
                let seconds = u64::try_from(next_check - now.unix_timestamp())
                    .unwrap_or(0)
                    .max(1);
                tracing::debug!(%waiting_for, seconds, "certificates are current");
                Ok(Round::Wait(Duration::from_secs(seconds).min(MAX_WAIT)))
            }
        }
    }
}
