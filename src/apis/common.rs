//! Types whose shape is the same in every served version of `external-secrets.io`:
//! references, selectors, status blocks and the typed provider blocks.
//!
//! The version modules re-use these so that a shape shared by upstream's
//! `v1alpha1`, `v1beta1` and `v1` is written once. Field names, casing, enums
//! and defaults follow upstream External Secrets Operator.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a DNS-1123 subdomain, as upstream's kubebuilder markers require
/// for object names.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

// The one store kind of the crate: what a `secretStoreRef` names, and what
// the provider layer resolves. (Doc comments here are the CRD's descriptions.)
/// Which kind of store an `ExternalSecret` reads from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum StoreKind {
    /// A namespaced `SecretStore` (the default).
    SecretStore,
    /// A cluster-scoped `ClusterSecretStore`.
    ClusterSecretStore,
}

impl StoreKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }

    /// Parses a kind name; `None` for anything else.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "SecretStore" => Some(StoreKind::SecretStore),
            "ClusterSecretStore" => Some(StoreKind::ClusterSecretStore),
            _ => None,
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.secretStoreRef` and `sourceRef.storeRef`: which store to fetch from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Name of the SecretStore resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Kind of the SecretStore resource (SecretStore or ClusterSecretStore).
    /// Defaults to `SecretStore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
}

/// An object keyhook carries over without modelling its fields (such as
/// Vault's `iam` and `gcp` auth blocks); the CRD schema preserves it whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpaqueObject(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for OpaqueObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpaqueObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object"})
    }
}

/// Annotations, labels and finalizers of the Secret blueprint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateMetadata {
    /// Annotations of the created Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels of the created Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Finalizers of the created Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
}

/// Generators an `ExternalSecret` may reference (`sourceRef.generatorRef.kind`).
///
/// One list for every version: upstream only ever added kinds, so each
/// version accepts the newest list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GeneratorKind {
    /// ACR access token generator.
    ACRAccessToken,
    /// BeyondTrust workload credentials dynamic secret generator.
    BeyondtrustWorkloadCredentialsDynamicSecret,
    /// Cloudsmith access token generator.
    CloudsmithAccessToken,
    /// A cluster-scoped generator.
    ClusterGenerator,
    /// ECR authorization token generator.
    ECRAuthorizationToken,
    /// Fake generator.
    Fake,
    /// GCR access token generator.
    GCRAccessToken,
    /// GitHub access token generator.
    GithubAccessToken,
    /// GitLab deploy token generator.
    GitlabDeployToken,
    /// Quay access token generator.
    QuayAccessToken,
    /// Password generator.
    Password,
    /// SSH key generator.
    SSHKey,
    /// STS session token generator.
    STSSessionToken,
    /// UUID generator.
    #[allow(clippy::upper_case_acronyms)]
    UUID,
    /// Vault dynamic secret generator.
    VaultDynamicSecret,
    /// Webhook generator.
    Webhook,
    /// Grafana service account token generator.
    Grafana,
    /// One-time password (TOTP) generator.
    #[allow(clippy::upper_case_acronyms)]
    MFA,
}

/// A reference to a generator custom resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorRef {
    /// apiVersion of the generator resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "generators.external-secrets.io/v1alpha1"))]
    pub api_version: Option<String>,
    /// Kind of the generator resource.
    pub kind: GeneratorKind,
    /// Name of the generator resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// `data[].sourceRef`: overrides the store a single key is read from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct StoreSourceRef {
    /// The store to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<SecretStoreRef>,
    /// Deprecated upstream: generators are not implemented in `data[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_ref: Option<GeneratorRef>,
}

/// `dataFrom[].sourceRef`: a store or a generator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct StoreGeneratorSourceRef {
    /// The store to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<SecretStoreRef>,
    /// A generator whose output becomes the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_ref: Option<GeneratorRef>,
}

/// Conversion of provider values into the Secret (`conversionStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConversionStrategy {
    /// Values are used as they are.
    Default,
    /// Values are converted from Unicode escapes.
    Unicode,
}

/// Decoding of provider values (`decodingStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DecodingStrategy {
    /// Detects base64 or base64url.
    Auto,
    /// Standard base64.
    Base64,
    /// URL-safe base64.
    Base64URL,
    /// No decoding (the default).
    None,
}

/// What a value holding a NUL byte does (`nullBytePolicy`, `v1` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NullBytePolicy {
    /// Keep the value.
    Ignore,
    /// Fail the sync.
    Fail,
}

/// Whether provider tags/labels are fetched (`metadataPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MetadataPolicy {
    /// Do not fetch metadata (the default).
    None,
    /// Fetch metadata.
    Fetch,
}

/// `refreshPolicy` of an `ExternalSecret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RefreshPolicy {
    /// Create the Secret once and never update it.
    CreatedOnce,
    /// Refresh every `refreshInterval`.
    Periodic,
    /// Refresh only when the ExternalSecret changes.
    OnChange,
}

/// `deletionPolicy` of the target Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the Secret once all provider secrets are gone.
    Delete,
    /// Remove the keys but keep the Secret.
    Merge,
    /// Keep the Secret (the default).
    Retain,
}

// Upstream has one condition type for ExternalSecrets and one for stores;
// their fields are the same.
/// One status condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last transition time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
}

/// A `LocalObjectReference` (`status.binding`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ""))]
    pub name: Option<String>,
}

/// Observed state of an `ExternalSecret` (the same in every version).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// When the external secret was last fetched and the target updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time", "nullable" = true))]
    pub refresh_time: Option<String>,
    /// The last synced resourceVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<StatusCondition>>,
    /// A servicebinding.io provisioned-service reference to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<LocalObjectReference>,
}

/// `spec.retrySettings` of a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRetrySettings {
    /// Maximum number of retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Interval between retries, a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

/// A label-selector requirement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// A Kubernetes `LabelSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Label equality requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// `spec.conditions[]` of a store: which namespaces may use it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Choose namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Choose namespaces by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Choose namespaces by regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_regexes: Option<Vec<String>>,
}

/// Observed state of a store in `v1beta1` and `v1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretStoreStatus {
    /// Conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<StatusCondition>>,
    /// What the store can do: `ReadOnly`, `WriteOnly` or `ReadWrite` (the
    /// controller's word; upstream's schema takes any string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}

/// A reference to a key of a Kubernetes Secret (`esmeta.SecretKeySelector`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the Secret; ignored for namespaced stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key within the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A reference to a ServiceAccount (`esmeta.ServiceAccountSelector`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceAccountSelector {
    /// Name of the ServiceAccount.
    pub name: String,
    /// Namespace of the ServiceAccount; ignored for namespaced stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Audiences of the projected token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

/// Where a CA certificate is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CAProviderType {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// `caProvider`: a CA certificate held in a Secret or ConfigMap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CAProvider {
    /// Secret or ConfigMap.
    #[serde(rename = "type")]
    pub type_: CAProviderType,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key holding the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Namespace of the object; ignored for namespaced stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
