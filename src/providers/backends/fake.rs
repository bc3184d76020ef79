//! `fake`: static entries from `spec.provider.fake.data`, for tests and
//! standalone demos. A property selects a field of a JSON value (a
//! `v1alpha1` store's `valueMap` is converted into one).

use serde_json::Value;

use super::{BackendError, SecretsClient, json_map, json_property, json_to_secret};
use crate::apis::providers::{FakeProvider, FakeProviderData};
use crate::providers::{RemoteRef, SecretMap, SecretValue};

/// A client over a copy of the store's entries.
#[derive(Debug)]
pub struct FakeClient {
    data: Vec<FakeProviderData>,
}

impl FakeClient {
    /// Copies the entries.
    pub fn new(config: &FakeProvider) -> Self {
        Self {
            data: config.data.clone(),
        }
    }

    fn entry(&self, reference: &RemoteRef) -> Result<&FakeProviderData, BackendError> {
        let version = reference.version.as_deref().unwrap_or("");
        self.data
            .iter()
            .find(|d| d.key == reference.key && d.version.as_deref().unwrap_or("") == version)
            .ok_or_else(|| {
                BackendError::NotFound(if version.is_empty() {
                    "no such entry".into()
                } else {
                    format!("no entry with version `{version}`")
                })
            })
    }
}

fn parse_object(entry: &FakeProviderData) -> Result<Value, BackendError> {
    serde_json::from_str::<Value>(&entry.value)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            BackendError::Other("the value is not a JSON object, so it has no properties".into())
        })
}

impl SecretsClient for FakeClient {
    async fn get_secret(&self, reference: &RemoteRef) -> Result<SecretValue, BackendError> {
        let entry = self.entry(reference)?;
        let Some(property) = &reference.property else {
            return Ok(SecretValue::from(entry.value.as_str()));
        };
        let object = parse_object(entry)?;
        json_property(&object, property)
            .map(json_to_secret)
            .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`")))
    }

    async fn get_secret_map(&self, reference: &RemoteRef) -> Result<SecretMap, BackendError> {
        let entry = self.entry(reference)?;
        let object = parse_object(entry)?;
        let object = match &reference.property {
            Some(property) => json_property(&object, property)
                .ok_or_else(|| BackendError::NotFound(format!("no property `{property}`")))?
                .clone(),
            None => object,
        };
        json_map(&object)
            .ok_or_else(|| BackendError::Other("the selected value is not a JSON object".into()))
    }

    async fn validate(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
