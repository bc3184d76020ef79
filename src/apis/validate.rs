//! Validating admission for `ExternalSecret`, `SecretStore` and
//! `ClusterSecretStore`, in any served version.
//!
//! Each handler is a pure function from the apiserver's request to the
//! response. The object is converted to `v1` first, so one set of rules
//! covers every version; each denial names the field, in the version the
//! client wrote where the field exists there. DELETE is always allowed.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::convert::field_name;
use super::convert::secret_store_refresh_interval;
use super::v1::{
    CreationPolicy, DeletionPolicy, ExternalSecretDataFromRemoteRef, ExternalSecretSpec,
    IntOrString, SecretStoreSpec,
};
use super::{Kind, Version, convert_object, removed_helpers};

/// Secret type that an ExternalSecret must not produce: bootstrap tokens
/// grant cluster join rights.
const BOOTSTRAP_TOKEN: &str = "bootstrap.kubernetes.io/token";

/// Validates a request for any of the three kinds, dispatching on
/// `request.kind.kind`.
pub fn validate(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    match Kind::from_name(&request.kind.kind) {
        Some(kind) => validate_kind(kind, request),
        None => AdmissionResponse::from(request).deny(format!(
            "kind `{}` is not validated here: expected ExternalSecret, SecretStore or ClusterSecretStore",
            request.kind.kind
        )),
    }
}

/// `/validate-externalsecret`.
pub fn validate_external_secret(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    validate_kind(Kind::ExternalSecret, request)
}

/// `/validate-secretstore`.
pub fn validate_secret_store(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    validate_kind(Kind::SecretStore, request)
}

/// `/validate-clustersecretstore`.
pub fn validate_cluster_secret_store(
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    validate_kind(Kind::ClusterSecretStore, request)
}

fn validate_kind(kind: Kind, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation == Operation::Delete {
        return response;
    }
    if request.kind.kind != kind.as_str() {
        return response.deny(format!(
            "this endpoint validates {}, the request is for `{}`",
            kind.as_str(),
            request.kind.kind
        ));
    }
    let Some(object) = &request.object else {
        return response.deny(format!("{} request without an object", kind.as_str()));
    };
    match violations(kind, request, object) {
        Ok(Findings { denials, warnings }) if denials.is_empty() => {
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response
        }
        Ok(Findings { denials: found, .. }) => response.deny(format!(
            "{} {} is invalid: {}",
            kind.as_str(),
            object.metadata.name.as_deref().unwrap_or(&request.name),
            found.join("; ")
        )),
        Err(message) => response.deny(message),
    }
}

/// What the rules found in an object.
struct Findings {
    /// Every rule the object breaks, each naming its field.
    denials: Vec<String>,
    /// What is allowed but will fail later, each naming its field.
    warnings: Vec<String>,
}

/// Checks the object against every rule.
fn violations(
    kind: Kind,
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
) -> Result<Findings, String> {
    let mut value = serde_json::to_value(object).map_err(|e| format!("object: {e}"))?;
    if let Some(map) = value.as_object_mut() {
        let group_version = if request.kind.group.is_empty() {
            request.kind.version.clone()
        } else {
            format!("{}/{}", request.kind.group, request.kind.version)
        };
        map.entry("apiVersion")
            .or_insert(Value::String(group_version));
        map.entry("kind")
            .or_insert(Value::String(kind.as_str().to_owned()));
    }
    let mut hub = convert_object(value, Version::V1).map_err(|e| e.to_string())?;
    let providers = match kind {
        Kind::ExternalSecret => Vec::new(),
        Kind::SecretStore | Kind::ClusterSecretStore => store_providers(&hub),
    };
    let warnings = match kind {
        Kind::ExternalSecret => removed_helper_warnings(&hub),
        Kind::SecretStore | Kind::ClusterSecretStore => Vec::new(),
    };
    // A missing `spec` reads as an empty one, so each rule names what is
    // missing from it.
    let spec = match hub.get_mut("spec").map(Value::take) {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(spec) => spec,
    };
    let denials = match kind {
        Kind::ExternalSecret => external_secret(&typed::<ExternalSecretSpec>(spec)?),
        Kind::SecretStore | Kind::ClusterSecretStore => {
            let mut found = providers;
            found.extend(store(&typed::<SecretStoreSpec>(spec)?));
            found
        }
    };
    Ok(Findings { denials, warnings })
}

/// Templates that call a helper engine `v2` removed are admitted as
/// upstream admits them, with a warning: they fail only when rendered.
fn removed_helper_warnings(hub: &Value) -> Vec<String> {
    removed_helpers(hub)
        .into_iter()
        .map(|(field, helper)| {
            format!(
                "{field} calls {helper}, which template engine v2 removed: rendering it will fail"
            )
        })
        .collect()
}

/// Reads `spec` into its `v1` type; a shape error names the field.
fn typed<T: DeserializeOwned>(spec: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        format!("{field}: {}", redact(&e.into_inner().to_string()))
    })
}

/// Drops the offending value from a serde message ("invalid type: string
/// \"hunter2\", expected …"): the field may hold a secret, e.g. a fake
/// provider's `value`.
fn redact(message: &str) -> String {
    static FOUND_VALUE: LazyLock<Regex> = LazyLock::new(|| {
        // Constant pattern, exercised by the tests: cannot fail at run time.
        Regex::new(r#"^(invalid type: \w+|invalid value: \w+|unknown variant|unknown field) (`[^`]*`|"(?:[^"\\]|\\.)*"|[^\s,]+)"#)
            .expect("constant regex")
    });
    FOUND_VALUE.replace(message, "$1").into_owned()
}

fn external_secret(spec: &ExternalSecretSpec) -> Vec<String> {
    let mut found = Vec::new();
    let target = spec.target.as_ref();
    let creation = target
        .and_then(|t| t.creation_policy)
        .unwrap_or(CreationPolicy::Owner);
    match target.and_then(|t| t.deletion_policy) {
        Some(DeletionPolicy::Delete)
            if matches!(
                creation,
                CreationPolicy::Merge | CreationPolicy::None | CreationPolicy::CreateOrMerge
            ) =>
        {
            found.push(format!(
                "spec.target.deletionPolicy: Delete requires a Secret keyhook owns, not spec.target.creationPolicy {creation:?}"
            ));
        }
        Some(DeletionPolicy::Merge) if creation == CreationPolicy::None => {
            found.push(
                "spec.target.deletionPolicy: Merge needs a Secret to merge with, but spec.target.creationPolicy is None"
                    .to_owned(),
            );
        }
        _ => {}
    }
    if let Some(kind) = target
        .and_then(|t| t.template.as_ref())
        .and_then(|t| t.type_.as_deref())
        .filter(|t| *t == BOOTSTRAP_TOKEN)
    {
        found.push(format!(
            "spec.target.template.type: `{kind}` is not allowed"
        ));
    }
    let data = spec.data.as_deref().unwrap_or_default();
    let data_from = spec.data_from.as_deref().unwrap_or_default();
    if data.is_empty() && data_from.is_empty() {
        found.push("spec: either spec.data or spec.dataFrom must be set".to_owned());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in data.iter().enumerate() {
        if let Some(first) = seen.insert(entry.secret_key.as_str(), i) {
            seen.insert(entry.secret_key.as_str(), first);
            found.push(format!(
                "spec.data[{i}].secretKey: duplicate key `{}`, also in spec.data[{first}]",
                entry.secret_key
            ));
        }
        if let Some(source) = &entry.source_ref
            && source.store_ref.is_none()
            && source.generator_ref.is_none()
        {
            found.push(format!(
                "spec.data[{i}].sourceRef: one of storeRef or generatorRef must be set"
            ));
        }
    }
    for (i, entry) in data_from.iter().enumerate() {
        found.extend(data_from_entry(i, entry));
    }
    if let Some(interval) = &spec.refresh_interval
        && let Err(e) = interval.parse::<kube::core::Duration>()
    {
        found.push(format!(
            "spec.refreshInterval: not a duration such as `1h30m`: {e}"
        ));
    }
    found
}

fn data_from_entry(i: usize, entry: &ExternalSecretDataFromRemoteRef) -> Option<String> {
    let generator = entry
        .source_ref
        .as_ref()
        .and_then(|s| s.generator_ref.as_ref());
    if let Some(source) = &entry.source_ref
        && source.store_ref.is_none()
        && source.generator_ref.is_none()
    {
        return Some(format!(
            "spec.dataFrom[{i}].sourceRef: one of storeRef or generatorRef must be set"
        ));
    }
    let set: Vec<&str> = [
        (entry.extract.is_some(), "extract"),
        (entry.find.is_some(), "find"),
        (generator.is_some(), "sourceRef.generatorRef"),
    ]
    .into_iter()
    .filter_map(|(present, name)| present.then_some(name))
    .collect();
    match set.len() {
        1 => None,
        0 => Some(format!(
            "spec.dataFrom[{i}]: one of extract, find or sourceRef.generatorRef must be set"
        )),
        _ => Some(format!(
            "spec.dataFrom[{i}]: only one of extract, find or sourceRef.generatorRef may be set, found {}",
            set.join(", ")
        )),
    }
}

/// Exactly one provider block, counted on the raw object so that providers
/// this crate does not model count too.
fn store_providers(hub: &Value) -> Vec<String> {
    let blocks: Vec<&str> = hub
        .pointer("/spec/provider")
        .and_then(Value::as_object)
        .map(|provider| {
            provider
                .iter()
                .filter(|(_, block)| !block.is_null())
                .map(|(name, _)| name.as_str())
                .collect()
        })
        .unwrap_or_default();
    match blocks.len() {
        1 => Vec::new(),
        0 => vec!["spec.provider: exactly one provider block must be set, found none".to_owned()],
        _ => vec![format!(
            "spec.provider: exactly one provider block must be set, found {}",
            blocks.join(", ")
        )],
    }
}

fn store(spec: &SecretStoreSpec) -> Vec<String> {
    let mut found = Vec::new();
    match &spec.refresh_interval {
        Some(IntOrString::Int(seconds)) if *seconds < 0 => {
            found.push("spec.refreshInterval: must not be negative".to_owned());
        }
        Some(IntOrString::String(text)) => {
            if let Err(e) = secret_store_refresh_interval(text) {
                found.push(e.to_string());
            }
        }
        _ => {}
    }
    for (c, condition) in spec.conditions.iter().flatten().enumerate() {
        for (r, pattern) in condition.namespace_regexes.iter().flatten().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                let field = field_name(&format!("/spec/conditions/{c}/namespaceRegexes/{r}"));
                let reason = e.to_string().lines().last().unwrap_or_default().to_owned();
                found.push(format!("{field}: not a valid regular expression: {reason}"));
            }
        }
    }
    found
}
