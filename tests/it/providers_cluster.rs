//! The in-cluster store catalog against an apiserver: stores, namespace
//! labels and credential versions come from reflectors (list, then watch),
//! never from a GET per lookup; only a credential's data is read, once, when
//! a client is built.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use http::Method;
use keyhook::providers::{ClusterCatalog, StoreCatalog, spec::ProviderConfig, spec::StoreKind};
use serde_json::json;
use support::fake_apiserver::FakeApiServer;

fn namespace(name: &str, team: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": {"team": team, "kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })
}

fn vault_store(server: &str, generation: i64) -> serde_json::Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "vault", "namespace": "shop", "uid": "5d3e6c1a-0000-4000-8000-000000000001", "generation": generation},
        "spec": {"provider": {"vault": {
            "server": server, "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}
        }}}
    })
}

fn cluster_store() -> serde_json::Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": "shared", "uid": "5d3e6c1a-0000-4000-8000-000000000002", "generation": 1},
        "spec": {
            "conditions": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}],
            "provider": {"fake": {"data": [{"key": "prod/db", "value": "{\"password\":\"x\"}"}]}}
        }
    })
}

fn token_secret() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "vault-token", "namespace": "shop", "uid": "5d3e6c1a-0000-4000-8000-000000000003"},
        "data": {"token": "cy5yb290LXRva2Vu"}
    })
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_cluster_catalog_follows_stores_namespaces_and_credentials_by_watch() {
    let api = FakeApiServer::new();
    api.seed(namespace("shop", "shop"));
    api.seed(namespace("billing", "billing"));
    api.seed(vault_store("https://vault-a.example:8200", 1));
    api.seed(cluster_store());
    api.seed(token_secret());

    let catalog = ClusterCatalog::start(api.client("replica-a"));
    tokio::time::timeout(Duration::from_secs(10), catalog.ready())
        .await
        .expect("reflectors list everything");

    let store = catalog
        .store(StoreKind::SecretStore, "shop", "vault")
        .unwrap()
        .expect("the SecretStore");
    assert_eq!(
        (store.namespace.as_deref(), store.generation),
        (Some("shop"), 1)
    );
    assert!(
        matches!(&store.provider, ProviderConfig::Vault(v) if v.server == "https://vault-a.example:8200")
    );
    assert!(
        catalog
            .store(StoreKind::SecretStore, "billing", "vault")
            .unwrap()
            .is_none(),
        "a SecretStore is per namespace"
    );
    let shared = catalog
        .store(StoreKind::ClusterSecretStore, "", "shared")
        .unwrap()
        .expect("the ClusterSecretStore");
    assert_eq!(shared.conditions.len(), 1);

    let labels = catalog.namespace_labels("shop").expect("namespace labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(catalog.namespace_labels("nowhere"), None);
    let version = catalog
        .secret_version("shop", "vault-token")
        .expect("credential version");

    // Credential data is read with one GET, only when asked.
    let data = catalog
        .read_secret("shop", "vault-token")
        .await
        .expect("the Secret");
    assert_eq!(data.resource_version, version);
    assert_eq!(data.data["token"].expose(), b"s.root-token");

    // Changes arrive through the watches.
    api.seed(vault_store("https://vault-b.example:8200", 2));
    eventually("the store update", || {
        catalog
            .store(StoreKind::SecretStore, "shop", "vault")
            .unwrap()
            .is_some_and(|s| s.generation == 2)
    })
    .await;
    let mut rotated = token_secret();
    rotated["data"]["token"] = json!("cy5uZXctdG9rZW4=");
    api.seed(rotated);
    eventually("the credential rotation", || {
        catalog
            .secret_version("shop", "vault-token")
            .is_some_and(|v| v != version)
    })
    .await;
    api.seed(namespace("billing", "shop"));
    eventually("the relabelled namespace", || {
        catalog
            .namespace_labels("billing")
            .and_then(|l: BTreeMap<_, _>| l.get("team").cloned())
            .as_deref()
            == Some("shop")
    })
    .await;

    // The catalog never wrote anything, and looked nothing up one by one
    // except the credential it was asked to read.
    assert!(api.writes().is_empty());
    let gets: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|(method, uri)| {
            *method == Method::GET && !uri.contains("watch=true") && !is_list(uri)
        })
        .map(|(_, uri)| uri)
        .collect();
    assert_eq!(
        gets,
        ["/api/v1/namespaces/shop/secrets/vault-token"],
        "{gets:?}"
    );
}

fn is_list(uri: &str) -> bool {
    let path = uri.split('?').next().unwrap_or_default();
    [
        "/secrets",
        "/namespaces",
        "/secretstores",
        "/clustersecretstores",
    ]
    .iter()
    .any(|plural| path.ends_with(plural))
}
