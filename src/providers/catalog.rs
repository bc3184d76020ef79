//! Where stores, namespace labels and credential Secrets come from.
//!
//! [`StoreCatalog`] is the narrow interface the layer reads through. In a
//! cluster, [`ClusterCatalog`] answers from kube reflectors and watches
//! scoped to the Secrets stores reference (no request ever issues a GET for
//! a store or a namespace); standalone, [`FileCatalog`] answers from the
//! `--stores` manifest, reloaded when it changes.

mod credentials;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
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
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use self::credentials::{CredentialWatches, SecretId};

use super::spec::{GROUP, Store, StoreKind, VERSION};
use super::{ProviderError, SecretValue};
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
    ) -> BoxFuture<'a, Result<SecretData, String>>;

    /// A token for a service account (TokenRequest API in a cluster).
    fn service_account_token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, String>>;

    /// A service account's annotations (AWS IRSA names its role in one).
    fn service_account_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, String>>;

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

/// One parsed stores file.
#[derive(Default)]
struct Snapshot {
    stores: HashMap<(StoreKind, String, String), Arc<Store>>,
    secrets: HashMap<(String, String), SecretData>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    fn parse(text: &str) -> Result<Self, Vec<ProviderError>> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| {
            vec![ProviderError::InvalidDocument {
                index: 0,
                field: "(yaml)".into(),
                reason: e.to_string(),
            }]
        })?;
        let mut snapshot = Snapshot::default();
        let mut errors = Vec::new();
        for (index, document) in documents.iter().enumerate() {
            if let Err((field, reason)) = snapshot.add(document) {
                errors.push(ProviderError::InvalidDocument {
                    index,
                    field,
                    reason,
                });
            }
        }
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, document: &Value) -> Result<(), (String, String)> {
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name_of = |doc: &Value| {
            doc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match kind {
            "SecretStore" | "ClusterSecretStore" => {
                let store = Store::from_value(document).map_err(|e| match e {
                    ProviderError::InvalidStore { field, reason } => (field, reason),
                    other => ("(store)".into(), other.to_string()),
                })?;
                let key = (
                    store.kind,
                    store.namespace.clone().unwrap_or_default(),
                    store.name.clone(),
                );
                if self.stores.insert(key, Arc::new(store)).is_some() {
                    return Err((
                        "metadata.name".into(),
                        format!("{kind} `{}` is defined twice", name_of(document)),
                    ));
                }
            }
            "Secret" => {
                let secret: Secret = serde_path_to_error::deserialize(document)
                    .map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
                let name = secret
                    .metadata
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or(("metadata.name".to_string(), "must not be empty".to_string()))?;
                let namespace = secret
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                self.secrets.insert((namespace, name), secret_data(&secret));
            }
            "Namespace" => {
                let namespace: Namespace = serde_path_to_error::deserialize(document)
                    .map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
                let name = namespace
                    .metadata
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or(("metadata.name".to_string(), "must not be empty".to_string()))?;
                let mut labels = namespace.metadata.labels.unwrap_or_default();
                labels.insert(NAME_LABEL.into(), name.clone());
                self.namespaces.insert(name, labels);
            }
            other => {
                return Err((
                    "kind".into(),
                    format!(
                        "`{other}` is not SecretStore, ClusterSecretStore, Secret or Namespace"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Standalone catalog: the `--stores FILE` manifest (multi-document YAML of
/// SecretStore, ClusterSecretStore, v1 Secret and v1 Namespace documents).
///
/// A reload that fails keeps the last good set; errors name the document
/// index and field. Namespaces not listed are known with only their
/// `kubernetes.io/metadata.name` label.
pub struct FileCatalog {
    snapshot: ArcSwap<Snapshot>,
}

impl FileCatalog {
    /// A catalog from manifest text.
    pub fn from_yaml(text: &str) -> Result<Self, Vec<ProviderError>> {
        Ok(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::parse(text)?),
        })
    }

    /// Reads a catalog from a file.
    pub fn from_file(path: &Path) -> Result<Self, Vec<ProviderError>> {
        Self::from_yaml(&read(path)?)
    }

    /// Replaces the set with `text` when all of it is valid; otherwise keeps
    /// the current set and returns every error.
    pub fn reload(&self, text: &str) -> Result<(), Vec<ProviderError>> {
        self.snapshot.store(Arc::new(Snapshot::parse(text)?));
        Ok(())
    }

    /// Reloads from `path` whenever it changes, until the returned task is
    /// aborted. Watches the file's directory, so replacing the file (editors,
    /// the kubelet's `..data` symlink swap) is seen too. Errors are logged.
    pub fn watch(self: &Arc<Self>, path: PathBuf) -> Result<JoinHandle<()>, ProviderError> {
        use notify::Watcher;
        let file_error = |reason: String| ProviderError::StoresFile {
            path: path.display().to_string(),
            reason,
        };
        let directory = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    // A full channel already holds a pending reload.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| file_error(e.to_string()))?;
        watcher
            .watch(&directory, notify::RecursiveMode::NonRecursive)
            .map_err(|e| file_error(e.to_string()))?;
        let catalog = Arc::clone(self);
        // Read before spawning: a change made before the task first runs must still count.
        let mut last = read(&path).ok();
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Let a burst of events for one write settle.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                let text = match read(&path) {
                    Ok(text) => text,
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "stores file unreadable; keeping the last good set");
                        }
                        continue;
                    }
                };
                if last.as_deref() == Some(text.as_str()) {
                    continue;
                }
                match catalog.reload(&text) {
                    Ok(()) => tracing::info!(path = %path.display(), "stores file reloaded"),
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(path = %path.display(), error = %e, "stores file rejected; keeping the last good set");
                        }
                    }
                }
                last = Some(text);
            }
        }))
    }
}

fn read(path: &Path) -> Result<String, Vec<ProviderError>> {
    std::fs::read_to_string(path).map_err(|e| {
        vec![ProviderError::StoresFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        }]
    })
}

impl StoreCatalog for FileCatalog {
    fn store(
        &self,
        kind: StoreKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Store>>, ProviderError> {
        let namespace = if kind == StoreKind::SecretStore {
            namespace
        } else {
            ""
        };
        Ok(self
            .snapshot
            .load()
            .stores
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned())
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let known = self.snapshot.load().namespaces.get(namespace).cloned();
        Some(
            known.unwrap_or_else(|| {
                BTreeMap::from([(NAME_LABEL.to_string(), namespace.to_string())])
            }),
        )
    }

    fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.snapshot
            .load()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.resource_version.clone())
    }

    fn read_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<SecretData, String>> {
        let found = self
            .snapshot
            .load()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        async move { found.ok_or_else(|| "no such Secret in the stores file".to_string()) }.boxed()
    }

    fn service_account_token<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, String>> {
        async {
            Err("service account tokens need a cluster; use a secretRef standalone".to_string())
        }
        .boxed()
    }

    fn service_account_annotations<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, String>> {
        async { Err("service accounts need a cluster; use a secretRef standalone".to_string()) }
            .boxed()
    }

    fn kube_client(&self) -> Option<Client> {
        None
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
            .flat_map(|store| super::backends::credential_secrets(&store))
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
            Value::String(format!("{GROUP}/{VERSION}")),
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
                &GroupVersionKind::gvk(GROUP, VERSION, kind),
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
    ) -> BoxFuture<'a, Result<SecretData, String>> {
        async move {
            let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(secret_data(&secret))
        }
        .boxed()
    }

    fn service_account_token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, String>> {
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
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status.ok_or("the TokenRequest has no status")?;
            Ok(SecretValue::from(status.token))
        }
        .boxed()
    }

    fn service_account_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, String>> {
        async move {
            let account = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(account.metadata.annotations.unwrap_or_default())
        }
        .boxed()
    }

    fn kube_client(&self) -> Option<Client> {
        Some(self.client.clone())
    }
}
