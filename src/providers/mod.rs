//! The provider layer: every fetch of a secret value goes through here.
//!
//! ```text
//! Providers::client(store ref, namespace)      resolve (catalog, store) + authorize (conditions)
//!   └─ client cache (moka, built once per key)  one StoreClient per store identity (ClientKey)
//!        └─ StoreHandle::get_secret(ref, deadline)
//!             result cache → coalescing (single_flight) → rate limit → in-flight cap
//!             → backoff → backend (backends::BackendClient)
//! ```
//!
//! A store is read into the [`crate::apis::v1`] types the webhooks validate
//! and convert, and narrowed to a [`Store`]: there is one model of it.
//!
//! Three production failures are impossible by construction:
//! - **wrong backend**: a client is keyed by the store's full identity
//!   ([`ClientKey`]) and owns all of its state; nothing is shared between
//!   clients, no provider is a singleton;
//! - **thundering herd**: identical concurrent fetches share one call, every
//!   store has its own token bucket and in-flight cap, throttling is retried
//!   with full-jitter backoff inside the caller's deadline;
//! - **per-store serialization**: no lock is held across an await; clients are
//!   built by moka's per-key single-flight, so one slow store never blocks another.

pub mod backends;
mod backoff;
mod cache;
mod catalog;
mod client;
mod conditions;
mod store;
mod value;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::apis::StoreKind;
pub use cache::{ClientKey, Providers, StoreHandle};
pub use catalog::{
    CatalogError, ClusterCatalog, FileCatalog, SecretData, StoreCatalog, StoresSummary,
    StoresWarning, log_stores_loaded,
};
pub use conditions::admits;
pub use store::{AWS_ENDPOINT_ANNOTATION, ProviderConfig, QPS_ANNOTATION, Store};
pub use value::{SecretMap, SecretValue};

/// What a reference names in a backend: upstream's `ExternalSecretDataRemoteRef`
/// fields the fetch path uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteRef {
    /// The key (path, name, item title …).
    pub key: String,
    /// One property of the key (JSON field, data key, field label).
    pub property: Option<String>,
    /// A version; backend default (latest) when `None`.
    pub version: Option<String>,
}

impl RemoteRef {
    /// A reference to a whole key at its latest version.
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            property: None,
            version: None,
        }
    }

    /// The same reference narrowed to one property.
    pub fn with_property(mut self, property: impl Into<String>) -> Self {
        self.property = Some(property.into());
        self
    }

    /// The same reference pinned to a version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// Which store a reference uses (`secretStoreRef` in upstream's resources).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreRef {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// The store's name; a SecretStore is looked up in the caller's namespace.
    pub name: String,
}

impl StoreRef {
    /// A namespaced `SecretStore`.
    pub fn secret_store(name: impl Into<String>) -> Self {
        Self {
            kind: StoreKind::SecretStore,
            name: name.into(),
        }
    }

    /// A `ClusterSecretStore`.
    pub fn cluster_secret_store(name: impl Into<String>) -> Self {
        Self {
            kind: StoreKind::ClusterSecretStore,
            name: name.into(),
        }
    }
}

/// Settings of the provider layer, wired to `serve` flags.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// Requests per second per store (`--provider-qps`, default 10); a store
    /// overrides it with the `keyhook.io/qps` annotation.
    pub qps: f64,
    /// Token-bucket burst per store (`--provider-burst`, default 20).
    pub burst: u32,
    /// Backend calls in flight per store (default 32).
    pub max_in_flight: usize,
    /// Result-cache TTL per store (`--provider-cache-ttl`, default 0 = off).
    pub cache_ttl: Duration,
    /// Memory bound of each store's result cache, in bytes (default 16 MiB).
    pub cache_max_bytes: u64,
    /// An idle client is dropped after this long (default 10 minutes).
    pub client_idle: Duration,
    /// The least time between two logins of one store after the backend
    /// refused a logged-in token that had worked (revoked early): the next
    /// fetch after it logs in again (default 30 s).
    pub relogin_interval: Duration,
    /// Standalone stores file (`--stores FILE`); `None` in a cluster.
    pub stores_file: Option<PathBuf>,
    /// keyhook's own AWS identity (from its environment; none by default).
    pub aws: backends::aws::AwsEnvironment,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            qps: 10.0,
            burst: 20,
            max_in_flight: 32,
            cache_ttl: Duration::ZERO,
            cache_max_bytes: 16 * 1024 * 1024,
            client_idle: Duration::from_secs(600),
            relogin_interval: Duration::from_secs(30),
            stores_file: None,
            aws: backends::aws::AwsEnvironment::default(),
        }
    }
}

/// Errors of the provider layer. Messages name the store, the key and the
/// field at fault; they never contain a secret value.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ProviderError {
    /// A store document does not parse or is inconsistent.
    #[error("invalid store: `{field}`: {reason}")]
    InvalidStore {
        /// The field path at fault, e.g. `spec.provider.vault.server`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A document of the stores file is invalid; the last good set stays in force.
    #[error("document {document} ({object}): `{field}`: {reason}")]
    InvalidDocument {
        /// 1-based position of the document in the file.
        document: usize,
        /// The object, e.g. `SecretStore shop/demo`.
        object: String,
        /// The field path at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stores file is not YAML.
    #[error("not valid YAML: {reason}")]
    StoresSyntax {
        /// The parser's message, with line and column.
        reason: String,
    },
    /// The stores file cannot be read at all.
    #[error("stores file {path}: {reason}")]
    StoresFile {
        /// The file.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
    /// No such store.
    #[error("{kind} `{store}` not found")]
    StoreNotFound {
        /// Store kind.
        kind: StoreKind,
        /// `namespace/name` or `name`.
        store: String,
    },
    /// The store exists but may not be used from this namespace.
    #[error("{kind} `{store}` does not admit namespace `{namespace}`: {reason}")]
    NotAdmitted {
        /// Store kind.
        kind: StoreKind,
        /// Store name.
        store: String,
        /// The namespace that asked.
        namespace: String,
        /// Which rule refused it.
        reason: String,
    },
    /// A credential the store references cannot be read.
    #[error("store `{store}`: credential `{reference}`: {reason}")]
    Credentials {
        /// Store name.
        store: String,
        /// `namespace/secret[key]` of the reference.
        reference: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The backend client cannot be built (bad endpoint, CA, login refused).
    #[error("store `{store}`: cannot build {provider} client: {reason}")]
    ClientBuild {
        /// Store name.
        store: String,
        /// Backend name.
        provider: &'static str,
        /// Why.
        reason: String,
    },
    /// The key (or version, or property) does not exist.
    #[error("store `{store}`: key `{key}` not found: {reason}")]
    NotFound {
        /// Store name.
        store: String,
        /// The key asked for.
        key: String,
        /// What the backend said.
        reason: String,
    },
    /// The store's credentials may not read the key.
    #[error("store `{store}`: permission denied for key `{key}`: {reason}")]
    PermissionDenied {
        /// Store name.
        store: String,
        /// The key asked for.
        key: String,
        /// What the backend said.
        reason: String,
    },
    /// The caller's deadline passed (waiting for a token, a slot, or retrying).
    #[error("store `{store}`: key `{key}`: deadline exceeded after {attempts} attempt(s){}", last.as_deref().map(|l| format!("; last error: {l}")).unwrap_or_default())]
    DeadlineExceeded {
        /// Store name.
        store: String,
        /// The key asked for.
        key: String,
        /// Backend calls made.
        attempts: u32,
        /// The last retryable failure, if any.
        last: Option<String>,
    },
    /// Any other backend failure (bad answer, unsupported reference).
    #[error("store `{store}`: key `{key}`: {reason}")]
    Backend {
        /// Store name.
        store: String,
        /// The key asked for.
        key: String,
        /// What went wrong.
        reason: String,
    },
}
