//! The pod as the injector reads it from an admission review.
//!
//! The apiserver sends the whole pod: its `metadata.managedFields` (a tree
//! of every field's owner), its status, and every part of its spec. Decoding
//! all of it into k8s-openapi's `Pod` costs more than TLS and HTTP/2 do for
//! the request, so only the parts the injector reads are decoded
//! (`examples/decode_bench` prints the split). Everything else is skipped
//! while decoding (still checked to be JSON) and never allocated.
//!
//! The field names mirror k8s-openapi's, so code reads the same on either.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{EnvVar, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::core::GroupVersionKind;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use serde::Deserialize;

/// An admitted pod: the parts of its metadata and of its spec that
/// injection reads or patches.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdmittedPod {
    /// Name, namespace and annotations; the other fields are left empty.
    #[serde(default, with = "ReadMetadata")]
    pub metadata: ObjectMeta,
    /// The spec, when the object has one.
    #[serde(default)]
    pub spec: Option<AdmittedPodSpec>,
}

/// The containers and volumes of a pod spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedPodSpec {
    /// `spec.containers`.
    #[serde(default)]
    pub containers: Vec<AdmittedContainer>,
    /// `spec.initContainers`.
    #[serde(default)]
    pub init_containers: Option<Vec<AdmittedContainer>>,
    /// `spec.volumes`, by name.
    #[serde(default)]
    pub volumes: Option<Vec<AdmittedVolume>>,
}

/// A container's name, environment and mounts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedContainer {
    /// The container name.
    #[serde(default)]
    pub name: String,
    /// Its environment variables, in order (patches address them by index).
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    /// Its volume mounts.
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// A pod volume, by name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdmittedVolume {
    /// The volume name.
    #[serde(default)]
    pub name: String,
}

/// Whether `kind` is a core v1 Pod, the only kind `/mutate-pod` changes.
pub fn is_v1_pod(kind: &GroupVersionKind) -> bool {
    kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod"
}

/// The answer to a review of another kind than a v1 Pod: admitted unchanged,
/// with a warning that names the kind. `None` for a v1 Pod.
pub fn misrouted<T: kube::core::Resource>(
    request: &AdmissionRequest<T>,
) -> Option<AdmissionResponse> {
    let kind = &request.kind;
    if is_v1_pod(kind) {
        return None;
    }
    // Blocking a misrouted object would turn a webhook misconfiguration
    // into an outage of that resource.
    let mut response = AdmissionResponse::from(request);
    response.warnings = Some(vec![format!(
        "keyhook's /mutate-pod only mutates v1 Pods; {}/{} {} was admitted unchanged",
        kind.group, kind.version, kind.kind
    )]);
    Some(response)
}

/// Decodes the parts of an `ObjectMeta` keyhook reads: its name, namespace
/// and annotations. The rest (`managedFields` above all, the owner
/// references, labels and timestamps) is skipped, never allocated.
#[derive(Deserialize)]
#[serde(remote = "ObjectMeta", rename_all = "camelCase")]
struct ReadMetadata {
    annotations: Option<std::collections::BTreeMap<String, String>>,
    generate_name: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    #[serde(skip_deserializing)]
    creation_timestamp: Option<Time>,
    #[serde(skip_deserializing)]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_deserializing)]
    deletion_timestamp: Option<Time>,
    #[serde(skip_deserializing)]
    finalizers: Option<Vec<String>>,
    #[serde(skip_deserializing)]
    generation: Option<i64>,
    #[serde(skip_deserializing)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_deserializing)]
    managed_fields: Option<Vec<ManagedFieldsEntry>>,
    #[serde(skip_deserializing)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(skip_deserializing)]
    resource_version: Option<String>,
    #[serde(skip_deserializing)]
    self_link: Option<String>,
    #[serde(skip_deserializing)]
    uid: Option<String>,
}

impl kube::core::Resource for AdmittedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    const REVIEW: &str = include_str!("../../tests/fixtures/admission/pod-create-deployment.json");

    fn object(review: &str) -> serde_json::Value {
        let review: serde_json::Value = serde_json::from_str(review).unwrap();
        review["request"]["object"].clone()
    }

    /// Every field the injector reads agrees with k8s-openapi's full decode.
    #[test]
    fn reads_what_the_full_pod_reads() {
        let full: Pod = serde_json::from_value(object(REVIEW)).unwrap();
        let admitted: AdmittedPod = serde_json::from_value(object(REVIEW)).unwrap();

        assert!(
            full.metadata.managed_fields.is_some(),
            "fixture has managedFields"
        );
        assert!(
            full.metadata.owner_references.is_some(),
            "fixture has owners"
        );
        let expected_meta = ObjectMeta {
            annotations: full.metadata.annotations.clone(),
            generate_name: full.metadata.generate_name.clone(),
            name: full.metadata.name.clone(),
            namespace: full.metadata.namespace.clone(),
            ..ObjectMeta::default()
        };
        assert_eq!(admitted.metadata, expected_meta);

        let (full_spec, spec) = (full.spec.unwrap(), admitted.spec.unwrap());
        let pairs = full_spec.containers.iter().zip(&spec.containers).chain(
            full_spec
                .init_containers
                .iter()
                .flatten()
                .zip(spec.init_containers.iter().flatten()),
        );
        for (full, admitted) in pairs {
            assert_eq!(full.name, admitted.name);
            assert_eq!(full.env, admitted.env);
            assert_eq!(full.volume_mounts, admitted.volume_mounts);
        }
        assert_eq!(full_spec.containers.len(), spec.containers.len());
        let full_volumes: Vec<String> = full_spec
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(full_volumes, volumes);
    }

    /// A misrouted object of another kind still decodes, so the webhook can
    /// answer it with a warning rather than a 400.
    #[test]
    fn another_kind_decodes() {
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web"}]}}}
        });
        let admitted: AdmittedPod = serde_json::from_value(deployment).unwrap();
        assert_eq!(admitted.metadata.name.as_deref(), Some("web"));
        assert!(admitted.spec.unwrap().containers.is_empty());
    }

    #[test]
    fn a_pod_is_not_misrouted() {
        let request = crate::admission::decode_admission::<AdmittedPod>(REVIEW.as_bytes()).unwrap();
        assert!(misrouted(&request).is_none());
    }

    #[test]
    fn another_kind_is_admitted_with_a_warning() {
        let review = REVIEW.replacen(
            r#""kind": {"group": "", "version": "v1", "kind": "Pod"}"#,
            r#""kind": {"group": "apps", "version": "v1", "kind": "Deployment"}"#,
            1,
        );
        let request = crate::admission::decode_admission::<AdmittedPod>(review.as_bytes()).unwrap();
        let response = misrouted(&request).unwrap();
        assert!(response.allowed);
        assert!(response.patch.is_none());
        assert!(response.warnings.unwrap()[0].contains("apps/v1 Deployment"));
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_an_error() {
        let pod = serde_json::json!({"spec": {"containers": {"name": "web"}}});
        let err = serde_json::from_value::<AdmittedPod>(pod).unwrap_err();
        assert!(err.to_string().contains("expected a sequence"), "{err}");
    }
}
