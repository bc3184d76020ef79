//! Store configuration as keyhook resolves it: the `SecretStore` /
//! `ClusterSecretStore` (external-secrets.io/v1) fields the provider layer
//! uses, with upstream's field names and casing.
//!
//! Parsing is strict about what keyhook acts on and lenient about the rest:
//! unknown fields are ignored (the CRD schema validates them), an unsupported
//! provider block is an error that names it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;

use super::ProviderError;

/// API group of the store kinds.
pub const GROUP: &str = "external-secrets.io";
/// API version of the store kinds keyhook reads.
pub const VERSION: &str = "v1";
/// Annotation that overrides `--provider-qps` for one store.
pub const QPS_ANNOTATION: &str = "keyhook.io/qps";
/// Annotation that overrides the AWS Secrets Manager endpoint of one store.
pub const AWS_ENDPOINT_ANNOTATION: &str = "keyhook.io/aws-endpoint";

/// Which of the two store kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    /// Namespaced; usable only from its own namespace.
    SecretStore,
    /// Cluster-scoped; usable from the namespaces its conditions admit.
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

/// A store, parsed and ready for the client cache.
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (SecretStore only).
    pub namespace: Option<String>,
    /// `metadata.uid`, empty when the object has none (standalone file).
    pub uid: String,
    /// `metadata.generation`, 0 when absent.
    pub generation: i64,
    /// Digest of `spec` and the annotations: tells apart two versions of a
    /// store whose generation does not move (annotations, standalone files).
    pub fingerprint: u64,
    /// Per-store rate override from the `keyhook.io/qps` annotation.
    pub qps_override: Option<f64>,
    /// `spec.refreshInterval`, `None` when unset or zero (controller default).
    pub refresh_interval: Option<Duration>,
    /// `spec.conditions` (meaningful for ClusterSecretStore only).
    pub conditions: Vec<ClusterSecretStoreCondition>,
    /// `spec.provider`, resolved to the one backend keyhook will talk to.
    pub provider: ProviderConfig,
}

impl Store {
    /// The store's display name: `namespace/name` or `name` — the `store`
    /// metric label and the name in every error.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The namespace a credential `secretRef` reads from: a SecretStore's own
    /// namespace always (a namespaced store may never name another one), a
    /// ClusterSecretStore the namespace the ref names.
    pub fn credential_namespace<'a>(&'a self, named: Option<&'a str>) -> Option<&'a str> {
        match self.kind {
            StoreKind::SecretStore => self.namespace.as_deref(),
            StoreKind::ClusterSecretStore => named,
        }
    }

    /// Parses a store from its JSON shape (a `DynamicObject` serialized, a
    /// manifest document, or the object a watch delivered).
    pub fn from_value(object: &Value) -> Result<Self, ProviderError> {
        let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = StoreKind::from_kind(kind_name).ok_or_else(|| {
            invalid(
                "kind",
                format!("`{kind_name}` is not SecretStore or ClusterSecretStore"),
            )
        })?;
        if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str) {
            let expected = format!("{GROUP}/{VERSION}");
            if api_version != expected {
                return Err(invalid(
                    "apiVersion",
                    format!("`{api_version}` is not `{expected}`"),
                ));
            }
        }
        let raw: RawStore = serde_path_to_error::deserialize(object)
            .map_err(|e| invalid(&e.path().to_string(), e.inner().to_string()))?;
        let meta = raw.metadata;
        if meta.name.is_empty() {
            return Err(invalid("metadata.name", "must not be empty".into()));
        }
        let namespace = match kind {
            StoreKind::SecretStore => {
                Some(meta.namespace.filter(|ns| !ns.is_empty()).ok_or_else(|| {
                    invalid(
                        "metadata.namespace",
                        "a SecretStore needs a namespace".into(),
                    )
                })?)
            }
            StoreKind::ClusterSecretStore => None,
        };
        let qps_override = match meta.annotations.get(QPS_ANNOTATION) {
            None => None,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(qps) if qps.is_finite() && qps > 0.0 => Some(qps),
                _ => {
                    return Err(invalid(
                        &format!("metadata.annotations.{QPS_ANNOTATION}"),
                        format!("`{text}` is not a positive number"),
                    ));
                }
            },
        };
        let refresh_interval = parse_refresh_interval(raw.spec.refresh_interval.as_ref())?;
        for (i, condition) in raw.spec.conditions.iter().enumerate() {
            for (j, pattern) in condition.namespace_regexes.iter().enumerate() {
                if let Err(e) = regex::Regex::new(pattern) {
                    return Err(invalid(
                        &format!("spec.conditions[{i}].namespaceRegexes[{j}]"),
                        e.to_string(),
                    ));
                }
            }
        }
        let mut provider = ProviderConfig::from_value(&raw.spec.provider)?;
        if let ProviderConfig::Aws(aws) = &mut provider {
            aws.endpoint = meta.annotations.get(AWS_ENDPOINT_ANNOTATION).cloned();
        }
        if let (StoreKind::SecretStore, Some(field)) =
            (kind, provider.foreign_namespace_ref(namespace.as_deref()))
        {
            return Err(invalid(
                &format!("spec.provider.{field}"),
                "a SecretStore may not reference another namespace".into(),
            ));
        }
        Ok(Store {
            kind,
            name: meta.name,
            namespace,
            uid: meta.uid,
            generation: meta.generation,
            fingerprint: fingerprint(object.get("spec"), &meta.annotations),
            qps_override,
            refresh_interval,
            conditions: raw.spec.conditions,
            provider,
        })
    }
}

fn fingerprint(spec: Option<&Value>, annotations: &BTreeMap<String, String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    spec.map(Value::to_string).hash(&mut hasher);
    annotations.hash(&mut hasher);
    hasher.finish()
}

fn invalid(field: &str, reason: String) -> ProviderError {
    ProviderError::InvalidStore {
        field: field.to_string(),
        reason,
    }
}

fn parse_refresh_interval(value: Option<&Value>) -> Result<Option<Duration>, ProviderError> {
    let duration = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) => Duration::from_secs(secs),
            None => {
                return Err(invalid(
                    "spec.refreshInterval",
                    format!("{n} is not a non-negative number of seconds"),
                ));
            }
        },
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => humantime::parse_duration(s)
            .map_err(|e| invalid("spec.refreshInterval", format!("`{s}`: {e}")))?,
        Some(other) => {
            return Err(invalid(
                "spec.refreshInterval",
                format!("{other} is neither seconds nor a duration"),
            ));
        }
    };
    Ok((!duration.is_zero()).then_some(duration))
}

#[derive(Deserialize)]
struct RawStore {
    #[serde(default)]
    metadata: RawMeta,
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMeta {
    name: String,
    namespace: Option<String>,
    uid: String,
    generation: i64,
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    provider: Value,
    #[serde(default)]
    refresh_interval: Option<Value>,
    #[serde(default)]
    conditions: Vec<ClusterSecretStoreCondition>,
}

/// One entry of `spec.conditions`: a namespace is admitted when any of its
/// forms matches.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces whose labels match.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces whose name matches one of these (unanchored) regexes.
    #[serde(default)]
    pub namespace_regexes: Vec<String>,
}

/// Upstream's `SecretKeySelector`: a key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SecretKeySelector {
    /// Secret name.
    pub name: String,
    /// Secret namespace (ClusterSecretStore only).
    pub namespace: Option<String>,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Upstream's `ServiceAccountSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServiceAccountSelector {
    /// Service account name.
    pub name: String,
    /// Namespace (ClusterSecretStore only).
    pub namespace: Option<String>,
    /// Audiences for the requested token.
    pub audiences: Vec<String>,
}

/// The backend a store talks to, with its configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderConfig {
    /// `spec.provider.fake`.
    Fake(FakeProvider),
    /// `spec.provider.kubernetes`.
    Kubernetes(KubernetesProvider),
    /// `spec.provider.vault`, or `spec.provider.openBao` (same API).
    Vault(Box<VaultProvider>),
    /// `spec.provider.aws` (Secrets Manager).
    Aws(AwsProvider),
    /// `spec.provider.onepassword` (1Password Connect).
    OnePassword(OnePasswordProvider),
}

impl ProviderConfig {
    /// The `provider` metric label.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderConfig::Fake(_) => "fake",
            ProviderConfig::Kubernetes(_) => "kubernetes",
            ProviderConfig::Vault(_) => "vault",
            ProviderConfig::Aws(_) => "aws",
            ProviderConfig::OnePassword(_) => "onepassword",
        }
    }

    fn from_value(provider: &Value) -> Result<Self, ProviderError> {
        let Some(blocks) = provider.as_object() else {
            return Err(invalid(
                "spec.provider",
                "must be an object with one provider".into(),
            ));
        };
        let mut set = blocks.iter().filter(|(_, v)| !v.is_null());
        let (name, block) = match (set.next(), set.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(invalid("spec.provider", "no provider is configured".into())),
            (Some((a, _)), Some((b, _))) => {
                return Err(invalid(
                    "spec.provider",
                    format!("only one provider may be set, found `{a}` and `{b}`"),
                ));
            }
        };
        fn parse<T: serde::de::DeserializeOwned>(
            name: &str,
            block: &Value,
        ) -> Result<T, ProviderError> {
            serde_path_to_error::deserialize(block).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    format!("spec.provider.{name}")
                } else {
                    format!("spec.provider.{name}.{path}")
                };
                invalid(&field, e.inner().to_string())
            })
        }
        Ok(match name.as_str() {
            "fake" => ProviderConfig::Fake(parse(name, block)?),
            "kubernetes" => ProviderConfig::Kubernetes(parse(name, block)?),
            "vault" | "openBao" => {
                let vault: VaultProvider = parse(name, block)?;
                if vault.server.is_empty() {
                    return Err(invalid(
                        &format!("spec.provider.{name}.server"),
                        "must not be empty".into(),
                    ));
                }
                ProviderConfig::Vault(Box::new(vault))
            }
            "aws" => {
                let aws: AwsProvider = parse(name, block)?;
                if aws.service != "SecretsManager" {
                    return Err(invalid(
                        "spec.provider.aws.service",
                        format!(
                            "`{}` is not supported; keyhook reads SecretsManager",
                            aws.service
                        ),
                    ));
                }
                ProviderConfig::Aws(aws)
            }
            "onepassword" => ProviderConfig::OnePassword(parse(name, block)?),
            other => {
                return Err(invalid(
                    &format!("spec.provider.{other}"),
                    "this provider is not supported by keyhook".into(),
                ));
            }
        })
    }

    /// The field of the first credential reference that names a namespace
    /// other than `own`, if any.
    fn foreign_namespace_ref(&self, own: Option<&str>) -> Option<&'static str> {
        let foreign = |ns: &Option<String>| ns.as_deref().is_some_and(|ns| Some(ns) != own);
        let key = |s: &Option<SecretKeySelector>| s.as_ref().is_some_and(|s| foreign(&s.namespace));
        match self {
            ProviderConfig::Fake(_) => None,
            ProviderConfig::Kubernetes(k) => {
                let auth = k.auth.as_ref();
                if auth
                    .and_then(|a| a.token.as_ref())
                    .is_some_and(|t| foreign(&t.bearer_token.namespace))
                {
                    Some("kubernetes.auth.token.bearerToken.namespace")
                } else if auth.and_then(|a| a.cert.as_ref()).is_some_and(|c| {
                    foreign(&c.client_cert.namespace) || foreign(&c.client_key.namespace)
                }) {
                    Some("kubernetes.auth.cert")
                } else if auth
                    .and_then(|a| a.service_account.as_ref())
                    .is_some_and(|s| foreign(&s.namespace))
                {
                    Some("kubernetes.auth.serviceAccount.namespace")
                } else {
                    None
                }
            }
            ProviderConfig::Vault(v) => {
                let auth = v.auth.as_ref()?;
                if key(&auth.token_secret_ref) {
                    Some("vault.auth.tokenSecretRef.namespace")
                } else if auth
                    .app_role
                    .as_ref()
                    .is_some_and(|a| foreign(&a.secret_ref.namespace) || key(&a.role_ref))
                {
                    Some("vault.auth.appRole")
                } else if auth.kubernetes.as_ref().is_some_and(|k| {
                    key(&k.secret_ref)
                        || k.service_account_ref
                            .as_ref()
                            .is_some_and(|s| foreign(&s.namespace))
                }) {
                    Some("vault.auth.kubernetes")
                } else {
                    None
                }
            }
            ProviderConfig::Aws(a) => {
                if a.auth.secret_ref.as_ref().is_some_and(|s| {
                    foreign(&s.access_key_id.namespace)
                        || foreign(&s.secret_access_key.namespace)
                        || key(&s.session_token)
                }) {
                    Some("aws.auth.secretRef")
                } else if a
                    .auth
                    .jwt
                    .as_ref()
                    .and_then(|j| j.service_account_ref.as_ref())
                    .is_some_and(|s| foreign(&s.namespace))
                {
                    Some("aws.auth.jwt.serviceAccountRef.namespace")
                } else {
                    None
                }
            }
            ProviderConfig::OnePassword(o) => {
                let s = o.auth.as_ref()?.secret_ref.as_ref()?;
                foreign(&s.connect_token_secret_ref.namespace)
                    .then_some("onepassword.auth.secretRef.connectTokenSecretRef.namespace")
            }
        }
    }
}

/// `spec.provider.fake`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeProvider {
    /// The static entries.
    #[serde(default)]
    pub data: Vec<FakeProviderData>,
}

/// One entry of `spec.provider.fake.data`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeProviderData {
    /// The key a reference names.
    pub key: String,
    /// The value (a JSON object string when properties are read from it).
    #[serde(default)]
    pub value: String,
    /// Version; empty matches a reference without a version.
    #[serde(default)]
    pub version: String,
    /// Properties by name (upstream v1beta1's `valueMap`).
    #[serde(default)]
    pub value_map: BTreeMap<String, String>,
}

impl std::fmt::Debug for FakeProviderData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviderData")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// `spec.provider.kubernetes`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesProvider {
    /// The API server; in-cluster when `url` is empty.
    pub server: KubernetesServer,
    /// How to authenticate; the pod's own service account when absent.
    pub auth: Option<KubernetesAuth>,
    /// Namespace to read Secrets from (`default` when empty).
    pub remote_namespace: String,
}

/// `spec.provider.kubernetes.server`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesServer {
    /// API server URL.
    pub url: String,
    /// PEM CA bundle, base64 as in the CRD.
    #[serde(rename = "caBundle")]
    pub ca_bundle: Option<String>,
}

/// `spec.provider.kubernetes.auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesAuth {
    /// Client certificate.
    pub cert: Option<KubernetesCertAuth>,
    /// Bearer token from a Secret.
    pub token: Option<KubernetesTokenAuth>,
    /// A service account's token.
    pub service_account: Option<ServiceAccountSelector>,
}

/// `auth.cert`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesCertAuth {
    /// PEM client certificate.
    pub client_cert: SecretKeySelector,
    /// PEM client key.
    pub client_key: SecretKeySelector,
}

/// `auth.token`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesTokenAuth {
    /// The bearer token.
    pub bearer_token: SecretKeySelector,
}

/// `spec.provider.vault` / `spec.provider.openBao`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VaultProvider {
    /// How to log in.
    pub auth: Option<VaultAuth>,
    /// Base URL, e.g. `https://vault.example:8200`.
    pub server: String,
    /// KV mount path (default `secret`).
    pub path: Option<String>,
    /// KV engine version, `v1` or `v2` (default `v2`).
    pub version: VaultKvVersion,
    /// `X-Vault-Namespace` for secret reads.
    pub namespace: Option<String>,
    /// PEM CA bundle, base64 as in the CRD.
    pub ca_bundle: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
}

/// KV engine version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum VaultKvVersion {
    /// KV version 1.
    #[serde(rename = "v1")]
    V1,
    /// KV version 2 (versioned).
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// `vault.auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VaultAuth {
    /// Namespace for the login call (defaults to the provider namespace).
    pub namespace: Option<String>,
    /// A static token.
    pub token_secret_ref: Option<SecretKeySelector>,
    /// AppRole login.
    pub app_role: Option<VaultAppRole>,
    /// Kubernetes auth-method login.
    pub kubernetes: Option<VaultKubernetesAuth>,
}

/// `vault.auth.appRole`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VaultAppRole {
    /// Mount path of the auth method (default `approle`).
    pub path: String,
    /// The role id, inline.
    pub role_id: String,
    /// The role id, from a Secret.
    pub role_ref: Option<SecretKeySelector>,
    /// The secret id.
    pub secret_ref: SecretKeySelector,
}

/// `vault.auth.kubernetes`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VaultKubernetesAuth {
    /// Mount path of the auth method (default `kubernetes`).
    pub mount_path: String,
    /// Service account whose token is presented.
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A token stored in a Secret.
    pub secret_ref: Option<SecretKeySelector>,
    /// The Vault role.
    pub role: String,
}

/// `spec.provider.aws`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AwsProvider {
    /// `SecretsManager` (the only service keyhook reads).
    pub service: String,
    /// Credentials.
    pub auth: AwsAuth,
    /// Region, e.g. `eu-west-1`.
    pub region: String,
    /// Prefix added to every key.
    pub prefix: String,
    /// A role (ARN) to assume with the credentials `auth` gives.
    pub role: String,
    /// `sts:ExternalId` for assuming `role`.
    #[serde(rename = "externalID")]
    pub external_id: String,
    /// Endpoint override from the `keyhook.io/aws-endpoint` annotation (not
    /// an upstream field; for local test servers).
    #[serde(skip)]
    pub endpoint: Option<String>,
}

/// `aws.auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AwsAuth {
    /// Static credentials from Secrets.
    pub secret_ref: Option<AwsAuthSecretRef>,
    /// A service account's token exchanged with STS for the role its
    /// `eks.amazonaws.com/role-arn` annotation names.
    pub jwt: Option<AwsJwtAuth>,
}

/// `aws.auth.jwt`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AwsJwtAuth {
    /// The service account whose token is exchanged.
    pub service_account_ref: Option<ServiceAccountSelector>,
}

/// `aws.auth.secretRef`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AwsAuthSecretRef {
    /// Access key id.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id: SecretKeySelector,
    /// Secret access key.
    #[serde(rename = "secretAccessKeySecretRef")]
    pub secret_access_key: SecretKeySelector,
    /// Session token.
    #[serde(rename = "sessionTokenSecretRef")]
    pub session_token: Option<SecretKeySelector>,
}

/// `spec.provider.onepassword`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnePasswordProvider {
    /// Connect token.
    pub auth: Option<OnePasswordAuth>,
    /// Connect server URL.
    pub connect_host: String,
    /// Vault name → priority (1 first).
    pub vaults: BTreeMap<String, i64>,
}

/// `onepassword.auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnePasswordAuth {
    /// Where the token is.
    pub secret_ref: Option<OnePasswordAuthSecretRef>,
}

/// `onepassword.auth.secretRef`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnePasswordAuthSecretRef {
    /// The Connect token.
    pub connect_token_secret_ref: SecretKeySelector,
}
