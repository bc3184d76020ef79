//! Validating admission for `ExternalSecret`, `SecretStore` and
//! `ClusterSecretStore`, in any served version.
//!
//! Each handler is a pure function from the apiserver's request to the
//! response. The object is converted to `v1` first, so one set of rules
//! covers every version; each denial names the field, in the version the
//! client wrote where the field exists there. DELETE is always allowed.

use std::sync::LazyLock;

use regex::Regex;

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{DynamicObject, GroupVersionKind};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::convert::field_name;
use super::convert::secret_store_refresh_interval;
use super::v1::{
    CreationPolicy, DeletionPolicy, ExternalSecretData, ExternalSecretDataFromRemoteRef,
    ExternalSecretSpec, IntOrString, SecretStoreSpec,
};
use super::{GROUP, Kind, Version, convert_object, removed_helpers, removed_helpers_in_template};

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
    let object = request
        .object
        .as_ref()
        .map(|object| serde_json::value::to_raw_value(object).map_err(|e| format!("object: {e}")));
    match object.transpose() {
        Ok(object) => validate_raw(kind, request, object.as_deref()),
        Err(message) => AdmissionResponse::from(request).deny(message),
    }
}

/// Validates a request whose object is given as the JSON the apiserver
/// sent (`request.object` is not read): the webhook decodes a review this
/// way, so that a `v1` object is read straight into its typed spec, never
/// into a tree of JSON values.
pub fn validate_raw<T: kube::Resource>(
    kind: Kind,
    request: &AdmissionRequest<T>,
    object: Option<&RawValue>,
) -> AdmissionResponse {
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
    let Some(object) = object else {
        return response.deny(format!("{} request without an object", kind.as_str()));
    };
    let outcome = match V1Object::read(&request.kind, object) {
        Some(v1) => v1.and_then(|v1| v1_findings(kind, v1)),
        None => hub_findings(kind, &request.kind, object),
    };
    match outcome {
        Ok((_, Findings { denials, warnings })) if denials.is_empty() => {
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response
        }
        Ok((name, Findings { denials: found, .. })) => response.deny(format!(
            "{} {} is invalid: {}",
            kind.as_str(),
            name.as_deref().unwrap_or(&request.name),
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

/// A `v1` object as sent: its name, and its `spec` still as JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Object<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<NameOnly>,
    #[serde(default, borrow)]
    spec: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<String>,
}

impl<'a> V1Object<'a> {
    /// The object, when the request is for `v1` and the object is one:
    /// `None` sends it down the conversion path.
    fn read(request_kind: &GroupVersionKind, object: &'a RawValue) -> Option<Result<Self, String>> {
        if request_kind.group != GROUP || request_kind.version != Version::V1.as_str() {
            return None;
        }
        match serde_json::from_str::<V1Object<'_>>(object.get()) {
            Ok(v1) => match v1.api_version.as_deref() {
                None => Some(Ok(v1)),
                Some(version) if version == Version::V1.api_version() => Some(Ok(v1)),
                Some(_) => None,
            },
            // Not an object of the expected shape: the conversion path
            // names what is wrong.
            Err(_) => None,
        }
    }
}

/// The rules, read off a `v1` object's typed spec.
fn v1_findings(kind: Kind, object: V1Object<'_>) -> Result<(Option<String>, Findings), String> {
    // A missing `spec` reads as an empty one, so each rule names what is
    // missing from it.
    let spec = object
        .spec
        .map(RawValue::get)
        .filter(|spec| *spec != "null")
        .unwrap_or("{}");
    let read = |spec| serde_json::Deserializer::from_str(spec);
    let findings = match kind {
        Kind::ExternalSecret => {
            let spec: ExternalSecretSpec = typed(&mut read(spec))?;
            let warnings = spec
                .target
                .as_ref()
                .and_then(|target| target.template.as_ref())
                .map(|template| removed_helper_warnings(removed_helpers_in_template(template)))
                .unwrap_or_default();
            Findings {
                denials: external_secret(&spec),
                warnings,
            }
        }
        Kind::SecretStore | Kind::ClusterSecretStore => {
            let blocks: ProviderBlocks = serde_json::from_str(spec).unwrap_or_default();
            let mut denials = provider_count(
                blocks
                    .provider
                    .into_iter()
                    .flatten()
                    .filter_map(|(name, Set(set))| set.then_some(name)),
            );
            denials.extend(store(&typed::<_, SecretStoreSpec>(&mut read(spec))?));
            Findings {
                denials,
                warnings: Vec::new(),
            }
        }
    };
    Ok((object.metadata.and_then(|m| m.name), findings))
}

/// The provider blocks of a store's spec, by name: whether each is set.
#[derive(Default, Deserialize)]
struct ProviderBlocks {
    #[serde(default)]
    provider: Option<BTreeMap<String, Set>>,
}

/// Whether a value is set (not `null`); the value itself is skipped.
struct Set(bool);

impl<'de> Deserialize<'de> for Set {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<IgnoredAny>::deserialize(deserializer).map(|value| Set(value.is_some()))
    }
}

/// The rules, read off the object converted to `v1` (any version).
fn hub_findings(
    kind: Kind,
    request_kind: &GroupVersionKind,
    object: &RawValue,
) -> Result<(Option<String>, Findings), String> {
    let mut value: Value =
        serde_json::from_str(object.get()).map_err(|e| format!("object: {e}"))?;
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(map) = value.as_object_mut() {
        let group_version = if request_kind.group.is_empty() {
            request_kind.version.clone()
        } else {
            format!("{}/{}", request_kind.group, request_kind.version)
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
        Kind::ExternalSecret => removed_helper_warnings(removed_helpers(&hub)),
        Kind::SecretStore | Kind::ClusterSecretStore => Vec::new(),
    };
    // A missing `spec` reads as an empty one, so each rule names what is
    // missing from it.
    let spec = match hub.get_mut("spec").map(Value::take) {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(spec) => spec,
    };
    let denials = match kind {
        Kind::ExternalSecret => external_secret(&typed::<_, ExternalSecretSpec>(spec)?),
        Kind::SecretStore | Kind::ClusterSecretStore => {
            let mut found = providers;
            found.extend(store(&typed::<_, SecretStoreSpec>(spec)?));
            found
        }
    };
    Ok((name, Findings { denials, warnings }))
}

/// Templates that call a helper engine `v2` removed are admitted as
/// upstream admits them, with a warning: they fail only when rendered.
fn removed_helper_warnings(found: Vec<(String, &'static str)>) -> Vec<String> {
    found
        .into_iter()
        .map(|(field, helper)| {
            format!(
                "{field} calls {helper}, which template engine v2 removed: rendering it will fail"
            )
        })
        .collect()
}

/// Reads `spec` into its `v1` type; a shape error names the field.
fn typed<'de, D: Deserializer<'de>, T: Deserialize<'de>>(spec: D) -> Result<T, String> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        format!(
            "{field}: {}",
            redact(without_position(&e.into_inner().to_string()))
        )
    })
}

/// A serde_json message without the " at line 1 column 20" it ends with
/// when read from text: the field path says where, in terms of the object.
fn without_position(message: &str) -> &str {
    static POSITION: LazyLock<Regex> = LazyLock::new(|| {
        // Constant pattern, exercised by the tests: cannot fail at run time.
        Regex::new(r" at line \d+ column \d+$").expect("constant regex")
    });
    POSITION
        .find(message)
        .map_or(message, |position| &message[..position.start()])
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
    let mut duplicates = duplicate_keys(data).into_iter().peekable();
    for (i, entry) in data.iter().enumerate() {
        if let Some((_, first)) = duplicates.next_if(|(dup, _)| *dup == i) {
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
    // An ExternalSecret's interval may be negative, as upstream's
    // metav1.Duration; only the syntax is checked.
    if let Some(interval) = &spec.refresh_interval
        && let Err(e @ crate::duration::DurationError::Syntax) = crate::duration::parse(interval)
    {
        found.push(format!("spec.refreshInterval: {e}"));
    }
    found
}

/// Every entry of `data` whose `secretKey` an earlier one has, with that
/// earlier one: `(index, first index)`, by index. Found by sorting indices
/// (four bytes an entry) rather than hashing keys, as an object can hold
/// tens of thousands.
fn duplicate_keys(data: &[ExternalSecretData]) -> Vec<(usize, usize)> {
    let key = |i: u32| data[i as usize].secret_key.as_str();
    let count = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut order: Vec<u32> = (0..count).collect();
    order.sort_unstable_by(|a, b| key(*a).cmp(key(*b)).then(a.cmp(b)));
    let mut duplicates: Vec<(usize, usize)> = order
        .chunk_by(|a, b| key(*a) == key(*b))
        .flat_map(|same| {
            let first = same[0] as usize;
            same[1..].iter().map(move |i| (*i as usize, first))
        })
        .collect();
    duplicates.sort_unstable();
    duplicates
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
    let blocks = hub
        .pointer("/spec/provider")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, block)| !block.is_null())
        .map(|(name, _)| name.clone());
    provider_count(blocks)
}

/// The denial, if any, for a store whose set provider blocks are `blocks`
/// (in name order).
fn provider_count(blocks: impl Iterator<Item = String>) -> Vec<String> {
    let blocks: Vec<String> = blocks.collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The name, denials and warnings found, or why the object was refused.
    type Outcome = Result<(Option<String>, Vec<String>, Vec<String>), String>;

    /// A change to make to a fixture.
    type Mutation = Box<dyn Fn(&mut Value)>;

    /// Both paths to the rules, for a `v1` object: read typed straight from
    /// its JSON, and converted to the hub as any other version is.
    fn both_paths(object: &Value) -> [Outcome; 2] {
        let kind = Kind::from_name(object["kind"].as_str().unwrap()).unwrap();
        let request_kind = GroupVersionKind::gvk(GROUP, "v1", kind.as_str());
        let raw = serde_json::value::to_raw_value(object).unwrap();
        let flatten = |found: Result<(Option<String>, Findings), String>| {
            found.map(|(name, f)| (name, f.denials, f.warnings))
        };
        let v1 = V1Object::read(&request_kind, &raw)
            .expect("a v1 object takes the typed path")
            .and_then(|v1| v1_findings(kind, v1));
        [
            flatten(v1),
            flatten(hub_findings(kind, &request_kind, &raw)),
        ]
    }

    fn fixtures() -> Vec<Value> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apis/v1");
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            objects.extend(serde_saphyr::from_multiple::<Value>(&text).unwrap());
        }
        objects
    }

    #[test]
    fn the_typed_path_finds_what_the_hub_path_finds() {
        let mut cases = Vec::new();
        for object in fixtures() {
            let mutations: Vec<Mutation> = match object["kind"].as_str() {
                Some("ExternalSecret") => vec![
                    Box::new(|_| {}),
                    Box::new(|o| {
                        o["spec"]["target"]["creationPolicy"] = json!("Merge");
                        o["spec"]["target"]["deletionPolicy"] = json!("Delete");
                    }),
                    Box::new(|o| {
                        o["spec"]["data"] = json!([]);
                        o["spec"]["dataFrom"] = json!([]);
                    }),
                    Box::new(|o| {
                        o["spec"]["data"] = json!([
                            {"secretKey": "a", "remoteRef": {"key": "k"}},
                            {"secretKey": "a", "remoteRef": {"key": "k"}, "sourceRef": {}}
                        ]);
                        o["spec"]["dataFrom"] =
                            json!([{"extract": {"key": "k"}, "find": {"path": "p"}}]);
                    }),
                    Box::new(|o| o["spec"]["refreshInterval"] = json!("soon")),
                    Box::new(|o| o["spec"]["data"] = json!("not a list")),
                    Box::new(|o| {
                        o["spec"]["target"]["template"]["data"] =
                            json!({"tls.crt": "{{ .cert | pemCertificate }}"});
                    }),
                    Box::new(|o| o["spec"] = Value::Null),
                    Box::new(|o| {
                        o.as_object_mut().unwrap().remove("spec");
                    }),
                ],
                _ => vec![
                    Box::new(|_| {}),
                    Box::new(|o| o["spec"]["provider"]["fake"] = json!({"data": []})),
                    Box::new(|o| o["spec"]["provider"] = json!({})),
                    Box::new(|o| {
                        o["spec"]["provider"] = json!({"vault": null, "fake": {"data": []}})
                    }),
                    Box::new(|o| o["spec"]["refreshInterval"] = json!(-5)),
                    Box::new(|o| o["spec"]["refreshInterval"] = json!("5 minutes")),
                    Box::new(|o| {
                        o["spec"]["conditions"] = json!([{"namespaceRegexes": ["(unclosed"]}])
                    }),
                    Box::new(|o| o["spec"]["conditions"] = json!("nope")),
                ],
            };
            for mutate in mutations {
                let mut case = object.clone();
                mutate(&mut case);
                cases.push(case);
            }
        }
        assert!(cases.len() > 50, "{} cases", cases.len());
        for case in cases {
            let [typed, hub] = both_paths(&case);
            assert_eq!(typed, hub, "{case}");
        }
    }
}
