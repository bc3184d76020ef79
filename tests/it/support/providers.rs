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
