//! `provider.fake`: static key/value pairs, for tests and demos.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `provider.fake` in `v1beta1` and `v1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeProvider {
    /// The static entries.
    pub data: Vec<FakeProviderData>,
    /// Forced store validation result, as upstream numbers it: 0 ready,
    /// 1 unknown, 2 error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_result: Option<i64>,
}

/// One entry of the fake provider in `v1beta1` and `v1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FakeProviderData {
    /// Remote key.
    pub key: String,
    /// Value returned for the key.
    pub value: String,
    /// Version the entry answers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `provider.fake` in `v1alpha1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlphaFakeProvider {
    /// The static entries.
    pub data: Vec<AlphaFakeProviderData>,
}

/// One entry of the fake provider in `v1alpha1`: a `value`, or a `valueMap`
/// whose pairs a whole-secret read returns (the later versions spell that as
/// a JSON object in `value`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlphaFakeProviderData {
    /// Remote key.
    pub key: String,
    /// Value returned for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Key/value pairs returned for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_map: Option<BTreeMap<String, String>>,
    /// Version the entry answers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}
