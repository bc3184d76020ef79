//! Connections of both listeners and the webhook's request-memory budget.

use std::fmt;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::start_at_zero;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The HTTPS webhook listener.
    Webhook,
    /// The plain-HTTP health and metrics listener.
    Health,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed it.
    Client,
    /// It failed (a protocol error, a reset).
    Error,
    /// The TLS handshake failed or did not finish in time.
    Handshake,
    /// A client spoke plain HTTP to the HTTPS port.
    PlainHttp,
    /// No request arrived within `--first-request-timeout`.
    NoRequest,
    /// Nothing was in flight for `--idle-timeout`.
    Idle,
    /// The listener was at `--max-connections` and needed room; it was idle.
    Shed,
    /// keyhook was shutting down.
    Shutdown,
}

label_values!(Listener { Webhook => "webhook", Health => "health" });
label_values!(CloseReason {
    Client => "client",
    Error => "error",
    Handshake => "handshake",
    PlainHttp => "plain_http",
    NoRequest => "no_request",
    Idle => "idle",
    Shed => "shed",
    Shutdown => "shutdown",
});

/// Labels naming a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener.
    pub listener: Listener,
}

/// Labels of a closed connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    /// The listener.
    pub listener: Listener,
    /// Why it was closed.
    pub reason: CloseReason,
}

/// One listener's connection metrics.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    listener: Listener,
    open: Gauge,
    closed: Family<CloseLabels, Counter>,
    at_limit: Counter,
    accept_errors: Counter,
}

impl ConnectionMetrics {
    /// Counts one connection accepted.
    pub fn opened(&self) {
        self.open.inc();
    }

    /// Counts one connection closed, and why.
    pub fn closed(&self, reason: CloseReason) {
        self.open.dec();
        self.closed
            .get_or_create(&CloseLabels {
                listener: self.listener,
                reason,
            })
            .inc();
    }

    /// Counts one time the listener had to wait for a connection to close
    /// before accepting another.
    pub fn at_limit(&self) {
        self.at_limit.inc();
    }

    /// Counts one failed `accept`.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }
}

/// Connections of both listeners, and the request-memory budget.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    /// The HTTPS webhook listener.
    pub webhook: ConnectionMetrics,
    /// The plain-HTTP health listener.
    pub health: ConnectionMetrics,
    /// `keyhook_request_memory_bytes`: request bodies buffered now.
    pub body_bytes: Gauge,
    /// `keyhook_request_memory_refusals_total`: requests answered 503
    /// because `--max-inflight-bytes` stayed exhausted until their deadline.
    pub body_refusals: Counter,
}

impl ServerMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by listener",
            open.clone(),
        );
        let closed = Family::<CloseLabels, Counter>::default();
        start_at_zero(
            &closed,
            Listener::ALL.into_iter().flat_map(|listener| {
                CloseReason::ALL.map(|reason| CloseLabels { listener, reason })
            }),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by listener and reason",
            closed.clone(),
        );
        let at_limit = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connection_limit_waits",
            "Times a listener was at its connection limit and waited for a connection to close",
            at_limit.clone(),
        );
        let accept_errors = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "accept_errors",
            "Failed accepts (e.g. out of file descriptors), by listener",
            accept_errors.clone(),
        );
        let listener = |listener: Listener| {
            let labels = ListenerLabels { listener };
            ConnectionMetrics {
                listener,
                open: open.get_or_create(&labels).clone(),
                closed: closed.clone(),
                at_limit: at_limit.get_or_create(&labels).clone(),
                accept_errors: accept_errors.get_or_create(&labels).clone(),
            }
        };
        let body_bytes = Gauge::default();
        registry.register(
            "request_memory_bytes",
            "Webhook request bodies buffered now, counted against --max-inflight-bytes",
            body_bytes.clone(),
        );
        let body_refusals = Counter::default();
        registry.register(
            "request_memory_refusals",
            "Webhook requests answered 503 because --max-inflight-bytes stayed exhausted until their deadline",
            body_refusals.clone(),
        );
        Self {
            webhook: listener(Listener::Webhook),
            health: listener(Listener::Health),
            body_bytes,
            body_refusals,
        }
    }
}

impl Default for ServerMetrics {
    /// Unregistered metrics, for tests and tools that export nothing.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}
