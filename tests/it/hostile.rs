//! Clients that misbehave: connections that send nothing, stall mid-frame
//! or idle forever, more connections than the cap, plain HTTP on the HTTPS
//! port, more request bodies than the memory budget, reviews too heavy for
//! the deadline, and a cert directory deleted under keyhook. Each runs with
//! small limits and short timeouts; nothing here measures how fast.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyhook::{
    certs::{self, ServingCert},
    metrics::Metrics,
    readiness::{Readiness, ReadinessCheck},
    server::{
        Mode,
        routes::{WebhookSettings, Webhooks, webhook_service},
    },
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::support::{
    self, KubeletDir, POD_REVIEW, POD_REVIEW_UID, Running, TestCa, client_config, tls_connect,
};

/// Long enough that a test which waits this long has failed, not raced.
const HANG: Duration = Duration::from_secs(30);

/// A standalone keyhook with `extra` flags and a certificate for localhost.
async fn keyhook(extra: &[&str]) -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(Mode::Standalone, dir.path(), extra).await;
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    (running, ca, dir)
}

/// Reads until the server closes the connection; fails the test if it
/// does not.
async fn closed_by_server(mut stream: impl tokio::io::AsyncRead + Unpin) {
    let mut sink = vec![0u8; 16 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANG, read_all)
        .await
        .expect("the server never closed the connection");
}

/// `keyhook_connections_closed_total{listener="webhook",reason=…}`.
async fn closed_for(running: &Running, reason: &str) -> u64 {
    let (_, metrics) = running.admin_get("/metrics").await;
    let series =
        format!("keyhook_connections_closed_total{{listener=\"webhook\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_connection_that_never_starts_its_handshake_is_closed() {
    let (running, _, _dir) = keyhook(&["--tls-handshake-timeout", "200ms"]).await;
    let tcp = TcpStream::connect(running.webhook).await.unwrap();
    closed_by_server(tcp).await;
    assert_eq!(closed_for(&running, "handshake").await, 1);
    running.stop().await;
}

#[tokio::test]
async fn connections_that_send_no_request_are_closed() {
    let (running, ca, _dir) = keyhook(&["--first-request-timeout", "300ms"]).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let tls = tls_connect(client_config(&ca, &[alpn]), running.webhook, "localhost")
            .await
            .unwrap();
        closed_by_server(tls).await;
    }
    assert_eq!(closed_for(&running, "no_request").await, 2);
    running.stop().await;
}

/// An HTTP/2 HEADERS frame without END_HEADERS holds the connection in the
/// middle of a header block; it is closed all the same.
#[tokio::test]
async fn a_header_block_left_open_is_closed() {
    let (running, ca, _dir) = keyhook(&["--first-request-timeout", "300ms"]).await;
    let mut tls = tls_connect(client_config(&ca, &[b"h2"]), running.webhook, "localhost")
        .await
        .unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    // HEADERS on stream 1, flags 0 (no END_HEADERS): `:method: POST`.
    frames.extend_from_slice(&[0, 0, 1, 0x1, 0, 0, 0, 0, 1, 0x83]);
    tls.write_all(&frames).await.unwrap();
    closed_by_server(tls).await;
    running.stop().await;
}

/// An idle HTTP/2 connection is closed with a GOAWAY: the client's
/// connection ends cleanly, as the apiserver's pooled one must.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_gracefully() {
    let (running, ca, _dir) = keyhook(&["--idle-timeout", "300ms"]).await;
    let tls = tls_connect(client_config(&ca, &[b"h2"]), running.webhook, "localhost")
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::post("https://localhost/mutate-pod")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(POD_REVIEW)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();

    let ended = tokio::time::timeout(HANG, connection)
        .await
        .expect("the idle connection was never closed")
        .unwrap();
    assert!(ended.is_ok(), "closed with an error: {ended:?}");
    assert_eq!(closed_for(&running, "idle").await, 1);
    running.stop().await;
}

/// At `--max-connections`, idle connections make room for a new one, whose
/// review is answered.
#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room() {
    let (running, ca, _dir) = keyhook(&["--max-connections", "2"]).await;
    let config = client_config(&ca, &[b"h2"]);
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(
            tls_connect(config.clone(), running.webhook, "localhost")
                .await
                .unwrap(),
        );
    }
    let mut fresh = support::H2Connection::open(&ca, running.webhook, "localhost")
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(HANG, fresh.post("/mutate-pod", POD_REVIEW))
        .await
        .expect("the new connection was never served")
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(POD_REVIEW_UID));
    for stream in idle {
        closed_by_server(stream).await;
    }
    assert_eq!(closed_for(&running, "shed").await, 2);
    running.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_told_so() {
    let (running, _, _dir) = keyhook(&[]).await;
    let mut tcp = TcpStream::connect(running.webhook).await.unwrap();
    tcp.write_all(b"POST /mutate-pod HTTP/1.1\r\nHost: keyhook\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG, tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("speaks HTTPS"), "{answer}");
    assert_eq!(closed_for(&running, "plain_http").await, 1);
    running.stop().await;
}

/// A body that sends nothing until the returned sender is dropped.
fn stalled_body() -> (
    Body,
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (Body::from_stream(stream), tx)
}

/// An ordinary pod review, whole, with its length declared.
fn pod_review() -> Request<Body> {
    review_request(
        "/mutate-pod",
        Body::from(POD_REVIEW),
        Some(POD_REVIEW.len()),
    )
}

fn review_request(path: &str, body: Body, length: Option<usize>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    request.body(body).unwrap()
}

#[tokio::test]
async fn past_the_memory_budget_a_request_waits_then_gets_503() {
    let settings = WebhookSettings {
        max_body: 64 * 1024,
        max_inflight_bytes: 64 * 1024,
        request_timeout: Duration::from_millis(300),
    };
    let metrics = Metrics::new();
    let webhooks = Webhooks::new(settings, &metrics, None);
    let service = webhooks.service();

    // One request declares most of the budget and stalls mid-body. Its
    // deadline is later than the next request's, so that the budget is
    // still spent when that one's deadline comes.
    let (body, _keep_open) = stalled_body();
    let holder_service = webhooks
        .with_request_timeout(Duration::from_secs(1))
        .service();
    let holder =
        tokio::spawn(holder_service.oneshot(review_request("/mutate-pod", body, Some(60 * 1024))));
    while metrics.server.body_bytes.get() == 0 {
        tokio::task::yield_now().await;
    }

    let response = service.clone().oneshot(pod_review()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("--max-inflight-bytes"), "{text}");
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("keyhook_request_memory_refusals_total 1")
    );

    // The holder times out reading its body and gives its share back.
    let held = holder.await.unwrap().unwrap();
    assert_eq!(held.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(metrics.server.body_bytes.get(), 0);
    let response = service.oneshot(pod_review()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Large bodies held open cannot take the share of the budget kept for
/// ordinary reviews.
#[tokio::test]
async fn stalled_large_bodies_leave_room_for_ordinary_reviews() {
    let settings = WebhookSettings {
        max_body: 256 * 1024,
        max_inflight_bytes: 256 * 1024,
        request_timeout: Duration::from_secs(5),
    };
    let metrics = Metrics::new();
    let service = webhook_service(settings, &metrics, None);
    // Three would fill the whole budget; two fit the large bodies' share.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let (body, keep_open) = stalled_body();
        let request = review_request("/convert", body, Some(85 * 1024));
        stalled.push((tokio::spawn(service.clone().oneshot(request)), keep_open));
    }
    while metrics.server.body_bytes.get() < 170 * 1024 {
        tokio::task::yield_now().await;
    }
    let response = service.oneshot(pod_review()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        stalled.iter().all(|(task, _)| !task.is_finished()),
        "answered while the large bodies still hold their share"
    );
    for (task, keep_open) in stalled {
        drop(keep_open);
        let _ = task.await;
    }
}

/// An ExternalSecret review with `entries` data entries: a large, valid
/// object.
fn large_validation_review(entries: usize) -> String {
    let data: Vec<Value> = (0..entries)
        .map(|i| {
            serde_json::json!({
                "secretKey": format!("key-{i}"),
                "remoteRef": {"key": format!("shop/db-{i}"), "property": "password"}
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d1e2f3a-large",
            "kind": {"group": "external-secrets.io", "version": "v1", "kind": "ExternalSecret"},
            "resource": {"group": "external-secrets.io", "version": "v1", "resource": "externalsecrets"},
            "name": "large",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "external-secrets.io/v1",
                "kind": "ExternalSecret",
                "metadata": {"name": "large", "namespace": "shop"},
                "spec": {
                    "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                    "target": {"name": "large"},
                    "data": data
                }
            },
            "dryRun": false
        }
    })
    .to_string()
}

/// A validation that cannot finish by the deadline is answered at the
/// deadline with the denial `/mutate-pod` gives, naming the flag.
#[tokio::test]
async fn a_validation_past_the_deadline_gets_the_timeout_denial() {
    let review = large_validation_review(40_000);
    let settings = WebhookSettings {
        request_timeout: Duration::from_millis(1),
        ..WebhookSettings::default()
    };
    let response = webhook_service(settings, &Metrics::new(), None)
        .oneshot(review_request(
            "/validate-externalsecret",
            Body::from(review),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], "0d1e2f3a-large");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 504);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("--request-timeout"), "{message}");
}

/// The same large review within the deadline is decided on its merits.
#[tokio::test]
async fn a_large_validation_is_decided() {
    let review = large_validation_review(20_000).replace("key-19999", "key-0");
    let response = webhook_service(WebhookSettings::default(), &Metrics::new(), None)
        .oneshot(review_request(
            "/validate-externalsecret",
            Body::from(review),
            None,
        ))
        .await
        .unwrap();
    let answer: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.data[19999].secretKey: duplicate key `key-0`"),
        "{message}"
    );
}

/// The cert directory deleted and created again: the watch follows it
/// (with polling off, only file events can bring the new certificate), and
/// while it is gone `/readyz` names it and the refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cert_directory_watch_survives_deletion_and_recreation() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    let ca = TestCa::new();
    let first = ca.bundle();
    KubeletDir::new(&dir, &first);
    let metrics = Arc::new(Metrics::new());
    let serving = Arc::new(ServingCert::new(
        support::default_identity(),
        metrics.certs.clone(),
    ));
    let stop = CancellationToken::new();
    certs::spawn_dir_watcher(
        dir.clone(),
        serving.clone(),
        Duration::from_secs(3600),
        Arc::new(keyhook::clock::SystemClock),
        stop.clone(),
    );
    let readiness = Readiness::new(stop.clone()).with_check(serving.clone());
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    let dir_check = |readiness: &Readiness| {
        readiness
            .report(now())
            .checks
            .into_iter()
            .find(|c| c.name == "cert_dir_readable")
    };
    support::eventually("the condition", HANG, || serving.current().is_some()).await;

    std::fs::remove_dir_all(&dir).unwrap();
    support::eventually("the condition", HANG, || {
        dir_check(&readiness).is_some_and(|c| !c.ok)
    })
    .await;
    let report = readiness.report(now());
    assert!(
        report.ready,
        "the loaded certificate is still valid: {report:?}"
    );
    assert!(dir_check(&readiness).unwrap().advisory);
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("keyhook_cert_reloads_total{result=\"refused\"} 1")
    );

    std::fs::create_dir(&dir).unwrap();
    let second = ca.bundle();
    let mut volume = KubeletDir::new(&dir, &second);
    let served_now = |bundle: &keyhook::certs::PemBundle| {
        serving
            .current()
            .is_some_and(|c| c.bundle.tls_crt == bundle.tls_crt)
    };
    support::eventually("the condition", HANG, || served_now(&second)).await;
    // Changes inside the new directory are seen too, once the wake-ups of
    // its creation are spent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let third = ca.bundle();
    volume.swap(&third);
    support::eventually("the condition", HANG, || served_now(&third)).await;
    assert!(dir_check(&readiness).unwrap().ok);
    assert!(serving.checks(now()).iter().all(|c| c.ok));
    stop.cancel();
}
