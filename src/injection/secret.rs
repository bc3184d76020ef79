//! Where managed Secrets are kept.
//!
//! [`ManagedSecrets`] is the narrow interface the injector and the leader
//! loops use. [`ClusterSecrets`] writes Kubernetes Secrets with server-side
//! apply and answers the loops from the watched [`ManagedCaches`];
//! [`FileSecrets`] writes the same Secret as a manifest under
//! `--secrets-dir` for standalone runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

use super::caches::ManagedCaches;
use super::managed::{ManagedSecret, manifest, record};
use crate::FIELD_MANAGER;
use crate::metrics::{SecretWrite, SecretWriteMetrics};
use crate::providers::SecretValue;

/// Why a managed Secret could not be read, written or deleted. Messages name
/// the Secret or the file, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The apiserver refused the request or could not be reached.
    #[error("{action} Secret {secret}: {source}")]
    Api {
        /// What keyhook was doing: `reading`, `writing` or `deleting`.
        action: &'static str,
        /// `namespace/name`.
        secret: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Another writer kept changing the Secret while keyhook applied it.
    #[error("writing Secret {secret}: conflict: {source}")]
    Conflict {
        /// `namespace/name`.
        secret: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// A Secret file could not be read, written or deleted.
    #[error("{doing}{file}: {source}", doing = .action.map(|a| format!("{a} ")).unwrap_or_default(), file = .path.display())]
    Io {
        /// What keyhook was doing, when it adds to the OS's message.
        action: Option<&'static str>,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Secret file is not a Secret manifest, or a Secret could not be
    /// rendered as one.
    #[error("{what}: {reason}")]
    Invalid {
        /// The file, or `serializing Secret namespace/name`.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// The listing caches were not started (a [`ClusterSecrets`] without
    /// [`ClusterSecrets::with_caches`]).
    #[error("no caches of managed Secrets and injected pods were started")]
    NoCaches,
}

impl SecretsError {
    /// Whether the write lost to a concurrent writer and may succeed when
    /// tried again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, SecretsError::Conflict { .. })
    }
}

/// Where managed Secrets are kept: the cluster, or a directory standalone.
pub trait ManagedSecrets: Send + Sync + 'static {
    /// Reads one managed Secret; `None` when absent (or not keyhook's).
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ManagedSecret>, SecretsError>>;

    /// Creates or replaces a managed Secret with `data`.
    fn apply<'a>(
        &'a self,
        secret: &'a ManagedSecret,
        data: &'a BTreeMap<String, SecretValue>,
    ) -> BoxFuture<'a, Result<(), SecretsError>>;

    /// Every managed Secret; `keys` may be left empty (the loops that list
    /// need references and fetch times, not data).
    fn list(&self) -> BoxFuture<'_, Result<Vec<ManagedSecret>, SecretsError>>;

    /// Deletes a managed Secret (absent is fine).
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), SecretsError>>;

    /// `(namespace, name)` of every managed Secret an existing pod uses.
    fn in_use(&self) -> BoxFuture<'_, Result<BTreeSet<(String, String)>, SecretsError>>;
}

/// A [`ManagedSecrets`] whose writes are counted and timed in
/// `keyhook_secret_writes_total` and `keyhook_secret_write_duration_seconds`;
/// reads pass through.
pub struct MeteredSecrets<B> {
    inner: B,
    metrics: SecretWriteMetrics,
}

impl<B: ManagedSecrets> MeteredSecrets<B> {
    /// Records the writes made through `inner` in `metrics`.
    pub fn new(inner: B, metrics: SecretWriteMetrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed(
        &self,
        operation: SecretWrite,
        write: BoxFuture<'_, Result<(), SecretsError>>,
    ) -> Result<(), SecretsError> {
        let start = tokio::time::Instant::now();
        let result = write.await;
        self.metrics
            .record(operation, result.is_ok(), start.elapsed().as_secs_f64());
        result
    }
}

impl<B: ManagedSecrets> ManagedSecrets for MeteredSecrets<B> {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ManagedSecret>, SecretsError>> {
        self.inner.get(namespace, name)
    }

    fn apply<'a>(
        &'a self,
        secret: &'a ManagedSecret,
        data: &'a BTreeMap<String, SecretValue>,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        async move {
            self.timed(SecretWrite::Apply, self.inner.apply(secret, data))
                .await?;
            // Names and key count only: never a value.
            tracing::info!(
                secret = %format_args!("{}/{}", secret.namespace, secret.name),
                keys = data.len(),
                "Secret written"
            );
            Ok(())
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ManagedSecret>, SecretsError>> {
        self.inner.list()
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        self.timed(SecretWrite::Delete, self.inner.delete(namespace, name))
            .boxed()
    }

    fn in_use(&self) -> BoxFuture<'_, Result<BTreeSet<(String, String)>, SecretsError>> {
        self.inner.in_use()
    }
}

/// Managed Secrets in the cluster: written with server-side apply, read by
/// name; the loops' listings come from [`ManagedCaches`], never from a LIST.
#[derive(Clone)]
pub struct ClusterSecrets {
    client: Client,
    caches: Option<Arc<ManagedCaches>>,
}

impl ClusterSecrets {
    /// Writes and reads through `client`. Without [`Self::with_caches`],
    /// [`ManagedSecrets::list`] and [`ManagedSecrets::in_use`] fail.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            caches: None,
        }
    }

    /// Answers the refresh and GC loops from `caches`.
    pub fn with_caches(mut self, caches: Arc<ManagedCaches>) -> Self {
        self.caches = Some(caches);
        self
    }

    fn caches(&self) -> Result<&ManagedCaches, SecretsError> {
        self.caches.as_deref().ok_or(SecretsError::NoCaches)
    }
}

/// Attempts of one apply; a conflict is retried (server-side apply with
/// `force` makes it rare).
const APPLY_ATTEMPTS: usize = 3;

impl ManagedSecrets for ClusterSecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ManagedSecret>, SecretsError>> {
        async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|source| SecretsError::Api {
                    action: "reading",
                    secret: format!("{namespace}/{name}"),
                    source,
                })?;
            Ok(found.as_ref().and_then(record))
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        secret: &'a ManagedSecret,
        data: &'a BTreeMap<String, SecretValue>,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
            let object = manifest(secret, data);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let mut attempt = 0;
            loop {
                attempt += 1;
                match api.patch(&secret.name, &params, &Patch::Apply(&object)).await {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 && attempt < APPLY_ATTEMPTS => {
                        tracing::debug!(secret = %secret.name, attempt, "apply conflicted; retrying");
                    }
                    Err(source) => {
                        let secret = format!("{}/{}", secret.namespace, secret.name);
                        return Err(match &source {
                            kube::Error::Api(status) if status.code == 409 => {
                                SecretsError::Conflict { secret, source }
                            }
                            _ => SecretsError::Api {
                                action: "writing",
                                secret,
                                source,
                            },
                        });
                    }
                }
            }
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ManagedSecret>, SecretsError>> {
        async move { Ok(self.caches()?.managed().await) }.boxed()
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(source) => Err(SecretsError::Api {
                    action: "deleting",
                    secret: format!("{namespace}/{name}"),
                    source,
                }),
            }
        }
        .boxed()
    }

    fn in_use(&self) -> BoxFuture<'_, Result<BTreeSet<(String, String)>, SecretsError>> {
        async move { Ok(self.caches()?.in_use().await) }.boxed()
    }
}

/// Standalone: each managed Secret is a manifest `<dir>/<namespace>/<name>.yaml`
/// with mode 0600, written atomically (temporary file, then rename).
#[derive(Debug, Clone)]
pub struct FileSecrets {
    dir: PathBuf,
}

impl FileSecrets {
    /// Keeps Secrets under `dir` (`--secrets-dir`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Where the Secret `namespace/name` is written.
    pub fn path(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir.join(namespace).join(format!("{name}.yaml"))
    }

    fn read(path: &Path) -> Result<Option<Secret>, SecretsError> {
        Self::parse(path, std::fs::read_to_string(path))
    }

    fn parse(path: &Path, text: std::io::Result<String>) -> Result<Option<Secret>, SecretsError> {
        match text {
            Ok(text) => {
                serde_saphyr::from_str(&text)
                    .map(Some)
                    .map_err(|e| SecretsError::Invalid {
                        what: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SecretsError::Io {
                action: None,
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension(format!("yaml.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

impl ManagedSecrets for FileSecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ManagedSecret>, SecretsError>> {
        let path = self.path(namespace, name);
        async move {
            let text = tokio::fs::read_to_string(&path).await;
            Ok(Self::parse(&path, text)?.as_ref().and_then(record))
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        secret: &'a ManagedSecret,
        data: &'a BTreeMap<String, SecretValue>,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        let path = self.path(&secret.namespace, &secret.name);
        async move {
            let text = serde_saphyr::to_string(&manifest(secret, data)).map_err(|e| {
                SecretsError::Invalid {
                    what: format!("serializing Secret {}/{}", secret.namespace, secret.name),
                    reason: e.to_string(),
                }
            })?;
            let written = tokio::task::spawn_blocking({
                let path = path.clone();
                move || write_private(&path, &text)
            })
            .await
            .map_err(|e| SecretsError::Io {
                action: Some("writing"),
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            written.map_err(|source| SecretsError::Io {
                action: Some("writing"),
                path,
                source,
            })
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ManagedSecret>, SecretsError>> {
        async move {
            let mut found = Vec::new();
            let namespaces = match std::fs::read_dir(&self.dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                Err(source) => {
                    return Err(SecretsError::Io {
                        action: None,
                        path: self.dir.clone(),
                        source,
                    });
                }
            };
            for namespace in namespaces.flatten() {
                let Ok(files) = std::fs::read_dir(namespace.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    if path.extension().is_some_and(|e| e == "yaml") {
                        match Self::read(&path) {
                            Ok(Some(secret)) => found.extend(record(&secret)),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping an unreadable Secret file")
                            }
                        }
                    }
                }
            }
            Ok(found)
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), SecretsError>> {
        let path = self.path(namespace, name);
        async move {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SecretsError::Io {
                    action: Some("deleting"),
                    path,
                    source,
                }),
            }
        }
        .boxed()
    }

    fn in_use(&self) -> BoxFuture<'_, Result<BTreeSet<(String, String)>, SecretsError>> {
        // Standalone there are no pods: GC removes a Secret --gc-grace
        // after it first sees it.
        async { Ok(BTreeSet::new()) }.boxed()
    }
}
