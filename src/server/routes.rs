//! The webhook router: review bodies in, review responses out, with the
//! HTTP limits and the one mapping from [`ReviewError`] to a status.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::BytesMut;
use http_body_util::BodyExt;

use kube::core::{admission::AdmissionResponse, conversion::ConversionReview};

use super::{
    budget::{MemoryBudget, OverBudget, Reservation},
    connection::Refused,
    listener::ConnectionService,
    offload::{CpuPool, OFFLOAD_FROM_BYTES, Overrun},
    record::RecordRequests,
};
pub use crate::config::WebhookSettings;
use crate::{
    admission::{self, Deadline, ReviewError},
    apis::{self, Kind, validate},
    injection::PodInjector,
    metrics::{HttpMetrics, Metrics},
};

/// The pod mutating webhook.
pub const MUTATE_POD: &str = "/mutate-pod";
/// The CRD conversion webhook.
pub const CONVERT: &str = "/convert";
/// Validating webhooks of the three custom resources.
pub const VALIDATE_EXTERNAL_SECRET: &str = "/validate-externalsecret";
/// See [`VALIDATE_EXTERNAL_SECRET`].
pub const VALIDATE_SECRET_STORE: &str = "/validate-secretstore";
/// See [`VALIDATE_EXTERNAL_SECRET`].
pub const VALIDATE_CLUSTER_SECRET_STORE: &str = "/validate-clustersecretstore";
/// Every route, also the bounded set of `path` metric labels.
pub const ROUTES: &[&str] = &[
    MUTATE_POD,
    CONVERT,
    VALIDATE_EXTERNAL_SECRET,
    VALIDATE_SECRET_STORE,
    VALIDATE_CLUSTER_SECRET_STORE,
];

/// What every webhook handler shares.
#[derive(Clone)]
struct WebhookState(Arc<SharedState>);

#[derive(Clone)]
struct SharedState {
    settings: WebhookSettings,
    budget: MemoryBudget,
    cpu: CpuPool,
    injector: Option<PodInjector>,
}

/// The service of the HTTPS webhook listener: its routes, every request
/// counted and timed.
pub type WebhookService = RecordRequests<Router>;

/// The webhooks, from which every connection gets a service of its own.
///
/// A service is cloned for each request it answers: were it shared by all
/// connections, every request on every core would count references in the
/// same few cache lines. Built per connection, those counts stay on the
/// core that serves the connection.
#[derive(Clone)]
pub struct Webhooks {
    state: SharedState,
    metrics: HttpMetrics,
}

impl Webhooks {
    /// The webhooks, with `injector` behind `/mutate-pod` (without one, pods
    /// pass through unchanged).
    pub fn new(
        settings: WebhookSettings,
        metrics: &Metrics,
        injector: Option<PodInjector>,
    ) -> Self {
        let budget = MemoryBudget::new(
            settings.max_inflight_bytes,
            metrics.server.body_bytes.clone(),
            metrics.server.body_refusals.clone(),
        );
        Self {
            state: SharedState {
                settings,
                budget,
                cpu: CpuPool::for_this_machine(),
                injector,
            },
            metrics: metrics.http.clone(),
        }
    }

    /// The same webhooks, sharing their memory budget, CPU pool and
    /// metrics, with another `--request-timeout`.
    pub fn with_request_timeout(&self, timeout: std::time::Duration) -> Self {
        let mut webhooks = self.clone();
        webhooks.state.settings.request_timeout = timeout;
        webhooks
    }

    /// A service of its own for one connection.
    pub fn service(&self) -> WebhookService {
        let router = Router::new()
            .route(MUTATE_POD, post(mutate_pod))
            .route(CONVERT, post(convert))
            .route(
                VALIDATE_EXTERNAL_SECRET,
                post(|state, body| validate_resource(state, body, Kind::ExternalSecret)),
            )
            .route(
                VALIDATE_SECRET_STORE,
                post(|state, body| validate_resource(state, body, Kind::SecretStore)),
            )
            .route(
                VALIDATE_CLUSTER_SECRET_STORE,
                post(|state, body| validate_resource(state, body, Kind::ClusterSecretStore)),
            )
            .fallback(unknown_path)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(WebhookState(Arc::new(SharedState {
                budget: self.state.budget.handle(),
                ..self.state.clone()
            })));
        RecordRequests::new(router, &self.metrics, ROUTES)
    }
}

impl ConnectionService for Webhooks {
    type Service = WebhookService;

    fn for_connection(&self) -> WebhookService {
        self.service()
    }
}

/// The webhooks' service for one connection; see [`Webhooks`].
pub fn webhook_service(
    settings: WebhookSettings,
    metrics: &Metrics,
    injector: Option<PodInjector>,
) -> WebhookService {
    Webhooks::new(settings, metrics, injector).service()
}

/// `/mutate-pod`: the injector decides; without one, pods pass through
/// unchanged.
async fn mutate_pod(
    State(state): State<WebhookState>,
    body: ReviewBody,
) -> Result<Response, ReviewError> {
    let deadline = body.deadline;
    let decoded = decide_off_the_workers(&state, body, OFFLOAD_FROM_BYTES, |bytes| {
        admission::decode_admission(bytes)
    })
    .await;
    let request = match decoded {
        Decided::Ready(request) => request?,
        Decided::Overran(uid) => {
            return Ok(admission_answer(admission::timeout_denial(uid, deadline)));
        }
    };
    let response = admission::admit_within(deadline, &request, async {
        match &state.0.injector {
            Some(injector) => injector.admit(&request, deadline.at).await,
            None => AdmissionResponse::from(&*request),
        }
    })
    .await;
    Ok(admission_answer(response))
}

/// Validates a custom resource of `kind`.
async fn validate_resource(
    State(state): State<WebhookState>,
    body: ReviewBody,
    kind: Kind,
) -> Result<Response, ReviewError> {
    let deadline = body.deadline;
    let decided = decide_off_the_workers(&state, body, OFFLOAD_FROM_BYTES, move |bytes| {
        let (request, object) = admission::decode_admission_raw(bytes)?;
        let response = validate::validate_raw(kind, &request, object);
        tracing::debug!(uid = %request.uid, kind = %request.kind.kind, allowed = response.allowed, "validated");
        Ok(response)
    })
    .await;
    let response = match decided {
        Decided::Ready(response) => response?,
        Decided::Overran(uid) => admission::timeout_denial(uid, deadline),
    };
    Ok(admission_answer(response))
}

async fn convert(
    State(state): State<WebhookState>,
    body: ReviewBody,
) -> Result<Response, ReviewError> {
    let deadline = body.deadline;
    // Conversion is CPU work proportional to the body (up to --max-body):
    // it always runs off the async workers.
    let converted = decide_off_the_workers(&state, body, 0, |bytes| {
        let request = admission::decode_conversion(bytes)?;
        Ok(apis::convert_review(request))
    })
    .await;
    let response = match converted {
        Decided::Ready(response) => response?,
        Decided::Overran(uid) => admission::conversion_timeout(uid, deadline),
    };
    Ok(Json(ConversionReview::from(response)).into_response())
}

fn admission_answer(response: AdmissionResponse) -> Response {
    match admission::AdmissionAnswer::from(response).to_json() {
        Ok(json) => {
            let json_type = header::HeaderValue::from_static("application/json");
            ([(header::CONTENT_TYPE, json_type)], json).into_response()
        }
        // Strings, booleans and maps of strings always serialize.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("keyhook could not encode its answer: {e}\n"),
        )
            .into_response(),
    }
}

/// What a review's CPU work came to, or, when the deadline passed first,
/// the review's uid for the answer that says so.
enum Decided<T> {
    Ready(T),
    Overran(String),
}

/// Runs `work` on the review's bytes: inline when the body is smaller than
/// `offload_from`, else on the CPU pool. The body (and its share of the
/// memory budget) is held until `work` returns, also past an overrun.
async fn decide_off_the_workers<T, F>(
    state: &WebhookState,
    body: ReviewBody,
    offload_from: usize,
    work: F,
) -> Decided<T>
where
    F: FnOnce(&[u8]) -> T + Send + 'static,
    T: Send + 'static,
{
    if body.bytes.len() < offload_from {
        return Decided::Ready(work(&body.bytes));
    }
    let bytes = body.bytes.clone();
    let deadline = body.deadline.at;
    match state.0.cpu.run(deadline, move || work(&body.bytes)).await {
        Ok(value) => Decided::Ready(value),
        Err(Overrun) => Decided::Overran(admission::review_uid(&bytes)),
    }
}

async fn unknown_path(request: Request) -> Response {
    let known = ROUTES.join(", ");
    let message = format!(
        "no webhook at `{}`; keyhook serves {known}\n",
        request.uri().path()
    );
    (StatusCode::NOT_FOUND, message).into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let message = format!(
        "{} is not allowed on `{}`: POST a review\n",
        request.method(),
        request.uri().path()
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        message,
    )
        .into_response()
}

impl IntoResponse for ReviewError {
    fn into_response(self) -> Response {
        tracing::debug!(error = %self, "rejected a webhook request");
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        response.extensions_mut().insert(Refused(self.summary()));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// A review body: JSON, within `--max-body`, fully read before the
/// deadline, and holding its share of `--max-inflight-bytes` until dropped.
struct ReviewBody {
    bytes: Bytes,
    /// `--request-timeout` after the request arrived: the review must be
    /// answered by then.
    deadline: Deadline,
    _reservation: Reservation,
}

/// A refused body is read and dropped up to this many times `--max-body`
/// before the answer is sent anyway.
const DISCARD_FACTOR: usize = 4;

/// A body without a `Content-Length` reserves budget in steps of at least
/// this, rather than once per frame.
const RESERVE_STEP: usize = 64 * 1024;

impl FromRequest<WebhookState> for ReviewBody {
    type Rejection = ReviewError;

    async fn from_request(request: Request, state: &WebhookState) -> Result<Self, Self::Rejection> {
        let shared = &state.0;
        let settings = &shared.settings;
        let deadline = Deadline::after(settings.request_timeout);
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("<not text>"));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let too_large = || ReviewError::TooLarge {
            limit: settings.max_body,
        };
        let refusal = if !content_type.is_some_and(is_json) {
            Some(ReviewError::UnsupportedMediaType(
                content_type.unwrap_or("<none>").to_string(),
            ))
        } else if declared.is_some_and(|len| len > settings.max_body) {
            Some(too_large())
        } else {
            None
        };
        if let Some(refusal) = refusal {
            discard_body(
                request.into_body(),
                DISCARD_FACTOR * settings.max_body,
                deadline,
            )
            .await;
            return Err(refusal);
        }
        let over_budget = |e: OverBudget| ReviewError::OverBudget { limit: e.limit };
        let mut reservation = shared
            .budget
            .reserve(declared.unwrap_or(0), deadline.at)
            .await
            .map_err(over_budget)?;
        let mut buffer = Buffered::default();
        let mut body = request.into_body();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ReviewError::BodyRead(e.to_string()))?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers carry nothing a review needs
                };
                let total = buffer.len() + data.len();
                if total > settings.max_body {
                    return Err(too_large());
                }
                if total > reservation.bytes() {
                    let want = total
                        .max(buffer.len() + RESERVE_STEP)
                        .min(settings.max_body);
                    reservation
                        .grow_to(want, deadline.at)
                        .await
                        .map_err(over_budget)?;
                }
                buffer.push(data, declared.unwrap_or(0));
            }
            Ok(())
        };
        let outcome = deadline
            .bound(read)
            .await
            .ok_or(ReviewError::BodyTimeout(settings.request_timeout))?;
        if let Err(refusal) = outcome {
            if matches!(refusal, ReviewError::TooLarge { .. }) {
                discard_body(body, DISCARD_FACTOR * settings.max_body, deadline).await;
            }
            return Err(refusal);
        }
        Ok(ReviewBody {
            bytes: buffer.into_bytes(),
            deadline,
            _reservation: reservation,
        })
    }
}

/// A body as its frames arrive: the first frame kept as it is, copied into
/// one buffer only when a second one comes (a review usually arrives whole).
#[derive(Default)]
enum Buffered {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buffered {
    fn len(&self) -> usize {
        match self {
            Buffered::Empty => 0,
            Buffered::One(bytes) => bytes.len(),
            Buffered::Many(buffer) => buffer.len(),
        }
    }

    /// Adds a frame; `expected` (the declared length) sizes the buffer.
    fn push(&mut self, data: Bytes, expected: usize) {
        *self = match std::mem::take(self) {
            Buffered::Empty => Buffered::One(data),
            Buffered::One(first) => {
                let mut buffer = BytesMut::with_capacity(expected.max(first.len() + data.len()));
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                Buffered::Many(buffer)
            }
            Buffered::Many(mut buffer) => {
                buffer.extend_from_slice(&data);
                Buffered::Many(buffer)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Buffered::Empty => Bytes::new(),
            Buffered::One(bytes) => bytes,
            Buffered::Many(buffer) => buffer.freeze(),
        }
    }
}

/// Reads and drops what is left of a refused request's body, up to
/// `limit` more bytes and until the deadline, so that the client reads the
/// answer rather than a reset stream: over HTTP/2, an answer sent before the
/// body ends is followed by RST_STREAM, which curl reports instead of the
/// answer.
async fn discard_body(mut body: axum::body::Body, limit: usize, deadline: Deadline) {
    let drain = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline.at, drain).await;
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_with_parameters() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(!is_json("application/yaml"));
        assert!(!is_json("application/json-patch+json"));
    }
}
