//! Certificate rotation on a live server: the cert directory is swapped the
//! way the kubelet swaps a Secret volume (`..data` symlink) while a client
//! streams requests over one HTTP/2 connection and opens new ones. No request
//! may fail, new handshakes must see each new certificate, and a broken
//! certificate must never replace a good one.

use crate::support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use keyhook::{
    certs::{self, PemBundle, ServingCert, SubjectAltName},
    metrics::Metrics,
    server::{listener, routes},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use support::{H2Connection, KubeletDir, POD_REVIEW, POD_REVIEW_UID, TestCa, default_identity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn leaf_der(bundle: &PemBundle) -> Vec<u8> {
    CertificateDer::pem_slice_iter(bundle.tls_crt.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The webhook listener with a directory-fed resolver, as `serve` runs it.
struct Stack {
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

async fn start(dir: &std::path::Path) -> Stack {
    let metrics = Arc::new(Metrics::new());
    let serving = Arc::new(ServingCert::new(default_identity(), metrics.certs.clone()));
    certs::reload_from_dir(
        dir,
        &serving,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .expect("first cert");
    let stop = CancellationToken::new();
    certs::spawn_dir_watcher(
        dir.to_path_buf(),
        serving.clone(),
        certs::POLL_WITH_EVENTS,
        Arc::new(keyhook::clock::SystemClock),
        stop.clone(),
    );
    let listener_socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener_socket.local_addr().unwrap();
    let listener = listener::Listener {
        tcp: listener_socket,
        tls: Some(listener::tls_config(serving).unwrap()),
        service: routes::Webhooks::new(routes::WebhookSettings::default(), &metrics, None),
        limits: listener::ListenerLimits {
            max_connections: 64,
            timeouts: Default::default(),
        },
        metrics: metrics.server.webhook.clone(),
        handshake_failures: metrics.certs.handshake_failures.clone(),
    };
    tokio::spawn(listener.serve(stop.clone(), Duration::from_secs(5)));
    Stack {
        addr,
        metrics,
        stop,
    }
}

/// Polls new handshakes until the server presents `expected`; returns how
/// long that took.
async fn wait_for_leaf(ca: &str, addr: std::net::SocketAddr, expected: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        let connection = H2Connection::open(ca, addr, "keyhook.keyhook.svc")
            .await
            .expect("handshake");
        if connection.leaf == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refused_reloads(metrics: &Metrics) -> u64 {
    let text = metrics.encode().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("keyhook_cert_reloads_total{result=\"refused\"} "))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_style_swaps_reach_new_handshakes_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_pem = ca.ca.cert_pem().to_string();
    let first = ca.bundle();
    let mut volume = KubeletDir::new(dir.path(), &first);
    let stack = start(dir.path()).await;

    // One long-lived HTTP/2 connection streaming reviews the whole time.
    let streaming = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut long_lived = H2Connection::open(&ca_pem, stack.addr, "keyhook.keyhook.svc")
        .await
        .unwrap();
    assert_eq!(long_lived.leaf, leaf_der(&first));
    let load = {
        let (streaming, ok, failed) = (streaming.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while streaming.load(Ordering::Relaxed) {
                match long_lived.post("/mutate-pod", POD_REVIEW).await {
                    Ok((200, body)) if body.contains(POD_REVIEW_UID) => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    let mut last_good = first;
    for round in 1..=10 {
        let next = ca.bundle();
        volume.swap(&next);
        let took = wait_for_leaf(&ca_pem, stack.addr, &leaf_der(&next)).await;
        println!("rotation {round}: new handshakes saw the new certificate after {took:?}");
        last_good = next;
    }

    // Broken candidates: each is refused and the last good cert stays.
    let other_ca = TestCa::new();
    let expired = ca.bundle_at(time::Duration::days(-3), Duration::from_secs(86_400));
    let mut mismatched = ca.bundle();
    mismatched.tls_key = support::unrelated_key();
    let mut garbage = ca.bundle();
    garbage.tls_crt =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".into();
    let mut foreign = other_ca.bundle();
    foreign.ca_crt = ca.ca.cert_pem().to_string();
    let wrong_names = ca.bundle_for(&[SubjectAltName::Dns("someone-else.example".into())]);
    let broken = [
        ("expired", expired),
        ("key mismatch", mismatched),
        ("unparseable", garbage),
        ("signed by another CA", foreign),
        ("SANs miss the service", wrong_names),
    ];
    for (what, bundle) in broken {
        let refused_before = refused_reloads(&stack.metrics);
        volume.swap(&bundle);
        let start = Instant::now();
        while refused_reloads(&stack.metrics) == refused_before {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{what}: never refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connection = H2Connection::open(&ca_pem, stack.addr, "keyhook.keyhook.svc")
            .await
            .unwrap();
        assert_eq!(
            connection.leaf,
            leaf_der(&last_good),
            "{what}: the last good certificate is still served"
        );
    }

    streaming.store(false, Ordering::Relaxed);
    load.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("long-lived connection: {ok} requests, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 0);
    stack.stop.cancel();
}
