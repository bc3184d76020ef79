//! Pod injection benchmark (run by tests/bench/injection.sh).
//!
//! Starts a Vault-shaped backend on loopback that answers every read after
//! 50 ms, starts the release `keyhook serve` binary standalone against it,
//! and drives `/mutate-pod` over HTTP/2 + TLS with a pod carrying three
//! references to three distinct keys. Prints, for
//! (a) the Secret already present and fresh: p50/p99 of sequential admissions;
//! (b) cold: rounds of 100 identical pods at once (each round in a new
//!     namespace, so its Secret does not exist yet): p50/p99, backend calls
//!     per round and Secret writes per round.
//! Asserts nothing; the figures are the result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use notify::Watcher;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};

const BACKEND_LATENCY: Duration = Duration::from_millis(50);
const FRESH_REQUESTS: usize = 2_000;
const COLD_PODS: usize = 100;
const COLD_ROUNDS: usize = 10;

#[derive(Default)]
struct Backend {
    hits: AtomicUsize,
    per_key: Mutex<BTreeMap<String, usize>>,
}

async fn read(
    State(backend): State<Arc<Backend>>,
    UrlPath(key): UrlPath<String>,
) -> axum::Json<Value> {
    backend.hits.fetch_add(1, Ordering::Relaxed);
    *backend
        .per_key
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default() += 1;
    tokio::time::sleep(BACKEND_LATENCY).await;
    axum::Json(
        json!({"data": {"data": {"password": "bench-pw", "token": "bench-token", "ca": "bench-ca", "key": key}}}),
    )
}

fn stores(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-token\n  namespace: keyhook\nstringData:\n  token: bench\n---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: vault\n  annotations:\n    keyhook.io/qps: \"1000\"\nspec:\n  refreshInterval: 1h\n  provider:\n    vault:\n      server: {server}\n      path: secret\n      version: v2\n      auth:\n        tokenSecretRef:\n          name: vault-token\n          namespace: keyhook\n          key: token\n"
    )
}

/// The demo pod, in `namespace`, with three references to distinct keys.
fn review(template: &Value, namespace: &str, uid: usize) -> String {
    let mut review = template.clone();
    review["request"]["uid"] = format!("00000000-0000-4000-8000-{uid:012}").into();
    review["request"]["namespace"] = namespace.into();
    let pod = &mut review["request"]["object"];
    pod["metadata"]["namespace"] = namespace.into();
    let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.clear();
    annotations.insert("keyhook.io/cluster-store".into(), "vault".into());
    annotations.insert("keyhook.io/file.ca.crt".into(), "bench/tls#ca".into());
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "DB_PASSWORD", "value": "keyhook:bench/db#password"},
        {"name": "API_TOKEN", "value": "keyhook:bench/api#token"},
    ]);
    review.to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn connect(ca: &Path, addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("keyhook.keyhook.svc").ok()?, tcp)
        .await
        .ok()?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn admit(mut sender: SendRequest<Full<Bytes>>, body: String) -> (Duration, Value) {
    let request = http::Request::post("https://keyhook/mutate-pod")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let start = Instant::now();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let elapsed = start.elapsed();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    (elapsed, review)
}

struct Keyhook(Child);

impl Drop for Keyhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let binary = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/keyhook".into()),
    );
    let dir = tempfile::tempdir().unwrap();

    let backend = Arc::new(Backend::default());
    let router = Router::new()
        .route("/v1/secret/data/{*key}", get(read))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let stores_path = dir.path().join("stores.yaml");
    std::fs::write(&stores_path, stores(&server)).unwrap();
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let webhook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let _keyhook = Keyhook(
        Command::new(&binary)
            .arg("serve")
            .args([
                "--webhook-addr",
                &webhook.to_string(),
                "--health-addr",
                &health,
            ])
            .arg("--cert-dir")
            .arg(dir.path().join("certs"))
            .arg("--stores")
            .arg(&stores_path)
            .arg("--secrets-dir")
            .arg(&secrets_dir)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
    );
    let ca = dir.path().join("certs/ca.crt");
    let sender = 'up: {
        for _ in 0..100 {
            if let Some(sender) = connect(&ca, webhook).await {
                break 'up sender;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("keyhook did not come up on {webhook}");
    };

    // Count Secret writes: each is a rename of a temporary file onto
    // `<name>.yaml` (inotify reports it as From, To and Both; count To).
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let renamed = matches!(
                event.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To
                ))
            );
            if renamed
                && event
                    .paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|e| e == "yaml"))
            {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .unwrap();
    watcher
        .watch(&secrets_dir, notify::RecursiveMode::Recursive)
        .unwrap();

    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/admission/pod-inject-demo.json"),
        )
        .unwrap(),
    )
    .unwrap();

    println!(
        "keyhook {} standalone, backend answering in {}",
        binary.display(),
        ms(BACKEND_LATENCY)
    );
    println!("pod with 3 references to 3 distinct keys, HTTP/2 + TLS, one connection\n");

    // (a) Secret present and fresh.
    let body = review(&template, "warm", 0);
    admit(sender.clone(), body.clone()).await; // materializes the Secret
    let hits_before = backend.hits.load(Ordering::Relaxed);
    let mut samples = Vec::with_capacity(FRESH_REQUESTS);
    for _ in 0..FRESH_REQUESTS {
        samples.push(admit(sender.clone(), body.clone()).await.0);
    }
    let hits = backend.hits.load(Ordering::Relaxed) - hits_before;
    println!(
        "(a) fresh Secret, {FRESH_REQUESTS} sequential admissions: p50 {}  p99 {}  backend calls {hits}",
        ms(percentile(&mut samples, 0.5)),
        ms(percentile(&mut samples, 0.99)),
    );

    // (b) Cold: 100 identical pods at once, Secret absent.
    let mut samples = Vec::with_capacity(COLD_PODS * COLD_ROUNDS);
    let mut per_round = Vec::new();
    for round in 0..COLD_ROUNDS {
        tokio::time::sleep(Duration::from_millis(200)).await; // let the watcher settle
        let hits_before = backend.hits.load(Ordering::Relaxed);
        backend.per_key.lock().unwrap().clear();
        let writes_before = writes.load(Ordering::Relaxed);
        let body = review(&template, &format!("cold-{round}"), round);
        let pods = (0..COLD_PODS).map(|_| tokio::spawn(admit(sender.clone(), body.clone())));
        let results = futures::future::join_all(pods).await;
        let patches: std::collections::BTreeSet<String> = results
            .into_iter()
            .map(|r| {
                let (elapsed, review) = r.unwrap();
                samples.push(elapsed);
                review["response"]["patch"].to_string()
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await; // let the write's event arrive
        let per_key = backend.per_key.lock().unwrap().clone();
        per_round.push((
            backend.hits.load(Ordering::Relaxed) - hits_before,
            per_key.len(),
            per_key.values().copied().max().unwrap_or(0),
            writes.load(Ordering::Relaxed) - writes_before,
            patches.len(),
        ));
    }
    println!(
        "(b) cold, {COLD_ROUNDS} rounds of {COLD_PODS} identical pods at once: p50 {}  p99 {}",
        ms(percentile(&mut samples, 0.5)),
        ms(percentile(&mut samples, 0.99)),
    );
    for (round, (hits, keys, max_per_key, writes, patches)) in per_round.iter().enumerate() {
        println!(
            "    round {round}: backend calls {hits} ({keys} distinct keys, at most {max_per_key} per key), Secret writes {writes}, distinct patches {patches}"
        );
    }
}
