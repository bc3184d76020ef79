//! Readiness against the caBundle that is actually injected: the served
//! certificate must verify, for `<svc>.<ns>.svc`, against the bundle of every
//! client config of every managed object, as read from the API.

use std::{sync::Arc, time::Duration};

use rustls_pki_types::UnixTime;
use tokio::sync::watch;

use super::ca_bundle::ManagedSnapshot;
use crate::certs::{Check, LoadedCert, ServingCert, TrustRoots};
use crate::readiness::ReadinessCheck;

/// The name of the check in `/readyz`.
pub const CHECK_NAME: &str = "cabundle_trusts_serving_cert";

/// Each client config whose bundle does not trust `served` for `name` at
/// `now`, as `<object> <location>: <why>`.
pub fn untrusting(
    snapshot: &ManagedSnapshot,
    served: &LoadedCert,
    name: &str,
    now: i64,
) -> Vec<String> {
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    let mut problems = Vec::new();
    for object in snapshot.injectable() {
        for config in &object.client_configs {
            let verdict = match config.ca_bundle.as_deref().filter(|b| !b.trim().is_empty()) {
                None => Err("has no caBundle".to_string()),
                Some(bundle) => TrustRoots::from_pem(bundle)
                    .map_err(|e| format!("has an unreadable caBundle ({e})"))
                    .and_then(|roots| {
                        roots.verify_at(&served.inspection, name, at).map_err(|e| {
                            format!(
                                "caBundle does not trust the served certificate for {name}: {e}"
                            )
                        })
                    }),
            };
            if let Err(why) = verdict {
                problems.push(format!("{} {}: {why}", object.reference, config.location()));
            }
        }
    }
    problems
}

/// The `/readyz` check of a replica whose callers are the managed objects.
#[derive(Debug, Clone)]
pub struct InjectedTrust {
    serving: Arc<ServingCert>,
    managed: watch::Receiver<ManagedSnapshot>,
}

impl InjectedTrust {
    /// Judges what `serving` serves against the bundles in `managed`.
    pub fn new(serving: Arc<ServingCert>, managed: watch::Receiver<ManagedSnapshot>) -> Self {
        Self { serving, managed }
    }

    /// The check at `now`.
    pub fn check(&self, now: i64) -> Check {
        let snapshot = self.managed.borrow().clone();
        let result = if !snapshot.is_synced() {
            Err("waiting for the first list of webhook configurations and CRDs".to_string())
        } else if let Some(served) = self.serving.current() {
            let name = self.serving.identity().apiserver_name();
            let problems = untrusting(&snapshot, &served, &name, now);
            let count = snapshot.injectable().count();
            if !problems.is_empty() {
                Err(problems.join("; "))
            } else if count == 0 {
                Ok(format!(
                    "no webhook configuration or CRD labelled {} calls keyhook yet",
                    super::ca_bundle::PART_OF_SELECTOR
                ))
            } else {
                Ok(format!(
                    "the caBundle of all {count} managed objects trusts the served certificate for {name}"
                ))
            }
        } else {
            Err("no certificate is served".into())
        };
        Check::from_result(CHECK_NAME, result)
    }
}

impl ReadinessCheck for InjectedTrust {
    fn checks(&self, now: i64) -> Vec<Check> {
        vec![self.check(now)]
    }
}
