//! Pod secret injection: a pod names secrets held in an external backend,
//! and keyhook makes them appear in its containers without a value ever
//! entering the pod spec.
//!
//! ```text
//! /mutate-pod ─▶ PodInjector::admit
//!                  ├─ reference::PodRequest::from_pod     parse (pure)
//!                  ├─ ValueSource (provider layer)        resolve store, fetch
//!                  ├─ ManagedSecrets (cluster | files)    materialize keyhook-<hash>, single-flight
//!                  └─ patch::build                        JSON patch (pure)
//! leader only:    refresh::run_refresh · refresh::run_gc   (read caches::ManagedCaches)
//! ```

pub mod caches;
mod injector;
pub mod managed;
pub mod patch;
pub mod pod;
pub mod reference;
pub mod refresh;
pub mod secret;
pub mod source;

pub use caches::ManagedCaches;
pub use injector::PodInjector;
pub use managed::ManagedSecret;
pub use pod::AdmittedPod;
pub use reference::{PodRequest, Reference, ReferenceError, SecretSpec};
pub use refresh::{RefreshSettings, run_gc, run_refresh};
pub use secret::{ClusterSecrets, FileSecrets, ManagedSecrets, MeteredSecrets, SecretsError};
pub use source::{StorePolicy, ValueSource};

use crate::providers::ProviderError;

/// Why a pod could not be injected. Messages name the container, variable,
/// annotation, store, key or Secret at fault, never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum InjectionError {
    /// A reference or annotation is malformed.
    #[error(transparent)]
    Request(#[from] ReferenceError),
    /// The store could not be used or a value could not be fetched.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Two properties of an `env-from` key make the same env var name.
    #[error(
        "annotation `keyhook.io/env-from`: key `{key}`: properties `{first}` and `{second}` both become the variable `{name}`"
    )]
    EnvCollision {
        /// The key.
        key: String,
        /// One property.
        first: String,
        /// The other.
        second: String,
        /// The env var name both sanitize to.
        name: String,
    },
    /// The managed Secret could not be read or written.
    #[error("managed Secret {secret}: {source}")]
    Secret {
        /// `namespace/name`.
        secret: String,
        /// What failed; shared, since one failure answers every admission
        /// that waited on the same materialization.
        #[source]
        source: std::sync::Arc<SecretsError>,
    },
    /// The deadline passed while another admission of the same workload was
    /// materializing its Secret.
    #[error("managed Secret {secret}: not ready before the --request-timeout deadline")]
    Deadline {
        /// `namespace/name`.
        secret: String,
    },
}

impl InjectionError {
    /// Whether `keyhook.io/on-error: allow` may admit the pod anyway: failures
    /// of the backend or the write, not a malformed request.
    pub fn is_operational(&self) -> bool {
        !matches!(
            self,
            InjectionError::Request(_) | InjectionError::EnvCollision { .. }
        )
    }
}

/// Lowercase hex SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
