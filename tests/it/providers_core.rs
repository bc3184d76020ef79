//! The provider layer through its public API: store parsing, namespace
//! conditions, the stores file, single-flight, coalescing, backoff, errors.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{
    FileCatalog, ProviderConfig, ProviderError, ProviderSettings, Providers, RemoteRef, Store,
    StoreRef,
};
use serde_json::json;
use support::backends::{Connect, ConnectState, item, secret_doc};
use support::providers::layer;
use tokio::time::Instant;

const FIXTURE: &str = include_str!("../fixtures/providers/stores.yaml");

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn fake_store_answers_by_key_version_and_property() {
    let (providers, _, _) = layer(FIXTURE, ProviderSettings::default());
    let store = StoreRef::secret_store("fake");
    let (providers, store) = (&providers, &store);
    let get = |r: RemoteRef| async move { providers.get_secret(store, "shop", &r, soon()).await };
    assert_eq!(
        get(RemoteRef::key("/foo/bar").with_version("v2"))
            .await
            .unwrap()
            .expose(),
        b"HELLO2"
    );
    assert_eq!(
        get(RemoteRef::key("/foo/baz")
            .with_version("v1")
            .with_property("john"))
        .await
        .unwrap()
        .expose(),
        b"doe"
    );
    assert_eq!(
        get(RemoteRef::key("/plain")).await.unwrap().expose(),
        b"plain-value"
    );
    let map = providers
        .get_secret_map(
            store,
            "shop",
            &RemoteRef::key("/foo/baz").with_version("v1"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(map["john"].expose(), b"doe");

    let missing = get(RemoteRef::key("/nope")).await.unwrap_err();
    assert!(
        matches!(missing, ProviderError::NotFound { .. }),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "store `shop/fake`: key `/nope` not found: no such entry"
    );
}

#[test]
fn parses_upstream_fields_into_the_resolved_config() {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(FIXTURE).unwrap();
    let vault = Store::from_value(&documents[1]).unwrap();
    assert_eq!(vault.display_name(), "vault-backend");
    assert_eq!(vault.conditions.len(), 3);
    let ProviderConfig::Vault(config) = &vault.provider else {
        panic!("vault provider expected")
    };
    assert_eq!(config.namespace.as_deref(), Some("team-a"));
    assert_eq!(
        config
            .auth
            .as_ref()
            .unwrap()
            .token_secret_ref
            .as_ref()
            .unwrap()
            .key
            .as_deref(),
        Some("token")
    );
    let fake = Store::from_value(&documents[0]).unwrap();
    assert_eq!(fake.refresh_interval, Some(Duration::from_secs(3600)));

    // openBao maps onto the same client configuration.
    let bao = Store::from_value(&json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "bao"},
        "spec": {"provider": {"openBao": {"server": "http://bao:8200", "version": "v1", "auth": {"tokenSecretRef": {"name": "t", "namespace": "x", "key": "k"}}}}}
    }))
    .unwrap();
    assert!(matches!(bao.provider, ProviderConfig::Vault(ref v) if v.server == "http://bao:8200"));
}

#[test]
fn invalid_stores_name_the_field() {
    let base = |provider: serde_json::Value, annotations: serde_json::Value| {
        json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
               "metadata": {"name": "s", "namespace": "shop", "annotations": annotations}, "spec": {"provider": provider}})
    };
    let cases = [
        (
            base(
                json!({"vault": {"server": "http://v", "version": "v3"}}),
                json!({}),
            ),
            "spec.provider.vault.version",
        ),
        (base(json!({"gcpsm": {}}), json!({})), "spec.provider.gcpsm"),
        (
            base(
                json!({"fake": {"data": []}, "vault": {"server": "x"}}),
                json!({}),
            ),
            "spec.provider",
        ),
        (
            base(
                json!({"fake": {"data": []}}),
                json!({"keyhook.io/qps": "fast"}),
            ),
            "metadata.annotations.keyhook.io/qps",
        ),
        (
            base(
                json!({"vault": {"server": "http://v", "auth": {"tokenSecretRef": {"name": "t", "namespace": "other", "key": "k"}}}}),
                json!({}),
            ),
            "spec.provider.vault.auth.tokenSecretRef.namespace",
        ),
        (
            base(
                json!({"aws": {"service": "SecretsManager", "region": "eu-west-1", "auth": {"jwt": {"serviceAccountRef": {"name": "reader", "namespace": "other"}}}}}),
                json!({}),
            ),
            "spec.provider.aws.auth.jwt.serviceAccountRef.namespace",
        ),
    ];
    for (document, field) in cases {
        match Store::from_value(&document) {
            Err(ProviderError::InvalidStore { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected InvalidStore, got {other:?}"),
        }
    }
}

#[test]
fn cluster_store_conditions_admit_and_refuse_every_selector_form() {
    let namespaces = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: payments\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n  labels:\n    team: frontend\n    tier: edge\n";
    let store = |name: &str, conditions: &str| {
        format!(
            "---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\nspec:\n  provider:\n    fake:\n      data: []\n{conditions}"
        )
    };
    let yaml = [
        store("open", ""),
        store("by-labels", "  conditions:\n  - namespaceSelector:\n      matchLabels:\n        team: payments\n"),
        store("by-expression", "  conditions:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: tier, operator: In, values: [edge]}\n"),
        store("by-notin", "  conditions:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: team, operator: NotIn, values: [payments]}\n"),
        store("by-exists", "  conditions:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: tier, operator: Exists}\n"),
        store("by-absent", "  conditions:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: tier, operator: DoesNotExist}\n"),
        store("by-name", "  conditions:\n  - namespaces: [billing, web]\n"),
        store("by-regex", "  conditions:\n  - namespaceRegexes: ['^ci-[0-9]+$']\n"),
        store("any-of", "  conditions:\n  - namespaces: [billing]\n  - namespaceRegexes: ['^sh']\n"),
        store("empty-selector", "  conditions:\n  - namespaceSelector: {}\n"),
    ]
    .concat();
    let (providers, _, _) = layer(&format!("{namespaces}{yaml}"), ProviderSettings::default());
    let table = [
        ("open", "anything", true),
        ("by-labels", "shop", true),
        ("by-labels", "web", false),
        ("by-expression", "web", true),
        ("by-expression", "shop", false),
        ("by-notin", "web", true),
        ("by-notin", "shop", false),
        ("by-exists", "web", true),
        ("by-exists", "shop", false),
        ("by-absent", "shop", true),
        ("by-absent", "web", false),
        ("by-name", "web", true),
        ("by-name", "billing", true),
        ("by-name", "shop", false),
        ("by-regex", "ci-42", true),
        ("by-regex", "ci-x", false),
        ("by-regex", "prod-ci-42", false),
        ("any-of", "billing", true),
        ("any-of", "shop", true),
        ("any-of", "web", false),
        ("empty-selector", "web", true),
    ];
    for (name, namespace, admitted) in table {
        let result = providers.resolve(&StoreRef::cluster_secret_store(name), namespace);
        match (admitted, result) {
            (true, Ok(store)) => assert_eq!(store.name, name),
            (
                false,
                Err(ProviderError::NotAdmitted {
                    store,
                    namespace: ns,
                    reason,
                    ..
                }),
            ) => {
                assert_eq!((store.as_str(), ns.as_str()), (name, namespace));
                assert!(reason.contains("spec.conditions"), "{reason}");
            }
            (admitted, other) => {
                panic!("{name} from {namespace}: expected admitted={admitted}, got {other:?}")
            }
        }
    }
}

#[test]
fn secret_store_is_usable_only_from_its_namespace() {
    let (providers, _, _) = layer(FIXTURE, ProviderSettings::default());
    assert!(
        providers
            .resolve(&StoreRef::secret_store("fake"), "shop")
            .is_ok()
    );
    // From another namespace the name does not resolve at all: SecretStores are looked up in the caller's namespace.
    let err = providers
        .resolve(&StoreRef::secret_store("fake"), "web")
        .unwrap_err();
    assert_eq!(err.to_string(), "SecretStore `web/fake` not found");
}

#[test]
fn stores_file_errors_name_document_and_field_and_keep_the_last_good_set() {
    let catalog = FileCatalog::from_yaml(FIXTURE).unwrap();
    let bad = format!(
        "{FIXTURE}---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  provider:\n    vault:\n      server: 42\n"
    );
    let errors = catalog.reload(&bad).unwrap_err();
    assert_eq!(errors.len(), 1);
    let ProviderError::InvalidDocument {
        document, field, ..
    } = &errors[0]
    else {
        panic!("{errors:?}")
    };
    assert_eq!(
        (*document, field.as_str()),
        (5, "spec.provider.vault.server"),
        "documents count from 1"
    );
    assert_eq!(
        errors[0].to_string(),
        "document 5 (SecretStore shop/broken): `spec.provider.vault.server`: invalid type: integer `42`, expected a string"
    );
    let metrics = Arc::new(ProviderMetrics::unregistered());
    let catalog = Arc::new(catalog);
    let providers = Providers::new(ProviderSettings::default(), catalog.clone(), metrics);
    assert!(
        providers
            .resolve(&StoreRef::secret_store("fake"), "shop")
            .is_ok(),
        "last good set stays in force"
    );
    assert!(matches!(
        providers.resolve(&StoreRef::secret_store("broken"), "shop"),
        Err(ProviderError::StoreNotFound { .. })
    ));
}

#[tokio::test]
async fn stores_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stores.yaml");
    std::fs::write(&path, FIXTURE).unwrap();
    let catalog = Arc::new(FileCatalog::from_file(&path).unwrap());
    let watch = catalog.watch(path.clone()).unwrap();
    let providers = Providers::new(
        ProviderSettings::default(),
        catalog.clone(),
        Arc::new(ProviderMetrics::unregistered()),
    );
    let renamed = FIXTURE.replace("name: fake\n", "name: fake-renamed\n");
    // Replace the file as editors and the kubelet do: write aside, rename over.
    std::fs::write(dir.path().join("stores.yaml.tmp"), &renamed).unwrap();
    std::fs::rename(dir.path().join("stores.yaml.tmp"), &path).unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        if providers
            .resolve(&StoreRef::secret_store("fake-renamed"), "shop")
            .is_ok()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    assert!(
        reloaded,
        "the renamed store should appear after the file changed"
    );
}

fn onepassword_store(
    namespace: &str,
    name: &str,
    host: &str,
    token_secret: &str,
    vaults: &[(&str, i64)],
) -> String {
    let vaults: String = vaults
        .iter()
        .map(|(v, p)| format!("        {v}: {p}\n"))
        .collect();
    format!(
        "---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  provider:\n    onepassword:\n      connectHost: {host}\n      vaults:\n{vaults}      auth:\n        secretRef:\n          connectTokenSecretRef:\n            name: {token_secret}\n            key: token\n"
    )
}

async fn one_vault_connect(token: &str) -> Connect {
    let mut state = ConnectState {
        token: token.into(),
        vaults: vec![("vaultaaaaaaaaaaaaaaaaaaaaa".into(), "prod".into())],
        ..Default::default()
    };
    state.items.insert(
        "vaultaaaaaaaaaaaaaaaaaaaaa".into(),
        vec![item(
            "itemaaaaaaaaaaaaaaaaaaaaaa",
            "db",
            "vaultaaaaaaaaaaaaaaaaaaaaa",
            &[("password", "s3cret-db"), ("username", "app")],
        )],
    );
    Connect::start(state).await
}

fn connect_manifest(connect: &Connect) -> String {
    format!(
        "---\n{}{}",
        secret_doc("shop", "op-token", &[("token", "tok-1")]),
        onepassword_store("shop", "op", &connect.url, "op-token", &[("prod", 1)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_builds_one_client_for_a_thousand_first_uses() {
    let connect = one_vault_connect("tok-1").await;
    let (providers, _, metrics) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let providers = Arc::new(providers);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let providers = providers.clone();
            tokio::spawn(async move {
                providers
                    .client(&StoreRef::secret_store("op"), "shop", soon())
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(providers.clients_built(), 1);
    assert_eq!(metrics.clients.get(), 1);
    let vault_lookups = connect
        .state
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/v1/vaults")
        .count();
    assert_eq!(
        vault_lookups, 1,
        "the vault list is resolved once, by the one build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_identical_fetches_reach_the_backend_once() {
    let connect = one_vault_connect("tok-1").await;
    connect.state.delay_ms.store(200, Ordering::Relaxed);
    let (providers, _, metrics) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let handle = providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.get_secret(&RemoteRef::key("db"), soon()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().expose(), b"s3cret-db");
    }
    assert_eq!(connect.state.item_reads.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.coalesced.get(), 999);
}

#[tokio::test]
async fn requests_carry_the_documented_paths_filters_and_bearer_token() {
    let connect = one_vault_connect("tok-1").await;
    let (providers, _, _) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let user = providers
        .get_secret(
            &StoreRef::secret_store("op"),
            "shop",
            &RemoteRef::key("db").with_property("username"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(user.expose(), b"app");
    let seen = connect.state.seen.lock().unwrap().clone();
    let shape: Vec<(String, Option<String>)> = seen
        .iter()
        .map(|s| (s.path.clone(), s.filter.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("/v1/vaults".into(), Some("name eq \"prod\"".into())),
            (
                "/v1/vaults/vaultaaaaaaaaaaaaaaaaaaaaa/items".into(),
                Some("title eq \"db\"".into())
            ),
            (
                "/v1/vaults/vaultaaaaaaaaaaaaaaaaaaaaa/items/itemaaaaaaaaaaaaaaaaaaaaaa".into(),
                None
            ),
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer tok-1"))
    );
}

#[tokio::test]
async fn a_wrong_token_fails_the_build_with_connects_message() {
    let connect = one_vault_connect("the-real-token").await;
    let (providers, _, _) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let err = providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::ClientBuild { .. }), "{err:?}");
    assert!(
        text.contains("shop/op")
            && text.contains("401")
            && text.contains("Invalid token signature"),
        "{text}"
    );
    assert!(!text.contains("tok-1"), "the token must not appear: {text}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_with_backoff() {
    for status in [429u32, 500, 503] {
        let connect = one_vault_connect("tok-1").await;
        connect.state.fail_status.store(status, Ordering::SeqCst);
        connect.state.fail_next.store(3, Ordering::SeqCst);
        let (providers, _, metrics) =
            layer(&connect_manifest(&connect), ProviderSettings::default());
        let value = providers
            .get_secret(
                &StoreRef::secret_store("op"),
                "shop",
                &RemoteRef::key("db"),
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(value.expose(), b"s3cret-db");
        assert_eq!(
            connect.state.item_reads.load(Ordering::SeqCst),
            4,
            "HTTP {status}: three failures, then success"
        );
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("r", "", metrics.requests.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let expected = if status == 429 {
            "throttled"
        } else {
            "transient"
        };
        assert!(
            text.contains(&format!("result=\"{expected}\"}} 3")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn retries_stop_at_the_callers_deadline() {
    let connect = one_vault_connect("tok-1").await;
    connect.state.fail_status.store(429, Ordering::SeqCst);
    connect.state.fail_next.store(u32::MAX, Ordering::SeqCst);
    let (providers, _, _) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let handle = providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(400);
    let err = handle
        .get_secret(&RemoteRef::key("db"), deadline)
        .await
        .unwrap_err();
    assert!(
        Instant::now() < deadline + Duration::from_millis(100),
        "no sleep may reach past the deadline"
    );
    let ProviderError::DeadlineExceeded {
        store,
        key,
        attempts,
        last,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((store.as_str(), key.as_str()), ("shop/op", "db"));
    assert!(*attempts >= 2, "retried before giving up: {attempts}");
    assert!(last.as_deref().unwrap_or_default().contains("429"), "{err}");
}

#[tokio::test]
async fn not_found_and_permission_errors_return_at_once_naming_store_and_key() {
    let connect = one_vault_connect("tok-1").await;
    let (providers, _, _) = layer(&connect_manifest(&connect), ProviderSettings::default());
    let handle = providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();

    let err = handle
        .get_secret(&RemoteRef::key("no-such-item"), soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("store `shop/op`: key `no-such-item` not found"),
        "{err}"
    );

    let err = handle
        .get_secret(&RemoteRef::key("db").with_property("pin"), soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");

    connect.state.fail_status.store(403, Ordering::SeqCst);
    connect.state.fail_next.store(1, Ordering::SeqCst);
    let before = connect.state.item_reads.load(Ordering::SeqCst);
    let err = handle
        .get_secret(&RemoteRef::key("db"), soon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert_eq!(
        connect.state.item_reads.load(Ordering::SeqCst),
        before + 1,
        "a permission error is not retried"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(text.contains("shop/op") && text.contains("db"), "{text}");
        assert!(
            !text.contains("s3cret-db") && !text.contains("tok-1"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_result_cache_serves_repeats_within_its_ttl() {
    let connect = one_vault_connect("tok-1").await;
    let settings = ProviderSettings {
        cache_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let (providers, _, metrics) = layer(&connect_manifest(&connect), settings);
    for _ in 0..5 {
        let value = providers
            .get_secret(
                &StoreRef::secret_store("op"),
                "shop",
                &RemoteRef::key("db"),
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(value.expose(), b"s3cret-db");
    }
    assert_eq!(connect.state.item_reads.load(Ordering::SeqCst), 1);
    assert_eq!(
        (metrics.cache_hits.get(), metrics.cache_misses.get()),
        (4, 1)
    );
}

#[tokio::test]
async fn a_rotated_credential_builds_a_new_client() {
    let connect = one_vault_connect("tok-1").await;
    let (providers, catalog, metrics) =
        layer(&connect_manifest(&connect), ProviderSettings::default());
    providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();
    providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();
    assert_eq!(providers.clients_built(), 1);
    let rotated = format!(
        "---\n{}{}",
        secret_doc("shop", "op-token", &[("token", "tok-2")]),
        onepassword_store("shop", "op", &connect.url, "op-token", &[("prod", 1)])
    );
    catalog.reload(&rotated).unwrap();
    let err = providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::ClientBuild { .. }),
        "the new token is used at once: {err:?}"
    );
    assert_eq!(providers.clients_built(), 1);
    catalog.reload(&connect_manifest(&connect)).unwrap();
    providers
        .client(&StoreRef::secret_store("op"), "shop", soon())
        .await
        .unwrap();
    assert_eq!(metrics.clients.get(), 1, "the superseded client is dropped");
}
