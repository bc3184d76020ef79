//! `provider.onepassword`: 1Password Connect.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apis::common::SecretKeySelector;

/// `provider.onepassword` (1Password Connect).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnePasswordProvider {
    /// How to authenticate to Connect.
    pub auth: OnePasswordAuth,
    /// Connect server URL.
    pub connect_host: String,
    /// Vault names and their search order.
    pub vaults: BTreeMap<String, i64>,
}

/// `provider.onepassword.auth`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnePasswordAuth {
    /// The Connect token.
    pub secret_ref: OnePasswordAuthSecretRef,
}

/// The Connect token reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OnePasswordAuthSecretRef {
    /// Connect token.
    #[serde(rename = "connectTokenSecretRef")]
    pub connect_token: SecretKeySelector,
}
