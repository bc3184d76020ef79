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

// `Debug` leaves the value out: it is a secret, if a demo's. The schema
// requires `value` as upstream's does; reading is lenient (an entry without
// one answers an empty value), as the standalone stores file has always been.
/// One entry of the fake provider in `v1beta1` and `v1`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("required" = ["key", "value"]), transform = without_value_default)]
pub struct FakeProviderData {
    /// Remote key.
    pub key: String,
    /// Value returned for the key.
    #[serde(default)]
    pub value: String,
    /// Version the entry answers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The schema of [`FakeProviderData`] as upstream's: `value` required, with
/// no default (the `#[serde(default)]` that makes reading lenient would add one).
fn without_value_default(schema: &mut schemars::Schema) {
    if let Some(value) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("value"))
        .and_then(|v| v.as_object_mut())
    {
        value.remove("default");
    }
}

/// `provider.fake` in `v1alpha1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlphaFakeProvider {
    /// The static entries.
    pub data: Vec<AlphaFakeProviderData>,
}

// `Debug` leaves the values out.
/// One entry of the fake provider in `v1alpha1`: a `value`, or a `valueMap`
/// whose pairs a whole-secret read returns (the later versions spell that as
/// a JSON object in `value`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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

impl std::fmt::Debug for FakeProviderData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviderData")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AlphaFakeProviderData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlphaFakeProviderData")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
