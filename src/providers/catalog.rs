//! Where stores, namespace labels and credential Secrets come from.
//!
//! [`StoreCatalog`] is the narrow interface the layer reads through. In a
//! cluster, [`ClusterCatalog`] answers from kube reflectors (no request ever
//! issues a GET for a store or a namespace); standalone, [`FileCatalog`]
//! answers from the `--stores` manifest, reloaded when it changes.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::spec::{GROUP, Store, StoreKind, VERSION};
use super::{ProviderError, SecretValue};

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

/// In-cluster catalog: reflectors over SecretStores, ClusterSecretStores,
/// Namespaces (metadata only) and Secrets (metadata only, for their
/// resourceVersions). Secret data is read with a GET only when a client is
/// built. The reflector tasks stop when the catalog is dropped.
pub struct ClusterCatalog {
    client: Client,
    secret_stores: reflector::Store<DynamicObject>,
    cluster_stores: reflector::Store<DynamicObject>,
    store_resources: (ApiResource, ApiResource),
    namespaces: reflector::Store<PartialObjectMeta<Namespace>>,
    secrets: reflector::Store<PartialObjectMeta<Secret>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterCatalog {
    /// Starts the reflectors (needs a Tokio runtime). Use [`Self::ready`]
    /// before serving.
    pub fn start(client: Client) -> Self {
        let resource = |kind: &str| {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(GROUP, VERSION, kind),
                &format!("{}s", kind.to_lowercase()),
            )
        };
        let secret_store = resource("SecretStore");
        let cluster_store = resource("ClusterSecretStore");
        let mut tasks = Vec::new();

        let mut dynamic = |ar: &ApiResource| {
            let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
            let reader = writer.as_reader();
            let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            );
            tasks.push(tokio::spawn(
                stream.for_each(|_| futures::future::ready(())),
            ));
            reader
        };
        let secret_stores = dynamic(&secret_store);
        let cluster_stores = dynamic(&cluster_store);

        let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        tasks.push(tokio::spawn(
            stream.for_each(|_| futures::future::ready(())),
        ));

        let (secrets, writer) = reflector::store::<PartialObjectMeta<Secret>>();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        tasks.push(tokio::spawn(
            stream.for_each(|_| futures::future::ready(())),
        ));

        Self {
            client,
            secret_stores,
            cluster_stores,
            store_resources: (secret_store, cluster_store),
            namespaces,
            secrets,
            tasks,
        }
    }

    /// Resolves once every reflector has listed its objects.
    pub async fn ready(&self) {
        // An error means the writer is gone (catalog shutting down); nothing to wait for.
        let _ = futures::join!(
            self.secret_stores.wait_until_ready(),
            self.cluster_stores.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.secrets.wait_until_ready()
        );
    }
}

impl Drop for ClusterCatalog {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl StoreCatalog for ClusterCatalog {
    fn store(
        &self,
        kind: StoreKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Store>>, ProviderError> {
        let object = match kind {
            StoreKind::SecretStore => self
                .secret_stores
                .get(&ObjectRef::new_with(name, self.store_resources.0.clone()).within(namespace)),
            StoreKind::ClusterSecretStore => self
                .cluster_stores
                .get(&ObjectRef::new_with(name, self.store_resources.1.clone())),
        };
        let Some(object) = object else {
            return Ok(None);
        };
        let mut value =
            serde_json::to_value(&*object).map_err(|e| ProviderError::InvalidStore {
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
        Store::from_value(&value).map(|s| Some(Arc::new(s)))
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
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))?
            .metadata
            .resource_version
            .clone()
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
