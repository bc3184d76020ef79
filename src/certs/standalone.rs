//! A standalone run's certificates: keyhook is its own CA in `--cert-dir`,
//! reuses what is there while it is valid, and renews it when a third of
//! its life is left; the directory watcher then serves what was written.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    Ensured, Error, Inspection, PemBundle, SubjectAltName, ensure_self_managed, read_bundle,
    renewal_time,
};
use crate::clock::Clock;

/// Longest single sleep of the renewal loop, so that a wall-clock jump (a
/// suspended laptop, a corrected node clock) is noticed within the hour.
const MAX_RENEWAL_SLEEP: Duration = Duration::from_secs(3600);
/// Wait after a failed renewal before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// A CA and serving certificate kept in a directory.
#[derive(Debug, Clone)]
pub struct StandaloneCerts {
    /// `--cert-dir`.
    pub dir: PathBuf,
    /// The names the serving certificate must carry.
    pub sans: Vec<SubjectAltName>,
    /// `--cert-validity`.
    pub validity: Duration,
}

impl StandaloneCerts {
    /// Makes sure the directory holds a valid CA and serving certificate
    /// for the names at `clock`'s time, writing new ones when not, and says
    /// which it did.
    pub fn ensure(&self, clock: &dyn Clock) -> Result<PemBundle, Error> {
        let (bundle, ensured) =
            ensure_self_managed(&self.dir, &self.sans, self.validity, clock.now())?;
        match ensured {
            Ensured::Reused => {
                tracing::info!(cert_dir = %self.dir.display(), "reusing the CA and serving certificate")
            }
            Ensured::Written { new_ca, reason } => tracing::info!(
                cert_dir = %self.dir.display(),
                new_ca,
                %reason,
                "wrote a new serving certificate{}",
                if new_ca { " and CA" } else { "" }
            ),
        }
        Ok(bundle)
    }

    /// Renews the certificates whenever a third of their life is left,
    /// until `stop`.
    pub async fn renew(self, clock: Arc<dyn Clock>, stop: CancellationToken) {
        loop {
            let next = read_bundle(&self.dir)
                .ok()
                .and_then(|b| Inspection::parse(&b.tls_crt, &b.ca_crt).ok())
                .map_or(0, |inspection| {
                    std::iter::once(&inspection.leaf)
                        .chain(&inspection.cas)
                        .map(|c| renewal_time(c.not_before, c.not_after))
                        .min()
                        .unwrap_or_default()
                });
            let wait = u64::try_from((next - clock.unix_now()).max(1)).unwrap_or(1);
            let wait = Duration::from_secs(wait).min(MAX_RENEWAL_SLEEP);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.ensure(clock.as_ref()) {
                tracing::error!(error = %e, "renewing the standalone certificates failed; retrying in a minute");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
}
