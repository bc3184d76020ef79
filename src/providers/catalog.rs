//! Where stores, namespace labels and credential Secrets come from.
//!
//! [`StoreCatalog`] is the narrow interface the layer reads through. In a
//! cluster, [`ClusterCatalog`] answers from kube reflectors and watches
//! scoped to the Secrets stores reference (no request ever issues a GET for
//! a store or a namespace); standalone, [`FileCatalog`] answers from the
//! `--stores` manifest, reloaded when it changes.

mod credentials;
mod file;

pub use self::file::{FileCatalog, StoresSummary, StoresWarning, log_loaded as log_stores_loaded};

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use self::credentials::{CredentialWatches, SecretId};

use super::{ProviderError, SecretValue};
use super::{Store, StoreKind};
use crate::apis::{GROUP, Version};
use crate::readiness::{Check, ReadinessCheck};
use crate::reflectors;

/// The label every namespace carries with its own name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A Secret's data as a backend credential.
#[derive(Clone, Debug)]
pub struct SecretData {
    /// The Secret's `metadata.resourceVersion` (or a content fingerprint
    /// standalone); part of the client key.
    pub resource_version: String,
    /// `data` (decoded) and `stringData`, by key.
    pub data: BTreeMap<String, SecretValue>,
}

/// Why the catalog could not read a credential. Messages never carry a value.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The Secret or service account does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The apiserver refused the request or could not be reached.
    #[error(transparent)]
    Api(Arc<kube::Error>),
    /// This catalog cannot answer such a read: standalone there are no
    /// service accounts.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl From<kube::Error> for CatalogError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 404 => {
                CatalogError::NotFound(kube::Error::Api(status).to_string())
            }
            other => CatalogError::Api(Arc::new(other)),
        }
    }
}

/// The source of stores, namespace labels and credentials.
pub trait StoreCatalog: Send + Sync + 'static {
    /// A parsed store. `namespace` is used for SecretStores only.
    fn store(
        &self,
        kind: StoreKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Store>>, ProviderError>;

    /// A namespace's labels; `None` when the namespace is unknown.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;

    /// The current version of a Secret, without reading its data; `None` when absent.
    fn secret_version(&self, namespace: &str, name: &str) -> Option<String>;

    /// Reads a Secret (only when a client is built, never per fetch).
    fn read_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<SecretData, CatalogError>>;

    /// A token for a service account (TokenRequest API in a cluster).
    fn service_account_token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, CatalogError>>;

    /// A service account's annotations (AWS IRSA names its role in one).
    fn service_account_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, CatalogError>>;

    /// The cluster's client, for the `kubernetes` provider's in-cluster default.
    fn kube_client(&self) -> Option<Client>;
}

fn fingerprint(value: &impl Hash) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    format!("h{:016x}", hasher.finish())
}

fn secret_data(secret: &Secret) -> SecretData {
    let mut data = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        data.insert(k.clone(), SecretValue::new(v.0.clone()));
    }
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), SecretValue::from(v.as_str()));
    }
    let resource_version = secret.metadata.resource_version.clone().unwrap_or_else(|| {
        let pairs: Vec<(&String, &[u8])> = data.iter().map(|(k, v)| (k, v.expose())).collect();
        fingerprint(&pairs)
    });
    SecretData {
        resource_version,
        data,
    }
}

/// In-cluster catalog. Stores and namespace labels come from reflectors:
/// every SecretStore and ClusterSecretStore (keyhook's own resources) and
/// every Namespace, as metadata with its labels. Credential Secrets are not
/// cached wholesale: each Secret a store references is watched on its own
/// (by a `metadata.name` field selector), for its resourceVersion, and its
/// data is read with a GET only when a client is built. The watches follow
/// the stores. No request ever issues a GET for a store or a namespace; the
/// tasks stop when the catalog is dropped.
pub struct ClusterCatalog {
    client: Client,
    stores: StoreCaches,
    namespaces: reflector::Store<PartialObjectMeta<Namespace>>,
    credentials: Arc<CredentialWatches>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

/// The caches of both store kinds.
#[derive(Clone)]
struct StoreCaches {
    secret_stores: reflector::Store<DynamicObject>,
    cluster_stores: reflector::Store<DynamicObject>,
    resources: (ApiResource, ApiResource),
}

impl StoreCaches {
    fn get(
        &self,
        kind: StoreKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Store>, ProviderError> {
        let object = match kind {
            StoreKind::SecretStore => self
                .secret_stores
                .get(&ObjectRef::new_with(name, self.resources.0.clone()).within(namespace)),
            StoreKind::ClusterSecretStore => self
                .cluster_stores
                .get(&ObjectRef::new_with(name, self.resources.1.clone())),
        };
        object.map(|o| parse_store(kind, &o)).transpose()
    }

    /// Every Secret a valid store names as a credential.
    fn referenced_credentials(&self) -> BTreeSet<SecretId> {
        let secret_stores = self.secret_stores.state().into_iter();
        let cluster_stores = self.cluster_stores.state().into_iter();
        secret_stores
            .map(|o| (StoreKind::SecretStore, o))
            .chain(cluster_stores.map(|o| (StoreKind::ClusterSecretStore, o)))
            .filter_map(|(kind, object)| parse_store(kind, &object).ok())
            .flat_map(|store| store.credential_secrets())
            .collect()
    }
}

fn parse_store(kind: StoreKind, object: &DynamicObject) -> Result<Store, ProviderError> {
    let mut value = serde_json::to_value(object).map_err(|e| ProviderError::InvalidStore {
        field: "(object)".into(),
        reason: e.to_string(),
    })?;
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), Value::String(kind.as_str().into()));
        map.insert(
            "apiVersion".into(),
            Value::String(Version::V1.api_version().into()),
        );
    }
    Store::from_value(&value)
}

/// A Namespace's cache needs its name and labels.
fn keep_labels_only(namespace: &mut PartialObjectMeta<Namespace>) {
    let meta = &mut namespace.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

impl ClusterCatalog {
    /// Starts the reflectors and the credential watches (needs a Tokio
    /// runtime). Use [`Self::ready`] before serving.
    pub fn start(client: Client) -> Self {
        let resource = |kind: &str| {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(GROUP, Version::V1.as_str(), kind),
                &format!("{}s", kind.to_lowercase()),
            )
        };
        let credentials = Arc::new(CredentialWatches::new(client.clone()));
        // Wakes the task that follows the stores' credentials; a permit is
        // kept while it is busy, so no change of a store is missed.
        let stores_changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();

        let mut store_cache = |ar: ApiResource| {
            let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
            let cache = writer.as_reader();
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let changed = Arc::clone(&stores_changed);
            tasks.push(reflectors::spawn(
                "stores",
                watcher(api, watcher::Config::default()),
                writer,
                reflectors::strip,
                move |event| {
                    if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
                        changed.notify_one();
                    }
                },
            ));
            cache
        };
        let stores = StoreCaches {
            secret_stores: store_cache(resource("SecretStore")),
            cluster_stores: store_cache(resource("ClusterSecretStore")),
            resources: (resource("SecretStore"), resource("ClusterSecretStore")),
        };

        let (namespaces, writer) = reflector::store();
        tasks.push(reflectors::spawn(
            "namespaces",
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            ),
            writer,
            keep_labels_only,
            |_| {},
        ));

        tasks.push(AbortOnDropHandle::new(tokio::spawn({
            let (stores, credentials) = (stores.clone(), Arc::clone(&credentials));
            async move {
                loop {
                    stores_changed.notified().await;
                    credentials.follow(&stores.referenced_credentials());
                }
            }
        })));

        Self {
            client,
            stores,
            namespaces,
            credentials,
            _tasks: tasks,
        }
    }

    /// The `/readyz` check that passes once [`Self::ready`] has resolved:
    /// before, every store would look absent and every injecting pod be
    /// denied.
    pub fn synced_check(self: &Arc<Self>) -> Arc<dyn ReadinessCheck> {
        let check = StoresSynced::default();
        let synced = Arc::clone(&check.0);
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            catalog.ready().await;
            synced.store(true, Ordering::Relaxed);
        });
        Arc::new(check)
    }

    /// Resolves once the stores and namespaces are listed and every
    /// credential Secret they reference has been looked at.
    pub async fn ready(&self) {
        // An error means the writer is gone (catalog shutting down); nothing to wait for.
        let _ = futures::join!(
            self.stores.secret_stores.wait_until_ready(),
            self.stores.cluster_stores.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
        self.credentials
            .follow(&self.stores.referenced_credentials());
        self.credentials.ready().await;
    }
}

impl StoreCatalog for ClusterCatalog {
    fn store(
        &self,
        kind: StoreKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Store>>, ProviderError> {
        Ok(self.stores.get(kind, namespace, name)?.map(Arc::new))
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let object = self.namespaces.get(&ObjectRef::new(namespace))?;
        let mut labels = object.metadata.labels.clone().unwrap_or_default();
        labels
            .entry(NAME_LABEL.into())
            .or_insert_with(|| namespace.to_string());
        Some(labels)
    }

    fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.credentials.version(namespace, name)
    }

    fn read_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<SecretData, CatalogError>> {
        async move {
            let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await?;
            Ok(secret_data(&secret))
        }
        .boxed()
    }

    fn service_account_token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, CatalogError>> {
        async move {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: audiences.to_vec(),
                    expiration_seconds: Some(600),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
            let response = api
                .create_token_request(name, &PostParams::default(), &request)
                .await?;
            let status = response
                .status
                .ok_or(CatalogError::Unsupported("the TokenRequest has no status"))?;
            Ok(SecretValue::from(status.token))
        }
        .boxed()
    }

    fn service_account_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, CatalogError>> {
        async move {
            let account = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await?;
            Ok(account.metadata.annotations.unwrap_or_default())
        }
        .boxed()
    }

    fn kube_client(&self) -> Option<Client> {
        Some(self.client.clone())
    }
}

/// `/readyz` check: the cluster's stores have been listed.
#[derive(Debug, Default)]
struct StoresSynced(Arc<AtomicBool>);

impl ReadinessCheck for StoresSynced {
    fn checks(&self, _now: i64) -> Vec<Check> {
        const NAME: &str = "stores-synced";
        vec![if self.0.load(Ordering::Relaxed) {
            Check::passed(
                NAME,
                "SecretStores, ClusterSecretStores and Namespaces listed, and the credential Secrets they reference",
            )
        } else {
            Check::failed(
                NAME,
                "waiting for the first list of SecretStores, ClusterSecretStores and Namespaces, and of the credential Secrets they reference",
            )
        }]
    }
}
