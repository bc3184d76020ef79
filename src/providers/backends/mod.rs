//! The backends, one submodule each, behind one trait shaped like upstream's
//! `SecretsClient`: get one value, get a map, validate.
//!
//! A backend client is built from one [`Store`] and owns everything it uses
//! (endpoint, token, vault list, HTTP connection pool). Nothing here is a
//! singleton or shared between clients.

pub mod aws;
pub mod fake;
mod http;
pub mod kubernetes;
pub mod onepassword;
mod sts;
pub mod vault;

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use super::catalog::StoreCatalog;
use super::{ProviderConfig, Store};
use super::{ProviderError, RemoteRef, SecretMap, SecretValue};
use crate::apis::common::{SecretKeySelector, ServiceAccountSelector};
use crate::clock::Clock;

/// How a backend call failed; the layer decides retries from the class and
/// adds the store and key to the message. Messages never carry a value.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// The key, version or property does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The credentials may not read it.
    #[error("{0}")]
    Denied(String),
    /// The backend asked to slow down (HTTP 429, `ThrottlingException`).
    #[error("{0}")]
    Throttled(String),
    /// A failure worth retrying (5xx, connection reset, timeout).
    #[error("{0}")]
    Transient(String),
    /// Anything else; not retried.
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled(_) | BackendError::Transient(_)
        )
    }

    /// Classifies an HTTP status with the backend's own message.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            404 => BackendError::NotFound(message),
            401 | 403 => BackendError::Denied(message),
            429 => BackendError::Throttled(message),
            500..=599 => BackendError::Transient(message),
            _ => BackendError::Other(message),
        }
    }
}

/// The operations every backend offers.
pub trait SecretsClient: Send + Sync {
    /// One value: the key, or one property of it.
    fn get_secret(
        &self,
        reference: &RemoteRef,
    ) -> impl Future<Output = Result<SecretValue, BackendError>> + Send;
    /// Every property of a key.
    fn get_secret_map(
        &self,
        reference: &RemoteRef,
    ) -> impl Future<Output = Result<SecretMap, BackendError>> + Send;
    /// Checks that the store's configuration and credentials work.
    fn validate(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// The built client of one store, whichever provider it talks to.
#[derive(Debug)]
pub enum BackendClient {
    /// `fake`.
    Fake(fake::FakeClient),
    /// `kubernetes`.
    Kubernetes(kubernetes::KubernetesClient),
    /// `vault` / `openBao`.
    Vault(vault::VaultClient),
    /// `aws`.
    Aws(aws::AwsClient),
    /// `onepassword`.
    OnePassword(onepassword::OnePasswordClient),
}

impl BackendClient {
    /// How long the credentials this client was built with stay valid
    /// (a Vault token from a login, AWS credentials from STS); `None` when they do not expire while
    /// the client lives.
    pub fn credentials_lifetime(&self) -> Option<std::time::Duration> {
        match self {
            BackendClient::Vault(c) => c.credentials_lifetime(),
            BackendClient::Aws(c) => c.credentials_lifetime(),
            BackendClient::Fake(_)
            | BackendClient::Kubernetes(_)
            | BackendClient::OnePassword(_) => None,
        }
    }
}

impl SecretsClient for BackendClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        match self {
            BackendClient::Fake(c) => c.get_secret(reference).await,
            BackendClient::Kubernetes(c) => c.get_secret(reference).await,
            BackendClient::Vault(c) => c.get_secret(reference).await,
            BackendClient::Aws(c) => c.get_secret(reference).await,
            BackendClient::OnePassword(c) => c.get_secret(reference).await,
        }
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        match self {
            BackendClient::Fake(c) => c.get_secret_map(reference).await,
            BackendClient::Kubernetes(c) => c.get_secret_map(reference).await,
            BackendClient::Vault(c) => c.get_secret_map(reference).await,
            BackendClient::Aws(c) => c.get_secret_map(reference).await,
            BackendClient::OnePassword(c) => c.get_secret_map(reference).await,
        }
    }

    async fn validate(&self) -> Result<(), BackendError> {
        match self {
            BackendClient::Fake(c) => c.validate().await,
            BackendClient::Kubernetes(c) => c.validate().await,
            BackendClient::Vault(c) => c.validate().await,
            BackendClient::Aws(c) => c.validate().await,
            BackendClient::OnePassword(c) => c.validate().await,
        }
    }
}

/// What a backend needs to build its client: the store and a way to read
/// the credentials it references.
pub(crate) struct BuildContext<'a> {
    pub(crate) store: &'a Store,
    pub(crate) catalog: &'a dyn StoreCatalog,
    /// keyhook's own AWS identity, for ClusterSecretStores without `auth`.
    pub(crate) aws: &'a aws::AwsEnvironment,
    /// Wall-clock time, for signing requests and judging credentials.
    pub(crate) clock: &'a Arc<dyn Clock>,
}

impl BuildContext<'_> {
    /// Reads the value a `secretRef` points at.
    pub(crate) async fn secret_key(
        &self,
        selector: &SecretKeySelector,
    ) -> Result<SecretValue, ProviderError> {
        let name = selector.name.as_deref().unwrap_or_default();
        let key = selector.key.as_deref().unwrap_or_default();
        let namespace = self.credential_namespace(selector.namespace.as_deref(), name)?;
        let reference = format!("{namespace}/{name}[{key}]");
        let error = |reason: String| ProviderError::Credentials {
            store: self.store.display_name(),
            reference: reference.clone(),
            reason,
        };
        let secret = self
            .catalog
            .read_secret(&namespace, name)
            .await
            .map_err(|e| error(e.to_string()))?;
        secret
            .data
            .get(key)
            .cloned()
            .ok_or_else(|| error(format!("the Secret has no key `{key}`")))
    }

    /// Reads the value of a `secretRef` the store must set.
    pub(crate) async fn required_secret_key(
        &self,
        selector: Option<&SecretKeySelector>,
        field: &str,
    ) -> Result<SecretValue, ProviderError> {
        match selector {
            Some(selector) => self.secret_key(selector).await,
            None => Err(self.build_error(format!("{field} is required"))),
        }
    }

    /// A token for the service account `account` names.
    pub(crate) async fn account_token(
        &self,
        account: &ServiceAccountSelector,
    ) -> Result<SecretValue, ProviderError> {
        self.service_account_token(
            account.namespace.as_deref(),
            &account.name,
            account.audiences.as_deref().unwrap_or_default(),
        )
        .await
    }

    /// A service account token for login-style auth.
    pub(crate) async fn service_account_token(
        &self,
        namespace: Option<&str>,
        name: &str,
        audiences: &[String],
    ) -> Result<SecretValue, ProviderError> {
        let namespace = self.credential_namespace(namespace, name)?;
        self.catalog
            .service_account_token(&namespace, name, audiences)
            .await
            .map_err(|e| ProviderError::Credentials {
                store: self.store.display_name(),
                reference: format!("serviceaccount {namespace}/{name}"),
                reason: e.to_string(),
            })
    }

    /// A service account's annotations, for auth that reads its settings
    /// there (AWS IRSA's role).
    pub(crate) async fn service_account_annotations(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ProviderError> {
        let namespace = self.credential_namespace(namespace, name)?;
        self.catalog
            .service_account_annotations(&namespace, name)
            .await
            .map_err(|e| ProviderError::Credentials {
                store: self.store.display_name(),
                reference: format!("serviceaccount {namespace}/{name}"),
                reason: e.to_string(),
            })
    }

    fn credential_namespace(
        &self,
        named: Option<&str>,
        name: &str,
    ) -> Result<String, ProviderError> {
        self.store
            .credential_namespace(named)
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Credentials {
                store: self.store.display_name(),
                reference: name.to_string(),
                reason: "a ClusterSecretStore's secretRef must name a namespace".into(),
            })
    }

    pub(crate) fn build_error(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::ClientBuild {
            store: self.store.display_name(),
            provider: self.store.provider.name(),
            reason: reason.into(),
        }
    }
}

/// Builds the client for a store.
pub(crate) async fn build(ctx: &BuildContext<'_>) -> Result<BackendClient, ProviderError> {
    Ok(match &ctx.store.provider {
        ProviderConfig::Fake(config) => BackendClient::Fake(fake::FakeClient::new(config)),
        ProviderConfig::Kubernetes(config) => {
            BackendClient::Kubernetes(kubernetes::KubernetesClient::build(ctx, config).await?)
        }
        ProviderConfig::Vault(config) => {
            BackendClient::Vault(vault::VaultClient::build(ctx, config).await?)
        }
        ProviderConfig::Aws(config) => {
            BackendClient::Aws(aws::AwsClient::build(ctx, config).await?)
        }
        ProviderConfig::OnePassword(config) => {
            BackendClient::OnePassword(onepassword::OnePasswordClient::build(ctx, config).await?)
        }
    })
}

/// Renders a JSON value as a secret: strings as their text, anything else as JSON.
pub(crate) fn json_to_secret(value: &Value) -> SecretValue {
    match value {
        Value::String(s) => SecretValue::from(s.as_str()),
        other => SecretValue::new(other.to_string().into_bytes()),
    }
}

/// Selects `property` from a JSON object: an exact top-level key first, then
/// a dotted path (`a.b.c`), as upstream's gjson lookup does for plain paths.
pub(crate) fn json_property<'v>(object: &'v Value, property: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(property) {
        return Some(v);
    }
    property.split('.').try_fold(object, |v, part| match v {
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        other => other.get(part),
    })
}

/// Every top-level property of a JSON object as a map.
pub(crate) fn json_map(object: &Value) -> Option<SecretMap> {
    Some(
        object
            .as_object()?
            .iter()
            .map(|(k, v)| (k.clone(), json_to_secret(v)))
            .collect(),
    )
}
