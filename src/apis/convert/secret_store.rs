//! `SecretStore` and `ClusterSecretStore` between the spokes and the hub `v1`.
//!
//! Provider blocks are the same in every version, except two of `v1alpha1`:
//! the Kubernetes provider's ServiceAccount sits one level deeper
//! (`auth.serviceAccount.serviceAccount`), and a fake entry may hold a
//! `valueMap` instead of a `value`.

use serde_json::{Map, Value};

use super::ConversionError;
use super::stash::{Recorder, remove};
use crate::apis::Version;

const REFRESH_INTERVAL: &str = "/spec/refreshInterval";
const SERVICE_ACCOUNT: &str = "/spec/provider/kubernetes/auth/serviceAccount";
const FAKE_DATA: &str = "/spec/provider/fake/data";

/// Fields of `v1` that `v1alpha1` has no place for.
const V1_ONLY_IN_ALPHA: [&str; 3] = [REFRESH_INTERVAL, "/spec/conditions", "/status/capabilities"];

/// Spoke → hub. `v1beta1` fits `v1` as it is (its integer `refreshInterval`
/// is one of the two forms `v1` accepts).
pub(super) fn up(
    from: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    if from != Version::V1Alpha1 {
        return Ok(());
    }
    if let Some(slot) = object.pointer_mut(SERVICE_ACCOUNT)
        && let Some(reference) = unwrap_service_account(slot)
    {
        *slot = reference;
    }
    if let Some(Value::Array(entries)) = object.pointer_mut(FAKE_DATA) {
        for (i, entry) in entries.iter_mut().enumerate() {
            if let Some(converted) = fake_value_from_map(entry) {
                let original = std::mem::replace(entry, converted.clone());
                recorder.note(&format!("{FAKE_DATA}/{i}"), Some(original), Some(converted));
            }
        }
    }
    Ok(())
}

/// Hub → spoke.
pub(super) fn down(
    to: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    match to {
        Version::V1Alpha1 => {
            for path in V1_ONLY_IN_ALPHA {
                if let Some(value) = remove(object, path) {
                    recorder.note(path, Some(value), None);
                }
            }
            if let Some(account @ Value::Object(_)) = object.pointer_mut(SERVICE_ACCOUNT) {
                let inner = account.take();
                *account = Value::Object(Map::from_iter([("serviceAccount".to_owned(), inner)]));
            }
        }
        Version::V1Beta1 => {
            // v1 accepts a duration string; v1beta1 only whole seconds.
            if let Some(interval) = object.pointer_mut(REFRESH_INTERVAL)
                && let Value::String(text) = interval
            {
                let seconds = go_duration_seconds(text)?;
                let original = std::mem::replace(interval, Value::from(seconds));
                recorder.note(REFRESH_INTERVAL, Some(original), Some(Value::from(seconds)));
            }
        }
        Version::V1 => {}
    }
    Ok(())
}

/// The reference inside `v1alpha1`'s `{serviceAccount: {name, …}}`; `None`
/// when the block has any other shape (such as the later versions' own).
fn unwrap_service_account(block: &mut Value) -> Option<Value> {
    let map = block.as_object_mut()?;
    if map.len() != 1 {
        return None;
    }
    match map.get_mut("serviceAccount")? {
        reference @ Value::Object(_) => Some(reference.take()),
        _ => None,
    }
}

/// A `v1alpha1` fake entry with a `valueMap` and no `value`, as the later
/// versions say it: the map as a JSON object in `value`, which the fake
/// provider reads back as the same pairs.
fn fake_value_from_map(entry: &Value) -> Option<Value> {
    let map = entry.as_object()?;
    if map.contains_key("value") {
        return None;
    }
    let pairs = map.get("valueMap")?.as_object()?;
    let mut converted = map.clone();
    converted.remove("valueMap");
    converted.insert(
        "value".to_owned(),
        Value::String(Value::Object(pairs.clone()).to_string()),
    );
    Some(Value::Object(converted))
}

/// Whole seconds of a non-negative Go duration such as `1h30m`.
pub(crate) fn go_duration_seconds(text: &str) -> Result<u64, ConversionError> {
    crate::duration::parse(text)
        .map(|duration| duration.as_secs())
        .map_err(|e| not_a_duration(&e.to_string()))
}

fn not_a_duration(reason: &str) -> ConversionError {
    ConversionError::InvalidField {
        field: "spec.refreshInterval".to_owned(),
        reason: reason.to_owned(),
    }
}
