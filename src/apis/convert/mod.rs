//! Lossless conversion between `v1alpha1`, `v1beta1` and `v1`, hub and spoke
//! through `v1`.
//!
//! Conversion works on `serde_json::Value`, so fields this crate does not
//! model (other providers, fields added upstream later) are carried over by
//! construction. Only the shapes that differ between versions are touched; see
//! `docs/conversion.md` for the table. Whatever has no place in the target
//! version is kept in the [`stash::ANNOTATION`] annotation and restored on the
//! way back.

mod external_secret;
mod secret_store;
pub(crate) mod stash;
mod template;

use serde_json::Value;

use super::{Kind, Version};
pub(crate) use secret_store::go_duration_seconds as secret_store_refresh_interval;
use stash::{Recorder, Stash};
pub use template::{REMOVED_HELPERS, removed_helpers, removed_helpers_in_template};

/// Why an object could not be converted. Messages name the field; they never
/// echo field values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// The object is not a JSON object.
    #[error("object is not a JSON object")]
    NotAnObject,
    /// `apiVersion` is missing or not one of this group's versions.
    #[error("apiVersion: `{found}` is not one of external-secrets.io/v1alpha1, v1beta1, v1")]
    UnknownApiVersion {
        /// What the object carried (empty when missing).
        found: String,
    },
    /// `kind` is missing or not a kind served here.
    #[error("kind: `{found}` is not ExternalSecret, SecretStore or ClusterSecretStore")]
    UnknownKind {
        /// What the object carried (empty when missing).
        found: String,
    },
    /// A field has a shape conversion cannot map.
    #[error("{field}: {reason}")]
    InvalidField {
        /// Path of the field, e.g. `spec.refreshInterval`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Converts one `external-secrets.io` object to `to`, in place of a copy.
///
/// `metadata` is preserved, apart from the conversion annotation, which is
/// written or removed as needed. Converting to the object's own version
/// returns it unchanged.
pub fn convert_object(mut object: Value, to: Version) -> Result<Value, ConversionError> {
    let (kind, from) = identify(&object)?;
    if from == to {
        return Ok(object);
    }
    let mut stash = Stash::take(&mut object)?;
    if from != Version::V1 {
        let mut recorder = Recorder::default();
        up(kind, from, &mut object, &mut recorder)?;
        stash.record(from.as_str(), recorder.into_entries());
        stash.restore(Version::V1.as_str(), &mut object);
    }
    if to != Version::V1 {
        let mut recorder = Recorder::default();
        down(kind, to, &mut object, &mut recorder)?;
        stash.record(Version::V1.as_str(), recorder.into_entries());
        stash.restore(to.as_str(), &mut object);
    }
    set_api_version(&mut object, to)?;
    stash.put(&mut object)?;
    Ok(object)
}

/// Reads the kind and version of an `external-secrets.io` object.
pub fn identify(object: &Value) -> Result<(Kind, Version), ConversionError> {
    let map = object.as_object().ok_or(ConversionError::NotAnObject)?;
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let version = Version::from_api_version(api_version).ok_or_else(|| {
        ConversionError::UnknownApiVersion {
            found: api_version.to_owned(),
        }
    })?;
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let kind = Kind::from_name(kind).ok_or_else(|| ConversionError::UnknownKind {
        found: kind.to_owned(),
    })?;
    Ok((kind, version))
}

fn up(
    kind: Kind,
    from: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    match kind {
        Kind::ExternalSecret => external_secret::up(from, object, recorder),
        Kind::SecretStore | Kind::ClusterSecretStore => secret_store::up(from, object, recorder),
    }
}

fn down(
    kind: Kind,
    to: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    match kind {
        Kind::ExternalSecret => external_secret::down(to, object, recorder),
        Kind::SecretStore | Kind::ClusterSecretStore => secret_store::down(to, object, recorder),
    }
}

fn set_api_version(object: &mut Value, to: Version) -> Result<(), ConversionError> {
    let map = object.as_object_mut().ok_or(ConversionError::NotAnObject)?;
    map.insert(
        "apiVersion".to_owned(),
        Value::String(to.api_version().to_owned()),
    );
    Ok(())
}

/// Checks that the value at `path`, when present, is a JSON object.
pub(crate) fn object_at<'a>(
    object: &'a mut Value,
    path: &str,
) -> Result<Option<&'a mut serde_json::Map<String, Value>>, ConversionError> {
    match object.pointer_mut(path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(not_a(path, "an object")),
    }
}

/// An error for a field of the wrong JSON type.
pub(crate) fn not_a(path: &str, what: &str) -> ConversionError {
    ConversionError::InvalidField {
        field: field_name(path),
        reason: format!("is not {what}"),
    }
}

/// `/spec/dataFrom/2/find` → `spec.dataFrom[2].find`.
pub(crate) fn field_name(pointer: &str) -> String {
    let mut name = String::new();
    for token in pointer.split('/').skip(1) {
        if token.parse::<usize>().is_ok() {
            name.push_str(&format!("[{token}]"));
        } else {
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(token);
        }
    }
    name
}
