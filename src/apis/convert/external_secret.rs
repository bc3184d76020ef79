//! `ExternalSecret` between its spoke versions and the hub `v1`.

use serde_json::{Map, Value};

use super::stash::{Recorder, remove};
use super::{ConversionError, not_a, object_at, template};
use crate::apis::Version;

const TEMPLATE: &str = "/spec/target/template";
const ENGINE_VERSION: &str = "/spec/target/template/engineVersion";
const TEMPLATE_DATA: &str = "/spec/target/template/data";
const CREATION_POLICY: &str = "/spec/target/creationPolicy";
const DATA: &str = "/spec/data";
const DATA_FROM: &str = "/spec/dataFrom";
const TEMPLATE_FROM: &str = "/spec/target/template/templateFrom";

/// Fields of `v1` that `v1alpha1` has no place for; removed and stashed.
const V1_ONLY_IN_ALPHA: [&str; 3] = [
    "/spec/target/deletionPolicy",
    "/spec/refreshPolicy",
    "/spec/target/template/mergePolicy",
];

/// Fields of a `v1` remote reference that `v1alpha1` lacks.
const V1_ONLY_REMOTE_REF: [&str; 2] = ["metadataPolicy", "decodingStrategy"];

/// Spoke → hub.
pub(super) fn up(
    from: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    if from == Version::V1Alpha1
        && let Some(entries) = array_at(object, DATA_FROM)?
    {
        for (i, entry) in entries.iter_mut().enumerate() {
            if alpha_entry_shape(i, entry)? == EntryShape::Flat {
                *entry = Value::Object(Map::from_iter([("extract".to_owned(), entry.take())]));
            }
        }
    }
    upgrade_template_engine(from, object, recorder)
}

/// Fields of a `v1alpha1` flat `dataFrom[]` remote reference.
const FLAT_FIELDS: [&str; 4] = ["key", "property", "version", "conversionStrategy"];
/// Fields only a `v1beta1`/`v1` `dataFrom[]` entry has.
const HUB_FIELDS: [&str; 4] = ["extract", "find", "rewrite", "sourceRef"];

/// What a `dataFrom[]` entry of a `v1alpha1` object looks like.
#[derive(Debug, PartialEq, Eq)]
enum EntryShape {
    /// `v1alpha1`'s own flat remote reference: wrap it in `extract`.
    Flat,
    /// Already the later shape (upstream's docs have such snippets under
    /// `v1alpha1`): keep it, never nest it a second time.
    Hub,
}

fn alpha_entry_shape(index: usize, entry: &Value) -> Result<EntryShape, ConversionError> {
    let Value::Object(map) = entry else {
        return Ok(EntryShape::Flat);
    };
    let flat: Vec<&str> = FLAT_FIELDS
        .into_iter()
        .filter(|f| map.contains_key(*f))
        .collect();
    let hub: Vec<&str> = HUB_FIELDS
        .into_iter()
        .filter(|f| map.contains_key(*f))
        .collect();
    match (flat.is_empty(), hub.is_empty()) {
        (_, true) => Ok(EntryShape::Flat),
        (true, false) => Ok(EntryShape::Hub),
        (false, false) => Err(ConversionError::InvalidField {
            field: format!("spec.dataFrom[{index}]"),
            reason: format!(
                "mixes v1alpha1's flat remote reference ({}) with the v1beta1 entry shape ({}); \
                 keep one of the two",
                flat.join(", "),
                hub.join(", "),
            ),
        }),
    }
}

/// Hub → spoke.
pub(super) fn down(
    to: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    map_creation_policy(to, object, recorder)?;
    if to == Version::V1Beta1 {
        project(
            object,
            TEMPLATE_FROM,
            recorder,
            beta_template_from,
            Clone::clone,
        )?;
    }
    if to != Version::V1Alpha1 {
        return Ok(());
    }
    for path in V1_ONLY_IN_ALPHA {
        if let Some(value) = remove(object, path) {
            recorder.note(path, Some(value), None);
        }
    }
    // v1alpha1 requires both; every field of them is optional, so an empty
    // one says what an absent one did.
    if let Some(spec) = object_at(object, "/spec")? {
        for field in ["secretStoreRef", "target"] {
            if !spec.contains_key(field) {
                spec.insert(field.to_owned(), Value::Object(Map::new()));
                recorder.note(
                    &format!("/spec/{field}"),
                    None,
                    Some(Value::Object(Map::new())),
                );
            }
        }
    }
    // v1alpha1 defaults the engine to v1: a template that relied on the v2
    // default must say so.
    if let Some(template) = object_at(object, TEMPLATE)?
        && !template.contains_key("engineVersion")
    {
        template.insert("engineVersion".to_owned(), Value::from("v2"));
        recorder.note(ENGINE_VERSION, None, Some(Value::from("v2")));
    }
    project(
        object,
        TEMPLATE_FROM,
        recorder,
        alpha_template_from,
        Clone::clone,
    )?;
    project(object, DATA, recorder, alpha_data, Clone::clone)?;
    project(object, DATA_FROM, recorder, alpha_data_from, |flat| {
        Value::Object(Map::from_iter([("extract".to_owned(), flat.clone())]))
    })
}

/// Engine `v1` exists only in the spokes: map it to `v2`, the only engine of
/// `v1`, rewriting the templates as upstream's migration guide says.
fn upgrade_template_engine(
    from: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    let Some(template) = object_at(object, TEMPLATE)? else {
        return Ok(());
    };
    let engine = template.get("engineVersion").cloned();
    let is_v1 = match &engine {
        Some(Value::String(v)) => v == "v1",
        None => from == Version::V1Alpha1, // v1alpha1's default engine
        Some(_) => return Err(not_a(ENGINE_VERSION, "a string")),
    };
    if !is_v1 {
        return Ok(());
    }
    template.insert("engineVersion".to_owned(), Value::from("v2"));
    recorder.note(ENGINE_VERSION, engine, Some(Value::from("v2")));
    match template.get_mut("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => {
            let mut rewritten = data.clone();
            for (key, value) in rewritten.iter_mut() {
                let Value::String(text) = value else {
                    return Err(not_a(&format!("{TEMPLATE_DATA}/{key}"), "a string"));
                };
                *text = template::v1_to_v2(text);
            }
            if &rewritten != data {
                let original = std::mem::replace(data, rewritten.clone());
                recorder.note(
                    TEMPLATE_DATA,
                    Some(Value::Object(original)),
                    Some(Value::Object(rewritten)),
                );
            }
        }
        Some(_) => return Err(not_a(TEMPLATE_DATA, "an object")),
    }
    Ok(())
}

/// `creationPolicy` values a spoke lacks map to the nearest one it has:
/// `Orphan` (create, unowned) → `Owner`, `CreateOrMerge` → `Merge`.
fn map_creation_policy(
    to: Version,
    object: &mut Value,
    recorder: &mut Recorder,
) -> Result<(), ConversionError> {
    let Some(policy) = object.pointer_mut(CREATION_POLICY) else {
        return Ok(());
    };
    let mapped = match (to, policy.as_str()) {
        (_, Some("CreateOrMerge")) => "Merge",
        (Version::V1Alpha1, Some("Orphan")) => "Owner",
        _ => return Ok(()),
    };
    let original = std::mem::replace(policy, Value::from(mapped));
    recorder.note(CREATION_POLICY, Some(original), Some(Value::from(mapped)));
    Ok(())
}

/// Replaces the array at `path` by its projection into the target version
/// when that loses anything; the original goes to the stash. `up` maps a
/// projected item back to hub shape, to record what the way back will see.
fn project(
    object: &mut Value,
    path: &str,
    recorder: &mut Recorder,
    item: fn(&Value) -> Option<Value>,
    up: fn(&Value) -> Value,
) -> Result<(), ConversionError> {
    let Some(items) = array_at(object, path)? else {
        return Ok(());
    };
    let projected: Vec<Value> = items.iter().filter_map(item).collect();
    if projected == *items {
        return Ok(());
    }
    let as_ = (!projected.is_empty()).then(|| Value::Array(projected.iter().map(up).collect()));
    let original = if projected.is_empty() {
        remove(object, path)
    } else {
        let original = std::mem::replace(items, projected);
        Some(Value::Array(original))
    };
    recorder.note(path, original, as_);
    Ok(())
}

/// Where `v1beta1` lets template output go; `v1` also takes a path inside
/// `spec.target.manifest`.
const BETA_TEMPLATE_TARGETS: [&str; 3] = ["Data", "Annotations", "Labels"];

/// A `templateFrom` entry whose `target` is a manifest path, without that
/// target (`v1beta1` has no manifests).
fn beta_template_from(entry: &Value) -> Option<Value> {
    let mut entry = entry.clone();
    if let Some(map) = entry.as_object_mut()
        && map
            .get("target")
            .and_then(Value::as_str)
            .is_some_and(|t| !BETA_TEMPLATE_TARGETS.contains(&t))
    {
        map.remove("target");
    }
    Some(entry)
}

/// A `templateFrom` entry without what `v1alpha1` lacks (`target`,
/// `literal`, `valuesDecodingStrategy`, `items[].templateAs`); dropped when
/// it reads neither a ConfigMap nor a Secret, the only sources `v1alpha1` has.
fn alpha_template_from(entry: &Value) -> Option<Value> {
    let Value::Object(map) = entry else {
        return Some(entry.clone());
    };
    if !map.contains_key("configMap") && !map.contains_key("secret") {
        return None;
    }
    let mut map = map.clone();
    for field in ["target", "literal", "valuesDecodingStrategy"] {
        map.remove(field);
    }
    for source in ["configMap", "secret"] {
        if let Some(Value::Array(items)) = map
            .get_mut(source)
            .and_then(|s| s.as_object_mut())
            .and_then(|s| s.get_mut("items"))
        {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.remove("templateAs");
            }
        }
    }
    Some(Value::Object(map))
}

/// A `data[]` entry without `sourceRef` and the v1-only remote-ref fields.
fn alpha_data(entry: &Value) -> Option<Value> {
    let Value::Object(map) = entry else {
        return Some(entry.clone());
    };
    let mut map = map.clone();
    map.remove("sourceRef");
    if let Some(remote_ref) = map.get_mut("remoteRef").and_then(Value::as_object_mut) {
        for field in V1_ONLY_REMOTE_REF {
            remote_ref.remove(field);
        }
    }
    Some(Value::Object(map))
}

/// A `dataFrom[]` entry as v1alpha1's flat remote reference: its `extract`,
/// as upstream's conversion did; entries without one have no v1alpha1 form.
fn alpha_data_from(entry: &Value) -> Option<Value> {
    let mut extract = entry.get("extract")?.as_object()?.clone();
    for field in V1_ONLY_REMOTE_REF {
        extract.remove(field);
    }
    Some(Value::Object(extract))
}

fn array_at<'a>(
    object: &'a mut Value,
    path: &str,
) -> Result<Option<&'a mut Vec<Value>>, ConversionError> {
    match object.pointer_mut(path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(not_a(path, "an array")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apis::convert::stash::set;

    #[test]
    fn alpha_data_from_keeps_only_extract_entries() {
        let entry = json!({"extract": {"key": "k", "decodingStrategy": "Base64"}});
        assert_eq!(alpha_data_from(&entry), Some(json!({"key": "k"})));
        assert_eq!(alpha_data_from(&json!({"find": {"path": "p"}})), None);
    }

    #[test]
    fn set_and_remove_follow_json_pointers() {
        let mut object = json!({"spec": {}});
        set(&mut object, "/spec/target/name", json!("n"));
        assert_eq!(object, json!({"spec": {"target": {"name": "n"}}}));
        assert_eq!(remove(&mut object, "/spec/target/name"), Some(json!("n")));
    }
}
