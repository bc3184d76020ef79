//! Store resolution and the client cache.
//!
//! A client is cached under its store's full identity ([`ClientKey`]); moka's
//! `try_get_with` builds it exactly once per key however many callers need it
//! at the same instant, and callers for other keys never wait on that build.
//! A client leaves the cache when it has been idle for `client_idle`, when
//! its store or credential Secret changes, or at two thirds of the lifetime
//! of the credentials it logged in with (a Vault token's lease): the next
//! caller then builds a fresh one. A logged-in client whose token worked and
//! was then refused (revoked early) is replaced the same way, at most once
//! per `relogin_interval`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::backends::{self, BuildContext};
use super::catalog::StoreCatalog;
use super::client::{Operation, StoreClient};
use super::conditions::admits;
use super::value::Fetched;
use super::{ProviderError, ProviderSettings, RemoteRef, SecretMap, SecretValue, StoreRef};
use super::{Store, StoreKind};
use crate::clock::{Clock, SystemClock};
use crate::metrics::providers::ProviderMetrics;

/// Everything that identifies one version of a store and its credentials.
/// A changed store or a rotated credential Secret makes a new key, so a new client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Store kind.
    pub kind: StoreKind,
    /// Store namespace (SecretStore).
    pub namespace: Option<String>,
    /// Store name.
    pub name: String,
    /// `metadata.uid`: a deleted and re-created store is another store.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Digest of spec and annotations.
    pub fingerprint: u64,
    /// `(namespace, name, resourceVersion)` of each credential Secret read.
    pub credentials: Vec<(String, String, Option<String>)>,
}

impl ClientKey {
    fn of(store: &Store, catalog: &dyn StoreCatalog) -> Self {
        let credentials = store
            .credential_secrets()
            .into_iter()
            .map(|(namespace, name)| {
                let version = catalog.secret_version(&namespace, &name);
                (namespace, name, version)
            })
            .collect();
        Self {
            kind: store.kind,
            namespace: store.namespace.clone(),
            name: store.name.clone(),
            uid: store.uid.clone(),
            generation: store.generation,
            fingerprint: store.fingerprint,
            credentials,
        }
    }

    fn store_id(&self) -> (StoreKind, Option<String>, String) {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

type StoreId = (StoreKind, Option<String>, String);

/// Expires a client at two thirds of its credentials' lifetime, while they
/// still work for the fetches under way; reads do not extend it.
struct RetireBeforeCredentialsExpire;

impl moka::Expiry<ClientKey, Arc<StoreClient>> for RetireBeforeCredentialsExpire {
    fn expire_after_create(
        &self,
        _key: &ClientKey,
        client: &Arc<StoreClient>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        client
            .credentials_lifetime()
            .map(|lifetime| lifetime * 2 / 3)
    }
}

/// The provider layer's entry point: resolves stores for a namespace and
/// hands out their cached clients.
pub struct Providers {
    catalog: Arc<dyn StoreCatalog>,
    settings: ProviderSettings,
    metrics: Arc<ProviderMetrics>,
    clients: moka::future::Cache<ClientKey, Arc<StoreClient>>,
    /// The newest key per store, so a superseded client is dropped at once
    /// (in-flight fetches keep their `Arc` until they finish).
    current: Mutex<HashMap<StoreId, ClientKey>>,
    builds: std::sync::atomic::AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Providers {
    /// Creates the layer over a catalog.
    pub fn new(
        settings: ProviderSettings,
        catalog: Arc<dyn StoreCatalog>,
        metrics: Arc<ProviderMetrics>,
    ) -> Self {
        let gauge = metrics.clients.clone();
        let clients = moka::future::Cache::builder()
            .time_to_idle(settings.client_idle)
            .expire_after(RetireBeforeCredentialsExpire)
            .eviction_listener(move |key: Arc<ClientKey>, _, cause| {
                gauge.dec();
                tracing::debug!(store = %key.name, namespace = ?key.namespace, ?cause, "client retired");
            })
            .build();
        Self {
            catalog,
            settings,
            metrics,
            clients,
            current: Mutex::new(HashMap::new()),
            builds: Default::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same layer reading wall-clock time from `clock` (the system's
    /// by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// How many clients have been built since start (for tests and benchmarks).
    pub fn clients_built(&self) -> u64 {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Finds the store `store` names for a workload in `namespace` and checks
    /// that the store admits that namespace.
    pub fn resolve(&self, store: &StoreRef, namespace: &str) -> Result<Arc<Store>, ProviderError> {
        let found = self
            .catalog
            .store(store.kind, namespace, &store.name)?
            .ok_or_else(|| ProviderError::StoreNotFound {
                kind: store.kind,
                store: match store.kind {
                    StoreKind::SecretStore => format!("{namespace}/{}", store.name),
                    StoreKind::ClusterSecretStore => store.name.clone(),
                },
            })?;
        let labels = self.catalog.namespace_labels(namespace);
        admits(&found, namespace, labels.as_ref()).map_err(|reason| {
            ProviderError::NotAdmitted {
                kind: found.kind,
                store: found.display_name(),
                namespace: namespace.to_string(),
                reason,
            }
        })?;
        Ok(found)
    }

    /// Resolves the store and returns its client, building it (once) if
    /// needed. The build runs under the first caller's deadline.
    pub async fn client(
        &self,
        store: &StoreRef,
        namespace: &str,
        deadline: Instant,
    ) -> Result<StoreHandle, ProviderError> {
        let resolved = self.resolve(store, namespace)?;
        let key = ClientKey::of(&resolved, self.catalog.as_ref());
        let cached = || async {
            self.clients
                .try_get_with(key.clone(), self.build(&resolved, deadline))
                .await
                .map_err(|e: Arc<ProviderError>| (*e).clone())
        };
        let mut client = cached().await?;
        if client.take_relogin(self.settings.relogin_interval) {
            tracing::info!(
                store = %resolved.display_name(),
                "the backend refused a token that had worked; logging in again"
            );
            self.clients.invalidate(&key).await;
            client = cached().await?;
        }
        self.retire_superseded(key).await;
        Ok(StoreHandle(client))
    }

    /// Builds a client for `store` (logging in, for backends that do).
    async fn build(
        &self,
        store: &Arc<Store>,
        deadline: Instant,
    ) -> Result<Arc<StoreClient>, ProviderError> {
        let ctx = BuildContext {
            store,
            catalog: self.catalog.as_ref(),
            aws: &self.settings.aws,
            clock: &self.clock,
        };
        let built = match tokio::time::timeout_at(deadline, backends::build(&ctx)).await {
            Ok(result) => result,
            Err(_) => Err(ctx.build_error("deadline exceeded while building the client")),
        };
        self.metrics
            .record_build(store.provider.name(), store.display_name(), built.is_ok());
        let backend = built?;
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.clients.inc();
        Ok(Arc::new(StoreClient::new(
            Arc::clone(store),
            backend,
            &self.settings,
            Arc::clone(&self.metrics),
        )))
    }

    async fn retire_superseded(&self, key: ClientKey) {
        let previous = {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match current.get(&key.store_id()) {
                Some(existing) if *existing == key => None,
                _ => current.insert(key.store_id(), key),
            }
        };
        if let Some(previous) = previous {
            self.clients.invalidate(&previous).await;
        }
    }

    /// Fetches one value through the store `store` for `namespace`.
    pub async fn get_secret(
        &self,
        store: &StoreRef,
        namespace: &str,
        reference: &RemoteRef,
        deadline: Instant,
    ) -> Result<SecretValue, ProviderError> {
        self.client(store, namespace, deadline)
            .await?
            .get_secret(reference, deadline)
            .await
    }

    /// Fetches every property of a key through the store `store` for `namespace`.
    pub async fn get_secret_map(
        &self,
        store: &StoreRef,
        namespace: &str,
        reference: &RemoteRef,
        deadline: Instant,
    ) -> Result<Arc<SecretMap>, ProviderError> {
        self.client(store, namespace, deadline)
            .await?
            .get_secret_map(reference, deadline)
            .await
    }
}

/// A store's client, ready to fetch. Cheap to clone; holds the client alive
/// even if the store changes meanwhile.
#[derive(Clone, Debug)]
pub struct StoreHandle(Arc<StoreClient>);

impl StoreHandle {
    /// The store this client was built from.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// One value (`key`, optional `property` and `version`).
    pub async fn get_secret(
        &self,
        reference: &RemoteRef,
        deadline: Instant,
    ) -> Result<SecretValue, ProviderError> {
        match self
            .0
            .fetch(Operation::Get, reference.clone(), deadline)
            .await?
        {
            Fetched::One(value) => Ok(value),
            Fetched::Map(_) => Err(ProviderError::Backend {
                store: self.0.store.display_name(),
                key: reference.key.clone(),
                reason: "internal: a map answered a value fetch".into(),
            }),
        }
    }

    /// Every property of a key.
    pub async fn get_secret_map(
        &self,
        reference: &RemoteRef,
        deadline: Instant,
    ) -> Result<Arc<SecretMap>, ProviderError> {
        match self
            .0
            .fetch(Operation::GetMap, reference.clone(), deadline)
            .await?
        {
            Fetched::Map(map) => Ok(map),
            Fetched::One(_) => Err(ProviderError::Backend {
                store: self.0.store.display_name(),
                key: reference.key.clone(),
                reason: "internal: a value answered a map fetch".into(),
            }),
        }
    }

    /// Checks the store's configuration and credentials against the backend.
    pub async fn validate(&self, deadline: Instant) -> Result<(), ProviderError> {
        self.0
            .fetch(Operation::Validate, RemoteRef::default(), deadline)
            .await
            .map(|_| ())
    }
}
