//! Webhook HTTP traffic: requests by route and status, and their latency.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::exponential_buckets},
    registry::Registry,
};

use super::{ShardedCounter, ShardedHistogram};

/// Labels of a webhook request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/mutate-pod`), or `unmatched`.
    pub path: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathLabels {
    /// The route template, or `unmatched`.
    pub path: &'static str,
}

/// Webhook HTTP traffic. Written by every request: sharded.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `keyhook_http_requests_total{path,status}`.
    pub requests: Family<RequestLabels, ShardedCounter>,
    /// `keyhook_http_request_duration_seconds{path}`.
    pub duration: Family<PathLabels, ShardedHistogram>,
}

impl HttpMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        registry.register(
            "http_requests",
            "Webhook HTTP requests by route and status",
            requests.clone(),
        );
        // 100 µs to ~3.3 s: admission answers in well under a millisecond when
        // nothing is fetched, and must finish before the 10 s apiserver deadline.
        let duration = Family::<PathLabels, ShardedHistogram>::new_with_constructor(|| {
            ShardedHistogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Webhook request latency by route",
            duration.clone(),
        );
        Self { requests, duration }
    }

    /// The handles of one route, resolved once: recording a request that
    /// ends in the route's `usual` status then takes no lock and no label
    /// lookup.
    pub fn route(&self, path: &'static str, usual: u16) -> RouteMetrics {
        RouteMetrics {
            path,
            duration: self.duration.get_or_create(&PathLabels { path }).clone(),
            usual,
            usual_count: self
                .requests
                .get_or_create(&RequestLabels {
                    path,
                    status: usual,
                })
                .clone(),
            requests: self.requests.clone(),
        }
    }
}

/// One route's request metrics, from [`HttpMetrics::route`].
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    path: &'static str,
    duration: ShardedHistogram,
    usual: u16,
    usual_count: ShardedCounter,
    requests: Family<RequestLabels, ShardedCounter>,
}

impl RouteMetrics {
    /// The route template these metrics are labelled with.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Counts one answered request and observes how long it took.
    pub fn record(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        if status == self.usual {
            self.usual_count.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    path: self.path,
                    status,
                })
                .inc();
        }
    }
}
