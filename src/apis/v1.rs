//! `external-secrets.io/v1`: the storage version and the hub every conversion
//! goes through.

// Each `printcolumn(...)` of `#[kube]` repeats `type_ = "string"`, which
// clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::common::{
    ClusterSecretStoreCondition, ConversionStrategy, DecodingStrategy, DeletionPolicy,
    ExternalSecretStatus, MetadataPolicy, NullBytePolicy, RefreshPolicy, SecretStoreRef,
    SecretStoreRetrySettings, SecretStoreStatus, StoreGeneratorSourceRef, StoreSourceRef,
    TemplateMetadata,
};
pub use super::providers::SecretStoreProvider;

/// Desired state of an `ExternalSecret`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "es",
    category = "external-secrets",
    printcolumn(
        name = "StoreType",
        type_ = "string",
        json_path = ".spec.secretStoreRef.kind"
    ),
    printcolumn(
        name = "Store",
        type_ = "string",
        json_path = ".spec.secretStoreRef.name"
    ),
    printcolumn(
        name = "Refresh Interval",
        type_ = "string",
        json_path = ".spec.refreshInterval"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store to read from; may be omitted when every entry has a `sourceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,
    /// The Secret to create or update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {"creationPolicy": "Owner", "deletionPolicy": "Retain"}))]
    pub target: Option<ExternalSecretTarget>,
    /// `CreatedOnce`, `Periodic` or `OnChange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,
    /// How often to read the provider again, a Go duration (`0` fetches once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1h0m0s"))]
    pub refresh_interval: Option<String>,
    /// Single keys to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<ExternalSecretData>>,
    /// Whole secrets or searches to fetch, merged in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from: Option<Vec<ExternalSecretDataFromRemoteRef>>,
    /// When syncs may (or may not) happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_windows: Option<SyncWindows>,
}

/// Whether the windows allow or deny syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SyncWindowKind {
    /// Syncs happen only inside a window.
    #[serde(rename = "allow")]
    Allow,
    /// Syncs never happen inside a window.
    #[serde(rename = "deny")]
    Deny,
}

/// `spec.syncWindows`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncWindows {
    /// `allow` or `deny`.
    pub kind: SyncWindowKind,
    /// The windows.
    #[schemars(length(min = 1))]
    pub windows: Vec<SyncWindow>,
}

/// One sync window: when it opens and how long it lasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncWindow {
    /// A cron schedule or `@every`/`@daily`-style descriptor.
    #[schemars(
        length(min = 1),
        regex(
            pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|@every [^\s]+.*|[^\s]+( [^\s]+){4})$"
        )
    )]
    pub schedule: String,
    /// How long the window stays open, a Go duration.
    pub duration: String,
}

/// How the target Secret is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CreationPolicy {
    /// Create the Secret and own it (the default).
    Owner,
    /// Create the Secret without an owner reference.
    Orphan,
    /// Merge into an existing Secret; never create.
    Merge,
    /// Create the Secret if missing, otherwise merge into it.
    CreateOrMerge,
    /// Do not create a Secret.
    None,
}

/// `spec.target`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// Name of the Secret; defaults to the ExternalSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// How the Secret is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Owner"))]
    pub creation_policy: Option<CreationPolicy>,
    /// What happens to the Secret when provider secrets are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Retain"))]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Blueprint of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
    /// Make the Secret immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Write a custom resource of this kind instead of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestReference>,
}

/// `spec.target.manifest`: the kind of object to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReference {
    /// apiVersion of the object.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// kind of the object.
    #[schemars(length(min = 1))]
    pub kind: String,
}

/// Template engine version; `v1` only has `v2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateEngineVersion {
    /// The sprig-based engine.
    #[serde(rename = "v2")]
    V2,
}

/// How template output is merged with fetched data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateMergePolicy {
    /// Template output replaces the data (the default).
    Replace,
    /// Template output is merged into the data.
    Merge,
}

/// `spec.target.template`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    /// Secret type, e.g. `kubernetes.io/tls`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Template engine version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "v2"))]
    pub engine_version: Option<TemplateEngineVersion>,
    /// Annotations and labels of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// How template output is merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Replace"))]
    pub merge_policy: Option<TemplateMergePolicy>,
    /// Templates of the Secret's data, by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    /// Templates read from ConfigMaps, Secrets or literals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_from: Option<Vec<TemplateFrom>>,
}

/// One `templateFrom` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// Templates from a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateRef>,
    /// Templates from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateRef>,
    /// Where the output goes: `Data` (the default), `Annotations` or
    /// `Labels` of the Secret, or a path such as `spec.database` inside
    /// `spec.target.manifest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Data"))]
    pub target: Option<String>,
    /// An inline template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    /// Decoding of the values handed to the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_decoding_strategy: Option<DecodingStrategy>,
}

/// Whether a template applies to values only or to keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateScope {
    /// Values only (the default).
    Values,
    /// Keys and values.
    KeysAndValues,
}

/// A ConfigMap or Secret holding templates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRef {
    /// Name of the ConfigMap or Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Keys used as templates.
    pub items: Vec<TemplateRefItem>,
}

/// One key of a template ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRefItem {
    /// The key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// Scope of the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Values"))]
    pub template_as: Option<TemplateScope>,
}

/// `spec.data[]`: one key of the Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_key: String,
    /// The remote value.
    pub remote_ref: ExternalSecretDataRemoteRef,
    /// Overrides the store this key is read from.
    // Boxed: it is rarely set, and an ExternalSecret can hold tens of
    // thousands of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<Box<StoreSourceRef>>,
}

/// A remote value: `data[].remoteRef` and `dataFrom[].extract`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataRemoteRef {
    /// Key in the provider.
    pub key: String,
    /// Whether provider metadata is fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<MetadataPolicy>,
    /// A property of a structured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A version of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Conversion of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// Decoding of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    /// What a value holding a NUL byte does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<NullBytePolicy>,
}

/// `spec.dataFrom[]`: exactly one of `extract`, `find` or `sourceRef.generatorRef`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataFromRemoteRef {
    /// All key/value pairs of one remote secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExternalSecretDataRemoteRef>,
    /// Secrets found by name or tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<ExternalSecretFind>,
    /// Key rewrites, applied in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Vec<ExternalSecretRewrite>>,
    /// A store or generator to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<StoreGeneratorSourceRef>,
}

/// `dataFrom[].find`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretFind {
    /// Root path of the search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Match on the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Match on tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Conversion of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// Decoding of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    /// What a value holding a NUL byte does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<NullBytePolicy>,
}

/// `find.name`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FindName {
    /// Regular expression matched against secret names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
}

/// `dataFrom[].rewrite[]`: exactly one operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ExternalSecretRewrite {
    /// A regular-expression replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<ExternalSecretRewriteRegexp>,
    /// A template applied to each key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<ExternalSecretRewriteTransform>,
    /// Merges nested values into one map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<ExternalSecretRewriteMerge>,
}

/// `rewrite[].merge`: how nested values are merged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretRewriteMerge {
    /// What a key found twice does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Error"))]
    pub conflict_policy: Option<MergeConflictPolicy>,
    /// Key the merged map goes into; empty for the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ""))]
    pub into: Option<String>,
    /// Keys merged first, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Vec<String>>,
    /// What a missing `priority` key does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Strict"))]
    pub priority_policy: Option<MergePriorityPolicy>,
    /// How values are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Extract"))]
    pub strategy: Option<MergeStrategy>,
}

/// `merge.conflictPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MergeConflictPolicy {
    /// Keep the first value.
    Ignore,
    /// Fail the sync (the default).
    Error,
}

/// `merge.priorityPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MergePriorityPolicy {
    /// Skip priority keys that are missing.
    IgnoreNotFound,
    /// Fail on a missing priority key (the default).
    Strict,
}

/// `merge.strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MergeStrategy {
    /// Merge the extracted key/value pairs (the default).
    Extract,
    /// Merge values that hold JSON objects.
    #[allow(clippy::upper_case_acronyms)]
    JSON,
}

/// A regular-expression key rewrite.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalSecretRewriteRegexp {
    /// The expression.
    pub source: String,
    /// The replacement.
    pub target: String,
}

/// A template key rewrite.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalSecretRewriteTransform {
    /// The template; `.value` is the key.
    pub template: String,
}

/// `spec.refreshInterval` of a store: seconds, or a Go duration string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number of seconds.
    Int(i64),
    /// A Go duration such as `5m`.
    String(String),
}

impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"x-kubernetes-int-or-string": true})
    }
}

/// Desired state of a `SecretStore` or `ClusterSecretStore`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "SecretStore",
    namespaced,
    status = "SecretStoreStatus",
    shortname = "ss",
    category = "external-secrets",
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Capabilities",
        type_ = "string",
        json_path = ".status.capabilities"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// Selects the controller that serves this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Exactly one provider block.
    pub provider: SecretStoreProvider,
    /// HTTP retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_settings: Option<SecretStoreRetrySettings>,
    /// How often the store is revalidated: seconds or a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<IntOrString>,
    /// Namespaces allowed to use the store (ClusterSecretStore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ClusterSecretStoreCondition>>,
}

/// Desired state of a `ClusterSecretStore`; the same shape as a `SecretStore`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ClusterSecretStore",
    status = "SecretStoreStatus",
    shortname = "css",
    category = "external-secrets",
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Capabilities",
        type_ = "string",
        json_path = ".status.capabilities"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(transparent)]
pub struct ClusterSecretStoreSpec(pub SecretStoreSpec);
