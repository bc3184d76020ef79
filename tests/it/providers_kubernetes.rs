//! The kubernetes provider against a local API-server stand-in that answers
//! `GET /api/v1/namespaces/{ns}/secrets/{name}` with Secret JSON as the
//! apiserver does (and a `Status` body for errors), checking the bearer token.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{
    FileCatalog, ProviderError, ProviderSettings, Providers, RemoteRef, StoreRef,
};
use serde_json::json;
use support::backends::secret_doc;
use tokio::time::Instant;

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn secret(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock()
        .unwrap()
        .push((format!("{namespace}/{name}"), auth.clone()));
    let status = |code: u16, reason: &str, message: String| {
        (StatusCode::from_u16(code).unwrap(), Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}))).into_response()
    };
    if auth.as_deref() != Some("Bearer remote-token") {
        return status(403, "Forbidden", format!("secrets \"{name}\" is forbidden"));
    }
    if namespace != "remote" || name != "db" {
        return status(404, "NotFound", format!("secrets \"{name}\" not found"));
    }
    Json(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "remote", "resourceVersion": "7"},
        "type": "Opaque",
        "data": {"password": "cmVtb3RlLXBhc3M=", "user": "YXBw"}
    }))
    .into_response()
}

#[tokio::test]
async fn reads_secrets_of_the_remote_namespace_with_the_stores_token() {
    let seen: Seen = Arc::default();
    let router = axum::Router::new()
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(secret))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let store = |name: &str, token_secret: &str| {
        format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  provider:\n    kubernetes:\n      remoteNamespace: remote\n      server:\n        url: {url}\n      auth:\n        token:\n          bearerToken:\n            name: {token_secret}\n            key: token\n"
        )
    };
    let yaml = [
        secret_doc("shop", "remote-token", &[("token", "remote-token")]),
        secret_doc("shop", "wrong-token", &[("token", "nope")]),
        store("k8s", "remote-token"),
        store("k8s-denied", "wrong-token"),
    ]
    .join("---\n");
    let catalog = Arc::new(FileCatalog::from_yaml(&yaml).unwrap());
    let providers = Providers::new(
        ProviderSettings::default(),
        catalog,
        Arc::new(ProviderMetrics::unregistered()),
    );
    let deadline = || Instant::now() + Duration::from_secs(10);
    let k8s = StoreRef::secret_store("k8s");

    let password = providers
        .get_secret(
            &k8s,
            "shop",
            &RemoteRef::key("db").with_property("password"),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(password.expose(), b"remote-pass");
    let map = providers
        .get_secret_map(&k8s, "shop", &RemoteRef::key("db"), deadline())
        .await
        .unwrap();
    assert_eq!(map["user"].expose(), b"app");
    let whole = providers
        .get_secret(&k8s, "shop", &RemoteRef::key("db"), deadline())
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(whole.expose()).unwrap(),
        json!({"password": "remote-pass", "user": "app"})
    );

    let err = providers
        .get_secret(&k8s, "shop", &RemoteRef::key("other"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::NotFound { .. }) && err.to_string().contains("shop/k8s"),
        "{err:?}"
    );
    let err = providers
        .get_secret(
            &StoreRef::secret_store("k8s-denied"),
            "shop",
            &RemoteRef::key("db"),
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("remote-pass"));

    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|(path, _)| path.starts_with("remote/")),
        "{seen:?}"
    );
}
