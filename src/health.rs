//! The admin listener: `/healthz` and `/livez` (the process answers),
//! `/readyz` (the served certificate is loaded, valid, trusted and covers the
//! service, in a cluster the caBundle injected in every managed object
//! trusts it, and keyhook is not shutting down) and `/metrics`.
//!
//! It is plain HTTP on its own port, so that no probe shares the webhooks'
//! TLS listener and no business route is reachable from it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    certs::{Check, ServingCert},
    metrics::Metrics,
};

/// A source of readiness checks beyond the served certificate's own, such
/// as the trust of the caBundle injected in the cluster.
pub trait ReadinessCheck: std::fmt::Debug + Send + Sync {
    /// The checks at `now` (Unix seconds).
    fn checks(&self, now: i64) -> Vec<Check>;
}

/// What `/readyz` looks at.
#[derive(Debug, Clone)]
pub struct Readiness {
    serving: Arc<ServingCert>,
    shutdown: CancellationToken,
    extra: Vec<Arc<dyn ReadinessCheck>>,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Whether every check passed.
    pub ready: bool,
    /// Each check and its state.
    pub checks: Vec<Check>,
}

impl Readiness {
    /// Readiness of a server presenting `serving`, which turns false as soon
    /// as `shutdown` is cancelled.
    pub fn new(serving: Arc<ServingCert>, shutdown: CancellationToken) -> Self {
        Self {
            serving,
            shutdown,
            extra: Vec::new(),
        }
    }

    /// Adds more checks that must pass.
    pub fn with_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.extra.push(check);
        self
    }

    /// Evaluates every check at `now` (Unix seconds).
    pub fn report(&self, now: i64) -> ReadinessReport {
        let mut checks = vec![if self.shutdown.is_cancelled() {
            Check {
                name: "accepting_requests",
                ok: false,
                detail: "shutting down".into(),
            }
        } else {
            Check {
                name: "accepting_requests",
                ok: true,
                detail: "serving".into(),
            }
        }];
        checks.extend(self.serving.checks(now));
        checks.extend(self.extra.iter().flat_map(|c| c.checks(now)));
        ReadinessReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// The admin router.
pub fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(export_metrics))
        .with_state(AdminState { readiness, metrics })
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AdminState>) -> Response {
    let report = state
        .readiness
        .report(time::OffsetDateTime::now_utc().unix_timestamp());
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn export_metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}
