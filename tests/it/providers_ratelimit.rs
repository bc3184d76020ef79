//! Rate limit: 2,000 fetches of distinct keys through one store limited to
//! 50 requests/s; the backend counts what it sees per second. Runs in real
//! time (about 40 s): the limit is a property of wall-clock time.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers, RemoteRef, StoreRef};
use support::backends::{Connect, ConnectState, item, secret_doc};
use tokio::time::Instant;

const FETCHES: usize = 2_000;
const QPS: u32 = 50;
const BURST: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_never_exceeds_its_rate() {
    let vault = "vaultaaaaaaaaaaaaaaaaaaaaa";
    let mut state = ConnectState {
        token: "tok".into(),
        vaults: vec![(vault.into(), "prod".into())],
        ..Default::default()
    };
    state.items.insert(
        vault.into(),
        (0..FETCHES)
            .map(|i| {
                item(
                    &format!("item{i:022}"),
                    &format!("key-{i}"),
                    vault,
                    &[("password", "x")],
                )
            })
            .collect(),
    );
    let connect = Connect::start(state).await;
    let yaml = format!(
        "{}---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: op\n  namespace: shop\n  annotations:\n    keyhook.io/qps: \"{QPS}\"\nspec:\n  provider:\n    onepassword:\n      connectHost: {}\n      vaults:\n        prod: 1\n      auth:\n        secretRef:\n          connectTokenSecretRef:\n            name: tok\n            key: token\n",
        secret_doc("shop", "tok", &[("token", "tok")]),
        connect.url
    );
    let catalog = Arc::new(FileCatalog::from_yaml(&yaml).unwrap());
    // The default --provider-qps (10) is overridden by the store's annotation.
    let settings = ProviderSettings {
        burst: BURST,
        max_in_flight: 64,
        ..Default::default()
    };
    let providers = Providers::new(settings, catalog, Arc::new(ProviderMetrics::unregistered()));
    let handle = providers
        .client(
            &StoreRef::secret_store("op"),
            "shop",
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
    // Count from here: the client build's vault lookup is not a fetch.
    connect.state.per_second.lock().unwrap().clear();
    *connect.state.started.lock().unwrap() = Some(std::time::Instant::now());
    let deadline = Instant::now() + Duration::from_secs(600);
    let tasks: Vec<_> = (0..FETCHES)
        .map(|i| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .get_secret(&RemoteRef::key(format!("key-{i}")), deadline)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // Each fetch is two backend requests (list by title, then read the item);
    // the bucket limits fetches, so the server sees at most 2 × (QPS + BURST)
    // requests in any whole second.
    let per_second = connect.state.per_second.lock().unwrap().clone();
    let busiest = per_second.values().copied().max().unwrap_or(0);
    let total: u32 = per_second.values().sum();
    println!(
        "rate limit: {FETCHES} fetches at {QPS}/s (burst {BURST}): busiest second {busiest} requests = {} fetches, {} seconds",
        busiest / 2,
        per_second.len()
    );
    assert_eq!(total as usize, 2 * FETCHES);
    assert!(
        busiest <= 2 * (QPS + BURST),
        "busiest second saw {busiest} requests: {per_second:?}"
    );
}
