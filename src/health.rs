//! The admin listener's routes: `/healthz` and `/livez` (the process
//! answers), `/readyz` (every [`Readiness`] check: the served certificate is
//! loaded, valid, trusted and covers the service; in a cluster the caBundle
//! injected in every managed object trusts it and the stores are listed;
//! keyhook is not shutting down) and `/metrics`.
//!
//! It is plain HTTP on its own port, so that no probe shares the webhooks'
//! TLS listener and no business route is reachable from it.

use std::sync::Arc;

use crate::{clock::Clock, metrics::Metrics, readiness::Readiness};
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

/// The admin router; `/readyz` judges the checks at `clock`'s time.
pub fn router(readiness: Readiness, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(export_metrics))
        .with_state(AdminState {
            readiness,
            metrics,
            clock,
        })
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AdminState>) -> Response {
    let report = state.readiness.report(state.clock.unix_now());
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
