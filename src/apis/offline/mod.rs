//! `keyhook convert`: converts the `external-secrets.io` objects of a YAML or
//! JSON stream offline, with the code the `/convert` webhook runs, and
//! changes no more text than the conversion does.
//!
//! `ExternalSecret`, `SecretStore` and `ClusterSecretStore` objects (also
//! inside a `kind: List`, as `kubectl get -o yaml` prints) are converted;
//! every other document is left byte for byte. In a converted document only
//! the spans whose value changed are rewritten (`patch`), in the
//! document's own layout; comments, key order, quoting and every untouched
//! line stay. Each edited document is read back and must equal the
//! converted object; one that does not is written anew, with a warning.

mod lint;
mod patch;
mod render;
mod scalar;
mod tree;

use std::fmt;
use std::ops::Range;

use serde_json::Value;

use super::convert::{ConversionError, convert_object, identify};
use super::crds::CrdError;
use super::{GROUP, Kind, Version};
use lint::Schemas;
use patch::{Edit, Patcher};
use render::Layout;
use tree::Node;

/// Why a stream could not be converted. Nothing is written then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The input is not YAML or JSON.
    #[error("document {document}, line {line}, column {column}: not valid YAML or JSON: {reason}")]
    Parse {
        /// 1-based index of the document in the stream.
        document: usize,
        /// 1-based line in the input.
        line: usize,
        /// 1-based column in the input.
        column: usize,
        /// The parser's message.
        reason: String,
    },
    /// One object could not be converted.
    #[error("document {document}{object}: {error}")]
    Convert {
        /// 1-based index of the document in the stream.
        document: usize,
        /// The object, e.g. ` item 2 (SecretStore team-a/vault)`.
        object: String,
        /// What went wrong, naming the field.
        error: ConversionError,
    },
    /// keyhook's own schemas could not be built (a defect in keyhook).
    #[error("reading keyhook's CRD schemas: {0}")]
    Schemas(#[from] CrdError),
    /// A converted document could not be written so that it reads back as
    /// the converted object (a defect in keyhook).
    #[error("document {document}: the converted text does not read back as the converted object")]
    Render {
        /// 1-based index of the document in the stream.
        document: usize,
    },
}

/// The converted stream and what the user should know about it.
#[derive(Debug)]
pub struct Converted {
    /// The output text.
    pub output: String,
    /// Warnings, in document order.
    pub warnings: Vec<Warning>,
}

/// Something in the input that converts but will not work as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based index of the document in the stream.
    pub document: usize,
    /// The object, e.g. ` (ExternalSecret team-a/db)`.
    pub object: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "document {}{}: {}",
            self.document, self.object, self.message
        )
    }
}

/// Paths of the fields of `object` (a `kind` in `version`) that keyhook's
/// schema does not have, such as `spec.provider.fake.data[0].valu`: typos,
/// mostly, which would otherwise be dropped without a word.
pub fn unknown_fields(kind: Kind, version: Version, object: &Value) -> Result<Vec<String>, String> {
    static SCHEMAS: std::sync::OnceLock<Result<Schemas, String>> = std::sync::OnceLock::new();
    match SCHEMAS.get_or_init(|| Schemas::load().map_err(|e| e.to_string())) {
        Ok(schemas) => Ok(schemas.unknown_fields(kind, version, object)),
        // keyhook's own CRDs do not build: a defect, said as such.
        Err(reason) => Err(format!("reading keyhook's CRD schemas: {reason}")),
    }
}

/// Converts every `external-secrets.io` object of `input` to `to`.
///
/// Documents are counted from 1 in errors and warnings. Nothing is returned
/// unless every document converted.
pub fn convert_documents(input: &str, to: Version) -> Result<Converted, OfflineError> {
    let schemas = Schemas::load()?;
    let mut run = Run {
        to,
        schemas: &schemas,
        warnings: Vec::new(),
        documents: 0,
    };
    let mut edits = Vec::new();
    for chunk in chunks(input)? {
        let text = &input[chunk.clone()];
        let documents = tree::parse(text).map_err(|e| OfflineError::Parse {
            document: run.documents + e.document,
            line: input[..chunk.start].matches('\n').count() + e.line,
            column: e.column,
            reason: e.reason,
        })?;
        for document in documents {
            run.documents += 1;
            for (key, line) in &document.duplicate_keys {
                run.warnings.push(Warning {
                    document: run.documents,
                    object: String::new(),
                    message: format!(
                        "line {}: key `{key}` repeats one above it; the last one counts (kubectl's \
                         strict field validation refuses such a file)",
                        input[..chunk.start].matches('\n').count() + line
                    ),
                });
            }
            if let Some(root) = &document.root {
                edits.extend(run.document(text, root)?.into_iter().map(|edit| Edit {
                    range: edit.range.start + chunk.start..edit.range.end + chunk.start,
                    text: edit.text,
                }));
            }
        }
    }
    Ok(Converted {
        output: patch::apply(input, 0, &edits),
        warnings: run.warnings,
    })
}

/// One conversion of a stream.
struct Run<'s> {
    to: Version,
    schemas: &'s Schemas,
    warnings: Vec<Warning>,
    /// Documents seen so far; the current one's number.
    documents: usize,
}

impl Run<'_> {
    /// The edits for one document (none when nothing of it changes).
    fn document(&mut self, text: &str, root: &Node) -> Result<Vec<Edit>, OfflineError> {
        let old = root.value();
        let new = self.convert(&old)?;
        if new == old {
            return Ok(Vec::new());
        }
        let end = text[root.span.end..]
            .find('\n')
            .map_or(text.len(), |i| root.span.end + i);
        let range = root.span.start..end;
        let layout = Layout::of(&text[range.clone()]);
        let edits = Patcher::new(text, layout).root(root, &old, &new);
        if reads_back(text, &range, &edits, &new) {
            return Ok(edits);
        }
        self.warnings.push(Warning {
            document: self.documents,
            object: String::new(),
            message: "its layout could not be kept; the converted document is written anew \
                      (comments and key order are lost)"
                .to_owned(),
        });
        let edits = vec![Edit {
            range: root.span.clone(),
            text: layout.document(&new),
        }];
        if reads_back(text, &range, &edits, &new) {
            Ok(edits)
        } else {
            Err(OfflineError::Render {
                document: self.documents,
            })
        }
    }

    /// The document converted: itself, one of ours, or a `List` of objects.
    fn convert(&mut self, value: &Value) -> Result<Value, OfflineError> {
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List");
        if is_list && let Some(Value::Array(items)) = value.get("items") {
            let mut converted = value.clone();
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(self.object(item, &format!(" item {}", i + 1))?);
            }
            converted["items"] = Value::Array(out);
            return Ok(converted);
        }
        self.object(value, "")
    }

    /// One object converted if it is one of ours, else as it is.
    fn object(&mut self, value: &Value, position: &str) -> Result<Value, OfflineError> {
        let in_group = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.split('/').next() == Some(GROUP));
        let named_kind = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| Kind::from_name(k).is_some());
        if !in_group || !named_kind {
            return Ok(value.clone());
        }
        let object = format!("{position} ({})", label(value));
        let document = self.documents;
        let (kind, from) = identify(value).map_err(|error| OfflineError::Convert {
            document,
            object: object.clone(),
            error,
        })?;
        for field in self.schemas.unknown_fields(kind, from, value) {
            self.warnings.push(Warning {
                document,
                object: object.clone(),
                message: format!(
                    "{field} is not a field of {} {}; it is carried over unchanged",
                    from.api_version(),
                    kind.as_str()
                ),
            });
        }
        if kind == Kind::ExternalSecret {
            for (field, helper) in lint::removed_helper_uses(value) {
                self.warnings.push(Warning {
                    document,
                    object: object.clone(),
                    message: format!(
                        "{field} calls {helper}, which template engine v2 removed; it is kept \
                         as written and fails when rendered"
                    ),
                });
            }
        }
        convert_object(value.clone(), self.to).map_err(|error| OfflineError::Convert {
            document,
            object,
            error,
        })
    }
}

/// `ExternalSecret team-a/db`, as far as the object allows.
fn label(value: &Value) -> String {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (
        value.pointer("/metadata/namespace").and_then(Value::as_str),
        value.pointer("/metadata/name").and_then(Value::as_str),
    ) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => format!("{kind} <unnamed>"),
    }
}

/// Whether the document at `range`, edited, reads back as `expected`.
fn reads_back(text: &str, range: &Range<usize>, edits: &[Edit], expected: &Value) -> bool {
    if patch::overlapping(edits)
        || edits
            .iter()
            .any(|e| e.range.start < range.start || e.range.end > range.end)
    {
        return false;
    }
    let edited = patch::apply(&text[range.clone()], range.start, edits);
    match tree::parse(&edited) {
        Ok(documents) => {
            documents.len() == 1
                && documents[0].root.as_ref().map(Node::value).as_ref() == Some(expected)
        }
        Err(_) => false,
    }
}

/// The parts of `input` parsed one at a time: the whole YAML stream, or each
/// value of a stream of JSON values (which YAML would not read as one).
fn chunks(input: &str) -> Result<Vec<Range<usize>>, OfflineError> {
    if !input.trim_start().starts_with(['{', '[']) {
        let whole: Range<usize> = 0..input.len();
        return Ok(vec![whole]);
    }
    let mut chunks = Vec::new();
    let mut values = serde_json::Deserializer::from_str(input).into_iter::<serde::de::IgnoredAny>();
    let mut start = 0;
    while let Some(value) = values.next() {
        if let Err(e) = value {
            let message = e.to_string();
            // serde_json appends the position, which the error names itself.
            let reason = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(reason, _)| reason);
            return Err(OfflineError::Parse {
                document: chunks.len() + 1,
                line: e.line(),
                column: e.column(),
                reason: reason.to_owned(),
            });
        }
        let end = values.byte_offset();
        let skipped = input[start..end].len() - input[start..end].trim_start().len();
        chunks.push(start + skipped..end);
        start = end;
    }
    Ok(chunks)
}
