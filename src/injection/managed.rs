//! A managed Secret's shape: the `keyhook-<hash>` Secret keyhook writes for
//! a workload, its labels and annotations, and what can be read back from
//! it without its values. Both places it is kept ([`super::secret`]) and
//! the caches that watch it ([`super::caches`]) read it through here.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::reference::SecretSpec;
use crate::FIELD_MANAGER;
use crate::providers::SecretValue;

/// The label marking a Secret as keyhook's.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The annotation holding the references (never values).
pub const REFERENCES_ANNOTATION: &str = "keyhook.io/references";
/// The annotation holding the time of the last fetch (RFC 3339).
pub const FETCHED_AT_ANNOTATION: &str = "keyhook.io/fetched-at";

/// What is known of a managed Secret without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSecret {
    /// The pod's namespace.
    pub namespace: String,
    /// `keyhook-<hash>`.
    pub name: String,
    /// The references it holds.
    pub spec: SecretSpec,
    /// When its values were last fetched.
    pub fetched_at: OffsetDateTime,
    /// Its data keys.
    pub keys: BTreeSet<String>,
}

/// The Secret object keyhook writes for `secret` with `data`.
pub fn manifest(secret: &ManagedSecret, data: &BTreeMap<String, SecretValue>) -> Secret {
    let engine = base64::engine::general_purpose::STANDARD;
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.clone(), engine.encode(v.expose())))
        .collect();
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret.name,
            "namespace": secret.namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER},
            "annotations": {
                REFERENCES_ANNOTATION: serde_json::to_string(&secret.spec).unwrap_or_default(),
                FETCHED_AT_ANNOTATION: secret.fetched_at.format(&Rfc3339).unwrap_or_default(),
            },
        },
        "type": "Opaque",
        "data": data,
    });
    // The value above has exactly the shape of a v1 Secret.
    serde_json::from_value(value).unwrap_or_default()
}

/// Reads a managed Secret's record back; `None` when it is not keyhook's or
/// its annotations are unreadable (it is then rewritten on next use).
pub fn record(secret: &Secret) -> Option<ManagedSecret> {
    let mut found = record_from_meta(&secret.metadata)?;
    found.keys = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    Some(found)
}

/// The record of a managed Secret from its metadata alone (`keys` empty).
pub(super) fn record_from_meta(meta: &ObjectMeta) -> Option<ManagedSecret> {
    let managed = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == FIELD_MANAGER);
    if !managed {
        return None;
    }
    let annotations = meta.annotations.as_ref()?;
    let spec = serde_json::from_str(annotations.get(REFERENCES_ANNOTATION)?).ok()?;
    let fetched_at =
        OffsetDateTime::parse(annotations.get(FETCHED_AT_ANNOTATION)?, &Rfc3339).ok()?;
    Some(ManagedSecret {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        spec,
        fetched_at,
        keys: BTreeSet::new(),
    })
}

/// Decodes a Secret's data for tests and tools that read a manifest back.
pub fn decoded(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, ByteString(v))| (k.clone(), v.clone()))
        .collect()
}
