//! `keyhook convert`: converts a multi-document YAML or JSON stream offline,
//! with the same code the `/convert` webhook runs.
//!
//! `ExternalSecret`, `SecretStore` and `ClusterSecretStore` objects (also
//! inside a `kind: List`, as `kubectl get -o yaml` prints) are converted;
//! every other document passes through unchanged.

use serde_json::Value;

use super::convert::{ConversionError, convert_object};
use super::{GROUP, Kind, Version};

/// Why a stream could not be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The input is not YAML or JSON.
    #[error("input is not a YAML or JSON stream: {reason}")]
    Parse {
        /// The parser's message.
        reason: String,
    },
    /// One object could not be converted.
    #[error("document {document}{object}: {source}")]
    Convert {
        /// 1-based index of the document in the stream.
        document: usize,
        /// The object, e.g. ` item 2 (SecretStore team-a/vault)`.
        object: String,
        /// What went wrong, naming the field.
        source: Box<ConversionError>,
    },
    /// The output could not be rendered.
    #[error("rendering the output: {reason}")]
    Render {
        /// The serializer's message.
        reason: String,
    },
}

/// Converts every `external-secrets.io` object of `input` to `to`.
///
/// JSON input (a stream of one or more JSON values) gives JSON output, one
/// pretty-printed value per document; anything else is read as YAML and
/// written as a multi-document YAML stream. Nothing is returned unless every
/// document converted.
pub fn convert_documents(input: &str, to: Version) -> Result<String, OfflineError> {
    let is_json = input.trim_start().starts_with(['{', '[']);
    let documents: Vec<Value> = if is_json {
        serde_json::Deserializer::from_str(input)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(|e| OfflineError::Parse {
                reason: e.to_string(),
            })?
    } else {
        serde_saphyr::from_multiple(input).map_err(|e| OfflineError::Parse {
            reason: e.to_string(),
        })?
    };
    let converted = documents
        .into_iter()
        .enumerate()
        .map(|(index, document)| convert_document(index + 1, document, to))
        .collect::<Result<Vec<_>, _>>()?;
    if is_json {
        let mut out = String::new();
        for document in &converted {
            let text =
                serde_json::to_string_pretty(document).map_err(|e| OfflineError::Render {
                    reason: e.to_string(),
                })?;
            out.push_str(&text);
            out.push('\n');
        }
        Ok(out)
    } else {
        serde_saphyr::to_string_multiple(&converted).map_err(|e| OfflineError::Render {
            reason: e.to_string(),
        })
    }
}

fn convert_document(document: usize, mut value: Value, to: Version) -> Result<Value, OfflineError> {
    let is_list = value.get("kind").and_then(Value::as_str) == Some("List");
    if is_list && let Some(Value::Array(items)) = value.get_mut("items") {
        for (i, item) in items.iter_mut().enumerate() {
            let taken = item.take();
            *item = convert_one(taken, to).map_err(|(object, source)| OfflineError::Convert {
                document,
                object: format!(" item {i}{object}"),
                source: Box::new(source),
            })?;
        }
        return Ok(value);
    }
    convert_one(value, to).map_err(|(object, source)| OfflineError::Convert {
        document,
        object,
        source: Box::new(source),
    })
}

/// Converts one object if it is one of ours, else returns it as it is. An
/// error comes with a label of the object, e.g. ` (SecretStore team-a/vault)`.
fn convert_one(value: Value, to: Version) -> Result<Value, (String, ConversionError)> {
    let in_group = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.split('/').next() == Some(GROUP));
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !in_group || Kind::from_name(&kind).is_none() {
        return Ok(value);
    }
    let name = match (
        value.pointer("/metadata/namespace").and_then(Value::as_str),
        value.pointer("/metadata/name").and_then(Value::as_str),
    ) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => "<unnamed>".to_owned(),
    };
    convert_object(value, to).map_err(|e| (format!(" ({kind} {name})"), e))
}
