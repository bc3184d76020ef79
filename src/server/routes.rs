//! The webhook router: review bodies in, review responses out, with the
//! HTTP limits and the one mapping from [`ReviewError`] to a status.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse},
    conversion::{ConversionResponse, ConversionReview},
};

use super::record::RecordRequests;
use crate::{
    admission::{self, Deadline, ReviewError},
    apis::{self, validate},
    injection::Injector,
    metrics::HttpMetrics,
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

/// Limits shared by every webhook route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Largest accepted body, bytes.
    pub max_body: usize,
    /// Deadline for one review, from the moment its request arrives.
    pub request_timeout: Duration,
}

impl Default for WebhookSettings {
    /// The defaults of `--max-body` (8 MiB) and `--request-timeout` (8 s).
    fn default() -> Self {
        Self {
            max_body: 8 << 20,
            request_timeout: Duration::from_secs(8),
        }
    }
}

/// What every webhook handler shares.
#[derive(Clone)]
struct WebhookState(Arc<SharedState>);

struct SharedState {
    settings: WebhookSettings,
    injector: Option<Injector>,
}

/// The service of the HTTPS webhook listener: its routes, every request
/// counted and timed.
pub type WebhookService = RecordRequests<Router>;

/// The webhooks, with `injector` behind `/mutate-pod` (without one, pods
/// pass through unchanged).
pub fn webhook_service(
    settings: WebhookSettings,
    metrics: &HttpMetrics,
    injector: Option<Injector>,
) -> WebhookService {
    let router = Router::new()
        .route(MUTATE_POD, post(mutate_pod))
        .route(CONVERT, post(convert))
        .route(
            VALIDATE_EXTERNAL_SECRET,
            post(|body| validate_resource(body, validate::validate_external_secret)),
        )
        .route(
            VALIDATE_SECRET_STORE,
            post(|body| validate_resource(body, validate::validate_secret_store)),
        )
        .route(
            VALIDATE_CLUSTER_SECRET_STORE,
            post(|body| validate_resource(body, validate::validate_cluster_secret_store)),
        )
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(WebhookState(Arc::new(SharedState { settings, injector })));
    RecordRequests::new(router, metrics, ROUTES)
}

/// `/mutate-pod`: the injector decides; without one, pods pass through
/// unchanged.
async fn mutate_pod(
    State(state): State<WebhookState>,
    body: ReviewBody,
) -> Result<Response, ReviewError> {
    let request = admission::decode_admission(&body.bytes)?;
    let response = admission::admit_within(body.deadline, &request, async {
        match &state.0.injector {
            Some(injector) => injector.admit(&request, body.deadline.at).await,
            None => admission::pod::mutate(&request),
        }
    })
    .await;
    Ok(Json(admission::AdmissionAnswer::from(response)).into_response())
}

/// Validates a custom resource with a pure `decide` function.
async fn validate_resource(
    body: ReviewBody,
    decide: fn(&AdmissionRequest<DynamicObject>) -> AdmissionResponse,
) -> Result<Response, ReviewError> {
    let request = admission::decode_admission(&body.bytes)?;
    let response = decide(&request);
    tracing::debug!(uid = %request.uid, kind = %request.kind.kind, allowed = response.allowed, "validated");
    Ok(Json(admission::AdmissionAnswer::from(response)).into_response())
}

async fn convert(body: ReviewBody) -> Result<Response, ReviewError> {
    let request = admission::decode_conversion(&body.bytes)?;
    let deadline = body.deadline;
    let uid = request.uid.clone();
    // Conversion is CPU work proportional to the body (up to --max-body):
    // it runs off the async workers so it never stalls other requests.
    let work = tokio::task::spawn_blocking(move || apis::convert_review(request));
    let response = admission::convert_within(deadline, &uid, async {
        work.await.unwrap_or_else(|e| {
            tracing::error!(%uid, error = %e, "conversion task failed");
            ConversionResponse::invalid(Status::failure(
                "keyhook failed while converting; see its log",
                "InternalError",
            ))
        })
    })
    .await;
    Ok(Json(ConversionReview::from(response)).into_response())
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
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// A review body: JSON, within `--max-body`, fully read before the deadline.
struct ReviewBody {
    bytes: Bytes,
    /// `--request-timeout` after the request arrived: the review must be
    /// answered by then.
    deadline: Deadline,
}

impl FromRequest<WebhookState> for ReviewBody {
    type Rejection = ReviewError;

    async fn from_request(request: Request, state: &WebhookState) -> Result<Self, Self::Rejection> {
        let settings = &state.0.settings;
        let deadline = Deadline::after(settings.request_timeout);
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("<not text>"));
        if !content_type.is_some_and(is_json) {
            return Err(ReviewError::UnsupportedMediaType(
                content_type.unwrap_or("<none>").to_string(),
            ));
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len > settings.max_body) {
            return Err(ReviewError::TooLarge {
                limit: settings.max_body,
            });
        }
        let body = Limited::new(request.into_body(), settings.max_body);
        let collected = tokio::time::timeout_at(deadline.at, body.collect())
            .await
            .map_err(|_| ReviewError::BodyTimeout(settings.request_timeout))?;
        match collected {
            Ok(body) => Ok(ReviewBody {
                bytes: body.to_bytes(),
                deadline,
            }),
            Err(e) if e.is::<LengthLimitError>() => Err(ReviewError::TooLarge {
                limit: settings.max_body,
            }),
            Err(e) => Err(ReviewError::BodyRead(e.to_string())),
        }
    }
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
