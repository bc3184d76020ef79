//! The `/convert` handler: a whole `ConversionRequest` in, a
//! `ConversionResponse` out.

use kube::core::conversion::{ConversionRequest, ConversionResponse};
use kube::core::response::Status;
use serde_json::Value;

use super::{Version, convert_object};

/// Converts every object of `request` to `request.desired_api_version`.
///
/// Objects keep their order and their metadata; the response echoes the
/// request `uid`. If any object fails, the response carries
/// `result.status: Failure` with a message naming the object (index, kind,
/// namespace/name) and the field, and no converted objects, as the apiserver
/// expects.
pub fn convert_review(request: ConversionRequest) -> ConversionResponse {
    let Some(to) = Version::from_api_version(&request.desired_api_version) else {
        let message = format!(
            "desiredAPIVersion: `{}` is not one of external-secrets.io/v1alpha1, v1beta1, v1",
            request.desired_api_version
        );
        return ConversionResponse::for_request(request).failure(failure(message));
    };
    let mut request = request;
    let objects = std::mem::take(&mut request.objects);
    let mut converted = Vec::with_capacity(objects.len());
    for (index, object) in objects.into_iter().enumerate() {
        let label = describe(index, &object);
        match convert_object(object, to) {
            Ok(object) => converted.push(object),
            Err(error) => {
                let message = format!("converting {label} to {to}: {error}");
                return ConversionResponse::for_request(request).failure(failure(message));
            }
        }
    }
    ConversionResponse::for_request(request).success(converted)
}

fn failure(message: String) -> Status {
    Status::failure(&message, "ConversionFailed")
}

/// `object 3 (ExternalSecret shop/db)`, as far as the object allows.
fn describe(index: usize, object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let name = object.pointer("/metadata/name").and_then(Value::as_str);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    match (namespace, name) {
        (Some(ns), Some(name)) => format!("object {index} ({kind} {ns}/{name})"),
        (None, Some(name)) => format!("object {index} ({kind} {name})"),
        _ => format!("object {index} ({kind})"),
    }
}
