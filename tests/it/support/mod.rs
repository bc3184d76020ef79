//! Test support: an in-process keyhook and real TLS clients ([`server`]);
//! for the cluster tests, the recorded apiserver JSON, kube's `tower-test`
//! mock wrapped as an `ApiServerVerifier` that asserts each request, an
//! in-memory apiserver for multi-replica scenarios, and a TLS handshake at a
//! chosen time.

pub mod backends;
pub mod cel;
pub mod cluster_objects;
pub mod diff;
pub mod fake_apiserver;
pub mod harness;
pub mod injection;
pub mod process;
pub mod providers;
pub mod schema;
pub mod server;
pub mod tls;

pub use server::*;

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// Waits until `holds()` is true, polling; panics naming `what` when it is
/// not within `within` (of tokio's clock: a paused test advances it).
pub async fn eventually(what: &str, within: Duration, mut holds: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !holds() {
        assert!(start.elapsed() < within, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`], for a check that awaits.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut holds: impl FnMut() -> F,
) {
    let start = tokio::time::Instant::now();
    while !holds().await {
        assert!(start.elapsed() < within, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub use fake_apiserver::{fixture, fixture_as_created};

/// A fixture deserialized into a typed object.
pub fn typed<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The 404 `Status` of the fixture, naming another object.
pub fn not_found(kind_plural: &str, name: &str) -> Value {
    let mut status = fixture("status-404-notfound.json");
    status["message"] = format!("{kind_plural} \"{name}\" not found").into();
    status["details"] = serde_json::json!({ "name": name, "kind": kind_plural });
    status
}

pub type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the code under test made, with its body parsed.
#[derive(Debug)]
pub struct Seen {
    pub content_type: Option<String>,
    pub body: Option<Value>,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Seen {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }
}

/// Asserts the requests a kube `Client` makes, one by one, as kube-rs'
/// controller-rs does with its `ApiServerVerifier`.
pub struct ApiServerVerifier(ApiServerHandle);

impl ApiServerVerifier {
    /// A client whose every request reaches this verifier.
    pub fn new() -> (kube::Client, Self) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "keyhook"), Self(handle))
    }

    /// The next request; it must be `method` on `uri` (path and query).
    pub async fn expect(&mut self, method: &str, uri: &str) -> Seen {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(60), self.0.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came; expected {method} {uri}"))
                .unwrap_or_else(|| panic!("client dropped; expected {method} {uri}"));
        let seen_uri = request.uri().to_string();
        assert_eq!(
            (request.method().as_str(), seen_uri.as_str()),
            (method, uri),
            "unexpected request"
        );
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
        Seen {
            content_type,
            body,
            respond,
        }
    }

    /// Asserts that no further request comes within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.0.next_request()).await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
