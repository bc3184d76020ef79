//! Leader election on a `coordination.k8s.io/v1` Lease, and the small
//! abstraction that runs leader-only controllers.
//!
//! Every replica serves every webhook; only the holder of the Lease runs the
//! controllers (the certificate controller, the secret refresh and GC
//! loops). The protocol is client-go's: a candidate takes a Lease whose
//! holder has not renewed it for `lease_duration` (measured on the
//! candidate's own clock from when it last saw the record change, so clock
//! skew between nodes does not matter), the holder renews every
//! `retry_period` and steps down when it has not managed to renew for
//! `renew_deadline`. On graceful shutdown the holder releases the Lease, so
//! a successor takes over at once instead of after the lease duration.
//!
//! Every write is a `PUT` carrying the `resourceVersion` that was read: the
//! Lease is the one object where optimistic locking is the point, since two
//! candidates must never both believe they won.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, metrics::ClusterMetrics};

/// The Lease's name.
pub const LEASE_NAME: &str = "keyhook";

/// Why a round of the election could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The apiserver refused a request or could not be reached.
    #[error("Lease {namespace}/{name}: {action}: {source}")]
    Api {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What keyhook was doing.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Where the Lease is and how long a hold lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace (`--service-namespace`).
    pub namespace: String,
    /// This replica's identity, unique per process.
    pub identity: String,
    /// How long a hold lasts without renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// The Lease `keyhook` in `namespace`: 15 s hold, 10 s renew deadline,
    /// 2 s retry period (client-go's defaults for controllers).
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A process-unique identity: the replica's name (the pod's, see
/// `config::PodArgs::replica_name`) and a random suffix, so that a restarted
/// pod never mistakes its predecessor's hold for its own.
pub fn default_identity(replica: &str) -> String {
    use std::hash::BuildHasher;
    let host = replica;
    // `RandomState` is seeded from the OS per process: enough to tell two
    // processes on one host apart, which is all the suffix is for.
    let suffix = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{host}_{suffix:016x}")
}

/// Whether this replica leads, observable by the tasks that depend on it.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A leadership that never changes: `true` when election is disabled
    /// (`--leader-elect=false`, a single replica).
    pub fn fixed(is_leader: bool) -> Self {
        let (tx, rx) = watch::channel(is_leader);
        // The value never changes, so the sender is not needed; a closed
        // channel makes `wait_for` pend forever on the other state.
        drop(tx);
        Self(rx)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until leadership is `want`. Pends forever when it can no longer
    /// change.
    pub async fn wait_for(&mut self, want: bool) {
        if self.0.wait_for(|leads| *leads == want).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `task` whenever this replica leads, until `shutdown`. The task gets
/// a token that is cancelled when leadership is lost (or at shutdown) and is
/// awaited before the next term starts, so two terms never overlap.
pub async fn run_while_leader<F, Fut>(
    mut leadership: Leadership,
    shutdown: CancellationToken,
    name: &'static str,
    mut task: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = leadership.wait_for(true) => {}
        }
        tracing::info!(controller = name, "leading: starting");
        let term = shutdown.child_token();
        let run = task(term.clone());
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            () = leadership.wait_for(false) => {
                tracing::info!(controller = name, "lost leadership: stopping");
                term.cancel();
                run.await;
            }
            () = shutdown.cancelled() => {
                term.cancel();
                run.await;
                return;
            }
        }
    }
}

/// What was last seen in the Lease, and when (on this replica's clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// A candidate for the Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Arc<dyn Clock>,
    metrics: ClusterMetrics,
    leading: watch::Sender<bool>,
    observed: Option<Observed>,
}

impl LeaderElector {
    /// A candidate that has not yet tried to acquire the Lease.
    pub fn new(
        client: Client,
        settings: LeaseSettings,
        clock: Arc<dyn Clock>,
        metrics: ClusterMetrics,
    ) -> Self {
        metrics.set_leader(false);
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            clock,
            metrics,
            leading: watch::channel(false).0,
            observed: None,
        }
    }

    /// Whether this candidate leads, for the tasks that depend on it.
    pub fn leadership(&self) -> Leadership {
        Leadership(self.leading.subscribe())
    }

    /// Campaigns until `shutdown`, then releases the Lease if held.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Some(Instant::now()),
                Ok(false) => last_renewal = None,
                Err(e) => tracing::warn!(error = %e, "leader election round failed"),
            }
            // A holder that could not renew within the deadline steps down
            // before the Lease expires for the others.
            let leads =
                last_renewal.is_some_and(|at| Instant::now() - at < self.settings.renew_deadline);
            self.set_leading(leads);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
        if *self.leading.borrow() {
            self.set_leading(false);
            match self.release().await {
                Ok(()) => tracing::info!("released the leader Lease"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the leader Lease; a successor waits for it to expire")
                }
            }
        }
    }

    fn set_leading(&self, leads: bool) {
        let changed = self.leading.send_if_modified(|current| {
            let changed = *current != leads;
            *current = leads;
            changed
        });
        if changed {
            tracing::info!(
                identity = %self.settings.identity,
                leader = leads,
                "leadership changed"
            );
        }
        self.metrics.set_leader(leads);
    }

    /// One round: creates the Lease if missing, takes it over when its
    /// holder let it expire, renews it when held. Returns whether this
    /// candidate holds it afterwards. A lost race (HTTP 409) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = self.micro_now();
        let existing = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error("reading", e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.taken_spec(0, now)),
            };
            return match self.api.create(&self.post_params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.api_error("creating", e)),
            };
        };

        let current = lease.spec.clone().unwrap_or_default();
        let holder = current.holder_identity.clone().filter(|h| !h.is_empty());
        let seen = Observed {
            holder: holder.clone(),
            renew_time: current.renew_time.clone(),
            at: Instant::now(),
        };
        let observed = match self.observed.take() {
            Some(before)
                if before.holder == seen.holder && before.renew_time == seen.renew_time =>
            {
                before
            }
            _ => seen,
        };
        let held_by_us = holder.as_deref() == Some(self.settings.identity.as_str());
        let hold = current
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        let expired = Instant::now() - observed.at >= hold;
        self.observed = Some(observed);
        if holder.is_some() && !held_by_us && !expired {
            return Ok(false);
        }

        lease.spec = Some(if held_by_us {
            LeaseSpec {
                renew_time: Some(now),
                lease_duration_seconds: Some(self.duration_seconds()),
                ..current
            }
        } else {
            let transitions = current.lease_transitions.unwrap_or(0);
            self.taken_spec(transitions.saturating_add(1), now)
        });
        // `lease` still carries the resourceVersion that was read, so a
        // concurrent writer makes this PUT fail with 409 instead of both
        // candidates winning.
        match self
            .api
            .replace(&self.settings.name, &self.post_params(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.api_error("updating", e)),
        }
    }

    /// Gives the Lease up, so that a successor need not wait for it to
    /// expire: the holder is cleared and the duration set to one second, as
    /// client-go does.
    pub async fn release(&mut self) -> Result<(), Error> {
        let lease = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error("reading", e))?;
        let Some(mut lease) = lease else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let now = self.micro_now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        self.api
            .replace(&self.settings.name, &self.post_params(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.api_error("releasing", e))
    }

    /// The spec of a Lease this candidate takes from `now`.
    fn taken_spec(&self, transitions: i32, now: MicroTime) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn post_params(&self) -> PostParams {
        PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }

    fn micro_now(&self) -> MicroTime {
        // Microseconds, as the apiserver keeps them: other candidates see a
        // renewal as a change of renewTime.
        let micros = i64::try_from(self.clock.now().unix_timestamp_nanos() / 1000).unwrap_or(0);
        // Wall-clock times lie in jiff's range (years -9999..=9999); fall
        // back to the epoch rather than panic.
        MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            action,
            source,
        }
    }
}
