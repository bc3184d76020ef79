//! `kubernetes`: Secrets of `remoteNamespace` on a Kubernetes API server —
//! the cluster keyhook runs in by default, or `server.url` with its
//! `caBundle` and `auth` (bearer token, client certificate or a service
//! account's token).
//!
//! `key` names the Secret, `property` one of its data keys; without a
//! property the whole data is returned as a JSON object, as upstream does.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{AuthInfo, Config};
use kube::{Api, Client};

use super::http::decode_pem_field;
use super::{BackendError, BuildContext, SecretsClient};
use crate::apis::providers::KubernetesProvider;
use crate::providers::{ProviderError, RemoteRef, SecretMap, SecretValue};

/// A client for one remote namespace.
pub struct KubernetesClient {
    secrets: Api<Secret>,
    namespace: String,
}

impl std::fmt::Debug for KubernetesClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesClient")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesClient {
    pub(crate) async fn build(
        ctx: &BuildContext<'_>,
        config: &KubernetesProvider,
    ) -> Result<Self, ProviderError> {
        let namespace = match config.remote_namespace.as_deref() {
            None | Some("") => "default".to_string(),
            Some(namespace) => namespace.to_string(),
        };
        let server = config.server.as_ref();
        let url = server.and_then(|s| s.url.as_deref()).unwrap_or_default();
        let client = if url.is_empty() && config.auth.is_none() {
            ctx.catalog.kube_client().ok_or_else(|| {
                ctx.build_error(
                    "no in-cluster client; set spec.provider.kubernetes.server.url and auth",
                )
            })?
        } else {
            let url = if url.is_empty() {
                "https://kubernetes.default.svc"
            } else {
                url
            };
            let mut kube_config = Config::new(
                url.parse()
                    .map_err(|e| ctx.build_error(format!("server.url: {e}")))?,
            );
            kube_config.default_namespace = namespace.clone();
            if let Some(bundle) = server.and_then(|s| s.ca_bundle.as_ref()) {
                let pem = decode_pem_field(bundle);
                let certs = <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem).map(|c| c.map(|c| c.to_vec())).collect::<Result<Vec<_>, _>>().map_err(|e| ctx.build_error(format!("server.caBundle: {e}")))?;
                kube_config.root_cert = Some(certs);
            }
            kube_config.auth_info = auth_info(ctx, config).await?;
            Client::try_from(kube_config).map_err(|e| ctx.build_error(e.to_string()))?
        };
        Ok(Self {
            secrets: Api::namespaced(client, &namespace),
            namespace,
        })
    }

    async fn read(&self, name: &str) -> Result<BTreeMap<String, SecretValue>, BackendError> {
        match self.secrets.get(name).await {
            Ok(secret) => Ok(secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, SecretValue::new(v.0)))
                .collect()),
            Err(kube::Error::Api(status)) => Err(BackendError::from_status(
                status.code,
                format!("Secret {}/{name}: {}", self.namespace, status.message),
            )),
            Err(e) => Err(BackendError::Transient(e.to_string())),
        }
    }
}

async fn auth_info(
    ctx: &BuildContext<'_>,
    config: &KubernetesProvider,
) -> Result<AuthInfo, ProviderError> {
    let mut info = AuthInfo::default();
    let Some(auth) = &config.auth else {
        return Ok(info);
    };
    let b64 = |v: &SecretValue| base64::engine::general_purpose::STANDARD.encode(v.expose());
    if let Some(token) = &auth.token {
        let value = ctx
            .required_secret_key(token.bearer_token.as_ref(), "auth.token.bearerToken")
            .await?;
        let text = String::from_utf8(value.expose().to_vec())
            .map_err(|_| ctx.build_error("auth.token.bearerToken is not UTF-8"))?;
        info.token = Some(text.trim().to_string().into());
    } else if let Some(cert) = &auth.cert {
        let client_cert = ctx
            .required_secret_key(cert.client_cert.as_ref(), "auth.cert.clientCert")
            .await?;
        let client_key = ctx
            .required_secret_key(cert.client_key.as_ref(), "auth.cert.clientKey")
            .await?;
        info.client_certificate_data = Some(b64(&client_cert));
        info.client_key_data = Some(b64(&client_key).into());
    } else if let Some(account) = &auth.service_account {
        let token = ctx.account_token(account).await?;
        let text = String::from_utf8(token.expose().to_vec())
            .map_err(|_| ctx.build_error("service account token is not UTF-8"))?;
        info.token = Some(text.into());
    }
    Ok(info)
}

impl SecretsClient for KubernetesClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        let data = self.read(&reference.key).await?;
        match &reference.property {
            Some(property) => data.get(property).cloned().ok_or_else(|| {
                BackendError::NotFound(format!("the Secret has no key `{property}`"))
            }),
            None => {
                let object: serde_json::Map<String, serde_json::Value> = data
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::Value::String(
                                String::from_utf8_lossy(v.expose()).into_owned(),
                            ),
                        )
                    })
                    .collect();
                Ok(SecretValue::new(
                    serde_json::Value::Object(object).to_string().into_bytes(),
                ))
            }
        }
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        self.read(&reference.key).await
    }

    async fn validate(&self) -> Result<(), BackendError> {
        match self
            .secrets
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) => {
                Err(BackendError::from_status(status.code, status.message))
            }
            Err(e) => Err(BackendError::Transient(e.to_string())),
        }
    }
}
