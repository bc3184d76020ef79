//! `vault` (and `openBao`, the same API): KV version 1 and 2 reads.
//!
//! Auth: a static token (`tokenSecretRef`), AppRole (`appRole`), or the
//! Kubernetes auth method (`kubernetes`, with a token from a Secret or a
//! service account). `namespace` is sent as `X-Vault-Namespace` on reads;
//! `auth.namespace` (defaulting to it) on the login call.
//!
//! A token from a login (AppRole, Kubernetes) expires with its lease; the
//! client reports the lease in [`VaultClient::credentials_lifetime`] and the
//! client cache retires it before then, so the next fetch logs in afresh.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::http::{client, decode_pem_field, transport_error};
use super::{BackendError, BuildContext, SecretsClient, json_map, json_property, json_to_secret};
use crate::apis::providers::{KvVersion, VaultProvider};
use crate::providers::{ProviderError, RemoteRef, SecretMap, SecretValue};

const NAMESPACE_HEADER: &str = "X-Vault-Namespace";
const TOKEN_HEADER: &str = "X-Vault-Token";

/// A client for one Vault/OpenBao server, mount and namespace, holding its own token.
pub struct VaultClient {
    http: reqwest::Client,
    server: String,
    mount: String,
    version: KvVersion,
    headers: HeaderMap,
    /// The lease of a token this client logged in for; `None` for a token
    /// given in a Secret (its owner renews it) or one that never expires.
    lease: Option<Duration>,
}

/// A token, and how long Vault leased it for.
struct Login {
    token: SecretValue,
    lease: Option<Duration>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("server", &self.server)
            .field("mount", &self.mount)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn header(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::try_from(name).map_err(|e| format!("header `{name}`: {e}"))?;
    let mut value = HeaderValue::from_bytes(value)
        .map_err(|_| format!("header `{name}` has a value that is not a valid header"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Vault's error body: `{"errors": ["..."]}`.
fn error_message(body: &Value) -> String {
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if errors.is_empty() {
        "no error message".into()
    } else {
        errors.join("; ")
    }
}

impl VaultClient {
    pub(crate) async fn build(
        ctx: &BuildContext<'_>,
        config: &VaultProvider,
    ) -> Result<Self, ProviderError> {
        let ca = config.ca_bundle.as_deref().map(decode_pem_field);
        let http = client(ca.as_deref(), None).map_err(|e| ctx.build_error(e))?;
        let server = config.server.trim_end_matches('/').to_string();
        let mount = config
            .path
            .as_deref()
            .unwrap_or("secret")
            .trim_matches('/')
            .to_string();
        let mut headers = HeaderMap::new();
        for (name, value) in config.headers.iter().flatten() {
            let (name, value) = header(name, value.as_bytes()).map_err(|e| ctx.build_error(e))?;
            headers.insert(name, value);
        }
        if let Some(namespace) = &config.namespace {
            let (name, value) =
                header(NAMESPACE_HEADER, namespace.as_bytes()).map_err(|e| ctx.build_error(e))?;
            headers.insert(name, value);
        }
        let mut client = Self {
            http,
            server,
            mount,
            version: config.version.unwrap_or(KvVersion::V2),
            headers,
            lease: None,
        };
        let login = client.login(ctx, config).await?;
        let (name, value) = header(TOKEN_HEADER, login.token.expose())
            .map_err(|_| ctx.build_error("the Vault token is not a valid header value"))?;
        client.headers.insert(name, value);
        client.lease = login.lease;
        Ok(client)
    }

    /// How long the token this client logged in for stays valid from the
    /// build; `None` when it does not expire on keyhook's watch.
    pub fn credentials_lifetime(&self) -> Option<Duration> {
        self.lease
    }

    async fn login(
        &self,
        ctx: &BuildContext<'_>,
        config: &VaultProvider,
    ) -> Result<Login, ProviderError> {
        let Some(auth) = &config.auth else {
            return Err(ctx.build_error("spec.provider.vault.auth is required"));
        };
        if let Some(token) = &auth.token_secret_ref {
            return Ok(Login {
                token: ctx.secret_key(token).await?,
                lease: None,
            });
        }
        let (mount, body) = if let Some(app_role) = &auth.app_role {
            let role_id = match &app_role.role_ref {
                Some(r) => String::from_utf8(ctx.secret_key(r).await?.expose().to_vec())
                    .map_err(|_| ctx.build_error("appRole.roleRef is not UTF-8"))?,
                None => app_role.role_id.clone().unwrap_or_default(),
            };
            let secret_id = ctx.secret_key(&app_role.secret_ref).await?;
            let secret_id = std::str::from_utf8(secret_id.expose())
                .map_err(|_| ctx.build_error("appRole.secretRef is not UTF-8"))?
                .to_string();
            let mount = if app_role.path.is_empty() {
                "approle"
            } else {
                app_role.path.as_str()
            };
            (
                mount.to_string(),
                zeroize::Zeroizing::new(
                    json!({ "role_id": role_id.trim(), "secret_id": secret_id.trim() }).to_string(),
                ),
            )
        } else if let Some(kubernetes) = &auth.kubernetes {
            let jwt = match (&kubernetes.secret_ref, &kubernetes.service_account_ref) {
                (Some(secret), _) => ctx.secret_key(secret).await?,
                (None, Some(account)) => ctx.account_token(account).await?,
                (None, None) => {
                    return Err(
                        ctx.build_error("auth.kubernetes needs secretRef or serviceAccountRef")
                    );
                }
            };
            let jwt = std::str::from_utf8(jwt.expose())
                .map_err(|_| ctx.build_error("the Kubernetes auth token is not UTF-8"))?
                .trim()
                .to_string();
            let mount = if kubernetes.mount_path.is_empty() {
                "kubernetes"
            } else {
                kubernetes.mount_path.as_str()
            };
            (
                mount.to_string(),
                zeroize::Zeroizing::new(json!({ "role": kubernetes.role, "jwt": jwt }).to_string()),
            )
        } else {
            return Err(
                ctx.build_error("auth: keyhook supports tokenSecretRef, appRole and kubernetes")
            );
        };
        let url = format!("{}/v1/auth/{}/login", self.server, mount.trim_matches('/'));
        let mut request = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec());
        if let Some(namespace) = auth.namespace.as_ref().or(config.namespace.as_ref()) {
            request = request.header(NAMESPACE_HEADER, namespace);
        }
        let response = request.send().await.map_err(|e| {
            ctx.build_error(format!("login at auth/{mount}: {}", transport_error(e)))
        })?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| {
            ctx.build_error(format!("login at auth/{mount}: {}", transport_error(e)))
        })?;
        if !status.is_success() {
            return Err(ctx.build_error(format!(
                "login at auth/{mount}: HTTP {}: {}",
                status.as_u16(),
                error_message(&answer)
            )));
        }
        let token = answer
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .map(SecretValue::from)
            .ok_or_else(|| {
                ctx.build_error(format!(
                    "login at auth/{mount}: no client_token in the answer"
                ))
            })?;
        // A lease of 0 is a token without a TTL.
        let lease = answer
            .pointer("/auth/lease_duration")
            .and_then(Value::as_u64)
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs);
        Ok(Login { token, lease })
    }

    /// The key's data object.
    async fn read(&self, reference: &RemoteRef) -> Result<Value, BackendError> {
        let key = reference.key.trim_matches('/');
        let url = match self.version {
            KvVersion::V2 => format!("{}/v1/{}/data/{key}", self.server, self.mount),
            KvVersion::V1 => {
                if reference.version.is_some() {
                    return Err(BackendError::Other("KV version 1 has no versions".into()));
                }
                format!("{}/v1/{}/{key}", self.server, self.mount)
            }
        };
        let mut request = self.http.get(&url).headers(self.headers.clone());
        if let Some(version) = &reference.version {
            request = request.query(&[("version", version)]);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            let message = match error_message(&body) {
                m if status == 404 && m == "no error message" => {
                    format!("{}/{key}: no such secret", self.mount)
                }
                m => format!("{}/{key}: HTTP {status}: {m}", self.mount),
            };
            return Err(BackendError::from_status(status, message));
        }
        let data = match self.version {
            KvVersion::V2 => body.pointer("/data/data"),
            KvVersion::V1 => body.get("data"),
        };
        match data {
            Some(data @ Value::Object(_)) => Ok(data.clone()),
            _ => Err(BackendError::NotFound(format!(
                "{}/{key}: the secret version is deleted or empty",
                self.mount
            ))),
        }
    }
}

impl SecretsClient for VaultClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        let data = self.read(reference).await?;
        match &reference.property {
            Some(property) => json_property(&data, property)
                .map(json_to_secret)
                .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`"))),
            None => Ok(SecretValue::new(data.to_string().into_bytes())),
        }
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        let data = self.read(reference).await?;
        let selected = match &reference.property {
            Some(property) => json_property(&data, property)
                .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`")))?,
            None => &data,
        };
        json_map(selected)
            .ok_or_else(|| BackendError::Other("the selected value is not a JSON object".into()))
    }

    async fn validate(&self) -> Result<(), BackendError> {
        let url = format!("{}/v1/auth/token/lookup-self", self.server);
        let response = self
            .http
            .get(&url)
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(BackendError::from_status(
            status,
            format!("token lookup: HTTP {status}: {}", error_message(&body)),
        ))
    }
}
