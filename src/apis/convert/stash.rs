//! The `keyhook.io/conversion-data` annotation: values that have no place in
//! the version an object is converted to, kept so the way back restores them.
//!
//! Each entry says "the field at `path` held `value` (absent when missing);
//! after conversion it holds `as` (absent when removed)". An entry is restored
//! only while the field still holds `as`: a client that edited the field in
//! the other version wins over the stashed value.
//!
//! Entries are grouped by the version whose shape they belong to, so an
//! object can carry the leftovers of several versions at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ConversionError;

/// Annotation that carries the stash.
pub const ANNOTATION: &str = "keyhook.io/conversion-data";

/// One stashed field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// JSON pointer of the field, e.g. `/spec/target/deletionPolicy`.
    path: String,
    /// The original value; `None` when the field was absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    /// What conversion left at `path`; `None` when it removed the field.
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    as_: Option<Value>,
}

/// The decoded annotation.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stash {
    /// Entries by the API version they restore (`v1alpha1`, `v1beta1`, `v1`).
    #[serde(flatten)]
    by_version: BTreeMap<String, Vec<Entry>>,
    /// The object had an empty `metadata.annotations` map before the stash
    /// was written; keep it empty, rather than absent, on the way back.
    #[serde(
        rename = "emptyAnnotations",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    empty_annotations: bool,
}

impl Stash {
    /// Removes the annotation from `object` and decodes it.
    pub(crate) fn take(object: &mut Value) -> Result<Self, ConversionError> {
        let Some(annotations) = object
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        else {
            return Ok(Self::default());
        };
        let Some(raw) = annotations.remove(ANNOTATION) else {
            return Ok(Self::default());
        };
        let stash: Stash = raw
            .as_str()
            .ok_or_else(|| invalid("is not a string"))
            .and_then(|text| {
                serde_json::from_str(text).map_err(|e| invalid(&format!("is not valid: {e}")))
            })?;
        if annotations.is_empty()
            && !stash.empty_annotations
            && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            metadata.remove("annotations");
        }
        Ok(stash)
    }

    /// Writes the stash back into `object`, or nothing when it is empty.
    pub(crate) fn put(mut self, object: &mut Value) -> Result<(), ConversionError> {
        self.by_version.retain(|_, entries| !entries.is_empty());
        if self.by_version.is_empty() {
            return Ok(());
        }
        self.empty_annotations = object
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        let annotations = annotations_mut(object)?;
        // Serializing a map of strings and JSON values cannot fail.
        let text = serde_json::to_string(&self).unwrap_or_default();
        annotations.insert(ANNOTATION.to_owned(), Value::String(text));
        Ok(())
    }

    /// Records entries for `version`, replacing any older ones.
    pub(crate) fn record(&mut self, version: &str, entries: Vec<Entry>) {
        self.by_version.insert(version.to_owned(), entries);
    }

    /// Restores and forgets the entries of `version`.
    pub(crate) fn restore(&mut self, version: &str, object: &mut Value) {
        for entry in self.by_version.remove(version).unwrap_or_default() {
            if object.pointer(&entry.path) == entry.as_.as_ref() {
                match entry.value {
                    Some(value) => set(object, &entry.path, value),
                    None => {
                        remove(object, &entry.path);
                    }
                }
            }
        }
    }
}

/// Collects the entries one conversion step produces.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    entries: Vec<Entry>,
}

impl Recorder {
    /// Notes that `path` held `value` and now holds `as_`.
    pub(crate) fn note(&mut self, path: &str, value: Option<Value>, as_: Option<Value>) {
        if value != as_ {
            self.entries.push(Entry {
                path: path.to_owned(),
                value,
                as_,
            });
        }
    }

    pub(crate) fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

fn invalid(reason: &str) -> ConversionError {
    ConversionError::InvalidField {
        field: format!("metadata.annotations[{ANNOTATION}]"),
        reason: reason.to_owned(),
    }
}

fn annotations_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ConversionError> {
    let metadata = object
        .as_object_mut()
        .ok_or(ConversionError::NotAnObject)?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let annotations = metadata
        .as_object_mut()
        .ok_or_else(|| ConversionError::InvalidField {
            field: "metadata".to_owned(),
            reason: "is not an object".to_owned(),
        })?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    // A `null` annotations map is read as an empty one.
    if annotations.is_null() {
        *annotations = Value::Object(Map::new());
    }
    annotations
        .as_object_mut()
        .ok_or_else(|| ConversionError::InvalidField {
            field: "metadata.annotations".to_owned(),
            reason: "is not an object".to_owned(),
        })
}

fn tokens(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
}

/// Sets the field at `path`, creating missing parent objects. Array indices
/// must exist; a path that does not fit the object is left alone.
pub(crate) fn set(object: &mut Value, path: &str, value: Value) {
    let all: Vec<String> = tokens(path).collect();
    let Some((last, parents)) = all.split_last() else {
        return;
    };
    let mut node = object;
    for token in parents {
        node = match node {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            {
                Some(item) => item,
                None => return,
            },
            _ => return,
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = value;
            }
        }
        _ => {}
    }
}

/// Removes the field at `path` of an object and returns it.
pub(crate) fn remove(object: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = path.rsplit_once('/')?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = if parent.is_empty() {
        object
    } else {
        object.pointer_mut(parent)?
    };
    parent.as_object_mut()?.remove(&last)
}
