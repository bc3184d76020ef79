//! The whole stack in standalone mode: keyhook serving HTTP/2 over TLS, the
//! fake provider of `examples/stores.yaml`, Secrets written to a temporary
//! `--secrets-dir`. Inject, dry-run, reinvocation and every error message.

use crate::support;

use std::path::{Path, PathBuf};

use base64::Engine;
use keyhook::server::Mode;
use serde_json::{Value, json};
use support::{H2Connection, Running};

const VALUES: &[&str] = &[
    "demo-db-password",
    "MIIBdemo",
    "demo-api-token",
    "demo-ledger-key",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/admission").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// examples/stores.yaml plus a Vault store whose server is down.
fn stores(dir: &Path) -> PathBuf {
    stores_with(dir, "")
}

/// [`stores`] plus `extra` documents.
fn stores_with(dir: &Path, extra: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("examples/stores.yaml")).unwrap();
    text.push_str(
        r#"---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: down
  namespace: shop
spec:
  provider:
    vault:
      server: "http://127.0.0.1:9"
      path: secret
      version: v2
      auth:
        tokenSecretRef:
          name: vault-token
          key: token
---
apiVersion: v1
kind: Secret
metadata:
  name: vault-token
  namespace: shop
stringData:
  token: placeholder
"#,
    );
    text.push_str(extra);
    let path = dir.join("stores.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Stack {
    server: Running,
    connection: H2Connection,
    secrets: PathBuf,
}

async fn start(dir: &Path, extra: &[&str]) -> Stack {
    start_with(dir, extra, stores(dir)).await
}

async fn start_with(dir: &Path, extra: &[&str], stores: PathBuf) -> Stack {
    let secrets = dir.join("secrets");
    let mut flags = vec![
        "--stores",
        stores.to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let server = Running::start(Mode::Standalone, &dir.join("certs"), &flags).await;
    let ca = std::fs::read_to_string(dir.join("certs/ca.crt")).unwrap();
    let connection = H2Connection::open(&ca, server.webhook, "keyhook.keyhook.svc")
        .await
        .unwrap();
    Stack {
        server,
        connection,
        secrets,
    }
}

impl Stack {
    /// POSTs a review; returns its `response`.
    async fn admit(&mut self, review: &Value) -> Value {
        let (status, body) = self
            .connection
            .post("/mutate-pod", &review.to_string())
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        for value in VALUES {
            assert!(!body.contains(value), "a value in the response: {body}");
        }
        let mut review: Value = serde_json::from_str(&body).unwrap();
        review["response"].take()
    }

    fn secret_files(&self) -> Vec<PathBuf> {
        let Ok(namespaces) = std::fs::read_dir(&self.secrets) else {
            return Vec::new();
        };
        namespaces
            .flatten()
            .flat_map(|ns| {
                std::fs::read_dir(ns.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path())
            })
            .collect()
    }
}

fn patch_of(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    // The API's form of a `[]byte`: a base64 string.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a base64 patch"))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn message(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    response["status"]["message"].as_str().unwrap().to_string()
}

/// The demo review with `edit` applied to its pod.
fn demo_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = fixture("pod-inject-demo.json");
    edit(&mut review["request"]["object"]);
    review
}

#[tokio::test]
async fn dry_run_then_inject_then_reinvocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = start(dir.path(), &[]).await;
    let review = fixture("pod-inject-demo.json");

    let mut dry = review.clone();
    dry["request"]["dryRun"] = true.into();
    let dry_response = stack.admit(&dry).await;
    assert_eq!(dry_response["allowed"], true, "{dry_response}");
    let dry_patch = patch_of(&dry_response);
    assert!(
        stack.secret_files().is_empty(),
        "dry-run wrote {:?}",
        stack.secret_files()
    );

    let response = stack.admit(&review).await;
    assert_eq!(response["uid"], review["request"]["uid"]);
    let patch = patch_of(&response);
    assert_eq!(patch, dry_patch, "dry-run computes the same patch");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod, fixture("pod-inject-demo.patched.json"));
    let files = stack.secret_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = pod["metadata"]["annotations"]["keyhook.io/injected"]
        .as_str()
        .unwrap();
    assert_eq!(
        files[0],
        stack.secrets.join(format!("shop/keyhook-{name}.yaml"))
    );

    let mut reinvoked = review.clone();
    reinvoked["request"]["object"] = pod;
    let response = stack.admit(&reinvoked).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");

    // reqwest (behind admin_get) takes the process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_, metrics) = stack.server.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"keyhook_injections_total{result="injected"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keyhook_injections_total{result="unchanged"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keyhook_http_request_duration_seconds_count{path="/mutate-pod"} 3"#),
        "{metrics}"
    );
    // One Secret written: the dry run wrote none, the reinvocation found it.
    assert!(
        metrics.contains(r#"keyhook_secret_writes_total{operation="apply",result="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keyhook_secret_write_duration_seconds_count{operation="apply"} 1"#),
        "{metrics}"
    );
    // Standalone, this replica is the leader: it exports controller state.
    assert!(
        metrics.contains("# TYPE keyhook_managed_secrets gauge"),
        "{metrics}"
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn every_error_names_what_is_wrong_and_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = start(dir.path(), &["--request-timeout", "2s"]).await;

    let malformed = demo_with(|pod| {
        pod["spec"]["containers"][0]["env"][2]["value"] = "keyhook:#password".into()
    });
    let text = message(&stack.admit(&malformed).await);
    assert!(
        text.contains("container `app`, env `DB_PASSWORD`"),
        "{text}"
    );
    assert!(text.contains("has no key"), "{text}");

    let missing = demo_with(|pod| {
        pod["spec"]["containers"][0]["env"][2]["value"] = "keyhook:prod/nope#password".into()
    });
    let text = message(&stack.admit(&missing).await);
    assert!(
        text.contains("store `shop/demo`: key `prod/nope` not found"),
        "{text}"
    );

    let missing_property = demo_with(|pod| {
        pod["spec"]["containers"][0]["env"][2]["value"] = "keyhook:prod/db#pin".into()
    });
    let text = message(&stack.admit(&missing_property).await);
    assert!(
        text.contains("key `prod/db` not found: no property `pin`"),
        "{text}"
    );

    let no_store =
        demo_with(|pod| pod["metadata"]["annotations"]["keyhook.io/store"] = "nope".into());
    let text = message(&stack.admit(&no_store).await);
    assert!(text.contains("SecretStore `shop/nope` not found"), "{text}");

    let not_admitted = demo_with(|pod| {
        let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove("keyhook.io/store");
        annotations.insert("keyhook.io/cluster-store".into(), "shared".into());
    });
    let text = message(&stack.admit(&not_admitted).await);
    assert!(
        text.contains("ClusterSecretStore `shared` does not admit namespace `shop`"),
        "{text}"
    );

    let both = demo_with(|pod| {
        pod["metadata"]["annotations"]["keyhook.io/cluster-store"] = "shared".into()
    });
    let text = message(&stack.admit(&both).await);
    assert!(text.contains("not both"), "{text}");

    let bad_file = demo_with(|pod| {
        pod["metadata"]["annotations"]["keyhook.io/file.../etc"] = "prod/db#ca".into()
    });
    let text = message(&stack.admit(&bad_file).await);
    assert!(
        text.contains("annotation `keyhook.io/file.../etc`"),
        "{text}"
    );

    let init = demo_with(|pod| {
        pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox", "env": [{"name": "TOKEN", "value": "keyhook:prod/api#token@"}]}]);
    });
    let text = message(&stack.admit(&init).await);
    assert!(
        text.contains("init container `setup`, env `TOKEN`"),
        "{text}"
    );

    // The backend is down: the fetch is retried until the deadline nears,
    // then the pod is denied naming store and key.
    let down = demo_with(|pod| pod["metadata"]["annotations"]["keyhook.io/store"] = "down".into());
    let text = message(&stack.admit(&down).await);
    assert!(text.contains("store `shop/down`"), "{text}");
    assert!(text.contains("key `prod/db`"), "{text}");
    assert!(text.contains("deadline exceeded"), "{text}");

    // keyhook.io/on-error: allow admits unchanged, with a warning saying why.
    let allowed = demo_with(|pod| {
        pod["metadata"]["annotations"]["keyhook.io/store"] = "down".into();
        pod["metadata"]["annotations"]["keyhook.io/on-error"] = "allow".into();
    });
    let response = stack.admit(&allowed).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(warning.contains("on-error: allow"), "{warning}");
    assert!(warning.contains("store `shop/down`"), "{warning}");

    // ... but not for a malformed request.
    let malformed_allowed = demo_with(|pod| {
        pod["metadata"]["annotations"]["keyhook.io/on-error"] = "allow".into();
        pod["spec"]["containers"][0]["env"][2]["value"] = "keyhook:".into();
    });
    message(&stack.admit(&malformed_allowed).await);

    let bad_on_error =
        demo_with(|pod| pod["metadata"]["annotations"]["keyhook.io/on-error"] = "maybe".into());
    let text = message(&stack.admit(&bad_on_error).await);
    assert!(
        text.contains("`maybe` is neither `allow` nor `deny`"),
        "{text}"
    );

    assert!(
        stack.secret_files().is_empty(),
        "a failed admission wrote {:?}",
        stack.secret_files()
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn a_write_that_fails_denies_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    // --secrets-dir is a file: nothing can be written under it.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let stores = stores(dir.path());
    let server = Running::start(
        Mode::Standalone,
        &dir.path().join("certs"),
        &[
            "--stores",
            stores.to_str().unwrap(),
            "--secrets-dir",
            blocked.to_str().unwrap(),
        ],
    )
    .await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let mut connection = H2Connection::open(&ca, server.webhook, "keyhook.keyhook.svc")
        .await
        .unwrap();
    let (_, body) = connection
        .post("/mutate-pod", &fixture("pod-inject-demo.json").to_string())
        .await
        .unwrap();
    let response: Value = serde_json::from_str(&body).unwrap();
    let text = message(&response["response"]);
    assert!(text.contains("managed Secret shop/keyhook-"), "{text}");
    assert!(text.contains("blocked/shop/keyhook-"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_pod_that_asks_for_nothing_is_admitted_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = start(dir.path(), &[]).await;
    let response = stack.admit(&fixture("pod-create-deployment.json")).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    stack.server.stop().await;
}

#[tokio::test]
async fn a_denied_read_names_store_key_and_reason() {
    use std::sync::atomic::Ordering;
    use support::backends::{Connect, ConnectState, item, secret_doc};

    let vault = "vaultbbbbbbbbbbbbbbbbbbbbb";
    let mut state = ConnectState {
        token: "connect-token".into(),
        vaults: vec![(vault.into(), "prod".into())],
        ..Default::default()
    };
    state.items.insert(
        vault.into(),
        vec![item(
            "itemaaaaaaaaaaaaaaaaaaaaaa",
            "db",
            vault,
            &[("password", "op-db-password")],
        )],
    );
    // Connect answers item reads with 403, as for a token without access to the vault.
    state.fail_status.store(403, Ordering::Relaxed);
    state.fail_next.store(u32::MAX, Ordering::Relaxed);
    let connect = Connect::start(state).await;
    let extra = format!(
        "---\n{}---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: op\n  namespace: shop\nspec:\n  provider:\n    onepassword:\n      connectHost: {}\n      vaults:\n        prod: 1\n      auth:\n        secretRef:\n          connectTokenSecretRef:\n            name: connect-token\n            key: token\n",
        secret_doc("shop", "connect-token", &[("token", "connect-token")]),
        connect.url
    );
    let dir = tempfile::tempdir().unwrap();
    let stores = stores_with(dir.path(), &extra);
    let mut stack = start_with(dir.path(), &[], stores).await;
    let denied = demo_with(|pod| {
        pod["metadata"]["annotations"] = json!({"keyhook.io/store": "op"});
        pod["spec"]["containers"][0]["env"][2]["value"] = "keyhook:db#password".into();
        pod["spec"]["containers"][0]["env"][1]["value"] = "plain".into();
    });
    let text = message(&stack.admit(&denied).await);
    assert!(
        text.contains("store `shop/op`: permission denied for key `db`"),
        "{text}"
    );
    assert!(!text.contains("op-db-password"), "{text}");
    stack.server.stop().await;
}
