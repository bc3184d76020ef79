//! New YAML text for values a conversion adds, in the layout of the document
//! they go into.

use serde_json::Value;

use super::scalar::{self, Quoting};

/// How a document lays out its YAML, learnt from its text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Spaces per nesting level.
    pub indent: usize,
    /// How far a block sequence's dashes sit right of its key (0 as kubectl
    /// writes them, or 2).
    pub dash_offset: usize,
    /// The line break, `\n` or `\r\n`.
    pub newline: &'static str,
    /// Whether the document is JSON: flow collections with quoted keys.
    pub json: bool,
}

impl Layout {
    /// The layout of `text`, one document.
    pub(crate) fn of(text: &str) -> Self {
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let json = text.trim_start().starts_with(['{', '[']);
        let mut indent = None;
        let mut dash_offset = None;
        let mut previous: Option<(usize, bool)> = None;
        for line in text.lines() {
            let content = line.trim_start_matches(' ');
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let column = line.len() - content.len();
            if let Some((above, opens_block)) = previous
                && opens_block
            {
                if content.starts_with("- ") || content == "-" {
                    dash_offset.get_or_insert(column.saturating_sub(above));
                } else if column > above {
                    indent.get_or_insert(column - above);
                }
            }
            let key_column = if let Some(rest) = content.strip_prefix("- ") {
                column + 2 + (rest.len() - rest.trim_start_matches(' ').len())
            } else {
                column
            };
            previous = Some((key_column, content.trim_end().ends_with(':')));
            if indent.is_some() && dash_offset.is_some() {
                break;
            }
        }
        Layout {
            indent: indent.filter(|&i| i > 0).unwrap_or(2),
            dash_offset: dash_offset.unwrap_or(0),
            newline,
            json,
        }
    }

    /// How keys and strings are quoted.
    pub(crate) fn quoting(&self) -> Quoting {
        if self.json {
            Quoting::Double
        } else {
            Quoting::Plain
        }
    }

    /// `value` as the value of a `key:` whose key sits at `column`: the text
    /// that follows the colon, starting with a space or a line break.
    pub(crate) fn after_key(&self, value: &Value, column: usize) -> String {
        match value {
            Value::Object(map) if !map.is_empty() => {
                format!(
                    "{}{}",
                    self.newline,
                    self.block(value, column + self.indent)
                )
            }
            Value::Array(items) if !items.is_empty() => {
                format!(
                    "{}{}",
                    self.newline,
                    self.block(value, column + self.dash_offset)
                )
            }
            _ => format!(" {}", scalar::inline(value, self.quoting())),
        }
    }

    /// `value` as a whole document: pretty JSON in a JSON stream, else a
    /// block.
    pub(crate) fn document(&self, value: &Value) -> String {
        if self.json {
            // Serializing a `Value` to JSON cannot fail.
            serde_json::to_string_pretty(value).unwrap_or_default()
        } else {
            self.block(value, 0)
        }
    }

    /// `value` laid out as a block whose first line starts at `column`
    /// (that line's leading spaces included).
    pub(crate) fn block(&self, value: &Value, column: usize) -> String {
        let pad = " ".repeat(column);
        match value {
            Value::Object(map) if !map.is_empty() => map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{}:{}",
                        scalar::key(k, self.quoting()),
                        self.after_key(v, column)
                    )
                })
                .collect::<Vec<_>>()
                .join(self.newline),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|item| {
                    let nested = self.block(item, column + 2);
                    format!("{pad}- {}", &nested[(column + 2).min(nested.len())..])
                })
                .collect::<Vec<_>>()
                .join(self.newline),
            _ => format!("{pad}{}", scalar::inline(value, self.quoting())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_is_learnt_from_the_document() {
        let kubectl = Layout::of("a:\n  b:\n  - c: 1\n    d: 2\n");
        assert_eq!((kubectl.indent, kubectl.dash_offset), (2, 0));
        let docs = Layout::of("a:\n    b:\n        - c\n");
        assert_eq!((docs.indent, docs.dash_offset), (4, 4));
        assert!(Layout::of("{\n  \"a\": 1\n}").json);
    }

    #[test]
    fn blocks_follow_the_layout() {
        let layout = Layout::of("a:\n  b:\n  - c\n");
        // `y` and `on` would read as booleans in YAML 1.1: both get quotes.
        let value = json!({"k": [{"x": 1, "y": "on"}, "z"], "e": {}});
        assert_eq!(
            layout.block(&value, 2),
            "  e: {}\n  k:\n  - x: 1\n    'y': 'on'\n  - z"
        );
        assert_eq!(layout.after_key(&json!("v2"), 4), " v2");
    }
}
