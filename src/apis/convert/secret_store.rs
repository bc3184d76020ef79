//! `SecretStore` and `ClusterSecretStore` between the spokes and the hub `v1`.
//!
//! Provider blocks are the same in every version and pass through untouched.

use serde_json::Value;

use super::ConversionError;
use super::stash::{Recorder, remove};
use crate::apis::Version;

const REFRESH_INTERVAL: &str = "/spec/refreshInterval";

/// Fields of `v1` that `v1alpha1` has no place for.
const V1_ONLY_IN_ALPHA: [&str; 3] = [REFRESH_INTERVAL, "/spec/conditions", "/status/capabilities"];

/// Spoke → hub: every spoke store fits `v1` as it is (`v1beta1`'s integer
/// `refreshInterval` is one of the two forms `v1` accepts).
pub(super) fn up(_: Version, _: &mut Value, _: &mut Recorder) -> Result<(), ConversionError> {
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

/// Whole seconds of a non-negative Go duration such as `1h30m`.
pub(crate) fn go_duration_seconds(text: &str) -> Result<u64, ConversionError> {
    let duration: kube::core::Duration = text
        .parse()
        .map_err(|e| not_a_duration(&format!("is not a duration: {e}")))?;
    if duration.is_negative() {
        return Err(not_a_duration("must not be negative"));
    }
    Ok(std::time::Duration::from(duration).as_secs())
}

fn not_a_duration(reason: &str) -> ConversionError {
    ConversionError::InvalidField {
        field: "spec.refreshInterval".to_owned(),
        reason: reason.to_owned(),
    }
}
