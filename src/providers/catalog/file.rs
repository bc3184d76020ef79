//! The standalone catalog: the `--stores` manifest, parsed whole, checked
//! for fields keyhook does not know, and swapped in atomically on reload.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{CatalogError, NAME_LABEL, SecretData, StoreCatalog, secret_data};
use crate::apis::{self, Kind, Version};
use crate::providers::{ProviderError, SecretValue};
use crate::providers::{Store, StoreKind};

/// Something in the stores file that loads but will not work as written:
/// a field keyhook does not know (a typo, mostly), which it ignores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoresWarning {
    /// 1-based index of the document in the file.
    pub document: usize,
    /// The object, e.g. `SecretStore shop/demo`.
    pub object: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for StoresWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "document {} ({}): {}",
            self.document, self.object, self.message
        )
    }
}

/// What the stores file in force holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoresSummary {
    /// SecretStores and ClusterSecretStores.
    pub stores: usize,
    /// Credential Secrets.
    pub secrets: usize,
    /// Namespaces with labels.
    pub namespaces: usize,
    /// Stores written in `v1alpha1` or `v1beta1`, converted to `v1`.
    pub converted: usize,
    /// Fields keyhook ignored, by document.
    pub warnings: Vec<StoresWarning>,
}

/// One parsed stores file.
#[derive(Default)]
struct Snapshot {
    stores: HashMap<(StoreKind, String, String), Arc<Store>>,
    secrets: HashMap<(String, String), SecretData>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    converted: usize,
    warnings: Vec<StoresWarning>,
}

impl Snapshot {
    fn parse(text: &str) -> Result<Self, Vec<ProviderError>> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| {
            vec![ProviderError::StoresSyntax {
                reason: e.to_string(),
            }]
        })?;
        let mut snapshot = Snapshot::default();
        let mut errors = Vec::new();
        for (index, document) in documents.iter().enumerate() {
            let document_number = index + 1;
            if document.is_null() {
                continue;
            }
            let object = describe(document);
            match snapshot.add(document) {
                Ok(unknown) => {
                    snapshot
                        .warnings
                        .extend(unknown.into_iter().map(|message| StoresWarning {
                            document: document_number,
                            object: object.clone(),
                            message,
                        }))
                }
                Err((field, reason)) => errors.push(ProviderError::InvalidDocument {
                    document: document_number,
                    object,
                    field,
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(errors)
        }
    }

    /// Adds one document; returns a warning for each field keyhook does not know.
    fn add(&mut self, document: &Value) -> Result<Vec<String>, (String, String)> {
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "SecretStore" | "ClusterSecretStore" => self.add_store(document, kind),
            "Secret" => {
                let (secret, unknown) = typed::<Secret>(document)?;
                let name = named(secret.metadata.name.as_deref())?;
                let namespace = secret
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                self.secrets.insert((namespace, name), secret_data(&secret));
                Ok(ignored(unknown))
            }
            "Namespace" => {
                let (namespace, unknown) = typed::<Namespace>(document)?;
                let name = named(namespace.metadata.name.as_deref())?;
                let mut labels = namespace.metadata.labels.unwrap_or_default();
                labels.insert(NAME_LABEL.into(), name.clone());
                self.namespaces.insert(name, labels);
                Ok(ignored(unknown))
            }
            other => Err((
                "kind".into(),
                format!("`{other}` is not SecretStore, ClusterSecretStore, Secret or Namespace"),
            )),
        }
    }

    /// A store of any served version; older ones are converted to `v1`
    /// with the code the `/convert` webhook runs.
    fn add_store(&mut self, document: &Value, kind: &str) -> Result<Vec<String>, (String, String)> {
        // Without an apiVersion a store is read as `v1`.
        let api_version = document
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(Version::V1.api_version());
        let version = Version::from_api_version(api_version).ok_or_else(|| {
            (
                "apiVersion".to_string(),
                format!("`{api_version}` is not external-secrets.io/v1, v1beta1 or v1alpha1"),
            )
        })?;
        let unknown: Vec<String> = match Kind::from_name(kind) {
            Some(kind) => apis::offline::unknown_fields(kind, version, document)
                .map_err(|reason| ("(schema)".to_string(), reason))?,
            None => Vec::new(),
        }
        .into_iter()
        .map(|field| {
            format!(
                "{field}: unknown field, not in the {} schema (a cluster's apiserver would drop it)",
                version.api_version()
            )
        })
        .collect();
        let converted = if version == Version::V1 {
            None
        } else {
            Some(
                apis::convert_object(document.clone(), Version::V1)
                    .map_err(|e| ("(conversion to v1)".to_string(), e.to_string()))?,
            )
        };
        let store = Store::from_value(converted.as_ref().unwrap_or(document)).map_err(|e| {
            let (field, reason) = match e {
                ProviderError::InvalidStore { field, reason } => (field, reason),
                other => ("(store)".into(), other.to_string()),
            };
            match converted {
                Some(_) => (field, format!("{reason} (in the store converted to v1)")),
                None => (field, reason),
            }
        })?;
        let key = (
            store.kind,
            store.namespace.clone().unwrap_or_default(),
            store.name.clone(),
        );
        if self.stores.insert(key, Arc::new(store)).is_some() {
            return Err((
                "metadata.name".into(),
                format!("{kind} `{}` is defined twice", describe_name(document)),
            ));
        }
        self.converted += usize::from(converted.is_some());
        Ok(unknown)
    }

    fn summary(&self) -> StoresSummary {
        StoresSummary {
            stores: self.stores.len(),
            secrets: self.secrets.len(),
            namespaces: self.namespaces.len(),
            converted: self.converted,
            warnings: self.warnings.clone(),
        }
    }
}

/// `kind namespace/name`, for messages.
fn describe(document: &Value) -> String {
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("(no kind)");
    format!("{kind} {}", describe_name(document))
}

fn describe_name(document: &Value) -> String {
    let field = |name: &str| {
        document
            .pointer(&format!("/metadata/{name}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (field("namespace"), field("name")) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.to_string(),
        (_, None) => "(no name)".to_string(),
    }
}

fn ignored(fields: Vec<String>) -> Vec<String> {
    fields
        .into_iter()
        .map(|field| format!("{field}: unknown field, ignored"))
        .collect()
}

fn named(name: Option<&str>) -> Result<String, (String, String)> {
    name.filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ("metadata.name".to_string(), "must not be empty".to_string()))
}

/// A Kubernetes object of a built-in kind, and the paths of the fields its
/// type does not have: those a round trip through the type drops.
fn typed<T: DeserializeOwned + Serialize>(
    document: &Value,
) -> Result<(T, Vec<String>), (String, String)> {
    let object: T = serde_path_to_error::deserialize(document)
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
    let kept = serde_json::to_value(&object).unwrap_or(Value::Null);
    let mut dropped = Vec::new();
    dropped_fields(document, &kept, "", &mut dropped);
    Ok((object, dropped))
}

fn dropped_fields(original: &Value, kept: &Value, path: &str, found: &mut Vec<String>) {
    let Value::Object(fields) = original else {
        return;
    };
    for (name, value) in fields {
        let field = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match kept.get(name) {
            Some(child) => dropped_fields(value, child, &field, found),
            // An empty value may be left out by the type; it is not a typo.
            None if value.is_null() => {}
            None => found.push(field),
        }
    }
}

/// Standalone catalog: the `--stores FILE` manifest (multi-document YAML of
/// SecretStores and ClusterSecretStores of any served version, v1 Secrets
/// and v1 Namespaces).
///
/// A reload that fails keeps the last good set; errors name the document
/// (counted from 1) and the field. Namespaces not listed are known with only
/// their `kubernetes.io/metadata.name` label.
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

    /// A catalog with no stores.
    pub fn empty() -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
        }
    }

    /// Reads a catalog from a file.
    pub fn from_file(path: &Path) -> Result<Self, Vec<ProviderError>> {
        Self::from_yaml(&read(path)?)
    }

    /// What the set in force holds, and what of it keyhook ignored.
    pub fn summary(&self) -> StoresSummary {
        self.snapshot.load().summary()
    }

    /// Replaces the set with `text` when all of it is valid; otherwise keeps
    /// the current set and returns every error.
    pub fn reload(&self, text: &str) -> Result<(), Vec<ProviderError>> {
        self.snapshot.store(Arc::new(Snapshot::parse(text)?));
        Ok(())
    }

    /// Reloads from `path` whenever it changes, until the returned task is
    /// aborted. Watches the file's directory, so replacing the file (editors,
    /// the kubelet's `..data` symlink swap) is seen too. What happened is
    /// logged.
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
        let watched = directory.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|event| crate::file_events::is_change(&event, &watched)) {
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
                    Ok(()) => log_loaded(&path, &catalog.summary(), "reloaded"),
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

/// Logs what a stores file brought: one info line, and a warning for each
/// field keyhook ignored.
pub fn log_loaded(path: &Path, summary: &StoresSummary, what: &str) {
    tracing::info!(
        path = %path.display(),
        stores = summary.stores,
        secrets = summary.secrets,
        converted = summary.converted,
        "stores file {what}: {} store(s)",
        summary.stores
    );
    for warning in &summary.warnings {
        tracing::warn!(path = %path.display(), "stores file {warning}");
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
    ) -> BoxFuture<'a, Result<SecretData, CatalogError>> {
        let found = self
            .snapshot
            .load()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        async move {
            found.ok_or_else(|| CatalogError::NotFound("no such Secret in the stores file".into()))
        }
        .boxed()
    }

    fn service_account_token<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<SecretValue, CatalogError>> {
        async {
            Err(CatalogError::Unsupported(
                "service account tokens need a cluster; use a secretRef standalone",
            ))
        }
        .boxed()
    }

    fn service_account_annotations<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, CatalogError>> {
        async {
            Err(CatalogError::Unsupported(
                "service accounts need a cluster; use a secretRef standalone",
            ))
        }
        .boxed()
    }

    fn kube_client(&self) -> Option<Client> {
        None
    }
}
