//! The `external-secrets.io` custom resources, `ExternalSecret`, `SecretStore`
//! and `ClusterSecretStore`, in `v1alpha1`, `v1beta1` and `v1` (storage and
//! hub): types, lossless conversion, validation, CRD manifests and the
//! offline converter.
//!
//! Everything here is pure: the server and the CLI own the I/O.

pub mod common;
pub mod convert;
pub mod crds;
pub mod offline;
pub mod providers;
pub mod review;
pub mod v1;
pub mod v1alpha1;
pub mod v1beta1;
pub mod validate;

pub use convert::stash::ANNOTATION as CONVERSION_ANNOTATION;
pub use convert::{
    ConversionError, REMOVED_HELPERS, convert_object, removed_helpers, removed_helpers_in_template,
};
pub use crds::{crds, crds_yaml};
pub use offline::{Converted, OfflineError, Warning, convert_documents};
pub use review::convert_review;
pub use validate::validate;

/// The API group of every resource here.
pub const GROUP: &str = "external-secrets.io";

/// A served version of the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// `external-secrets.io/v1alpha1` (deprecated).
    V1Alpha1,
    /// `external-secrets.io/v1beta1` (deprecated).
    V1Beta1,
    /// `external-secrets.io/v1`, the storage version and hub.
    V1,
}

impl Version {
    /// Every served version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1Alpha1, Version::V1Beta1, Version::V1];

    /// The bare version, e.g. `v1beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1Alpha1 => "v1alpha1",
            Version::V1Beta1 => "v1beta1",
            Version::V1 => "v1",
        }
    }

    /// The full `apiVersion`, e.g. `external-secrets.io/v1beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Version::V1Alpha1 => "external-secrets.io/v1alpha1",
            Version::V1Beta1 => "external-secrets.io/v1beta1",
            Version::V1 => "external-secrets.io/v1",
        }
    }

    /// Parses a full `apiVersion` of this group.
    pub fn from_api_version(api_version: &str) -> Option<Self> {
        let version = api_version.strip_prefix(GROUP)?.strip_prefix('/')?;
        Self::ALL.into_iter().find(|v| v.as_str() == version)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version given on the command line was not understood.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a served version: expected v1alpha1, v1beta1 or v1")]
pub struct UnknownVersion(String);

impl std::str::FromStr for Version {
    type Err = UnknownVersion;

    /// Accepts `v1beta1` as well as `external-secrets.io/v1beta1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_api_version(text)
            .or_else(|| Self::ALL.into_iter().find(|v| v.as_str() == text))
            .ok_or_else(|| UnknownVersion(text.to_owned()))
    }
}

pub use common::StoreKind;

/// A kind of the group: an `ExternalSecret` or one of the [`StoreKind`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `ExternalSecret` (namespaced).
    ExternalSecret,
    /// `SecretStore` (namespaced).
    SecretStore,
    /// `ClusterSecretStore` (cluster-scoped).
    ClusterSecretStore,
}

impl Kind {
    /// The kind's name, e.g. `SecretStore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ExternalSecret => "ExternalSecret",
            Kind::SecretStore => "SecretStore",
            Kind::ClusterSecretStore => "ClusterSecretStore",
        }
    }

    /// Parses a kind name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Kind::ExternalSecret,
            Kind::SecretStore,
            Kind::ClusterSecretStore,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

impl From<StoreKind> for Kind {
    fn from(kind: StoreKind) -> Self {
        match kind {
            StoreKind::SecretStore => Kind::SecretStore,
            StoreKind::ClusterSecretStore => Kind::ClusterSecretStore,
        }
    }
}
