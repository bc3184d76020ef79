//! In-memory stand-ins for the injector's two narrow interfaces: a backend
//! that counts calls (per second of tokio time and per reference) and a
//! Secret store that records every write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keyhook::injection::{
    ManagedSecret, ManagedSecrets, Reference, SecretsError, StorePolicy, ValueSource,
};
use keyhook::providers::{ProviderError, SecretMap, SecretValue, StoreRef};
use time::OffsetDateTime;
use tokio::time::Instant;

/// The refresh interval every store of [`CountingBackend`] has.
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// The request rate every store of [`CountingBackend`] allows.
pub const STORE_QPS: f64 = 200.0;

/// A backend that answers every key and counts calls per second of tokio time.
#[derive(Debug)]
pub struct CountingBackend {
    origin: Instant,
    latency: Duration,
    per_second: Mutex<BTreeMap<u64, u32>>,
    per_key: Mutex<BTreeMap<String, u32>>,
}

impl CountingBackend {
    /// A backend answering after `latency`.
    pub fn new(latency: Duration) -> Self {
        Self {
            origin: Instant::now(),
            latency,
            per_second: Mutex::new(BTreeMap::new()),
            per_key: Mutex::new(BTreeMap::new()),
        }
    }

    /// Calls per reference.
    pub fn per_key(&self) -> BTreeMap<String, u32> {
        self.per_key.lock().unwrap().clone()
    }

    pub fn busiest_second(&self) -> (u64, u32) {
        let counts = self.per_second.lock().unwrap();
        counts
            .iter()
            .map(|(s, c)| (*s, *c))
            .max_by_key(|(_, c)| *c)
            .unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.per_second
            .lock()
            .unwrap()
            .values()
            .map(|c| u64::from(*c))
            .sum()
    }
}

impl ValueSource for CountingBackend {
    fn policy(&self, _: &StoreRef, _: &str) -> Result<StorePolicy, ProviderError> {
        Ok(StorePolicy {
            refresh_interval: INTERVAL,
            qps: STORE_QPS,
            burst: 20,
        })
    }

    fn value<'a>(
        &'a self,
        _: &'a StoreRef,
        _: &'a str,
        reference: &'a Reference,
        _: Instant,
    ) -> BoxFuture<'a, Result<SecretValue, ProviderError>> {
        let second = (Instant::now() - self.origin).as_secs();
        *self.per_second.lock().unwrap().entry(second).or_default() += 1;
        *self
            .per_key
            .lock()
            .unwrap()
            .entry(reference.to_string())
            .or_default() += 1;
        let latency = self.latency;
        async move {
            tokio::time::sleep(latency).await;
            Ok(SecretValue::from("v"))
        }
        .boxed()
    }

    fn map<'a>(
        &'a self,
        _: &'a StoreRef,
        _: &'a str,
        _: &'a Reference,
        _: Instant,
    ) -> BoxFuture<'a, Result<Arc<SecretMap>, ProviderError>> {
        async { Ok(Arc::new(SecretMap::new())) }.boxed()
    }
}

/// Managed Secrets in memory, with every write's time.
#[derive(Default)]
pub struct MemorySecrets {
    pub secrets: Mutex<BTreeMap<(String, String), ManagedSecret>>,
    /// Every write's fetch time, by Secret name.
    pub writes: Mutex<HashMap<String, Vec<OffsetDateTime>>>,
    pub in_use: Mutex<BTreeSet<(String, String)>>,
}

impl ManagedSecrets for MemorySecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ManagedSecret>, SecretsError>> {
        let found = self
            .secrets
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned();
        async move { Ok(found) }.boxed()
    }

    fn apply<'a>(
        &'a self,
        secret: &'a ManagedSecret,
        _: &'a BTreeMap<String, SecretValue>,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        self.secrets.lock().unwrap().insert(
            (secret.namespace.clone(), secret.name.clone()),
            secret.clone(),
        );
        self.writes
            .lock()
            .unwrap()
            .entry(secret.name.clone())
            .or_default()
            .push(secret.fetched_at);
        async { Ok(()) }.boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ManagedSecret>, SecretsError>> {
        let all = self.secrets.lock().unwrap().values().cloned().collect();
        async move { Ok(all) }.boxed()
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        self.secrets
            .lock()
            .unwrap()
            .remove(&(namespace.into(), name.into()));
        async { Ok(()) }.boxed()
    }

    fn in_use(&self) -> BoxFuture<'_, Result<BTreeSet<(String, String)>, SecretsError>> {
        let in_use = self.in_use.lock().unwrap().clone();
        async move { Ok(in_use) }.boxed()
    }
}
