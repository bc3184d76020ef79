//! Provider-layer benchmark (run by tests/bench/providers.sh).
//!
//! A local Vault-shaped backend answers every read after 1 ms. Prints:
//! - the latency the layer adds over a bare HTTP call (p50/p99, warm client);
//! - coalescing: backend hits for 1,000 concurrent fetches of one key;
//! - rate limiting: the busiest second the backend saw for a store at 50/s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers, RemoteRef, StoreRef};
use tokio::time::Instant;

#[derive(Default)]
struct Backend {
    hits: AtomicUsize,
    per_second: Mutex<HashMap<u64, u32>>,
    start: Mutex<Option<std::time::Instant>>,
}

async fn read(
    State(backend): State<Arc<Backend>>,
    Path(key): Path<String>,
) -> axum::Json<serde_json::Value> {
    backend.hits.fetch_add(1, Ordering::Relaxed);
    {
        let start = *backend
            .start
            .lock()
            .unwrap()
            .get_or_insert_with(std::time::Instant::now);
        *backend
            .per_second
            .lock()
            .unwrap()
            .entry(start.elapsed().as_secs())
            .or_default() += 1;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    axum::Json(serde_json::json!({ "data": { "data": { "value": key } } }))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn manifest(server: &str, qps: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tok\n  namespace: bench\nstringData:\n  token: t\n---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: vault\n  namespace: bench\n  annotations:\n    keyhook.io/qps: \"{qps}\"\nspec:\n  provider:\n    vault:\n      server: {server}\n      auth:\n        tokenSecretRef:\n          name: tok\n          key: token\n"
    )
}

async fn layer(server: &str, qps: u32, burst: u32) -> Providers {
    let catalog = Arc::new(FileCatalog::from_yaml(&manifest(server, qps)).expect("bench manifest"));
    let settings = ProviderSettings {
        burst,
        max_in_flight: 1024,
        ..Default::default()
    };
    Providers::new(settings, catalog, Arc::new(ProviderMetrics::unregistered()))
}

#[tokio::main]
async fn main() {
    let backend = Arc::new(Backend::default());
    let router = Router::new()
        .route("/v1/secret/data/{*key}", get(read))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });

    // 1. Overhead over a bare HTTP call, warm client, sequential, interleaved.
    let providers = layer(&server, 1_000_000, 1_000_000).await;
    let handle = providers
        .client(
            &StoreRef::secret_store("vault"),
            "bench",
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("client");
    // The same stack the vault client uses (reqwest over rustls/ring), without the layer.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let bare = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .tcp_nodelay(true)
        .build()
        .expect("reqwest");
    let rounds = 2_000;
    let (mut direct, mut through) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds + 200 {
        let key = format!("k{i}");
        let t = Instant::now();
        let answer = bare
            .get(format!("{server}/v1/secret/data/{key}"))
            .header("X-Vault-Token", "t")
            .send()
            .await
            .expect("bare");
        let _: serde_json::Value = answer.json().await.expect("json");
        let d = t.elapsed();
        let t = Instant::now();
        handle
            .get_secret(
                &RemoteRef::key(&key).with_property("value"),
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .expect("fetch");
        let l = t.elapsed();
        if i >= 200 {
            direct.push(d);
            through.push(l);
        }
    }
    let (d50, d99) = (percentile(&mut direct, 0.50), percentile(&mut direct, 0.99));
    let (l50, l99) = (
        percentile(&mut through, 0.50),
        percentile(&mut through, 0.99),
    );
    println!("latency, backend answering in 1 ms ({rounds} sequential fetches, warm client):");
    println!(
        "  bare HTTP  p50 {:>8.1} µs   p99 {:>8.1} µs",
        d50.as_secs_f64() * 1e6,
        d99.as_secs_f64() * 1e6
    );
    println!(
        "  via layer  p50 {:>8.1} µs   p99 {:>8.1} µs",
        l50.as_secs_f64() * 1e6,
        l99.as_secs_f64() * 1e6
    );
    println!(
        "  added      p50 {:>8.1} µs   p99 {:>8.1} µs   (target: p99 < 100 µs)",
        (l50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
        (l99.as_secs_f64() - d99.as_secs_f64()) * 1e6
    );

    // 2. Coalescing.
    let before = backend.hits.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .get_secret(
                        &RemoteRef::key("hot").with_property("value"),
                        Instant::now() + Duration::from_secs(5),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("fetch");
    }
    println!(
        "coalescing: 1000 concurrent fetches of one key -> {} backend call(s)",
        backend.hits.load(Ordering::Relaxed) - before
    );

    // 3. Rate limit: a fresh store at 50/s, burst 10.
    let (qps, burst, fetches) = (50, 10, 500);
    let limited = layer(&server, qps, burst).await;
    let handle = limited
        .client(
            &StoreRef::secret_store("vault"),
            "bench",
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("client");
    backend.per_second.lock().unwrap().clear();
    *backend.start.lock().unwrap() = Some(std::time::Instant::now());
    let started = Instant::now();
    let tasks: Vec<_> = (0..fetches)
        .map(|i| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .get_secret(
                        &RemoteRef::key(format!("r{i}")),
                        Instant::now() + Duration::from_secs(120),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("fetch");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let busiest = backend
        .per_second
        .lock()
        .unwrap()
        .values()
        .copied()
        .max()
        .unwrap_or(0);
    println!(
        "rate limit: {fetches} distinct fetches at {qps}/s burst {burst}: {:.1} s, {:.1} req/s average, busiest second {busiest} (bound {})",
        elapsed,
        fetches as f64 / elapsed,
        qps + burst
    );
}
