//! `onepassword`: 1Password Connect.
//!
//! `key` is an item title (or item id), looked up vault by vault in the
//! order of `vaults` priorities (1 first); `property` is a field label
//! (default `password`). Vault ids are resolved once, when the client is
//! built, and belong to this client alone.

use serde::Deserialize;
use serde_json::Value;

use super::http::{client, transport_error};
use super::{BackendError, BuildContext, SecretsClient};
use crate::apis::providers::OnePasswordProvider;
use crate::providers::{ProviderError, RemoteRef, SecretMap, SecretValue};

/// A client for one Connect server, token and ordered vault list.
pub struct OnePasswordClient {
    http: reqwest::Client,
    host: String,
    token: SecretValue,
    /// `(name, id)` in lookup order.
    vaults: Vec<(String, String)>,
}

impl std::fmt::Debug for OnePasswordClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnePasswordClient")
            .field("host", &self.host)
            .field("vaults", &self.vaults)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Summary {
    id: String,
}

#[derive(Deserialize)]
struct FullItem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct Field {
    #[serde(default)]
    label: String,
    #[serde(default)]
    value: Option<String>,
}

/// Connect's error body: `{"status": 404, "message": "..."}`.
fn error_message(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_string()
}

/// Connect item ids are 26 lowercase alphanumerics.
fn is_item_id(key: &str) -> bool {
    key.len() == 26
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

impl OnePasswordClient {
    pub(crate) async fn build(
        ctx: &BuildContext<'_>,
        config: &OnePasswordProvider,
    ) -> Result<Self, ProviderError> {
        let token = ctx
            .secret_key(&config.auth.secret_ref.connect_token)
            .await?;
        if config.connect_host.is_empty() {
            return Err(ctx.build_error("connectHost is required"));
        }
        if config.vaults.is_empty() {
            return Err(ctx.build_error("vaults must name at least one vault"));
        }
        let ca = None;
        let mut client = Self {
            http: client(ca, None).map_err(|e| ctx.build_error(e))?,
            host: config.connect_host.trim_end_matches('/').to_string(),
            token,
            vaults: Vec::new(),
        };
        let mut ordered: Vec<(&String, &i64)> = config.vaults.iter().collect();
        ordered.sort_by_key(|(name, priority)| (**priority, (*name).clone()));
        for (name, _) in ordered {
            let filter = format!("name eq \"{name}\"");
            let found: Vec<Summary> = client
                .get_json("/v1/vaults", &[("filter", &filter)])
                .await
                .map_err(|e| ctx.build_error(format!("vault `{name}`: {e}")))?;
            match found.as_slice() {
                [vault] => client.vaults.push((name.clone(), vault.id.clone())),
                [] => return Err(ctx.build_error(format!("vault `{name}` not found"))),
                many => {
                    return Err(ctx.build_error(format!(
                        "vault name `{name}` matches {} vaults",
                        many.len()
                    )));
                }
            }
        }
        Ok(client)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, BackendError> {
        let token = std::str::from_utf8(self.token.expose())
            .map_err(|_| BackendError::Other("the Connect token is not UTF-8".into()))?;
        let response = self
            .http
            .get(format!("{}{path}", self.host))
            .query(query)
            .bearer_auth(token.trim())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        if status != 200 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(BackendError::from_status(
                status,
                format!("Connect HTTP {status}: {}", error_message(&body)),
            ));
        }
        response.json().await.map_err(transport_error)
    }

    async fn find_item(&self, key: &str) -> Result<FullItem, BackendError> {
        for (name, id) in &self.vaults {
            if is_item_id(key) {
                match self
                    .get_json::<FullItem>(&format!("/v1/vaults/{id}/items/{key}"), &[])
                    .await
                {
                    Err(BackendError::NotFound(_)) => continue,
                    other => return other,
                }
            }
            let filter = format!("title eq \"{key}\"");
            let items: Vec<Summary> = self
                .get_json(&format!("/v1/vaults/{id}/items"), &[("filter", &filter)])
                .await?;
            match items.as_slice() {
                [] => continue,
                [item] => {
                    return self
                        .get_json(&format!("/v1/vaults/{id}/items/{}", item.id), &[])
                        .await;
                }
                many => {
                    return Err(BackendError::Other(format!(
                        "title matches {} items in vault `{name}`; expected one",
                        many.len()
                    )));
                }
            }
        }
        let names: Vec<&str> = self.vaults.iter().map(|(n, _)| n.as_str()).collect();
        Err(BackendError::NotFound(format!(
            "no item with this title in vaults {names:?}"
        )))
    }
}

fn field_value(item: &FullItem, label: &str) -> Result<SecretValue, BackendError> {
    let mut matching = item.fields.iter().filter(|f| f.label == label);
    match (matching.next(), matching.next()) {
        (Some(field), None) => Ok(SecretValue::from(field.value.as_deref().unwrap_or(""))),
        (None, _) => Err(BackendError::NotFound(format!(
            "item `{}` has no field `{label}`",
            item.title
        ))),
        (Some(_), Some(_)) => Err(BackendError::Other(format!(
            "item `{}` has several fields labelled `{label}`",
            item.title
        ))),
    }
}

impl SecretsClient for OnePasswordClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        if reference.version.is_some() {
            return Err(BackendError::Other(
                "1Password Connect items have no versions".into(),
            ));
        }
        let item = self.find_item(&reference.key).await?;
        field_value(&item, reference.property.as_deref().unwrap_or("password"))
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        if reference.version.is_some() {
            return Err(BackendError::Other(
                "1Password Connect items have no versions".into(),
            ));
        }
        let item = self.find_item(&reference.key).await?;
        let mut map = SecretMap::new();
        for field in &item.fields {
            if reference
                .property
                .as_deref()
                .is_some_and(|p| p != field.label)
            {
                continue;
            }
            map.insert(field.label.clone(), field_value(&item, &field.label)?);
        }
        Ok(map)
    }

    async fn validate(&self) -> Result<(), BackendError> {
        for (_, id) in &self.vaults {
            self.get_json::<Value>(&format!("/v1/vaults/{id}"), &[])
                .await?;
        }
        Ok(())
    }
}
