//! Template engine `v1` → `v2`, as upstream's migration guide describes it.
//!
//! Upstream renamed four helpers one to one (`base64encode` → `b64enc`,
//! `base64decode` → `b64dec`, `fromJSON` → `fromJson`, `toJSON` → `toJson`);
//! `toString` kept working through sprig. Those renames are applied inside
//! `{{ … }}` actions; text outside actions is never touched. Helpers upstream
//! removed without a replacement (`toBytes`, `pemPrivateKey`,
//! `pemCertificate`) cannot be mapped and are left as written.

use std::sync::LazyLock;

use regex::{Captures, Regex};

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
    use super::v1_to_v2;

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
    fn leaves_field_access_and_unknown_helpers_alone() {
        assert_eq!(v1_to_v2("{{ .base64encode }}"), "{{ .base64encode }}");
        assert_eq!(
            v1_to_v2("{{ .k | pemPrivateKey }}"),
            "{{ .k | pemPrivateKey }}"
        );
    }
}
