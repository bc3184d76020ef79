//! A store as the provider layer resolves it: the `external-secrets.io/v1`
//! `SecretStore` or `ClusterSecretStore`, read into the [`crate::apis::v1`]
//! types the webhooks validate and convert, then narrowed to what a client
//! needs: its identity, its rate and refresh settings, the namespaces it
//! admits, and the one provider block keyhook talks to.
//!
//! Parsing is strict about what keyhook acts on and lenient about the rest:
//! unknown fields are ignored (the CRD schema reports them), an unsupported
//! provider block is an error that names it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::ProviderError;
use crate::apis::common::{ClusterSecretStoreCondition, SecretKeySelector, ServiceAccountSelector};
use crate::apis::providers::{
    AwsProvider, AwsServiceType, FakeProvider, KubernetesProvider, OnePasswordProvider,
    VaultProvider,
};
use crate::apis::v1::{IntOrString, SecretStoreSpec};
use crate::apis::{StoreKind, Version};

/// Annotation that overrides `--provider-qps` for one store.
pub const QPS_ANNOTATION: &str = "keyhook.io/qps";
/// Annotation that overrides the AWS Secrets Manager endpoint of one store.
pub const AWS_ENDPOINT_ANNOTATION: &str = "keyhook.io/aws-endpoint";

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
    /// Secrets Manager endpoint from the `keyhook.io/aws-endpoint`
    /// annotation (not an upstream field; for local test servers).
    pub aws_endpoint: Option<String>,
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

    /// The `(namespace, name)` of every Secret the store reads credentials
    /// from; their resourceVersions are part of the client key.
    pub fn credential_secrets(&self) -> Vec<(String, String)> {
        let mut refs: Vec<&SecretKeySelector> = Vec::new();
        match &self.provider {
            ProviderConfig::Fake(_) => {}
            ProviderConfig::Kubernetes(k) => {
                if let Some(auth) = &k.auth {
                    refs.extend(auth.token.as_ref().and_then(|t| t.bearer_token.as_ref()));
                    refs.extend(
                        auth.cert
                            .iter()
                            .flat_map(|c| [&c.client_cert, &c.client_key])
                            .flatten(),
                    );
                }
            }
            ProviderConfig::Vault(v) => {
                if let Some(auth) = &v.auth {
                    refs.extend(auth.token_secret_ref.as_ref());
                    refs.extend(
                        auth.app_role.iter().flat_map(|a| {
                            std::iter::once(&a.secret_ref).chain(a.role_ref.as_ref())
                        }),
                    );
                    refs.extend(auth.kubernetes.as_ref().and_then(|k| k.secret_ref.as_ref()));
                }
            }
            ProviderConfig::Aws(a) => {
                if let Some(s) = a.auth.as_ref().and_then(|a| a.secret_ref.as_ref()) {
                    refs.extend(
                        [&s.access_key_id, &s.secret_access_key, &s.session_token]
                            .into_iter()
                            .flatten(),
                    );
                }
            }
            ProviderConfig::OnePassword(o) => refs.push(&o.auth.secret_ref.connect_token),
        }
        let mut secrets: Vec<(String, String)> = refs
            .into_iter()
            .filter_map(|r| {
                self.credential_namespace(r.namespace.as_deref())
                    .map(|ns| (ns.to_string(), r.name.clone().unwrap_or_default()))
            })
            .collect();
        secrets.sort();
        secrets.dedup();
        secrets
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
            let expected = Version::V1.api_version();
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
        let spec = raw.spec;
        let refresh_interval = refresh_interval(spec.refresh_interval.as_ref())?;
        let conditions = spec.conditions.unwrap_or_default();
        for (i, condition) in conditions.iter().enumerate() {
            for (j, pattern) in condition.namespace_regexes.iter().flatten().enumerate() {
                if let Err(e) = regex::Regex::new(pattern) {
                    return Err(invalid(
                        &format!("spec.conditions[{i}].namespaceRegexes[{j}]"),
                        e.to_string(),
                    ));
                }
            }
        }
        let provider = ProviderConfig::resolve(spec.provider)?;
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
            aws_endpoint: meta.annotations.get(AWS_ENDPOINT_ANNOTATION).cloned(),
            refresh_interval,
            conditions,
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

/// `spec.refreshInterval`: seconds, or a Go duration as the apiserver and
/// upstream read it; zero or empty is the controller's default.
fn refresh_interval(value: Option<&IntOrString>) -> Result<Option<Duration>, ProviderError> {
    let duration = match value {
        None => return Ok(None),
        Some(IntOrString::Int(seconds)) => u64::try_from(*seconds)
            .map(Duration::from_secs)
            .map_err(|_| {
                invalid(
                    "spec.refreshInterval",
                    format!("{seconds} is not a non-negative number of seconds"),
                )
            })?,
        Some(IntOrString::String(text)) if text.is_empty() => return Ok(None),
        Some(IntOrString::String(text)) => crate::duration::parse(text)
            .map_err(|e| invalid("spec.refreshInterval", format!("`{text}` {e}")))?,
    };
    Ok((!duration.is_zero()).then_some(duration))
}

/// The parts of a store object keyhook reads: metadata, and the spec as
/// the `v1` API defines it.
#[derive(Deserialize)]
struct RawStore {
    #[serde(default)]
    metadata: RawMeta,
    spec: SecretStoreSpec,
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

/// The backend a store talks to, with its `v1` provider block.
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

    /// The one block of `spec.provider`, if keyhook serves it.
    fn resolve(provider: crate::apis::v1::SecretStoreProvider) -> Result<Self, ProviderError> {
        let crate::apis::v1::SecretStoreProvider {
            fake,
            kubernetes,
            vault,
            open_bao,
            aws,
            onepassword,
            other,
        } = provider;
        let mut set: Vec<(&str, Option<ProviderConfig>)> = Vec::new();
        set.extend(fake.map(|p| ("fake", Some(ProviderConfig::Fake(p)))));
        set.extend(kubernetes.map(|p| ("kubernetes", Some(ProviderConfig::Kubernetes(p)))));
        set.extend(vault.map(|p| ("vault", Some(ProviderConfig::Vault(Box::new(p))))));
        set.extend(open_bao.map(|p| ("openBao", Some(ProviderConfig::Vault(Box::new(p))))));
        set.extend(aws.map(|p| ("aws", Some(ProviderConfig::Aws(p)))));
        set.extend(onepassword.map(|p| ("onepassword", Some(ProviderConfig::OnePassword(p)))));
        set.extend(
            other
                .iter()
                .filter(|(_, block)| !block.is_null())
                .map(|(name, _)| (name.as_str(), None)),
        );
        let mut set = set.into_iter();
        let (name, config) = match (set.next(), set.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(invalid("spec.provider", "no provider is configured".into())),
            (Some((a, _)), Some((b, _))) => {
                return Err(invalid(
                    "spec.provider",
                    format!("only one provider may be set, found `{a}` and `{b}`"),
                ));
            }
        };
        let Some(config) = config else {
            return Err(invalid(
                &format!("spec.provider.{name}"),
                "this provider is not supported by keyhook".into(),
            ));
        };
        match &config {
            ProviderConfig::Vault(vault) if vault.server.is_empty() => {
                return Err(invalid(
                    &format!("spec.provider.{name}.server"),
                    "must not be empty".into(),
                ));
            }
            ProviderConfig::Aws(aws) if aws.service != AwsServiceType::SecretsManager => {
                return Err(invalid(
                    "spec.provider.aws.service",
                    format!(
                        "`{:?}` is not supported; keyhook reads SecretsManager",
                        aws.service
                    ),
                ));
            }
            _ => {}
        }
        Ok(config)
    }

    /// The field of the first credential reference that names a namespace
    /// other than `own`, if any.
    fn foreign_namespace_ref(&self, own: Option<&str>) -> Option<&'static str> {
        let foreign = |ns: &Option<String>| ns.as_deref().is_some_and(|ns| Some(ns) != own);
        let key = |s: &Option<SecretKeySelector>| s.as_ref().is_some_and(|s| foreign(&s.namespace));
        let account =
            |s: &Option<ServiceAccountSelector>| s.as_ref().is_some_and(|s| foreign(&s.namespace));
        match self {
            ProviderConfig::Fake(_) => None,
            ProviderConfig::Kubernetes(k) => {
                let auth = k.auth.as_ref();
                if auth
                    .and_then(|a| a.token.as_ref())
                    .is_some_and(|t| key(&t.bearer_token))
                {
                    Some("kubernetes.auth.token.bearerToken.namespace")
                } else if auth
                    .and_then(|a| a.cert.as_ref())
                    .is_some_and(|c| key(&c.client_cert) || key(&c.client_key))
                {
                    Some("kubernetes.auth.cert")
                } else if auth.is_some_and(|a| account(&a.service_account)) {
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
                } else if auth
                    .kubernetes
                    .as_ref()
                    .is_some_and(|k| key(&k.secret_ref) || account(&k.service_account_ref))
                {
                    Some("vault.auth.kubernetes")
                } else {
                    None
                }
            }
            ProviderConfig::Aws(a) => {
                let auth = a.auth.as_ref()?;
                if auth.secret_ref.as_ref().is_some_and(|s| {
                    key(&s.access_key_id) || key(&s.secret_access_key) || key(&s.session_token)
                }) {
                    Some("aws.auth.secretRef")
                } else if auth
                    .jwt
                    .as_ref()
                    .is_some_and(|j| account(&j.service_account_ref))
                {
                    Some("aws.auth.jwt.serviceAccountRef.namespace")
                } else {
                    None
                }
            }
            ProviderConfig::OnePassword(o) => foreign(&o.auth.secret_ref.connect_token.namespace)
                .then_some("onepassword.auth.secretRef.connectTokenSecretRef.namespace"),
        }
    }
}
