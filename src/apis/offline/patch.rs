//! The smallest text edits that turn a node's source into YAML for a new
//! value: a changed scalar is rewritten in its own quoting, removed keys and
//! items lose their lines, added keys are appended in the mapping's layout,
//! and an object wrapped into (or unwrapped from) a single key is re-indented
//! rather than re-rendered, so comments, key order and quoting survive.
//!
//! When a node's shape changed beyond that, the node is rewritten whole; the
//! caller checks that the edited text reads back as the new value.

use std::ops::Range;

use granit_parser::ScalarStyle;
use serde_json::{Map, Value};

use super::render::Layout;
use super::scalar::{self, Quoting};
use super::tree::{Entry, Node, NodeKind, dash_before};

/// Replace `range` of the source with `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// A node whose edit cannot be expressed in place; its parent rewrites it.
#[derive(Debug)]
struct Unpatchable;

/// Where a node sits, which decides how a rewrite of it is laid out.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// The document's root.
    Root,
    /// The value of a block mapping key at `key_column` whose colon ends at
    /// `after_colon`.
    Value {
        key_column: usize,
        after_colon: usize,
    },
    /// An item of a block sequence, its dash at `dash`.
    Item { dash: usize },
    /// Inside a flow collection.
    Flow,
}

/// Collects the edits for one document.
pub(crate) struct Patcher<'a> {
    text: &'a str,
    layout: Layout,
    edits: Vec<Edit>,
}

impl<'a> Patcher<'a> {
    /// A patcher over the whole stream `text`, for a document laid out as
    /// `layout`.
    pub(crate) fn new(text: &'a str, layout: Layout) -> Self {
        Self {
            text,
            layout,
            edits: Vec::new(),
        }
    }

    /// Edits that turn `root` (whose value is `old`) into `new`.
    pub(crate) fn root(mut self, root: &Node, old: &Value, new: &Value) -> Vec<Edit> {
        self.node(root, old, new, Slot::Root);
        self.edits
    }

    /// Edits the node in place where its shape allows, else rewrites it.
    fn node(&mut self, node: &Node, old: &Value, new: &Value, slot: Slot) {
        if old == new {
            return;
        }
        let mark = self.edits.len();
        if self.reshape(node, old, new, slot).is_err() {
            self.edits.truncate(mark);
            self.rewrite(node, new, slot);
        }
    }

    fn reshape(
        &mut self,
        node: &Node,
        old: &Value,
        new: &Value,
        slot: Slot,
    ) -> Result<(), Unpatchable> {
        if let Some(key) = wrapped_in(old, new) {
            return self.wrap(node, key, slot);
        }
        match (&node.kind, old, new) {
            (NodeKind::Mapping { flow, entries }, Value::Object(o), Value::Object(n)) => {
                if let Some(entry) = unwrapped_from(entries, o, n) {
                    return self.unwrap(node, entry, &o[&entry.key], new, slot);
                }
                if *flow {
                    self.flow_mapping(node, entries, o, n)
                } else {
                    self.block_mapping(entries, o, n)
                }
            }
            (NodeKind::Sequence { flow, items }, Value::Array(o), Value::Array(n)) => {
                self.sequence(node, *flow, items, o, n)
            }
            (
                NodeKind::Scalar {
                    style,
                    content_indent,
                    ..
                },
                _,
                _,
            ) if !new.is_object() && !new.is_array() => {
                let text = self.scalar(new, *style, *content_indent);
                self.edits.push(Edit {
                    range: node.span.clone(),
                    text,
                });
                Ok(())
            }
            _ => Err(Unpatchable),
        }
    }

    /// Writes `node` anew as `new`.
    fn rewrite(&mut self, node: &Node, new: &Value, slot: Slot) {
        let quoting = self.layout.quoting();
        let (range, text) = match slot {
            Slot::Root => (node.span.clone(), self.layout.document(new)),
            Slot::Flow => (node.span.clone(), scalar::inline(new, quoting)),
            Slot::Value {
                key_column,
                after_colon,
            } => (
                after_colon..node.span.end,
                self.layout.after_key(new, key_column),
            ),
            Slot::Item { dash } => {
                let column = self.column(dash) + 2;
                let block = self.layout.block(new, column);
                (
                    dash + 1..node.span.end,
                    format!(" {}", &block[column.min(block.len())..]),
                )
            }
        };
        self.edits.push(Edit { range, text });
    }

    /// A scalar written in the style of the one it replaces.
    fn scalar(&self, new: &Value, style: ScalarStyle, content_indent: Option<usize>) -> String {
        let Value::String(s) = new else {
            return scalar::inline(new, Quoting::Plain);
        };
        match style {
            ScalarStyle::SingleQuoted => scalar::inline(new, Quoting::Single),
            ScalarStyle::DoubleQuoted => scalar::inline(new, Quoting::Double),
            ScalarStyle::Literal | ScalarStyle::Folded => self
                .literal(s, content_indent.unwrap_or(2))
                .unwrap_or_else(|| scalar::inline(new, Quoting::Double)),
            _ => scalar::inline(new, self.layout.quoting()),
        }
    }

    /// `s` as a literal block scalar whose lines sit at `indent`, when it has
    /// a form that needs no indentation indicator.
    fn literal(&self, s: &str, indent: usize) -> Option<String> {
        let (body, chomp) = match s.strip_suffix('\n') {
            Some(body) if !body.ends_with('\n') => (body, ""),
            None => (s, "-"),
            Some(_) => return None,
        };
        if body.is_empty() || body.starts_with([' ', '\t']) || body.contains('\r') {
            return None;
        }
        let pad = " ".repeat(indent);
        let lines: Vec<String> = body
            .split('\n')
            .map(|line| {
                if line.is_empty() {
                    String::new()
                } else {
                    format!("{pad}{line}")
                }
            })
            .collect();
        Some(format!(
            "|{chomp}{}{}",
            self.layout.newline,
            lines.join(self.layout.newline)
        ))
    }

    fn block_mapping(
        &mut self,
        entries: &[Entry],
        old: &Map<String, Value>,
        new: &Map<String, Value>,
    ) -> Result<(), Unpatchable> {
        let kept: Vec<bool> = entries.iter().map(|e| new.contains_key(&e.key)).collect();
        if !kept.contains(&true) {
            return Err(Unpatchable);
        }
        for entry in counted(entries).filter(|e| new.contains_key(&e.key)) {
            let slot = self.value_slot(entry)?;
            self.node(&entry.value, &old[&entry.key], &new[&entry.key], slot);
        }
        for run in runs(&kept) {
            let range = if run.start > 0 {
                let before = &entries[run.start - 1].value;
                self.line_end(before.span.end)..self.line_end(entries[run.end - 1].value.span.end)
            } else {
                let first = &entries[0].key_span;
                if self.leads_line(first.start) {
                    self.line_start(first.start)
                        ..self.next_line(entries[run.end - 1].value.span.end)
                } else {
                    // The first key shares a line with a `- `: the next kept
                    // key moves up behind the dash.
                    first.start..entries[run.end].key_span.start
                }
            };
            self.delete(range);
        }
        let added: Vec<(&String, &Value)> =
            new.iter().filter(|(k, _)| !old.contains_key(*k)).collect();
        if let (Some(last), false) = (entries.last(), added.is_empty()) {
            let column = self.column(entries[0].key_span.start);
            let pad = " ".repeat(column);
            let mut text = String::new();
            for (key, value) in added {
                text.push_str(self.layout.newline);
                text.push_str(&pad);
                text.push_str(&scalar::key(key, self.layout.quoting()));
                text.push(':');
                text.push_str(&self.layout.after_key(value, column));
            }
            let at = self.line_end(last.value.span.end);
            self.edits.push(Edit {
                range: at..at,
                text,
            });
        }
        Ok(())
    }

    fn flow_mapping(
        &mut self,
        node: &Node,
        entries: &[Entry],
        old: &Map<String, Value>,
        new: &Map<String, Value>,
    ) -> Result<(), Unpatchable> {
        let kept: Vec<bool> = entries.iter().map(|e| new.contains_key(&e.key)).collect();
        if !kept.contains(&true) {
            return Err(Unpatchable);
        }
        for entry in counted(entries).filter(|e| new.contains_key(&e.key)) {
            self.node(&entry.value, &old[&entry.key], &new[&entry.key], Slot::Flow);
        }
        let spans: Vec<Range<usize>> = entries
            .iter()
            .map(|e| e.key_span.start..e.value.span.end)
            .collect();
        self.delete_flow_runs(&spans, &kept);
        let quoting = self.layout.quoting();
        let text: String = new
            .iter()
            .filter(|(k, _)| !old.contains_key(*k))
            .map(|(k, v)| {
                format!(
                    ", {}: {}",
                    scalar::key(k, quoting),
                    scalar::inline(v, quoting)
                )
            })
            .collect();
        if !text.is_empty() {
            let at = node.span.end.saturating_sub(1);
            let last = spans.last().map_or(at, |s| s.end);
            self.edits.push(Edit {
                range: last..last,
                text,
            });
        }
        Ok(())
    }

    fn sequence(
        &mut self,
        node: &Node,
        flow: bool,
        items: &[Node],
        old: &[Value],
        new: &[Value],
    ) -> Result<(), Unpatchable> {
        let pairs = align(old, new).ok_or(Unpatchable)?;
        let mut kept = vec![false; items.len()];
        let dashes: Vec<usize> = if flow {
            Vec::new()
        } else {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    if i == 0 {
                        node.span.start
                    } else {
                        dash_before(self.text, item.span.start)
                    }
                })
                .collect()
        };
        for (o, n) in pairs {
            kept[o] = true;
            let slot = if flow {
                Slot::Flow
            } else {
                Slot::Item { dash: dashes[o] }
            };
            self.node(&items[o], &old[o], &new[n], slot);
        }
        if !kept.contains(&true) {
            return Err(Unpatchable);
        }
        if flow {
            let spans: Vec<Range<usize>> = items.iter().map(|i| i.span.clone()).collect();
            self.delete_flow_runs(&spans, &kept);
            return Ok(());
        }
        if dashes.iter().any(|&d| !self.leads_line(d)) {
            return Err(Unpatchable);
        }
        for run in runs(&kept) {
            let range = if run.start > 0 {
                self.line_end(items[run.start - 1].span.end)
                    ..self.line_end(items[run.end - 1].span.end)
            } else {
                self.line_start(dashes[0])..self.next_line(items[run.end - 1].span.end)
            };
            self.delete(range);
        }
        Ok(())
    }

    /// Wraps the node's text into `key:`, indenting it one level.
    fn wrap(&mut self, node: &Node, key: &str, slot: Slot) -> Result<(), Unpatchable> {
        let key = scalar::key(key, self.layout.quoting());
        let source = &self.text[node.span.clone()];
        if node.is_flow() || matches!(slot, Slot::Flow) {
            self.edits.push(Edit {
                range: node.span.start..node.span.start,
                text: format!("{{{key}: "),
            });
            self.edits.push(Edit {
                range: node.span.end..node.span.end,
                text: "}".to_owned(),
            });
            return Ok(());
        }
        let indent = self.layout.indent;
        let newline = self.layout.newline;
        match (&node.kind, slot) {
            (NodeKind::Mapping { .. }, Slot::Item { .. } | Slot::Value { .. } | Slot::Root) => {
                let column = self.column(node.span.start);
                let text = format!(
                    "{key}:{newline}{}{}",
                    " ".repeat(column + indent),
                    shift_rest(source, indent)
                );
                self.edits.push(Edit {
                    range: node.span.clone(),
                    text,
                });
                Ok(())
            }
            (NodeKind::Scalar { .. } | NodeKind::Alias(_), Slot::Item { .. } | Slot::Root) => {
                self.edits.push(Edit {
                    range: node.span.clone(),
                    text: format!("{key}: {source}"),
                });
                Ok(())
            }
            _ => Err(Unpatchable),
        }
    }

    /// Replaces the node by the (patched) text of its `entry`, indented
    /// where the node was.
    fn unwrap(
        &mut self,
        node: &Node,
        entry: &Entry,
        old_child: &Value,
        new: &Value,
        slot: Slot,
    ) -> Result<(), Unpatchable> {
        let child = &entry.value;
        let within = child.span.start..self.line_end(child.span.end);
        let mut inner = Patcher::new(self.text, self.layout);
        let child_slot = if child.is_flow() || matches!(slot, Slot::Flow) {
            Slot::Flow
        } else {
            self.value_slot(entry)?
        };
        inner.node(child, old_child, new, child_slot);
        if inner
            .edits
            .iter()
            .any(|e| e.range.start < within.start || e.range.end > within.end)
        {
            return Err(Unpatchable);
        }
        let patched = apply(&self.text[within.clone()], within.start, &inner.edits);
        let text = if child.is_flow() || !matches!(child.kind, NodeKind::Mapping { .. }) {
            if patched.contains('\n') {
                return Err(Unpatchable);
            }
            patched
        } else {
            let shift = self
                .column(child.span.start)
                .checked_sub(self.column(node.span.start))
                .ok_or(Unpatchable)?;
            unshift_rest(&patched, shift).ok_or(Unpatchable)?
        };
        if matches!(slot, Slot::Flow) || node.is_flow() {
            self.edits.push(Edit {
                range: node.span.clone(),
                text,
            });
        } else {
            self.edits.push(Edit {
                range: node.span.start..self.line_end(node.span.end),
                text,
            });
        }
        Ok(())
    }

    fn delete_flow_runs(&mut self, spans: &[Range<usize>], kept: &[bool]) {
        for run in runs(kept) {
            let range = if run.end < spans.len() {
                spans[run.start].start..spans[run.end].start
            } else {
                spans[run.start - 1].end..spans[run.end - 1].end
            };
            self.delete(range);
        }
    }

    fn value_slot(&self, entry: &Entry) -> Result<Slot, Unpatchable> {
        let colon = self.text[entry.key_span.end..]
            .find(':')
            .ok_or(Unpatchable)?;
        Ok(Slot::Value {
            key_column: self.column(entry.key_span.start),
            after_colon: entry.key_span.end + colon + 1,
        })
    }

    fn delete(&mut self, range: Range<usize>) {
        self.edits.push(Edit {
            range,
            text: String::new(),
        });
    }

    fn line_start(&self, at: usize) -> usize {
        self.text[..at].rfind('\n').map_or(0, |i| i + 1)
    }

    /// The end of the line holding `at`, before its line break.
    fn line_end(&self, at: usize) -> usize {
        let end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        if end > at && self.text.as_bytes()[end - 1] == b'\r' {
            end - 1
        } else {
            end
        }
    }

    /// The start of the line after the one holding `at`.
    fn next_line(&self, at: usize) -> usize {
        self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i + 1)
    }

    fn column(&self, at: usize) -> usize {
        self.text[self.line_start(at)..at].chars().count()
    }

    fn leads_line(&self, at: usize) -> bool {
        self.text[self.line_start(at)..at]
            .bytes()
            .all(|b| b == b' ')
    }
}

/// Applies `edits` (absolute offsets, `base` being the offset of `text`).
pub(crate) fn apply(text: &str, base: usize, edits: &[Edit]) -> String {
    let mut edits: Vec<&Edit> = edits.iter().collect();
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(text.len());
    let mut at = base;
    for edit in edits {
        let start = edit.range.start.max(at);
        out.push_str(&text[at - base..start - base]);
        out.push_str(&edit.text);
        at = edit.range.end.max(at);
    }
    out.push_str(&text[at - base..]);
    out
}

/// Whether any two edits overlap (then they cannot all apply).
pub(crate) fn overlapping(edits: &[Edit]) -> bool {
    let mut ranges: Vec<&Range<usize>> = edits.iter().map(|e| &e.range).collect();
    ranges.sort_by_key(|r| (r.start, r.end));
    ranges.windows(2).any(|w| w[1].start < w[0].end)
}

/// The entries whose values count: the last of each key, as the apiserver
/// reads a mapping that repeats one. (Removing a key removes every
/// occurrence, so none comes back to life.)
fn counted(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !entries[i + 1..].iter().any(|later| later.key == e.key))
        .map(|(_, e)| e)
}

/// The runs of `false` in `kept`, as index ranges.
fn runs(kept: &[bool]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &k) in kept.iter().chain(std::iter::once(&true)).enumerate() {
        match (k, start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// `Some(key)` when `new` is `{key: old}`.
fn wrapped_in<'v>(old: &Value, new: &'v Value) -> Option<&'v str> {
    let map = new.as_object()?;
    let (key, inner) = map.iter().next()?;
    (map.len() == 1 && inner == old).then_some(key.as_str())
}

/// The entry whose value `new` derives from, when the mapping around it is
/// dropped: `new` has only keys of that value, and not the entry's own key.
fn unwrapped_from<'e>(
    entries: &'e [Entry],
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Option<&'e Entry> {
    if new.is_empty() {
        return None;
    }
    entries.iter().find(|entry| {
        !new.contains_key(&entry.key)
            && old[&entry.key]
                .as_object()
                .is_some_and(|inner| new.keys().all(|k| inner.contains_key(k)))
    })
}

/// Pairs every item of `new` with an item of `old`, in order, so that each
/// pair is equal or related; `None` when no such pairing exists.
fn align(old: &[Value], new: &[Value]) -> Option<Vec<(usize, usize)>> {
    if new.len() > old.len() {
        return None;
    }
    if new.len() == old.len() {
        return Some((0..old.len()).map(|i| (i, i)).collect());
    }
    // `best[i][j]`: fewest related (not equal) pairs aligning old[i..] with
    // new[j..]; `None` when impossible.
    let (m, n) = (old.len(), new.len());
    let mut best = vec![vec![None; n + 1]; m + 1];
    for i in (0..=m).rev() {
        for j in (0..=n).rev() {
            best[i][j] = if j == n {
                Some(0)
            } else if i == m {
                None
            } else {
                let skip = best[i + 1][j];
                let pair = cost(&old[i], &new[j]).and_then(|c| best[i + 1][j + 1].map(|r| r + c));
                match (skip, pair) {
                    (Some(s), Some(p)) => Some(s.min(p)),
                    (s, p) => s.or(p),
                }
            };
        }
    }
    best[0][0]?;
    let mut pairs = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while j < n {
        let pair = cost(&old[i], &new[j]).and_then(|c| best[i + 1][j + 1].map(|r| r + c));
        if pair.is_some() && pair == best[i][j] {
            pairs.push((i, j));
            j += 1;
        }
        i += 1;
    }
    Some(pairs)
}

fn cost(old: &Value, new: &Value) -> Option<usize> {
    if old == new {
        return Some(0);
    }
    let related = match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            o.iter().any(|(k, v)| n.get(k) == Some(v))
                || wrapped_in(old, new).is_some()
                || wrapped_in(new, old).is_some()
                || o.values().any(|inner| {
                    inner.as_object().is_some_and(|inner| {
                        n.keys().all(|k| inner.contains_key(k)) && !n.is_empty()
                    })
                })
        }
        _ => false,
    };
    related.then_some(1)
}

/// Indents every line after the first by `by` spaces (blank lines stay
/// empty).
fn shift_rest(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        out.push('\n');
        if !line.trim().is_empty() {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    out
}

/// Removes `by` leading spaces from every line after the first; `None` when
/// a non-blank line has fewer.
fn unshift_rest(text: &str, by: usize) -> Option<String> {
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        out.push('\n');
        if line.trim().is_empty() {
            out.push_str(line.get(by.min(line.len())..).unwrap_or_default());
        } else if line.bytes().take(by).all(|b| b == b' ') && line.len() >= by {
            out.push_str(&line[by..]);
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_group_consecutive_removals() {
        assert_eq!(runs(&[true, false, false, true, false]), vec![1..3, 4..5]);
        assert!(runs(&[true, true]).is_empty());
    }

    #[test]
    fn alignment_keeps_order_and_prefers_equal_items() {
        let old = [
            json!({"extract": {"key": "a"}}),
            json!({"find": {"path": "p"}}),
            json!({"extract": {"key": "b"}}),
        ];
        let new = [json!({"key": "a"}), json!({"key": "b"})];
        assert_eq!(align(&old, &new), Some(vec![(0, 0), (2, 1)]));
        assert_eq!(align(&[json!(1)], &[json!(1), json!(2)]), None);
    }

    #[test]
    fn shifting_keeps_blank_lines_empty() {
        assert_eq!(
            shift_rest("a: 1\n  b: |\n\n    x", 2),
            "a: 1\n    b: |\n\n      x"
        );
        assert_eq!(
            unshift_rest("a: 1\n    b: 2", 2).as_deref(),
            Some("a: 1\n  b: 2")
        );
        assert_eq!(unshift_rest("a: 1\n b: 2", 2), None);
    }
}
