//! The webhook HTTP surface: every review route over real TLS with HTTP/2
//! and HTTP/1.1, every kind of bad input through the router, and a fuzz of
//! review decoding with arbitrary bytes and mangled real reviews.

use crate::support;

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keyhook::{
    metrics::Metrics,
    server::{
        Mode,
        routes::{WebhookService, WebhookSettings, webhook_service},
    },
};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{POD_REVIEW, POD_REVIEW_UID, Running};
use tower::ServiceExt;

const CONVERSION_REVIEW: &str =
    include_str!("../fixtures/conversion/externalsecrets-v1alpha1-to-v1.json");
const EXTERNAL_SECRET_V1: &str = include_str!("../fixtures/apis/v1/externalsecret-full.yaml");

/// The webhooks with the flag defaults (8 MiB, 8 s) and no injector.
fn router() -> WebhookService {
    router_with_max_body(WebhookSettings::default().max_body)
}

fn router_with_max_body(max_body: usize) -> WebhookService {
    let settings = WebhookSettings {
        max_body,
        ..WebhookSettings::default()
    };
    webhook_service(settings, &Metrics::new(), None)
}

async fn call(router: WebhookService, request: Request<Body>) -> (StatusCode, String) {
    let response = router
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(body.into()).expect("request")
}

/// An AdmissionReview as the apiserver sends it for an ExternalSecret.
fn external_secret_review(operation: &str, object: Value) -> String {
    let mut review: Value = serde_json::from_str(POD_REVIEW).unwrap();
    let request = &mut review["request"];
    request["kind"] =
        json!({"group": "external-secrets.io", "version": "v1", "kind": "ExternalSecret"});
    request["resource"] =
        json!({"group": "external-secrets.io", "version": "v1", "resource": "externalsecrets"});
    request["requestKind"] = request["kind"].clone();
    request["requestResource"] = request["resource"].clone();
    request["name"] = object["metadata"]["name"].clone();
    request["namespace"] = object["metadata"]["namespace"].clone();
    request["operation"] = operation.into();
    request["object"] = object;
    review.to_string()
}

fn external_secret() -> Value {
    serde_saphyr::from_str(EXTERNAL_SECRET_V1).expect("fixture parses")
}

#[tokio::test]
async fn every_route_answers_over_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(Mode::Standalone, dir.path(), &[]).await;
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();

    let mut invalid = external_secret();
    invalid["spec"].as_object_mut().unwrap().remove("data");
    invalid["spec"].as_object_mut().unwrap().remove("dataFrom");
    let cases = [
        ("/mutate-pod", POD_REVIEW.to_string(), "\"allowed\":true"),
        (
            "/convert",
            CONVERSION_REVIEW.to_string(),
            "\"status\":\"Success\"",
        ),
        (
            "/validate-externalsecret",
            external_secret_review("CREATE", external_secret()),
            "\"allowed\":true",
        ),
        (
            "/validate-externalsecret",
            external_secret_review("UPDATE", invalid.clone()),
            "\"allowed\":false",
        ),
        (
            "/validate-externalsecret",
            external_secret_review("DELETE", invalid),
            "\"allowed\":true",
        ),
    ];

    for (alpn, version) in [
        (&b"h2"[..], reqwest::Version::HTTP_2),
        (&b"http/1.1"[..], reqwest::Version::HTTP_11),
    ] {
        let tls = support::client_config(&ca, &[alpn]);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .resolve("keyhook.keyhook.svc", server.webhook)
            .build()
            .unwrap();
        for (path, body, expected) in &cases {
            let url = format!(
                "https://keyhook.keyhook.svc:{}{path}",
                server.webhook.port()
            );
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(response.version(), version, "{path}");
            assert_eq!(response.status(), 200, "{path}");
            let text = response.text().await.unwrap();
            assert!(text.contains(expected), "{path} over {version:?}: {text}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_conversion_review_converts_every_object_in_order_and_echoes_the_uid() {
    let (status, body) = call(
        router(),
        post("/convert", Some("application/json"), CONVERSION_REVIEW),
    )
    .await;
    assert_eq!(status, 200);
    let review: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["kind"], "ConversionReview");
    assert_eq!(review["apiVersion"], "apiextensions.k8s.io/v1");
    let response = &review["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let objects = response["convertedObjects"].as_array().unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["template-0", "template-1", "template-2"]);
    for object in objects {
        assert_eq!(object["apiVersion"], "external-secrets.io/v1");
        // v1alpha1's flat dataFrom becomes dataFrom[].extract in v1.
        assert_eq!(
            object["spec"]["dataFrom"][0]["extract"]["key"],
            "/shared/payments"
        );
    }
}

#[tokio::test]
async fn a_pod_review_is_answered_with_its_uid() {
    let (status, body) = call(
        router(),
        post("/mutate-pod", Some("application/json"), POD_REVIEW),
    )
    .await;
    assert_eq!(status, 200);
    let review: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], POD_REVIEW_UID);
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_message_naming_the_problem() {
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/mutate-pod", Some("application/json"), "{\"hello\": 1}"),
            StatusCode::BAD_REQUEST,
            "not a valid AdmissionReview",
        ),
        (
            post("/mutate-pod", Some("application/json"), "\u{1}\u{2}garbage"),
            StatusCode::BAD_REQUEST,
            "expected value at line 1",
        ),
        (
            post("/mutate-pod", Some("application/json"), ""),
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            post("/mutate-pod", Some("application/json"), CONVERSION_REVIEW),
            StatusCode::BAD_REQUEST,
            "kind is `ConversionReview`",
        ),
        (
            post("/convert", Some("application/json"), POD_REVIEW),
            StatusCode::BAD_REQUEST,
            "kind is `AdmissionReview`",
        ),
        (
            post(
                "/mutate-pod",
                Some("application/json"),
                POD_REVIEW.replacen("\"operation\": \"CREATE\"", "\"operation\": \"EXPLODE\"", 1),
            ),
            StatusCode::BAD_REQUEST,
            "request.operation",
        ),
        (
            post("/mutate-pod", Some("text/plain"), POD_REVIEW),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type `text/plain`",
        ),
        (
            post("/mutate-pod", None, POD_REVIEW),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type `<none>`",
        ),
        (
            post("/mutate-pod", Some("application/json"), "x".repeat(2048)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "1024-byte limit (--max-body)",
        ),
        (
            post("/validate-pods", Some("application/json"), POD_REVIEW),
            StatusCode::NOT_FOUND,
            "no webhook at `/validate-pods`",
        ),
        (
            Request::get("/mutate-pod").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET is not allowed",
        ),
    ];
    for (request, status, message) in cases {
        let path = request.uri().path().to_string();
        let (got, body) = call(router_with_max_body(1024 * 16), request).await;
        let (got, body) = if status == StatusCode::PAYLOAD_TOO_LARGE {
            // Re-run with the small limit the message names.
            let request = post("/mutate-pod", Some("application/json"), "x".repeat(2048));
            call(router_with_max_body(1024), request).await
        } else {
            (got, body)
        };
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body.contains(message),
            "{path}: expected `{message}` in: {body}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_without_content_length_is_cut_off() {
    let chunks = (0..64).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 1024])));
    let body = Body::from_stream(futures::stream::iter(chunks));
    let (status, message) = call(
        router_with_max_body(4096),
        post("/mutate-pod", Some("application/json"), body),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_times_out_instead_of_hanging() {
    let stalled =
        futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"{\"kind\":")) })
            .chain(futures::stream::pending());
    let request = post(
        "/mutate-pod",
        Some("application/json"),
        Body::from_stream(stalled),
    );
    let (status, message) = call(router(), request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(message.contains("--request-timeout"), "{message}");
}

use futures::StreamExt;

/// Ways to damage a real review: the kind of bytes the apiserver never
/// sends, but a buggy proxy or a fuzzer might.
#[derive(Debug, Clone)]
enum Mangle {
    Truncate(usize),
    FlipByte(usize, u8),
    DropKey(String),
    NullKey(String),
}

fn mangled(original: &str, how: &Mangle) -> Vec<u8> {
    match how {
        Mangle::Truncate(at) => original.as_bytes()[..at % original.len()].to_vec(),
        Mangle::FlipByte(at, byte) => {
            let mut bytes = original.as_bytes().to_vec();
            let at = at % bytes.len();
            bytes[at] ^= byte | 1;
            bytes
        }
        Mangle::DropKey(key) | Mangle::NullKey(key) => {
            let mut review: Value = serde_json::from_str(original).unwrap();
            let replace = matches!(how, Mangle::NullKey(_));
            mangle_key(&mut review, key, replace);
            serde_json::to_vec(&review).unwrap()
        }
    }
}

fn mangle_key(value: &mut Value, key: &str, to_null: bool) {
    match value {
        Value::Object(map) => {
            if map.contains_key(key) {
                if to_null {
                    map.insert(key.to_string(), Value::Null);
                } else {
                    map.remove(key);
                }
            }
            map.values_mut().for_each(|v| mangle_key(v, key, to_null));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mangle_key(v, key, to_null)),
        _ => {}
    }
}

fn mangle_strategy() -> impl Strategy<Value = Mangle> {
    let keys = prop::sample::select(vec![
        "request",
        "uid",
        "kind",
        "apiVersion",
        "object",
        "metadata",
        "spec",
        "containers",
        "objects",
        "desiredAPIVersion",
        "operation",
        "userInfo",
        "resource",
        "name",
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mangle::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mangle::FlipByte(at, b)),
        keys.clone().prop_map(|k| Mangle::DropKey(k.to_string())),
        keys.prop_map(|k| Mangle::NullKey(k.to_string())),
    ]
}

fn assert_answered(path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, message) =
        runtime.block_on(call(router(), post(path, Some("application/json"), body)));
    prop_assert!(
        status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
        "{path}: {status} {message}"
    );
    if status == StatusCode::BAD_REQUEST {
        prop_assert!(
            message.starts_with("request body is not a valid"),
            "{path}: {message}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for path in ["/mutate-pod", "/convert", "/validate-externalsecret"] {
            assert_answered(path, body.clone())?;
        }
    }

    #[test]
    fn mangled_real_reviews_are_answered_or_refused(how in mangle_strategy()) {
        assert_answered("/mutate-pod", mangled(POD_REVIEW, &how))?;
        assert_answered("/convert", mangled(CONVERSION_REVIEW, &how))?;
        assert_answered("/validate-externalsecret", mangled(&external_secret_review("CREATE", external_secret()), &how))?;
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_and_status() {
    let metrics = Metrics::new();
    let service = webhook_service(WebhookSettings::default(), &metrics, None);
    let requests = [
        post("/mutate-pod", Some("application/json"), POD_REVIEW),
        post("/mutate-pod", Some("application/json"), POD_REVIEW),
        post("/mutate-pod", Some("text/plain"), POD_REVIEW),
        post("/nowhere", Some("application/json"), POD_REVIEW),
    ];
    for request in requests {
        call(service.clone(), request).await;
    }

    let text = metrics.encode().unwrap();
    for line in [
        r#"keyhook_http_requests_total{path="/mutate-pod",status="200"} 2"#,
        r#"keyhook_http_requests_total{path="/mutate-pod",status="415"} 1"#,
        r#"keyhook_http_requests_total{path="unmatched",status="404"} 1"#,
        r#"keyhook_http_requests_total{path="/convert",status="200"} 0"#,
        r#"keyhook_http_request_duration_seconds_count{path="/mutate-pod"} 3"#,
        r#"keyhook_http_request_duration_seconds_count{path="unmatched"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
