//! The wrong-backend race (upstream's 1Password vault mix-up): two stores on
//! two Connect servers whose vaults hold the same item titles, fetched 1,000
//! times interleaved while both stores are re-created. Zero cross-reads.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers, RemoteRef, StoreRef};
use support::backends::{Connect, ConnectState, item, secret_doc};
use tokio::time::Instant;

async fn connect(tag: &str, vault_id: &str, vault_name: &str) -> Connect {
    let mut state = ConnectState {
        token: format!("token-{tag}"),
        vaults: vec![(vault_id.into(), vault_name.into())],
        ..Default::default()
    };
    let items = (0..10)
        .map(|i| {
            item(
                &format!("item{tag}{i:021}"),
                &format!("title-{i}"),
                vault_id,
                &[("password", &format!("{tag}-value-{i}"))],
            )
        })
        .collect();
    state.items.insert(vault_id.into(), items);
    Connect::start(state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_fetches_never_read_the_other_stores_vault() {
    // Same vault name on both servers: only the store's own server may answer.
    let a = connect("a", "vaultaaaaaaaaaaaaaaaaaaaaa", "shared").await;
    let b = connect("b", "vaultbbbbbbbbbbbbbbbbbbbbb", "shared").await;
    let manifest = |generation: u32| {
        let store = |name: &str, host: &str, token: &str| {
            format!(
                "---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: shop\n  uid: {name}-{generation}\nspec:\n  provider:\n    onepassword:\n      connectHost: {host}\n      vaults:\n        shared: 1\n      auth:\n        secretRef:\n          connectTokenSecretRef:\n            name: {token}\n            key: token\n"
            )
        };
        [
            secret_doc("shop", "token-a", &[("token", "token-a")]),
            secret_doc("shop", "token-b", &[("token", "token-b")]),
            store("store-a", &a.url, "token-a"),
            store("store-b", &b.url, "token-b"),
        ]
        .join("---\n")
    };
    let catalog = Arc::new(FileCatalog::from_yaml(&manifest(0)).unwrap());
    let settings = ProviderSettings {
        qps: 100_000.0,
        burst: 10_000,
        ..Default::default()
    };
    let providers = Arc::new(Providers::new(
        settings,
        catalog.clone(),
        Arc::new(ProviderMetrics::unregistered()),
    ));
    let recreate = {
        let manifests: Vec<String> = (1..=30).map(manifest).collect();
        let catalog = catalog.clone();
        tokio::spawn(async move {
            for m in manifests {
                tokio::time::sleep(Duration::from_millis(10)).await;
                catalog.reload(&m).unwrap();
            }
        })
    };
    // Fetch in waves until the stores have been re-created thirty times, so
    // that fetches overlap the reloads however fast either runs.
    let cross_reads = support::providers::mismatches_in_waves(&recreate, 1000, |i| {
        let providers = providers.clone();
        async move {
            let (store, tag) = if i % 2 == 0 {
                ("store-a", "a")
            } else {
                ("store-b", "b")
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            let value = providers
                .get_secret(
                    &StoreRef::secret_store(store),
                    "shop",
                    &RemoteRef::key(format!("title-{}", i % 10)),
                    deadline,
                )
                .await
                .unwrap();
            (
                format!("{tag}-value-{}", i % 10),
                String::from_utf8(value.expose().to_vec()).unwrap(),
            )
        }
    })
    .await;
    recreate.await.unwrap();
    assert_eq!(cross_reads, 0);
    assert!(
        providers.clients_built() > 2,
        "stores were re-created during the run"
    );
    // Each server saw only its own token.
    for (server, token) in [(&a, "Bearer token-a"), (&b, "Bearer token-b")] {
        assert!(
            server
                .state
                .seen
                .lock()
                .unwrap()
                .iter()
                .all(|s| s.authorization.as_deref() == Some(token))
        );
    }
}
