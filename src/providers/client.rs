//! One store's client with its fetch pipeline:
//! result cache → coalescing → rate limit → in-flight cap → backoff → backend.
//!
//! Everything here belongs to one store identity; no state is shared with
//! another client, and no lock is held across an await.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Store;
use super::backends::{BackendClient, BackendError, SecretsClient};
use super::backoff::Backoff;
use super::value::Fetched;
use super::{ProviderError, ProviderSettings, RemoteRef};
use crate::metrics::providers::{DurationLabels, ProviderMetrics, RequestLabels, RequestResult};
use crate::single_flight::SingleFlight;

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The operations, as the `operation` metric label names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    Get,
    GetMap,
    Validate,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::GetMap => "get_map",
            Operation::Validate => "validate",
        }
    }
}

type FetchKey = (Operation, RemoteRef);

/// A built backend client for one store identity, with its own limits.
pub(crate) struct StoreClient {
    pub(crate) store: Arc<Store>,
    label: String,
    backend: BackendClient,
    limiter: DefaultDirectRateLimiter,
    slots: Semaphore,
    in_flight: SingleFlight<FetchKey, Result<Fetched, ProviderError>>,
    results: Option<moka::future::Cache<FetchKey, Fetched>>,
    metrics: Arc<ProviderMetrics>,
    built_at: Instant,
    /// The backend has answered this client's credentials with a value.
    credentials_worked: AtomicBool,
    /// ... and has since refused them: a logged-in token revoked early.
    credentials_refused: AtomicBool,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("store", &self.label)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The token bucket for `qps` requests per second with `burst` tokens.
fn quota(qps: f64, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(1.0 / qps.max(1e-3));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

impl StoreClient {
    pub(crate) fn new(
        store: Arc<Store>,
        backend: BackendClient,
        settings: &ProviderSettings,
        metrics: Arc<ProviderMetrics>,
    ) -> Self {
        let qps = store.qps_override.unwrap_or(settings.qps);
        let results = (!settings.cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .time_to_live(settings.cache_ttl)
                .max_capacity(settings.cache_max_bytes)
                .weigher(|_: &FetchKey, value: &Fetched| value.weight())
                .build()
        });
        Self {
            label: store.display_name(),
            store,
            backend,
            limiter: RateLimiter::direct(quota(qps, settings.burst)),
            slots: Semaphore::new(settings.max_in_flight.max(1)),
            in_flight: SingleFlight::new(),
            results,
            metrics,
            built_at: Instant::now(),
            credentials_worked: AtomicBool::new(false),
            credentials_refused: AtomicBool::new(false),
        }
    }

    /// Whether this client should be replaced by a fresh login: it logged
    /// in, its token worked and was then refused, and it is at least
    /// `interval` old (so a store whose policy denies some keys logs in at
    /// most once per interval). True for one caller only.
    pub(crate) fn take_relogin(&self, interval: Duration) -> bool {
        self.credentials_lifetime().is_some()
            && self.built_at.elapsed() >= interval
            && self.credentials_refused.swap(false, Ordering::Relaxed)
    }

    /// How long the credentials this client was built with stay valid.
    pub(crate) fn credentials_lifetime(&self) -> Option<Duration> {
        self.backend.credentials_lifetime()
    }

    /// Runs one operation through the pipeline. Identical concurrent calls
    /// share one backend call, which runs under the first caller's deadline;
    /// each caller still stops waiting at its own.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        operation: Operation,
        reference: RemoteRef,
        deadline: Instant,
    ) -> Result<Fetched, ProviderError> {
        let key = (operation, reference);
        let results = self
            .results
            .as_ref()
            .filter(|_| operation != Operation::Validate);
        if let Some(results) = results {
            if let Some(hit) = results.get(&key).await {
                self.metrics.cache_hits.inc();
                return Ok(hit);
            }
            self.metrics.cache_misses.inc();
        }
        // The result is cached before the call leaves the flights, so a
        // later caller either joins the call or finds its result.
        let call = self.in_flight.call(key.clone(), || {
            let this = Arc::clone(self);
            let call_key = key.clone();
            async move {
                let result = this.call(call_key.0, &call_key.1, deadline).await;
                let results = this
                    .results
                    .as_ref()
                    .filter(|_| call_key.0 != Operation::Validate);
                if let (Ok(value), Some(results)) = (&result, results) {
                    results.insert(call_key, value.clone()).await;
                }
                result
            }
        });
        if call.joined {
            self.metrics.coalesced.inc();
        }
        match tokio::time::timeout_at(deadline, call.flight).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::DeadlineExceeded {
                store: self.label.clone(),
                key: key.1.key,
                attempts: 0,
                last: None,
            }),
        }
    }

    /// Rate limit, in-flight cap, retries with backoff, metrics.
    async fn call(
        &self,
        operation: Operation,
        reference: &RemoteRef,
        deadline: Instant,
    ) -> Result<Fetched, ProviderError> {
        let provider = self.store.provider.name();
        let deadline_error =
            |attempts: u32, last: Option<&BackendError>| ProviderError::DeadlineExceeded {
                store: self.label.clone(),
                key: reference.key.clone(),
                attempts,
                last: last.map(ToString::to_string),
            };
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            // The semaphore is never closed; a timeout is the deadline.
            _ => return Err(deadline_error(0, None)),
        };
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let mut attempts = 0u32;
        loop {
            let waited = Instant::now();
            if tokio::time::timeout_at(deadline, self.limiter.until_ready())
                .await
                .is_err()
            {
                self.metrics
                    .ratelimit_wait
                    .observe(waited.elapsed().as_secs_f64());
                return Err(deadline_error(attempts, None));
            }
            self.metrics
                .ratelimit_wait
                .observe(waited.elapsed().as_secs_f64());

            attempts += 1;
            let started = Instant::now();
            let outcome =
                tokio::time::timeout_at(deadline, self.invoke(operation, reference)).await;
            self.metrics
                .request_duration
                .get_or_create(&DurationLabels {
                    provider,
                    operation: operation.label(),
                })
                .observe(started.elapsed().as_secs_f64());
            let result = match &outcome {
                Ok(Ok(_)) => RequestResult::ok,
                Ok(Err(BackendError::NotFound(_))) => RequestResult::not_found,
                Ok(Err(BackendError::Denied(_))) => RequestResult::denied,
                Ok(Err(BackendError::Throttled(_))) => RequestResult::throttled,
                Ok(Err(BackendError::Transient(_))) => RequestResult::transient,
                Ok(Err(_)) => RequestResult::error,
                Err(_) => RequestResult::deadline,
            };
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    provider,
                    store: self.label.clone(),
                    operation: operation.label(),
                    result,
                })
                .inc();
            let error = match outcome {
                Ok(Ok(value)) => {
                    self.credentials_worked.store(true, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(error)) => error,
                Err(_) => return Err(deadline_error(attempts, None)),
            };
            let (store, key) = (self.label.clone(), reference.key.clone());
            match error {
                BackendError::NotFound(reason) => {
                    return Err(ProviderError::NotFound { store, key, reason });
                }
                BackendError::Denied(reason) => {
                    if self.credentials_worked.load(Ordering::Relaxed) {
                        self.credentials_refused.store(true, Ordering::Relaxed);
                    }
                    return Err(ProviderError::PermissionDenied { store, key, reason });
                }
                retryable if retryable.is_retryable() => {
                    match backoff.next_delay(Instant::now(), deadline) {
                        Some(delay) => {
                            tracing::debug!(store = %self.label, attempt = attempts, ?delay, error = %retryable, "retrying backend call");
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(deadline_error(attempts, Some(&retryable))),
                    }
                }
                other => {
                    return Err(ProviderError::Backend {
                        store,
                        key,
                        reason: other.to_string(),
                    });
                }
            }
        }
    }

    async fn invoke(
        &self,
        operation: Operation,
        reference: &RemoteRef,
    ) -> Result<Fetched, BackendError> {
        match operation {
            Operation::Get => self.backend.get_secret(reference).await.map(Fetched::One),
            Operation::GetMap => self
                .backend
                .get_secret_map(reference)
                .await
                .map(|m| Fetched::Map(Arc::new(m))),
            Operation::Validate => self
                .backend
                .validate()
                .await
                .map(|()| Fetched::Map(Arc::default())),
        }
    }
}
