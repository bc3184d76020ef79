//! The provider layer as the provider tests build it: over a stores file
//! held in memory, with its catalog and unregistered metrics to read.

use std::sync::Arc;

use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers};

/// The layer over the stores in `yaml`, with `settings`.
pub fn layer(
    yaml: &str,
    settings: ProviderSettings,
) -> (Providers, Arc<FileCatalog>, Arc<ProviderMetrics>) {
    let catalog = Arc::new(FileCatalog::from_yaml(yaml).expect("valid stores"));
    let metrics = Arc::new(ProviderMetrics::unregistered());
    (
        Providers::new(settings, catalog.clone(), metrics.clone()),
        catalog,
        metrics,
    )
}

/// Runs `fetch(0)`, `fetch(1)`, … in waves of a hundred at once, at least
/// `at_least` of them and until `meanwhile` has finished, so that the
/// fetches overlap whatever `meanwhile` does however fast either runs. Each
/// fetch returns the value it expected and the one it got; returns how many
/// got another.
pub async fn mismatches_in_waves<F, Fut>(
    meanwhile: &tokio::task::JoinHandle<()>,
    at_least: usize,
    fetch: F,
) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (String, String)> + Send + 'static,
{
    const WAVE: usize = 100;
    let mut mismatches = 0;
    let mut started = 0;
    while started < at_least || !meanwhile.is_finished() {
        let wave: Vec<_> = (started..started + WAVE)
            .map(|i| tokio::spawn(fetch(i)))
            .collect();
        for task in wave {
            let (expected, got) = task.await.expect("a fetch panicked");
            mismatches += usize::from(expected != got);
        }
        started += WAVE;
    }
    mismatches
}
