//! Metrics of the provider layer (`keyhook_provider_*`).
//!
//! Labels are bounded sets: `provider` is one of five backend names,
//! `operation` one of `get`, `get_map`, `validate`, `result` one of the
//! outcome names in [`RequestResult`] or [`BuildResult`], and `store` is a store's
//! `namespace/name` — never a key or a value.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome of one backend request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestResult {
    /// Answered with a value.
    ok,
    /// Key or version does not exist.
    not_found,
    /// Credentials lack permission.
    denied,
    /// The backend throttled the call (HTTP 429, ThrottlingException).
    throttled,
    /// A transient failure (5xx, reset connection) that may be retried.
    transient,
    /// The caller's deadline passed.
    deadline,
    /// Any other failure.
    error,
}

/// Outcome of building a client, its login included.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum BuildResult {
    /// Built (and logged in).
    ok,
    /// The build failed: bad configuration, unreadable credentials, a
    /// refused login, or the deadline.
    failed,
}

/// Labels of `keyhook_provider_client_builds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Backend name.
    pub provider: &'static str,
    /// Store `namespace/name`.
    pub store: String,
    /// Outcome.
    pub result: BuildResult,
}

/// Labels of `keyhook_provider_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Backend name.
    pub provider: &'static str,
    /// Store `namespace/name`.
    pub store: String,
    /// `get`, `get_map` or `validate`.
    pub operation: &'static str,
    /// Outcome.
    pub result: RequestResult,
}

/// Labels of `keyhook_provider_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Backend name.
    pub provider: &'static str,
    /// `get`, `get_map` or `validate`.
    pub operation: &'static str,
}

/// Every metric the provider layer records.
#[derive(Debug, Clone)]
pub struct ProviderMetrics {
    /// `keyhook_provider_requests_total{provider,store,operation,result}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `keyhook_provider_request_duration_seconds{provider,operation}`.
    pub request_duration: Family<DurationLabels, Histogram>,
    /// `keyhook_provider_coalesced_total`: fetches served by another caller's backend call.
    pub coalesced: Counter,
    /// `keyhook_provider_ratelimit_wait_seconds`: time spent waiting for a token.
    pub ratelimit_wait: Histogram,
    /// `keyhook_provider_cache_hits_total`.
    pub cache_hits: Counter,
    /// `keyhook_provider_cache_misses_total`.
    pub cache_misses: Counter,
    /// `keyhook_provider_clients`: provider clients currently cached.
    pub clients: Gauge,
    /// `keyhook_provider_client_builds_total{provider,store,result}`: a
    /// failed login shows here, before any backend request is made.
    pub client_builds: Family<BuildLabels, Counter>,
}

impl ProviderMetrics {
    /// Creates the metrics and registers them (names without the `_total`
    /// suffix, which the encoder adds to counters).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "keyhook_provider_requests",
            "Backend requests by provider, store, operation and result",
            metrics.requests.clone(),
        );
        registry.register(
            "keyhook_provider_request_duration_seconds",
            "Duration of backend requests",
            metrics.request_duration.clone(),
        );
        registry.register(
            "keyhook_provider_coalesced",
            "Fetches that shared an identical in-flight backend call",
            metrics.coalesced.clone(),
        );
        registry.register(
            "keyhook_provider_ratelimit_wait_seconds",
            "Time fetches waited for a store's rate-limit token",
            metrics.ratelimit_wait.clone(),
        );
        registry.register(
            "keyhook_provider_cache_hits",
            "Fetches answered from the result cache",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "keyhook_provider_cache_misses",
            "Fetches the result cache could not answer",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "keyhook_provider_clients",
            "Provider clients currently cached",
            metrics.clients.clone(),
        );
        registry.register(
            "keyhook_provider_client_builds",
            "Provider clients built (logins included), by provider, store and result",
            metrics.client_builds.clone(),
        );
        metrics
    }

    /// Counts one client build.
    pub fn record_build(&self, provider: &'static str, store: String, ok: bool) {
        let result = if ok {
            BuildResult::ok
        } else {
            BuildResult::failed
        };
        self.client_builds
            .get_or_create(&BuildLabels {
                provider,
                store,
                result,
            })
            .inc();
    }

    /// Metrics that are recorded but exported nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            coalesced: Counter::default(),
            ratelimit_wait: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            clients: Gauge::default(),
            client_builds: Family::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let mut registry = Registry::default();
        let metrics = ProviderMetrics::register(&mut registry);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                provider: "vault",
                store: "shop/vault-a".into(),
                operation: "get",
                result: RequestResult::ok,
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&DurationLabels {
                provider: "vault",
                operation: "get",
            })
            .observe(0.01);
        metrics.record_build("vault", "shop/vault-a".into(), false);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("encoding into a String cannot fail");
        for name in [
            "keyhook_provider_requests_total{provider=\"vault\",store=\"shop/vault-a\",operation=\"get\",result=\"ok\"} 1",
            "keyhook_provider_request_duration_seconds_bucket{",
            "keyhook_provider_coalesced_total",
            "keyhook_provider_ratelimit_wait_seconds_bucket",
            "keyhook_provider_cache_hits_total",
            "keyhook_provider_cache_misses_total",
            "keyhook_provider_clients",
            "keyhook_provider_client_builds_total{provider=\"vault\",store=\"shop/vault-a\",result=\"failed\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
