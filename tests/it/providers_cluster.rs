//! The in-cluster store catalog against an apiserver: stores and namespace
//! labels come from reflectors (list, then watch), credential versions from a
//! watch of each referenced Secret by name, never from a GET per lookup nor
//! from a watch of every Secret; only a credential's data is read, once,
//! when a client is built.

use crate::support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::Method;
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{
    ClusterCatalog, ProviderConfig, ProviderSettings, Providers, RemoteRef, StoreCatalog,
    StoreKind, StoreRef,
};
use serde_json::json;
use support::cluster_objects;

/// How long a watch may take to deliver a change.
const WAIT: Duration = Duration::from_secs(10);
use support::fake_apiserver::{ApiRequest, FakeApiServer, Verb};

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

#[tokio::test]
async fn the_cluster_catalog_follows_stores_namespaces_and_credentials_by_watch() {
    let api = FakeApiServer::new();
    // Secrets no store references, in the stores' own namespace too.
    api.seed_many((0..500).map(|i| cluster_objects::unrelated_secret("shop", i)));
    api.seed_many((0..500).map(|i| cluster_objects::unrelated_secret("billing", i)));
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
    support::eventually("the store update", WAIT, || {
        catalog
            .store(StoreKind::SecretStore, "shop", "vault")
            .unwrap()
            .is_some_and(|s| s.generation == 2)
    })
    .await;
    let mut rotated = token_secret();
    rotated["data"]["token"] = json!("cy5uZXctdG9rZW4=");
    api.seed(rotated);
    support::eventually("the credential rotation", WAIT, || {
        catalog
            .secret_version("shop", "vault-token")
            .is_some_and(|v| v != version)
    })
    .await;
    api.seed(namespace("billing", "shop"));
    support::eventually("the relabelled namespace", WAIT, || {
        catalog
            .namespace_labels("billing")
            .and_then(|l: BTreeMap<_, _>| l.get("team").cloned())
            .as_deref()
            == Some("shop")
    })
    .await;

    // A Secret no store references any more is no longer watched.
    let mut anonymous = vault_store("https://vault-b.example:8200", 3);
    anonymous["spec"]["provider"]["vault"]["auth"] = json!({});
    api.seed(anonymous);
    support::eventually("the credential watch to stop", WAIT, || {
        catalog.secret_version("shop", "vault-token").is_none()
    })
    .await;

    // The catalog never wrote anything, and looked nothing up one by one
    // except the credential it was asked to read.
    assert!(api.writes().is_empty());
    assert_secrets_watched_by_name_only(&api.api_requests(), "shop", "vault-token");
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

/// The only Secret requests are a GET of the credential and a metadata-only
/// LIST and WATCH selecting it by name in its namespace: none for every
/// Secret, none listing again while its watch runs.
fn assert_secrets_watched_by_name_only(requests: &[ApiRequest], namespace: &str, name: &str) {
    let secrets: Vec<&ApiRequest> = requests
        .iter()
        .filter(|r| r.resource == "secrets")
        .collect();
    let selector = format!("metadata.name={name}");
    for request in &secrets {
        assert!(!request.is_unfiltered_cluster_wide(), "{request}");
        assert_eq!(request.namespace.as_deref(), Some(namespace), "{request}");
        match request.verb {
            Verb::Get => assert_eq!(request.name.as_deref(), Some(name), "{request}"),
            Verb::List | Verb::Watch => {
                assert_eq!(
                    request.field_selector.as_deref(),
                    Some(selector.as_str()),
                    "{request}"
                );
                assert!(request.metadata_only, "{request}");
            }
            _ => panic!("the catalog wrote: {request}"),
        }
    }
    let lists = secrets.iter().filter(|r| r.starts_list()).count();
    let gone = secrets.iter().filter(|r| r.gone).count();
    assert_eq!(
        lists,
        1 + gone,
        "a LIST repeated without a 410 Gone: {secrets:#?}"
    );
}

/// A SecretStore of the `kubernetes` provider reading `remote/db` from the
/// apiserver at `url` with the token in the Secret `shop/remote-token`.
fn remote_store(url: &str) -> serde_json::Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "remote", "namespace": "shop", "uid": "5d3e6c1a-0000-4000-8000-000000000004", "generation": 1},
        "spec": {"provider": {"kubernetes": {
            "remoteNamespace": "remote",
            "server": {"url": url},
            "auth": {"token": {"bearerToken": {"name": "remote-token", "key": "token"}}}
        }}}
    })
}

#[tokio::test]
async fn a_rotated_credential_rebuilds_the_stores_client_within_seconds() {
    // The backend: another apiserver, over HTTP, whose requests are
    // recorded under the bearer token that made them.
    let remote = FakeApiServer::new();
    remote.seed(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db", "namespace": "remote"},
        "data": {"password": "cmVtb3RlLXBhc3M="}
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _serving = remote.serve(listener);

    let api = FakeApiServer::new();
    api.seed_many(
        (0..1000).map(|i| cluster_objects::unrelated_secret(&format!("team-{}", i % 20), i)),
    );
    api.seed(namespace("shop", "shop"));
    api.seed(remote_store(&url));
    api.seed(cluster_objects::credential(
        "shop",
        "remote-token",
        "token-1",
    ));
    let catalog = Arc::new(ClusterCatalog::start(api.client("keyhook")));
    tokio::time::timeout(Duration::from_secs(10), catalog.ready())
        .await
        .expect("the catalog syncs");
    let providers = Providers::new(
        ProviderSettings::default(),
        catalog,
        Arc::new(ProviderMetrics::unregistered()),
    );
    let store = StoreRef::secret_store("remote");
    let password = RemoteRef {
        property: Some("password".into()),
        ..RemoteRef::key("db")
    };
    let read = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        providers
            .get_secret(&store, "shop", &password, deadline)
            .await
            .expect("the backend answers")
    };
    let last_reader = || remote.api_requests().last().map(|r| r.replica.clone());

    assert_eq!(read().await.expose(), b"remote-pass");
    assert_eq!(last_reader().as_deref(), Some("token-1"));

    api.seed(cluster_objects::credential(
        "shop",
        "remote-token",
        "token-2",
    ));
    let rotated = tokio::time::Instant::now();
    loop {
        read().await;
        if last_reader().as_deref() == Some("token-2") {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(10),
            "the rotated token was not used within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        providers.clients_built(),
        2,
        "one client per credential version"
    );
    let requests = api.api_requests();
    let credential_reads = requests
        .iter()
        .filter(|r| r.resource == "secrets" && r.verb == Verb::Get)
        .count();
    assert_eq!(credential_reads, 2, "one GET per client built");
    assert_secrets_watched_by_name_only(&requests, "shop", "remote-token");
}
