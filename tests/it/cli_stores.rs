//! `keyhook serve --stores FILE` as a user runs it: what it says about the
//! file, stores written for older API versions, and the Secret it writes.

use std::{path::Path, time::Duration};

use crate::support::{
    H2Connection,
    process::{Spawned, free_addr, keyhook},
};

const START: Duration = Duration::from_secs(30);

fn repo(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn serve_with(workdir: &Path, stores: &str) -> (Spawned, String) {
    std::fs::write(workdir.join("stores.yaml"), stores).unwrap();
    let webhook = free_addr();
    let mut command = keyhook(workdir);
    command
        .args([
            "serve",
            "--stores",
            "stores.yaml",
            "--webhook-addr",
            &webhook,
        ])
        .args(["--health-addr", &free_addr()]);
    (Spawned::start(command), webhook)
}

/// The log lines that contain `text`, from their message on.
fn lines_with(log: &str, text: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find(text).map(|at| l[at..].to_string()))
        .collect()
}

#[test]
fn unknown_fields_in_the_stores_file_are_named_by_document_and_path() {
    let workdir = tempfile::tempdir().unwrap();
    let stores = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  lables: {team: checkout}
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: demo
  namespace: shop
spec:
  provider:
    fake:
      data:
      - key: prod/db
        valu: '{\"password\": \"x\"}'
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: shop
strngData:
  token: x
";
    let (mut keyhook, _) = serve_with(workdir.path(), stores);
    let log = keyhook.wait_for("webhooks on https://", START);
    assert_eq!(
        lines_with(&log, "stores file loaded"),
        ["stores file loaded: 1 store(s) path=stores.yaml stores=1 secrets=1 converted=0"]
    );
    assert_eq!(
        lines_with(&log, "stores file document"),
        [
            "stores file document 1 (Namespace shop): metadata.lables: unknown field, ignored path=stores.yaml",
            "stores file document 2 (SecretStore shop/demo): spec.provider.fake.data[0].valu: unknown field, not in the external-secrets.io/v1 schema (a cluster's apiserver would drop it) path=stores.yaml",
            "stores file document 3 (Secret shop/creds): strngData: unknown field, ignored path=stores.yaml",
        ]
    );
}

#[test]
fn errors_in_the_stores_file_name_the_flag_the_file_and_documents_from_1() {
    let workdir = tempfile::tempdir().unwrap();
    let stores = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: demo
  namespace: shop
spec:
  provider:
    fake:
      data:
      - key: 7
---
apiVersion: external-secrets.io/v2
kind: ClusterSecretStore
metadata:
  name: shared
";
    std::fs::write(workdir.path().join("stores.yaml"), stores).unwrap();
    let output = keyhook(workdir.path())
        .args(["serve", "--stores", "stores.yaml"])
        .args([
            "--webhook-addr",
            &free_addr(),
            "--health-addr",
            &free_addr(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: --stores stores.yaml: document 2 (SecretStore shop/demo): `spec.provider.fake.data[0].key`: invalid type: integer `7`, expected a string; \
         document 3 (ClusterSecretStore shared): `apiVersion`: `external-secrets.io/v2` is not external-secrets.io/v1, v1beta1 or v1alpha1\n"
    );

    std::fs::write(workdir.path().join("stores.yaml"), "kind: [SecretStore\n").unwrap();
    let output = keyhook(workdir.path())
        .args(["serve", "--stores", "stores.yaml"])
        .args([
            "--webhook-addr",
            &free_addr(),
            "--health-addr",
            &free_addr(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: --stores stores.yaml: not valid YAML: ")
            && stderr.contains("line 1 column 7: unclosed bracket"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_written_for_v1beta1_and_v1alpha1_are_converted_and_serve_pods() {
    let workdir = tempfile::tempdir().unwrap();
    // The demo stores, the cluster-wide one as v1beta1, and upstream's
    // v1alpha1 fake store.
    let demo = repo("examples/stores.yaml").replacen(
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore",
        "apiVersion: external-secrets.io/v1beta1\nkind: ClusterSecretStore",
        1,
    );
    let alpha = repo("tests/fixtures/apis/v1alpha1/clustersecretstore-fake-valuemap.yaml");
    let (mut keyhook, webhook) = serve_with(workdir.path(), &format!("{demo}\n---\n{alpha}"));
    let log = keyhook.wait_for("webhooks on https://", START);
    assert_eq!(
        lines_with(&log, "stores file loaded"),
        ["stores file loaded: 3 store(s) path=stores.yaml stores=3 secrets=0 converted=2"]
    );
    assert!(lines_with(&log, "stores file document").is_empty(), "{log}");

    let ca = std::fs::read_to_string(workdir.path().join("certs/ca.crt")).unwrap();
    let mut connection = H2Connection::open(&ca, webhook.parse().unwrap(), "localhost")
        .await
        .unwrap();
    let (status, body) = connection
        .post(
            "/mutate-pod",
            &repo("tests/fixtures/admission/pod-inject-demo.json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");

    let log = keyhook.wait_for("Secret written", START);
    let written = lines_with(&log, "Secret written");
    assert_eq!(written.len(), 1, "{log}");
    assert!(
        written[0].starts_with("Secret written secret=shop/keyhook-"),
        "{written:?}"
    );
    let secrets: Vec<_> = std::fs::read_dir(workdir.path().join("secrets/shop"))
        .unwrap()
        .collect();
    assert_eq!(secrets.len(), 1);
}
