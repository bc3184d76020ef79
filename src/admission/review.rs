//! Decoding reviews exactly as the apiserver sends them, and answering them
//! within keyhook's own deadline.
//!
//! Every webhook route shares this plumbing: the body is decoded into kube's
//! `AdmissionRequest` or `ConversionRequest`, the handler runs under the
//! deadline, and a handler that overruns gets a denial that says so instead
//! of a connection the apiserver has to time out.

use std::{future::Future, task::Poll, time::Duration};

use tokio::time::Instant;

use http::StatusCode;
use kube::core::{
    DynamicObject, GroupVersionKind, GroupVersionResource, Resource, Status, TypeMeta,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
    conversion::{ConversionRequest, ConversionResponse},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
const CONVERSION_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// Why a request body could not be taken as a review. Each variant maps to
/// one HTTP status in [`ReviewError::status`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReviewError {
    /// The content type is not JSON.
    #[error("content type `{0}` is not supported: send a review as application/json")]
    UnsupportedMediaType(String),
    /// The body exceeds `--max-body`.
    #[error("request body is larger than the {limit}-byte limit (--max-body)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive before the deadline.
    #[error("request body did not arrive within {0:?} (--request-timeout)")]
    BodyTimeout(Duration),
    /// The request-memory budget stayed spent until the deadline.
    #[error(
        "keyhook is holding as many request bodies as --max-inflight-bytes ({limit} bytes) allows; retry shortly"
    )]
    OverBudget {
        /// The budget in bytes.
        limit: usize,
    },
    /// The body could not be read off the connection.
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// The body is not the review this path expects.
    #[error("request body is not a valid {expected} ({api_version}): {reason}")]
    Malformed {
        /// `AdmissionReview` or `ConversionReview`.
        expected: &'static str,
        /// The API version keyhook speaks for it.
        api_version: &'static str,
        /// What is wrong, with the JSON path where it went wrong.
        reason: String,
    },
}

impl ReviewError {
    /// What was wrong, for the log: the message without what the client
    /// sent (a malformed review's error may quote a value from it).
    pub fn summary(&self) -> String {
        match self {
            ReviewError::Malformed {
                expected,
                api_version,
                ..
            } => format!("request body is not a valid {expected} ({api_version})"),
            ReviewError::BodyRead(_) => "request body could not be read".to_string(),
            other => other.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ReviewError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReviewError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReviewError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ReviewError::OverBudget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ReviewError::BodyRead(_) | ReviewError::Malformed { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// An AdmissionReview as it arrives, without `#[serde(flatten)]`: kube's
/// `AdmissionReview` flattens its type fields, which makes serde buffer the
/// whole body before decoding it, doubling the cost of every review.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "O: Deserialize<'de>")]
struct AdmissionEnvelope<O> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<ReadRequest<O>>,
}

/// The parts of an admission request keyhook's webhooks read. The rest
/// (`userInfo`, `oldObject`, `options`, the `request*` fields) is skipped
/// while decoding, never built: it is as much as a third of a pod review's
/// decoding, and `oldObject` doubles an update's memory.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "O: Deserialize<'de>")]
struct ReadRequest<O> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    object: Option<O>,
    #[serde(default)]
    dry_run: bool,
}

impl<O> ReadRequest<O> {
    /// kube's request type, with what was skipped left empty, and the object
    /// apart.
    fn into_parts<T: Resource>(self, types: TypeMeta) -> (AdmissionRequest<T>, Option<O>) {
        let request = AdmissionRequest {
            types,
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            request_kind: None,
            request_resource: None,
            request_sub_resource: None,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            user_info: Default::default(),
            object: None,
            old_object: None,
            dry_run: self.dry_run,
            options: None,
        };
        (request, self.object)
    }
}

/// A ConversionReview as it arrives; see [`AdmissionEnvelope`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConversionEnvelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<ConversionRequest>,
}

/// Decodes an `admission.k8s.io/v1` AdmissionReview and returns its request,
/// with the object as `T` (a typed resource, or a `DynamicObject`).
///
/// The request is boxed where it is built: it is large, and would otherwise
/// be copied out of this function and into the handler's future.
pub fn decode_admission<T>(body: &[u8]) -> Result<Box<AdmissionRequest<T>>, ReviewError>
where
    T: Resource + DeserializeOwned,
{
    let (request, types) = decode_request::<T>(body)?;
    let (request, object) = request.into_parts(types);
    let mut request = Box::new(request);
    request.object = object;
    Ok(request)
}

/// Decodes an `admission.k8s.io/v1` AdmissionReview, keeping its object as
/// the JSON text it was sent as, borrowed from `body` (`request.object` is
/// left empty).
pub fn decode_admission_raw(
    body: &[u8],
) -> Result<(Box<AdmissionRequest<DynamicObject>>, Option<&RawValue>), ReviewError> {
    let (request, types) = decode_request::<&RawValue>(body)?;
    let (request, object) = request.into_parts(types);
    Ok((Box::new(request), object))
}

/// The request of an admission review whose object decodes as `O`, and the
/// review's type fields, which the response echoes.
fn decode_request<'a, O: Deserialize<'a>>(
    body: &'a [u8],
) -> Result<(ReadRequest<O>, TypeMeta), ReviewError> {
    let malformed = |reason: String| ReviewError::Malformed {
        expected: "AdmissionReview",
        api_version: ADMISSION_API_VERSION,
        reason,
    };
    let envelope: AdmissionEnvelope<O> = decode_json(body).map_err(|e| {
        malformed(type_error(body, "AdmissionReview", ADMISSION_API_VERSION).unwrap_or(e))
    })?;
    check_type(
        &envelope.kind,
        &envelope.api_version,
        "AdmissionReview",
        ADMISSION_API_VERSION,
    )
    .map_err(malformed)?;
    let request = envelope
        .request
        .ok_or_else(|| malformed("it has no `request`".into()))?;
    // The response echoes these; kube's own conversion copies them the same way.
    let types = TypeMeta {
        api_version: envelope.api_version,
        kind: envelope.kind,
    };
    Ok((request, types))
}

/// Decodes an `apiextensions.k8s.io/v1` ConversionReview and returns its
/// request.
pub fn decode_conversion(body: &[u8]) -> Result<ConversionRequest, ReviewError> {
    let malformed = |reason: String| ReviewError::Malformed {
        expected: "ConversionReview",
        api_version: CONVERSION_API_VERSION,
        reason,
    };
    let envelope: ConversionEnvelope = decode_json(body).map_err(|e| {
        malformed(type_error(body, "ConversionReview", CONVERSION_API_VERSION).unwrap_or(e))
    })?;
    check_type(
        &envelope.kind,
        &envelope.api_version,
        "ConversionReview",
        CONVERSION_API_VERSION,
    )
    .map_err(malformed)?;
    let mut request = envelope
        .request
        .ok_or_else(|| malformed("it has no `request`".into()))?;
    request.types = Some(TypeMeta {
        api_version: envelope.api_version,
        kind: envelope.kind,
    });
    Ok(request)
}

/// Deserializes a review body as JSON; see [`decode_naming_path`].
///
/// The body is checked to be UTF-8 once, up front (with SIMD: simdutf8):
/// decoding from a `&str` then skips serde_json's check of every string it
/// reads, a sixth of the decode of a pod review.
fn decode_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    let body = simdutf8::compat::from_utf8(body).map_err(|e| {
        format!(
            "it is not UTF-8 text (JSON must be): invalid byte at offset {}",
            e.valid_up_to()
        )
    })?;
    decode_naming_path(body, "the review")
}

/// Deserializes JSON text. The common case pays for nothing else; text that
/// fails is decoded again to name the path of the first field that did not
/// fit. `what` names the text in the messages that have no path.
pub fn decode_naming_path<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, String> {
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    match result {
        Ok(_) => deserializer
            .end()
            .map_err(|e| format!("trailing data after {what}: {e}"))
            .and_then(|()| Err(format!("{what} does not decode"))),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(if path == "." {
                inner.to_string()
            } else {
                format!("at `{path}`: {inner}")
            })
        }
    }
}

/// When a body fails to decode, whether it is simply the wrong kind of
/// review: that says more than the first field that did not fit.
fn type_error(body: &[u8], want_kind: &str, want_version: &str) -> Option<String> {
    let types: kube::core::TypeMeta = serde_json::from_slice(body).ok()?;
    check_type(&types.kind, &types.api_version, want_kind, want_version).err()
}

fn check_type(
    kind: &str,
    api_version: &str,
    want_kind: &str,
    want_version: &str,
) -> Result<(), String> {
    if kind != want_kind {
        return Err(format!("kind is `{kind}`, expected `{want_kind}`"));
    }
    if api_version != want_version {
        return Err(format!(
            "apiVersion is `{api_version}`; keyhook speaks `{want_version}` (set admissionReviewVersions/conversionReviewVersions to [v1])"
        ));
    }
    Ok(())
}

/// The AdmissionReview answering with a response, serialized straight to
/// the JSON the apiserver reads. A patch is written as the base64 string the
/// API documents for `[]byte` fields (kube's own serialization writes an
/// array of numbers).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionAnswer {
    api_version: String,
    kind: String,
    response: WireResponse,
}

/// kube's `AdmissionResponse` as it goes on the wire: its fields in its
/// order and names, without the `#[serde(flatten)]` that would route every
/// field through serde's map serializer.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    uid: String,
    allowed: bool,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    audit_annotations: std::collections::HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
}

impl From<AdmissionResponse> for AdmissionAnswer {
    fn from(response: AdmissionResponse) -> Self {
        use base64::Engine;
        // kube sets its (private) patch type exactly when it sets a patch,
        // and JSON Patch is the only type there is.
        let patch_type = response.patch.is_some().then_some("JSONPatch");
        let patch = response
            .patch
            .map(|patch| base64::engine::general_purpose::STANDARD.encode(patch));
        Self {
            api_version: response.types.api_version,
            kind: response.types.kind,
            response: WireResponse {
                uid: response.uid,
                allowed: response.allowed,
                status: response.result,
                patch,
                patch_type,
                audit_annotations: response.audit_annotations,
                warnings: response.warnings,
            },
        }
    }
}

impl AdmissionAnswer {
    /// The answer as JSON bytes, in a buffer sized for the usual answer.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Room for an answer without a patch; one with grows it once.
        let mut json = Vec::with_capacity(256);
        serde_json::to_writer(&mut json, self)?;
        Ok(json)
    }
}

/// When a review must be answered: `--request-timeout` after its request
/// arrived. Taken once per request; every wait of the request (its body,
/// its handler, the injector's fetches) ends at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The instant the answer is due.
    pub at: Instant,
    /// The timeout it was set from: what messages name, rather than the
    /// time that happened to be left.
    pub timeout: Duration,
}

impl Deadline {
    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    /// Runs `future` until the deadline: `None` when the deadline came
    /// first.
    ///
    /// A future that is ready at once (a body that arrived whole, an answer
    /// that fetches nothing) never sets a timer: setting one clones the
    /// runtime's handle, whose reference count requests on every core
    /// would otherwise contend for.
    pub async fn bound<F: Future>(self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
            return Some(output);
        }
        tokio::time::timeout_at(self.at, future).await.ok()
    }
}

/// Runs `handler` for `request`, denying the request if it does not finish
/// by `deadline`.
pub async fn admit_within<T: Resource, F>(
    deadline: Deadline,
    request: &AdmissionRequest<T>,
    handler: F,
) -> AdmissionResponse
where
    F: Future<Output = AdmissionResponse>,
{
    match deadline.bound(handler).await {
        Some(response) => response,
        None => timeout_denial(request.uid.clone(), deadline),
    }
}

/// The answer to the admission review `uid` that keyhook could not decide
/// by its deadline: a denial that says so.
pub fn timeout_denial(uid: String, deadline: Deadline) -> AdmissionResponse {
    tracing::warn!(%uid, timeout = ?deadline.timeout, "admission review overran its deadline");
    let mut response = AdmissionResponse::invalid(format!(
        "keyhook could not decide within its {} deadline (--request-timeout); the request was not admitted, retry it",
        humantime::format_duration(deadline.timeout)
    ));
    response.uid = uid;
    response.result.code = StatusCode::GATEWAY_TIMEOUT.as_u16();
    response.result.reason = "Timeout".into();
    response
}

/// Runs a conversion `handler`, failing the review if it does not finish
/// by `deadline`.
pub async fn convert_within<F>(deadline: Deadline, uid: &str, handler: F) -> ConversionResponse
where
    F: Future<Output = ConversionResponse>,
{
    match deadline.bound(handler).await {
        Some(response) => response,
        None => conversion_timeout(uid.to_string(), deadline),
    }
}

/// The answer to the conversion review `uid` that keyhook could not
/// convert by its deadline: a failure that says so.
pub fn conversion_timeout(uid: String, deadline: Deadline) -> ConversionResponse {
    tracing::warn!(%uid, timeout = ?deadline.timeout, "conversion review overran its deadline");
    let mut response = ConversionResponse::invalid(Status::failure(
        &format!(
            "keyhook could not convert within its {} deadline (--request-timeout)",
            humantime::format_duration(deadline.timeout)
        ),
        "Timeout",
    ));
    response.uid = uid;
    response
}

/// The `request.uid` of a review body, read without decoding the rest
/// (skipped, not stored); empty when the body has none.
pub fn review_uid(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Review {
        request: Option<Request>,
    }
    #[derive(Deserialize)]
    struct Request {
        uid: String,
    }
    serde_json::from_slice::<Review>(body)
        .ok()
        .and_then(|review| review.request)
        .map(|request| request.uid)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;

    const POD_REVIEW: &str =
        include_str!("../../tests/fixtures/admission/pod-create-deployment.json");

    #[test]
    fn a_real_pod_review_decodes() {
        let request = decode_admission::<DynamicObject>(POD_REVIEW.as_bytes()).unwrap();
        assert_eq!(request.kind.kind, "Pod");
        assert!(request.object.is_some());
    }

    #[test]
    fn errors_name_the_field_that_is_wrong() {
        let mangled = POD_REVIEW.replacen("\"uid\"", "\"uuid\"", 1);
        let err = decode_admission::<DynamicObject>(mangled.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing field `uid`"), "{err}");
        assert!(err.to_string().contains("request"), "{err}");

        let err = decode_admission::<DynamicObject>(
            br#"{"kind":"ConversionReview","apiVersion":"admission.k8s.io/v1"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("kind is `ConversionReview`"),
            "{err}"
        );

        let beta = POD_REVIEW.replacen("admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1);
        let err = decode_admission::<DynamicObject>(beta.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("admission.k8s.io/v1beta1"),
            "{err}"
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_named_so() {
        let mut body = POD_REVIEW.as_bytes().to_vec();
        let at = POD_REVIEW.find("shop").unwrap();
        body[at] = 0xff;
        let err = decode_admission::<DynamicObject>(&body).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "request body is not a valid AdmissionReview (admission.k8s.io/v1): it is not UTF-8 text (JSON must be): invalid byte at offset {at}"
            )
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_patch_is_answered_as_base64() {
        let request = decode_admission::<DynamicObject>(POD_REVIEW.as_bytes()).unwrap();
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/metadata/annotations/a","value":"b"}]"#)
                .unwrap();
        let response = AdmissionResponse::from(&*request)
            .with_patch(patch)
            .unwrap();
        let review: serde_json::Value =
            serde_json::from_slice(&AdmissionAnswer::from(response).to_json().unwrap()).unwrap();
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        assert_eq!(
            review["response"]["patch"],
            "W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2Fubm90YXRpb25zL2EiLCJ2YWx1ZSI6ImIifV0="
        );
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["uid"], request.uid);
    }

    /// Every field kube's own serialization writes, ours writes alike,
    /// the patch aside (base64 rather than an array of numbers).
    #[test]
    fn the_answer_is_kubes_response_on_the_wire() {
        let request = decode_admission::<DynamicObject>(POD_REVIEW.as_bytes()).unwrap();
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/metadata/labels","value":{}}]"#).unwrap();
        let mut patched = AdmissionResponse::from(&*request)
            .with_patch(patch)
            .unwrap();
        patched.warnings = Some(vec!["careful".into()]);
        patched
            .audit_annotations
            .insert("keyhook.io/why".into(), "test".into());
        let denied = AdmissionResponse::from(&*request).deny("no store named `x`");
        for response in [AdmissionResponse::from(&*request), patched, denied] {
            let mut kube = serde_json::to_value(&response).unwrap();
            let answer = AdmissionAnswer::from(response);
            let mut ours: serde_json::Value =
                serde_json::from_slice(&answer.to_json().unwrap()).unwrap();
            let ours = ours["response"].as_object_mut().unwrap();
            let kube = kube.as_object_mut().unwrap();
            assert_eq!(
                ours.remove("patch").is_some(),
                kube.remove("patch").is_some()
            );
            assert_eq!(ours, kube);
        }
    }

    /// The denial names `--request-timeout` as configured, however much of
    /// it the body's arrival used up.
    #[tokio::test(start_paused = true)]
    async fn an_overrunning_handler_is_denied_with_the_reason() {
        let deadline = Deadline::after(Duration::from_secs(8));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let request = decode_admission::<DynamicObject>(POD_REVIEW.as_bytes()).unwrap();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            AdmissionResponse::from(&*request)
        };
        let response = admit_within(deadline, &request, slow).await;
        assert!(!response.allowed);
        assert_eq!(response.uid, request.uid);
        assert_eq!(response.result.code, 504);
        assert!(
            response.result.message.contains("within its 8s deadline"),
            "{}",
            response.result.message
        );
        assert_eq!(
            Instant::now(),
            deadline.at,
            "denied at the deadline, not later"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_conversion_fails_naming_the_timeout() {
        let deadline = Deadline::after(Duration::from_secs(8));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            ConversionResponse::invalid(Status::failure("unreachable", "Test"))
        };
        let response = convert_within(deadline, "c0ffee", slow).await;
        assert_eq!(response.uid, "c0ffee");
        let message = &response.result.message;
        assert!(message.contains("within its 8s deadline"), "{message}");
        assert_eq!(Instant::now(), deadline.at);
    }
}
