//! `convert_documents`, the core of `keyhook convert`: what it converts,
//! that it changes no more text than the conversion does, and what it warns
//! about.

use std::path::PathBuf;

use keyhook::apis::{
    CONVERSION_ANNOTATION, Converted, OfflineError, Version, convert_documents, convert_object,
};
use serde_json::{Value, json};

use crate::support::diff;

fn read(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap()
}

fn convert(text: &str, to: Version) -> Converted {
    convert_documents(text, to).unwrap_or_else(|e| panic!("{e}"))
}

/// Converts and checks that the line diff, applied to the input, gives the
/// output; returns the diff.
fn diffed(input: &str, to: Version) -> (Converted, String, usize) {
    let converted = convert(input, to);
    let steps = diff::lines(input, &converted.output);
    assert_eq!(diff::apply(input, &steps), converted.output);
    let changed = diff::changed(&steps);
    let shown = diff::show(&steps);
    (converted, shown, changed)
}

#[test]
fn documents_of_other_kinds_pass_through_byte_for_byte() {
    let input = read("conversion/offline/other-kinds.yaml");
    for to in Version::ALL {
        let converted = convert(&input, to);
        assert_eq!(converted.output, input, "to {to}");
        assert!(converted.warnings.is_empty(), "{:?}", converted.warnings);
    }
}

#[test]
fn a_stream_changes_only_inside_the_converted_documents() {
    let others = read("conversion/offline/other-kinds.yaml");
    let ours = read("apis/v1beta1/secretstore-kubernetes.yaml");
    let input = format!("{others}---\n{ours}---\n{others}");
    let (converted, shown, changed) = diffed(&input, Version::V1);
    assert_eq!(changed, 2, "{shown}");
    assert_eq!(
        shown,
        "-apiVersion: external-secrets.io/v1beta1\n+apiVersion: external-secrets.io/v1\n"
    );
    assert!(converted.output.starts_with(&others));
    assert!(converted.output.ends_with(&others));
}

/// Every fixture whose content means the same in `v1beta1` and `v1`.
const SAME_IN_V1BETA1_AND_V1: [&str; 6] = [
    "apis/v1beta1/secretstore-kubernetes.yaml",
    "apis/v1beta1/clustersecretstore-gcpsm.yaml",
    "apis/v1/clustersecretstore-fake.yaml",
    "apis/v1/secretstore-openbao.yaml",
    "apis/v1/secretstore-doppler.yaml",
    "apis/v1/secretstore-onepassword.yaml",
];

#[test]
fn between_v1beta1_and_v1_unchanged_content_is_a_one_line_diff() {
    for path in SAME_IN_V1BETA1_AND_V1 {
        let input = read(path);
        let from =
            Version::from_api_version(yaml(&input)[0]["apiVersion"].as_str().unwrap()).unwrap();
        let to = if from == Version::V1 {
            Version::V1Beta1
        } else {
            Version::V1
        };
        let (converted, shown, changed) = diffed(&input, to);
        // The onepassword store's `refreshInterval: 5m` has no v1beta1 form
        // but seconds: that value and the stash of the original change too.
        let expected = if path.ends_with("onepassword.yaml") {
            6
        } else {
            2
        };
        assert_eq!(changed, expected, "{path}:\n{shown}");
        assert!(
            converted.warnings.is_empty(),
            "{path}: {:?}",
            converted.warnings
        );
    }
}

#[test]
fn converted_documents_keep_comments_order_and_quoting() {
    let input = read("conversion/offline/v1alpha1-externalsecret.yaml");
    let (converted, shown, changed) = diffed(&input, Version::V1);
    let output = &converted.output;
    // Everything the conversion does not touch is still there as written.
    for kept in [
        "# refresh every hour\n  refreshInterval: \"1h\"\n",
        "  name: \"payments-db\"\n  namespace: 'team-a'\n",
        "    kind: SecretStore\n    name: vault-backend\n",
        "      key: /team-a/db     # path in Vault\n",
        "    remoteRef: {key: /team-a/db, property: password}\n",
        "  # everything under /team-a/shared\n",
    ] {
        assert!(output.contains(kept), "lost {kept:?}:\n{output}");
    }
    // dataFrom entries are wrapped in `extract`, re-indented, comments kept.
    assert!(
        output.contains(
            "  - extract:\n      key: /team-a/shared\n  - extract:\n      key: '/team-a/common'   # quoted on purpose\n      version: \"3\"\n"
        ),
        "{output}"
    );
    // Engine v1 templates become v2 in place, in their own quoting.
    assert!(output.contains(
        "dsn: \"postgres://{{ .user | toString }}:{{ .password | b64dec | toString }}@db:5432\""
    ));
    assert!(output.contains("config.json: |\n          {\"token\": \"{{ .token | toJson }}\"}\n"));
    // apiVersion (one line out, one in), the stash annotation (two lines
    // in), the two templates (2 each), the engine (one in), and the two
    // wrapped entries (3 lines out, 5 in).
    assert_eq!(changed, 2 + 2 + 4 + 1 + 3 + 5, "{shown}");
    // What was written reads back as the webhook's conversion.
    let expected = convert_object(yaml(&input).remove(0), Version::V1).unwrap();
    assert_eq!(yaml(output).remove(0), expected);
}

#[test]
fn converting_back_restores_every_fixture() {
    for path in crate::apis_schemas::fixture_paths() {
        let input = std::fs::read_to_string(&path).unwrap();
        let original = yaml(&input);
        let from = Version::from_api_version(original[0]["apiVersion"].as_str().unwrap()).unwrap();
        for to in Version::ALL {
            let there = convert(&input, to);
            assert!(
                there.warnings.iter().all(|w| !w.message.contains("anew")),
                "{} to {to}: {:?}",
                path.display(),
                there.warnings
            );
            let back = convert(&there.output, from);
            assert_eq!(yaml(&back.output), original, "{} via {to}", path.display());
        }
    }
}

#[test]
fn numbers_never_turn_into_floats() {
    let input = "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: s\nspec:\n  refreshInterval: 1e3\n  retrySettings:\n    maxRetries: 012\n  provider:\n    fake:\n      data: []\n";
    let alpha = convert(input, Version::V1Alpha1).output;
    // Untouched numbers keep their spelling; the stashed one is the integer
    // the apiserver stores for it.
    assert!(alpha.contains("    maxRetries: 012\n"), "{alpha}");
    assert!(
        alpha.contains(r#"{"path":"/spec/refreshInterval","value":1000}"#),
        "{alpha}"
    );
    let beta = convert(input, Version::V1Beta1).output;
    assert!(beta.contains("  refreshInterval: 1e3\n"), "{beta}");
}

#[test]
fn json_input_gives_json_output_and_lists_are_walked() {
    let input = read("conversion/offline/json-list.json");
    let (converted, shown, changed) = diffed(&input, Version::V1Beta1);
    let documents: Vec<Value> = serde_json::Deserializer::from_str(&converted.output)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(documents.len(), 2);
    let store = &documents[0]["items"][0];
    assert_eq!(store["apiVersion"], "external-secrets.io/v1beta1");
    assert_eq!(store["spec"]["refreshInterval"], 120);
    assert_eq!(
        store["metadata"]["annotations"][CONVERSION_ANNOTATION],
        r#"{"v1":[{"path":"/spec/refreshInterval","value":"2m","as":120}]}"#
    );
    // Only the store's apiVersion, interval and metadata lines change; the
    // other JSON values keep their exponents.
    assert_eq!(changed, 6, "{shown}");
    assert!(converted.output.contains("\"maxRetries\": 1e1"));
    assert!(converted.output.contains("\"data\": {\"n\": 1e3}"));
    assert!(converted.output.ends_with(
        "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"team-a\"}}\n"
    ));
}

#[test]
fn a_v1alpha1_entry_already_in_the_later_shape_is_not_nested_again() {
    let input = read("conversion/v1alpha1-externalsecret-datafrom-later-shape.yaml");
    let output = convert(&input, Version::V1).output;
    assert!(!output.contains("extract:\n        extract"), "{output}");
    let converted = yaml(&output).remove(0);
    assert_eq!(
        converted["spec"]["dataFrom"][1],
        json!({"extract": {"key": "/team-c/extracted", "property": "settings"}})
    );
}

#[test]
fn errors_name_the_document_the_field_and_what_is_accepted() {
    let input = format!(
        "{}---\n{}",
        read("conversion/offline/other-kinds.yaml"),
        read("apis/v1/secretstore-onepassword.yaml")
            .replace("refreshInterval: 5m", "refreshInterval: 5 minutes")
    );
    let error = convert_documents(&input, Version::V1Beta1).unwrap_err();
    assert!(
        matches!(error, OfflineError::Convert { document: 5, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("document 5 (SecretStore team-a/staging): spec.refreshInterval: is not a Go duration (time.ParseDuration)"),
        "{message}"
    );
    assert!(
        message.contains("`1h30m`") && !message.contains("float"),
        "{message}"
    );
    assert_eq!(
        message.matches("spec.refreshInterval").count(),
        1,
        "{message}"
    );

    let error = convert_documents("a: 1\n---\nkind: [unclosed\n", Version::V1).unwrap_err();
    assert!(
        matches!(error, OfflineError::Parse { document: 2, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("document 2, line "),
        "{error}"
    );
}

#[test]
fn removed_template_helpers_are_kept_and_warned_about() {
    let input = read("apis/v1alpha1/externalsecret-template-v1.yaml");
    let converted = convert(&input, Version::V1);
    assert!(
        converted
            .output
            .contains("{{ .mysecret | pkcs12key | pemPrivateKey }}")
    );
    let warnings: Vec<String> = converted.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "document 1 (ExternalSecret payments/template): spec.target.template.data[tls.crt] calls pemCertificate, which template engine v2 removed; it is kept as written and fails when rendered",
            "document 1 (ExternalSecret payments/template): spec.target.template.data[tls.key] calls pemPrivateKey, which template engine v2 removed; it is kept as written and fails when rendered",
        ]
    );
}

#[test]
fn unknown_fields_are_warned_about_and_carried_over() {
    let input = read("apis/v1beta1/secretstore-kubernetes.yaml")
        .replace("remoteNamespace:", "remoteNamspace:");
    let converted = convert(&format!("kind: Namespace\n---\n{input}"), Version::V1);
    let warnings: Vec<String> = converted.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "document 2 (SecretStore team-a/k8s-store-default-ns): spec.provider.kubernetes.remoteNamspace is not a field of external-secrets.io/v1beta1 SecretStore; it is carried over unchanged"
        ]
    );
    assert!(converted.output.contains("remoteNamspace:"));
}

#[test]
fn a_repeated_key_counts_last_and_is_warned_about() {
    let input = "apiVersion: external-secrets.io/v1beta1\nkind: ExternalSecret\nmetadata:\n  name: twice\nspec:\n  refreshInterval: 1h\n  refreshInterval: 2h\n  dataFrom:\n  - extract: {key: a}\n";
    let converted = convert(input, Version::V1Alpha1);
    assert_eq!(
        converted.warnings[0].to_string(),
        "document 1: line 7: key `refreshInterval` repeats one above it; the last one counts (kubectl's strict field validation refuses such a file)"
    );
    assert!(
        converted
            .output
            .contains("  refreshInterval: 1h\n  refreshInterval: 2h\n")
    );
    assert!(
        converted.output.contains("  dataFrom:\n  - {key: a}\n"),
        "{}",
        converted.output
    );
}

#[test]
fn a_layout_the_editor_cannot_follow_is_written_anew_with_a_warning() {
    // The engine goes after `data`, whose last value keeps its trailing
    // blank line (`|+`): an insertion there would change that value.
    let input = "apiVersion: external-secrets.io/v1alpha1\nkind: ExternalSecret\nmetadata:\n  name: keep\nspec:\n  secretStoreRef:\n    name: s\n  target:\n    template:\n      data:\n        motd: |+\n          hello\n\n  data:\n  - secretKey: a\n    remoteRef:\n      key: a\n";
    let converted = convert(input, Version::V1);
    assert_eq!(
        converted.warnings[0].to_string(),
        "document 1: its layout could not be kept; the converted document is written anew (comments and key order are lost)"
    );
    let expected = convert_object(yaml(input).remove(0), Version::V1).unwrap();
    assert_eq!(yaml(&converted.output).remove(0), expected);
    assert_eq!(
        expected["spec"]["target"]["template"]["data"]["motd"],
        "hello\n\n"
    );
}
