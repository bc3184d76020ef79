//! Template engine `v1` → `v2`, as upstream's migration guide describes it.
//!
//! Upstream renamed four helpers one to one (`base64encode` → `b64enc`,
//! `base64decode` → `b64dec`, `fromJSON` → `fromJson`, `toJSON` → `toJson`);
//! `toString` kept working through sprig. Those renames are applied inside
//! `{{ … }}` actions; text outside actions is never touched. Helpers upstream
//! removed without a replacement (`toBytes`, `pemPrivateKey`,
//! `pemCertificate`) cannot be mapped: they are left as written, and
//! [`removed_helpers`] finds them so that `keyhook convert` and the validating
//! webhook can warn that rendering will fail.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

use crate::apis::v1;

/// `(old, new)` helper names.
const RENAMES: [(&str, &str); 4] = [
    ("base64encode", "b64enc"),
    ("base64decode", "b64dec"),
    ("fromJSON", "fromJson"),
    ("toJSON", "toJson"),
];

// Both patterns are constant and exercised by the tests below, so `Regex::new`
// cannot fail at run time.
static ACTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{.*?\}\}").expect("constant regex"));
static HELPER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[^.\w$])(base64encode|base64decode|fromJSON|toJSON)\b").expect("constant regex")
});
static REMOVED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[^.\w$])(toBytes|pemPrivateKey|pemCertificate)\b").expect("constant regex")
});

/// Helpers engine `v1` had and `v2` dropped without a replacement.
pub const REMOVED_HELPERS: [&str; 3] = ["toBytes", "pemPrivateKey", "pemCertificate"];

const TEMPLATE_DATA: &str = "/spec/target/template/data";
const TEMPLATE_FROM: &str = "/spec/target/template/templateFrom";

/// Every use of a [removed helper](REMOVED_HELPERS) in the engine-`v2`
/// templates of a `v1` ExternalSecret (`template.data` and
/// `templateFrom[].literal`), as `(field, helper)`.
pub fn removed_helpers(hub: &Value) -> Vec<(String, &'static str)> {
    let data = hub
        .pointer(TEMPLATE_DATA)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, template)| Some((key.as_str(), template.as_str()?)));
    let literals = hub
        .pointer(TEMPLATE_FROM)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, entry)| Some((i, entry.get("literal")?.as_str()?)));
    removed_helpers_in(data, literals)
}

/// [`removed_helpers`] of a typed `v1` template.
pub fn removed_helpers_in_template(
    template: &v1::ExternalSecretTemplate,
) -> Vec<(String, &'static str)> {
    let data = template
        .data
        .iter()
        .flatten()
        .map(|(key, text)| (key.as_str(), text.as_str()));
    let literals = template
        .template_from
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, entry)| Some((i, entry.literal.as_deref()?)));
    removed_helpers_in(data, literals)
}

/// Removed helpers in `template.data` (by key) and in
/// `templateFrom[].literal` (by index), as `(field, helper)`.
fn removed_helpers_in<'a>(
    data: impl Iterator<Item = (&'a str, &'a str)>,
    literals: impl Iterator<Item = (usize, &'a str)>,
) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for (key, text) in data {
        let field = format!("spec.target.template.data[{key}]");
        found.extend(helpers_in(text).into_iter().map(|h| (field.clone(), h)));
    }
    for (i, text) in literals {
        let field = format!("spec.target.template.templateFrom[{i}].literal");
        found.extend(helpers_in(text).into_iter().map(|h| (field.clone(), h)));
    }
    found
}

/// Removed helpers called inside the `{{ … }}` actions of `template`, each
/// once, in [`REMOVED_HELPERS`] order.
fn helpers_in(template: &str) -> Vec<&'static str> {
    let mut used = Vec::new();
    for action in ACTION.find_iter(template) {
        for helper in REMOVED.captures_iter(action.as_str()) {
            used.extend(REMOVED_HELPERS.iter().copied().filter(|h| *h == &helper[2]));
        }
    }
    REMOVED_HELPERS
        .into_iter()
        .filter(|h| used.contains(h))
        .collect()
}

/// Rewrites one engine-`v1` template into its engine-`v2` form.
pub(crate) fn v1_to_v2(template: &str) -> String {
    ACTION
        .replace_all(template, |action: &Captures<'_>| {
            HELPER
                .replace_all(&action[0], |helper: &Captures<'_>| {
                    let new = RENAMES
                        .iter()
                        .find(|(old, _)| *old == &helper[2])
                        .map_or(&helper[2], |(_, new)| new);
                    format!("{}{new}", &helper[1])
                })
                .into_owned()
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::{removed_helpers, v1_to_v2};

    #[test]
    fn renames_helpers_inside_actions_only() {
        assert_eq!(
            v1_to_v2(
                "user: {{ .creds | fromJSON }} base64encode {{ .a | base64decode | toString }}"
            ),
            "user: {{ .creds | fromJson }} base64encode {{ .a | b64dec | toString }}"
        );
        assert_eq!(v1_to_v2("{{ toJSON .x }}"), "{{ toJson .x }}");
    }

    #[test]
    fn finds_removed_helpers_inside_actions_only() {
        let hub = serde_json::json!({"spec": {"target": {"template": {
            "data": {
                "tls.key": "{{ .k | pkcs12key | pemPrivateKey }}",
                "note": "pemCertificate is gone; {{ .x | toBytes }} {{ .y | toBytes }}",
                "ok": "{{ .v | b64dec }}"
            },
            "templateFrom": [{"literal": "{{ .c | pemCertificate }}"}, {"configMap": {}}]
        }}}});
        assert_eq!(
            removed_helpers(&hub),
            [
                ("spec.target.template.data[note]".to_owned(), "toBytes"),
                (
                    "spec.target.template.data[tls.key]".to_owned(),
                    "pemPrivateKey"
                ),
                (
                    "spec.target.template.templateFrom[0].literal".to_owned(),
                    "pemCertificate"
                ),
            ]
        );
    }

    #[test]
    fn leaves_field_access_and_unknown_helpers_alone() {
        assert_eq!(v1_to_v2("{{ .base64encode }}"), "{{ .base64encode }}");
        assert_eq!(
            v1_to_v2("{{ .k | pemPrivateKey }}"),
            "{{ .k | pemPrivateKey }}"
        );
    }
}
