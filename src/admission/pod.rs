//! The `/mutate-pod` webhook.
//!
//! Only pods that opted in reach it (the webhook's `objectSelector`); a pod
//! that asks for nothing is admitted unchanged, with no patch.

use kube::core::{
    GroupVersionKind, Resource, admission::AdmissionRequest, admission::AdmissionResponse,
};

/// Whether `kind` is a core v1 Pod, the only kind `/mutate-pod` changes.
pub fn is_v1_pod(kind: &GroupVersionKind) -> bool {
    kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod"
}

/// Decides on a pod admission request.
pub fn mutate<T: Resource>(request: &AdmissionRequest<T>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let kind = &request.kind;
    if !is_v1_pod(kind) {
        // A misrouted object is let through: blocking it would turn a
        // webhook misconfiguration into an outage of that resource.
        let mut response = response;
        response.warnings = Some(vec![format!(
            "keyhook's /mutate-pod only mutates v1 Pods; {}/{} {} was admitted unchanged",
            kind.group, kind.version, kind.kind
        )]);
        return response;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::decode_admission;
    use kube::core::DynamicObject;

    const POD_REVIEW: &str =
        include_str!("../../tests/fixtures/admission/pod-create-deployment.json");

    #[test]
    fn a_pod_is_admitted_unchanged() {
        let request = decode_admission::<DynamicObject>(POD_REVIEW.as_bytes()).unwrap();
        let response = mutate(&request);
        assert!(response.allowed);
        assert_eq!(response.uid, "4b2e1f0a-8c3d-4e5f-9a6b-7c8d9e0f1a2b");
        assert!(response.patch.is_none());
        assert!(response.warnings.is_none());
    }

    #[test]
    fn another_kind_is_admitted_with_a_warning() {
        let review = POD_REVIEW.replacen(
            r#""kind": {"group": "", "version": "v1", "kind": "Pod"}"#,
            r#""kind": {"group": "apps", "version": "v1", "kind": "Deployment"}"#,
            1,
        );
        let response = mutate(&decode_admission::<DynamicObject>(review.as_bytes()).unwrap());
        assert!(response.allowed);
        assert!(response.warnings.unwrap()[0].contains("apps/v1 Deployment"));
    }
}
