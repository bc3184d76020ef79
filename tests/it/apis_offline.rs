//! `convert_documents`, the core of `keyhook convert`.

use keyhook::apis::{OfflineError, Version, convert_documents};
use serde_json::{Value, json};

const STREAM: &str = r#"# kubectl get -o yaml style manifests
apiVersion: v1
kind: ConfigMap
metadata:
  name: application-config-tmpl
  namespace: team-a
data:
  config.yml: "on: yes"
---
apiVersion: external-secrets.io/v1alpha1
kind: ExternalSecret
metadata:
  name: db
  namespace: team-a
spec:
  refreshInterval: 1h
  secretStoreRef:
    name: vault-backend
  target:
    name: db
  dataFrom:
  - key: /team-a/db
---
apiVersion: external-secrets.io/v1alpha1
kind: SecretStore
metadata:
  name: vault-backend
  namespace: team-a
spec:
  provider:
    vault:
      server: "http://my.vault.server:8200"
      path: secret
      version: v2
      auth:
        tokenSecretRef:
          name: vault-token
          key: token
"#;

#[test]
fn yaml_stream_converts_ours_and_passes_the_rest_through() {
    let out = convert_documents(STREAM, Version::V1).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let input: Vec<Value> = serde_saphyr::from_multiple(STREAM).unwrap();
    assert_eq!(documents.len(), 3);
    assert_eq!(documents[0], input[0], "the ConfigMap is untouched");
    assert_eq!(documents[1]["apiVersion"], "external-secrets.io/v1");
    assert_eq!(
        documents[1]["spec"]["dataFrom"],
        json!([{"extract": {"key": "/team-a/db"}}])
    );
    assert_eq!(documents[2]["apiVersion"], "external-secrets.io/v1");
    assert_eq!(documents[2]["spec"], input[2]["spec"]);
}

#[test]
fn converting_back_restores_the_input() {
    let v1 = convert_documents(STREAM, Version::V1).unwrap();
    let back = convert_documents(&v1, Version::V1Alpha1).unwrap();
    let back: Vec<Value> = serde_saphyr::from_multiple(&back).unwrap();
    let input: Vec<Value> = serde_saphyr::from_multiple(STREAM).unwrap();
    assert_eq!(back, input);
}

#[test]
fn json_input_gives_json_output_and_lists_are_walked() {
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
             "metadata": {"name": "s", "namespace": "a"},
             "spec": {"refreshInterval": "2m", "provider": {"fake": {"data": []}}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "type": "Opaque"}
        ]
    });
    let input = format!(
        "{list}\n{}",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    );
    let out = convert_documents(&input, Version::V1Beta1).unwrap();
    let documents: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(documents.len(), 2);
    assert_eq!(
        documents[0]["items"][0]["apiVersion"],
        "external-secrets.io/v1beta1"
    );
    assert_eq!(documents[0]["items"][0]["spec"]["refreshInterval"], 120);
    assert_eq!(documents[0]["items"][1], list["items"][1]);
    assert_eq!(documents[1]["kind"], "Namespace");
}

#[test]
fn errors_name_the_document_and_the_field() {
    let broken = STREAM
        .replace(
            "apiVersion: external-secrets.io/v1alpha1\nkind: SecretStore",
            "apiVersion: external-secrets.io/v1\nkind: SecretStore",
        )
        .replace(
            "spec:\n  provider:",
            "spec:\n  refreshInterval: whenever\n  provider:",
        );
    let error = convert_documents(&broken, Version::V1Beta1).unwrap_err();
    assert!(
        matches!(error, OfflineError::Convert { document: 3, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("document 3 (SecretStore team-a/vault-backend): spec.refreshInterval"),
        "{message}"
    );

    let error = convert_documents("kind: [unclosed", Version::V1).unwrap_err();
    assert!(matches!(error, OfflineError::Parse { .. }), "{error}");
}

#[test]
fn versions_parse_as_the_cli_receives_them() {
    assert_eq!("v1".parse::<Version>().unwrap(), Version::V1);
    assert_eq!(
        "external-secrets.io/v1beta1".parse::<Version>().unwrap(),
        Version::V1Beta1
    );
    assert!(
        "v2".parse::<Version>()
            .unwrap_err()
            .to_string()
            .contains("v1alpha1, v1beta1 or v1")
    );
}
