//! A YAML stream as a tree of nodes that know where they sit in the source
//! text, so that a conversion can rewrite exactly the spans it changes.

use std::collections::HashMap;
use std::ops::Range;

use granit_parser::{Event, Parser, ScalarStyle, Span, StructureStyle, Tag};
use serde_json::Value;

use super::scalar;

/// One document of a stream.
#[derive(Debug)]
pub(crate) struct Document {
    /// The document's content, `None` for an empty document.
    pub root: Option<Node>,
    /// Keys a mapping repeats, with the 1-based line of the repetition; the
    /// last occurrence counts, as in the apiserver's YAML reader.
    pub duplicate_keys: Vec<(String, usize)>,
}

/// A node and the source text it covers.
///
/// `span` runs from the node's first byte to its last: the indicator of a
/// block scalar (`|`, `>`), the first dash of a block sequence, the first key
/// of a block mapping, the bracket of a flow collection. Trailing blank lines
/// and comments are outside it.
#[derive(Debug)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub kind: NodeKind,
}

/// What a node is.
#[derive(Debug)]
pub(crate) enum NodeKind {
    /// A scalar, with its value already resolved.
    Scalar {
        value: Value,
        style: ScalarStyle,
        /// For block scalars: the column of the content lines.
        content_indent: Option<usize>,
    },
    /// A mapping; keys are resolved to strings.
    Mapping { flow: bool, entries: Vec<Entry> },
    /// A sequence.
    Sequence { flow: bool, items: Vec<Node> },
    /// An alias of an earlier anchored node: its value, which edits must not
    /// touch in place.
    Alias(Value),
}

/// One `key: value` of a mapping.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: Node,
}

/// The stream could not be read; positions count from 1.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub document: usize,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl Node {
    /// The JSON value of the node.
    pub(crate) fn value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar { value, .. } | NodeKind::Alias(value) => value.clone(),
            NodeKind::Mapping { entries, .. } => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.value()))
                    .collect(),
            ),
            NodeKind::Sequence { items, .. } => {
                Value::Array(items.iter().map(Node::value).collect())
            }
        }
    }

    /// Whether the node is a flow collection (`{…}`, `[…]`).
    pub(crate) fn is_flow(&self) -> bool {
        matches!(
            self.kind,
            NodeKind::Mapping { flow: true, .. } | NodeKind::Sequence { flow: true, .. }
        )
    }
}

/// Parses every document of `text`.
pub(crate) fn parse(text: &str) -> Result<Vec<Document>, ParseError> {
    let mut builder = Builder {
        text,
        documents: Vec::new(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        last_end: 0,
        duplicates: Vec::new(),
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ParseError {
            document: builder.documents.len() + 1,
            line: e.marker().line(),
            column: e.marker().col() + 1,
            reason: e.info(),
        })?;
        builder
            .event(event, span)
            .map_err(|(at, reason)| builder.error_at(at, reason))?;
    }
    Ok(builder.documents)
}

/// An open collection while its children are read.
enum Open {
    Mapping {
        start: usize,
        flow: bool,
        anchor: usize,
        entries: Vec<Entry>,
        /// A key read, waiting for its value.
        key: Option<(String, Range<usize>)>,
    },
    Sequence {
        start: usize,
        flow: bool,
        anchor: usize,
        items: Vec<Node>,
    },
    Document {
        root: Option<Node>,
    },
}

struct Builder<'a> {
    text: &'a str,
    documents: Vec<Document>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Value>,
    /// End of the last token read: a block scalar's indicator comes after it.
    last_end: usize,
    /// Repeated keys of the current document.
    duplicates: Vec<(String, usize)>,
}

type Failure = (usize, String);

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Failure> {
        let start = offset(span.start.byte_offset(), span.start.index());
        let end = offset(span.end.byte_offset(), span.end.index());
        match event {
            Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(..) => {
                self.anchors.clear();
                self.last_end = end;
                self.stack.push(Open::Document { root: None });
            }
            Event::DocumentEnd => {
                if let Some(Open::Document { root }) = self.stack.pop() {
                    self.documents.push(Document {
                        root,
                        duplicate_keys: std::mem::take(&mut self.duplicates),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = self.scalar(&text, style, tag.as_deref(), start, end, span.indent);
                self.last_end = end;
                if anchor != 0 {
                    self.anchors.insert(anchor, node.value());
                }
                self.push(node, start)?;
            }
            Event::Alias(anchor) => {
                let value = self
                    .anchors
                    .get(&anchor)
                    .cloned()
                    .ok_or_else(|| (start, "alias of an unknown anchor".to_owned()))?;
                self.last_end = end;
                let node = Node {
                    span: start..end,
                    kind: NodeKind::Alias(value),
                };
                self.push(node, start)?;
            }
            Event::MappingStart(style, anchor, _) => {
                let flow = style == StructureStyle::Flow;
                if flow {
                    self.last_end = end;
                }
                self.stack.push(Open::Mapping {
                    start,
                    flow,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceStart(style, anchor, _) => {
                let flow = style == StructureStyle::Flow;
                if flow {
                    self.last_end = end;
                }
                let start = if flow {
                    start
                } else {
                    dash_before(self.text, start)
                };
                self.stack.push(Open::Sequence {
                    start,
                    flow,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingEnd => {
                if let Some(Open::Mapping {
                    start,
                    flow,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let end = if flow {
                        end
                    } else {
                        entries.last().map_or(start, |e| e.value.span.end)
                    };
                    self.last_end = self.last_end.max(end);
                    let node = Node {
                        span: start..end,
                        kind: NodeKind::Mapping { flow, entries },
                    };
                    if anchor != 0 {
                        self.anchors.insert(anchor, node.value());
                    }
                    self.push(node, start)?;
                }
            }
            Event::SequenceEnd => {
                if let Some(Open::Sequence {
                    start,
                    flow,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    let end = if flow {
                        end
                    } else {
                        items.last().map_or(start, |i| i.span.end)
                    };
                    self.last_end = self.last_end.max(end);
                    let node = Node {
                        span: start..end,
                        kind: NodeKind::Sequence { flow, items },
                    };
                    if anchor != 0 {
                        self.anchors.insert(anchor, node.value());
                    }
                    self.push(node, start)?;
                }
            }
            // Comments, anchor names and anything newer carry no data.
            _ => {}
        }
        Ok(())
    }

    fn scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        start: usize,
        end: usize,
        indent: Option<usize>,
    ) -> Node {
        let value = scalar::resolve(text, style, tag);
        if !matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            return Node {
                span: start..end,
                kind: NodeKind::Scalar {
                    value,
                    style,
                    content_indent: None,
                },
            };
        }
        // The parser's span covers the content; the node starts at its
        // indicator and ends with its last non-blank character.
        let source = self.text.as_bytes();
        let header = (self.last_end..start)
            .find(|&i| matches!(source[i], b'|' | b'>'))
            .unwrap_or(start);
        let trimmed = self.text[..end.max(header)]
            .trim_end()
            .len()
            .max(header + 1);
        Node {
            span: header..trimmed,
            kind: NodeKind::Scalar {
                value,
                style,
                content_indent: indent,
            },
        }
    }

    /// Adds a finished node to its parent.
    fn push(&mut self, node: Node, at: usize) -> Result<(), Failure> {
        match self.stack.last_mut() {
            Some(Open::Document { root }) => *root = Some(node),
            Some(Open::Sequence { items, .. }) => items.push(node),
            Some(Open::Mapping { entries, key, .. }) => match key.take() {
                None => {
                    let NodeKind::Scalar { value, .. } = &node.kind else {
                        return Err((at, "a mapping key must be a scalar".to_owned()));
                    };
                    let name = match value {
                        Value::String(s) => s.clone(),
                        // The key as written: `on`, `012`, `true` stay what
                        // they say.
                        _ => self.text[node.span.clone()].to_owned(),
                    };
                    if entries.iter().any(|e| e.key == name) {
                        let line = self.text[..at].matches('\n').count() + 1;
                        self.duplicates.push((name.clone(), line));
                    }
                    *key = Some((name, node.span));
                }
                Some((name, key_span)) => entries.push(Entry {
                    key: name,
                    key_span,
                    value: node,
                }),
            },
            None => {}
        }
        Ok(())
    }

    fn error_at(&self, at: usize, reason: String) -> ParseError {
        let before = &self.text[..at.min(self.text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            document: self.documents.len() + 1,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            reason,
        }
    }
}

/// Where the `- ` of a block sequence item starting at `item` is (`item`
/// itself when no dash precedes it).
pub(crate) fn dash_before(text: &str, item: usize) -> usize {
    text[..item]
        .char_indices()
        .rev()
        .find(|&(_, c)| c != ' ')
        .filter(|&(_, c)| c == '-')
        .map_or(item, |(i, _)| i)
}

fn offset(bytes: Option<usize>, chars: usize) -> usize {
    bytes.unwrap_or(chars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_know_their_source_spans() {
        let text = "a: 1\nb:\n  - x\n  - {k: v}\nc: |\n  line\n\nd: end\n---\n- 012\n";
        let documents = parse(text).unwrap();
        assert_eq!(documents.len(), 2);
        let root = documents[0].root.as_ref().unwrap();
        assert_eq!(
            root.value(),
            json!({"a": 1, "b": ["x", {"k": "v"}], "c": "line\n", "d": "end"})
        );
        let NodeKind::Mapping { entries, .. } = &root.kind else {
            panic!("{root:?}")
        };
        let span = |i: usize| &text[entries[i].value.span.clone()];
        assert_eq!(span(1), "- x\n  - {k: v}");
        assert_eq!(span(2), "|\n  line");
        assert_eq!(span(3), "end");
        assert_eq!(documents[1].root.as_ref().unwrap().value(), json!([10]));
    }

    #[test]
    fn a_repeated_key_counts_last_and_is_reported() {
        let documents = parse("a: 1\n---\nb: 1\nb: 2\n").unwrap();
        assert_eq!(documents[1].root.as_ref().unwrap().value(), json!({"b": 2}));
        assert_eq!(documents[1].duplicate_keys, [("b".to_owned(), 4)]);
        assert!(documents[0].duplicate_keys.is_empty());
    }

    #[test]
    fn a_syntax_error_names_its_document_and_line() {
        let error = parse("a: 1\n---\nb: [1\n").unwrap_err();
        assert_eq!(error.document, 2);
        assert!(error.line >= 3, "{error:?}");
    }
}
