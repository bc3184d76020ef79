//! Request metrics for the webhook listener: every request counted by route
//! and status, and timed, by a tower middleware around the whole router.
//!
//! It wraps the router from outside rather than as an axum layer on each
//! route: a request then costs one lookup in a fixed table and no boxed
//! future or cloned route service.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{http::Request, response::Response};
use tokio::time::Instant;
use tower::Service;

use crate::metrics::{HttpMetrics, RouteMetrics};

/// The label of a request to a path keyhook does not serve.
const UNMATCHED: &str = "unmatched";
/// The status webhook routes answer with, denials included.
const OK: u16 = 200;
/// The status of a request to a path keyhook does not serve.
const NOT_FOUND: u16 = 404;

/// Counts and times every request `inner` answers.
#[derive(Clone)]
pub struct RecordRequests<S> {
    inner: S,
    routes: Arc<RouteTable>,
}

/// Each served route's metrics, and those of everything else.
struct RouteTable {
    routes: Vec<RouteMetrics>,
    unmatched: RouteMetrics,
}

impl RouteTable {
    /// Where `path`'s metrics are in the table.
    fn position(&self, path: &str) -> usize {
        self.routes
            .iter()
            .position(|route| route.path() == path)
            .unwrap_or(self.routes.len())
    }

    fn get(&self, position: usize) -> &RouteMetrics {
        self.routes.get(position).unwrap_or(&self.unmatched)
    }
}

impl<S> RecordRequests<S> {
    /// Records requests to `inner` in `metrics`, labelled with the route of
    /// `routes` they asked for, or `unmatched`.
    pub fn new(inner: S, metrics: &HttpMetrics, routes: &[&'static str]) -> Self {
        let table = RouteTable {
            routes: routes.iter().map(|path| metrics.route(path, OK)).collect(),
            unmatched: metrics.route(UNMATCHED, NOT_FOUND),
        };
        Self {
            inner,
            routes: Arc::new(table),
        }
    }
}

impl<S, B> Service<Request<B>> for RecordRequests<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = self.routes.position(request.uri().path());
        Recorded {
            inner: self.inner.call(request),
            routes: self.routes.clone(),
            route,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, recorded when it is ready.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        routes: Arc<RouteTable>,
        route: usize,
        start: Instant,
    }
}

impl<F, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.routes.get(*this.route).record(
                response.status().as_u16(),
                this.start.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(result)
    }
}
