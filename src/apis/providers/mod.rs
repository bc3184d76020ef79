//! Typed provider blocks of a store's `spec.provider`: `fake`, `kubernetes`,
//! `vault` (and `openBao`, which has the same shape), `aws` and `onepassword`.
//!
//! Every other upstream provider (`gcpsm`, `azurekv`, `doppler`, ...) is kept
//! as an opaque object: the CRD schema preserves it and conversion passes it
//! through untouched.

mod aws;
mod fake;
mod kubernetes;
mod onepassword;
mod vault;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use aws::*;
pub use fake::*;
pub use kubernetes::*;
pub use onepassword::*;
pub use vault::*;

/// `spec.provider` in `v1beta1` and `v1`: exactly one provider block.
///
/// Blocks this crate does not model are kept in [`SecretStoreProvider::other`]
/// and surface in the schema through `x-kubernetes-preserve-unknown-fields`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct SecretStoreProvider {
    /// Static key/value pairs, for tests and demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<FakeProvider>,
    /// Secrets of a (possibly remote) Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProvider>,
    /// HashiCorp Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// OpenBao, configured with the same shape as Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_bao: Option<VaultProvider>,
    /// AWS Secrets Manager or Parameter Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    /// 1Password Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onepassword: Option<OnePasswordProvider>,
    /// Any provider block not modelled above, kept as it came.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, Value>,
}

/// `spec.provider` in `v1alpha1`: the `fake` and `kubernetes` blocks had
/// their own shapes; `openBao` and `onepassword` did not exist yet (they are
/// kept like any provider block not modelled).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AlphaSecretStoreProvider {
    /// Static key/value pairs, for tests and demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<AlphaFakeProvider>,
    /// Secrets of a (possibly remote) Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<AlphaKubernetesProvider>,
    /// HashiCorp Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// AWS Secrets Manager or Parameter Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    /// Any provider block not modelled above, kept as it came.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, Value>,
}
