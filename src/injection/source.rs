//! Where values come from: the provider layer, behind a narrow trait so the
//! refresh schedule can be tested against a counting backend under tokio's
//! paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::reference::Reference;
use crate::providers::{ProviderError, Providers, SecretMap, SecretValue, StoreRef};

/// The refresh interval of a store that sets none (upstream's default).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// What a store allows: how often its values are refreshed and how fast it
/// may be called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StorePolicy {
    /// `spec.refreshInterval`, or [`DEFAULT_REFRESH_INTERVAL`].
    pub refresh_interval: Duration,
    /// Requests per second.
    pub qps: f64,
    /// Token-bucket burst.
    pub burst: u32,
}

/// A source of secret values for a namespace's workloads.
pub trait ValueSource: Send + Sync + 'static {
    /// Resolves the store for `namespace` (namespace rules apply) and returns
    /// its policy.
    fn policy(&self, store: &StoreRef, namespace: &str) -> Result<StorePolicy, ProviderError>;

    /// One value.
    fn value<'a>(
        &'a self,
        store: &'a StoreRef,
        namespace: &'a str,
        reference: &'a Reference,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<SecretValue, ProviderError>>;

    /// Every property of a key.
    fn map<'a>(
        &'a self,
        store: &'a StoreRef,
        namespace: &'a str,
        reference: &'a Reference,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Arc<SecretMap>, ProviderError>>;
}

impl ValueSource for Providers {
    fn policy(&self, store: &StoreRef, namespace: &str) -> Result<StorePolicy, ProviderError> {
        let resolved = self.resolve(store, namespace)?;
        Ok(StorePolicy {
            refresh_interval: resolved
                .refresh_interval
                .unwrap_or(DEFAULT_REFRESH_INTERVAL),
            qps: resolved.qps_override.unwrap_or(self.settings().qps),
            burst: self.settings().burst,
        })
    }

    fn value<'a>(
        &'a self,
        store: &'a StoreRef,
        namespace: &'a str,
        reference: &'a Reference,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<SecretValue, ProviderError>> {
        async move {
            self.get_secret(store, namespace, &reference.remote(), deadline)
                .await
        }
        .boxed()
    }

    fn map<'a>(
        &'a self,
        store: &'a StoreRef,
        namespace: &'a str,
        reference: &'a Reference,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Arc<SecretMap>, ProviderError>> {
        async move {
            self.get_secret_map(store, namespace, &reference.remote(), deadline)
                .await
        }
        .boxed()
    }
}
