//! The pod as the injector reads it from an admission review.
//!
//! The apiserver sends the whole pod: its `metadata.managedFields` (a tree
//! of every field's owner), its status, and every part of its spec. Decoding
//! all of it into k8s-openapi's `Pod` costs more than TLS and HTTP/2 do for
//! the request, so only the parts the injector reads are decoded
//! (`examples/decode_bench` prints the split). Everything else is skipped
//! while decoding (still checked to be JSON) and never allocated.
//!
//! The spec is decoded only for a pod that may ask for something
//! ([`may_ask`]): most pods a cluster admits ask for nothing, and their
//! answer needs only the metadata.
//!
//! The field names mirror k8s-openapi's, so code reads the same on either.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{EnvVar, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::core::GroupVersionKind;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_json::value::RawValue;

use super::reference::{ANNOTATION_PREFIX, VALUE_PREFIX};
use crate::admission::decode_naming_path;

/// An admitted pod: the parts of its metadata and of its spec that
/// injection reads or patches.
#[derive(Debug, Clone, Default)]
pub struct AdmittedPod {
    /// Name, namespace and annotations; the other fields are left empty.
    pub metadata: ObjectMeta,
    /// The spec, when the object has one and the pod [`may_ask`] for
    /// something; a pod that cannot ask keeps its spec undecoded.
    pub spec: Option<AdmittedPodSpec>,
}

impl<'de> Deserialize<'de> for AdmittedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default, with = "ReadMetadata")]
            metadata: ObjectMeta,
            #[serde(default)]
            spec: Option<Box<RawValue>>,
        }
        let Sent { metadata, spec } = Sent::deserialize(deserializer)?;
        let spec = match spec {
            Some(text) if may_ask(&metadata, text.get()) => {
                let spec = decode_naming_path(text.get(), "the spec");
                Some(spec.map_err(D::Error::custom)?)
            }
            _ => None,
        };
        Ok(Self { metadata, spec })
    }
}

/// Whether a pod may ask keyhook for anything: it has a `keyhook.io/`
/// annotation, or an env value starting `keyhook:` may be in its spec.
/// Without either, `PodRequest::from_pod` finds no request in it.
///
/// The spec is searched as the text it was sent as. JSON spells each of the
/// characters of `keyhook:` either as itself or as a `\u` escape, so text
/// holding neither `keyhook:` nor any `\u` holds no such value.
pub fn may_ask(metadata: &ObjectMeta, spec: &str) -> bool {
    let annotated = metadata
        .annotations
        .iter()
        .flatten()
        .any(|(key, _)| key.starts_with(ANNOTATION_PREFIX));
    annotated || spec.contains(VALUE_PREFIX) || spec.contains("\\u")
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
    use proptest::prelude::*;

    /// A pod that asks for nothing (no keyhook annotation or reference).
    const REVIEW: &str = include_str!("../../tests/fixtures/admission/pod-create-deployment.json");
    /// Pods that ask for injection, between them with init containers, many
    /// containers, env references, env-from and files.
    const ASKING: [&str; 5] = [
        include_str!("../../tests/fixtures/admission/pod-inject-demo.json"),
        include_str!("../../tests/fixtures/admission/pod-job-init-containers.json"),
        include_str!("../../tests/fixtures/admission/pod-many-containers.json"),
        include_str!("../../tests/fixtures/admission/pod-no-env.json"),
        include_str!("../../tests/fixtures/admission/pod-statefulset-files.json"),
    ];

    fn object(review: &str) -> serde_json::Value {
        let review: serde_json::Value = serde_json::from_str(review).unwrap();
        review["request"]["object"].clone()
    }

    /// Every field the injector reads agrees with k8s-openapi's full decode.
    fn assert_reads_what_the_full_pod_reads(review: &str) {
        let full: Pod = serde_json::from_value(object(review)).unwrap();
        let admitted: AdmittedPod = serde_json::from_str(&object(review).to_string()).unwrap();

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
        assert_eq!(
            full_spec.init_containers.map(|c| c.len()),
            spec.init_containers.map(|c| c.len())
        );
        let full_volumes: Option<Vec<String>> = full_spec
            .volumes
            .map(|v| v.into_iter().map(|v| v.name).collect());
        let volumes: Option<Vec<String>> = spec
            .volumes
            .map(|v| v.into_iter().map(|v| v.name).collect());
        assert_eq!(full_volumes, volumes);
    }

    #[test]
    fn a_pod_that_asks_reads_what_the_full_pod_reads() {
        for review in ASKING {
            assert_reads_what_the_full_pod_reads(review);
        }
    }

    /// The deployment's pod carries managedFields and owners, which are
    /// skipped; it asks for nothing, so its spec is left undecoded.
    #[test]
    fn a_pod_that_asks_nothing_keeps_only_its_metadata() {
        let full: Pod = serde_json::from_value(object(REVIEW)).unwrap();
        assert!(
            full.metadata.managed_fields.is_some(),
            "fixture has managedFields"
        );
        assert!(
            full.metadata.owner_references.is_some(),
            "fixture has owners"
        );
        let admitted: AdmittedPod = serde_json::from_value(object(REVIEW)).unwrap();
        assert_eq!(admitted.metadata.name, full.metadata.name);
        assert_eq!(admitted.metadata.annotations, full.metadata.annotations);
        assert!(admitted.metadata.managed_fields.is_none());
        assert!(admitted.spec.is_none());

        // The same pod with a keyhook annotation has its spec read.
        let mut asking = object(REVIEW);
        asking["metadata"]["annotations"]["keyhook.io/on-error"] = "allow".into();
        let admitted: AdmittedPod = serde_json::from_value(asking).unwrap();
        assert_eq!(admitted.spec.unwrap().containers[0].name, "app");
    }

    /// A misrouted object of another kind still decodes, so the webhook can
    /// answer it with a warning rather than a 400.
    #[test]
    fn another_kind_decodes() {
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"keyhook.io/store": "s"}},
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
    fn a_field_of_the_wrong_shape_is_named_when_the_pod_asks() {
        let pod = serde_json::json!({
            "metadata": {"annotations": {"keyhook.io/store": "vault"}},
            "spec": {"containers": {"name": "web"}},
        });
        let err = serde_json::from_value::<AdmittedPod>(pod).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("`containers`") && err.contains("expected a sequence"),
            "{err}"
        );

        // A pod that asks nothing is not keyhook's to check.
        let pod = serde_json::json!({"spec": {"containers": {"name": "web"}}});
        let admitted = serde_json::from_value::<AdmittedPod>(pod).unwrap();
        assert!(admitted.spec.is_none());
    }

    /// A reference spelled with `\u` escapes is still found.
    #[test]
    fn an_escaped_reference_is_read() {
        let text = r#"{"containers":[{"name":"c","env":[{"name":"PW","value":"\u006beyhook\u003adb#pw"}]}]}"#;
        let pod = format!(r#"{{"metadata":{{"name":"p"}},"spec":{text}}}"#);
        let admitted: AdmittedPod = serde_json::from_str(&pod).unwrap();
        let env = &admitted.spec.unwrap().containers[0].env;
        assert_eq!(
            env.as_ref().unwrap()[0].value.as_deref(),
            Some("keyhook:db#pw")
        );
    }

    /// JSON text of `value`, each character written as itself or, where
    /// `escape` says so, as a `\u` escape (JSON's two spellings of it).
    fn spelled(value: &str, escape: &[bool]) -> String {
        let mut text = String::from('"');
        for (i, c) in value.chars().enumerate() {
            let plain = serde_json::to_string(&c.to_string()).unwrap();
            if escape.get(i).copied().unwrap_or(false) || plain.len() > 3 {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    text.push_str(&format!("\\u{unit:04x}"));
                }
            } else {
                text.push_str(&plain[1..plain.len() - 1]);
            }
        }
        text.push('"');
        text
    }

    proptest! {
        /// Whenever a spec holds an env value starting `keyhook:`, however
        /// it is spelled, the pod is taken to ask and its spec is decoded.
        #[test]
        fn a_reference_is_never_missed(
            value in "(keyhook:)?[a-z:#@\"\\\\/ é\u{1F511}\n]{0,12}(keyhook:)?[a-z]{0,3}",
            escape in proptest::collection::vec(any::<bool>(), 0..24),
        ) {
            let spec = format!(
                r#"{{"containers":[{{"name":"c","env":[{{"name":"V","value":{}}}]}}]}}"#,
                spelled(&value, &escape)
            );
            let pod = format!(r#"{{"metadata":{{}},"spec":{spec}}}"#);
            let admitted: AdmittedPod = serde_json::from_str(&pod).unwrap();
            if value.starts_with(VALUE_PREFIX) {
                prop_assert!(may_ask(&admitted.metadata, &spec));
                let env = admitted.spec.unwrap().containers[0].env.clone().unwrap();
                prop_assert_eq!(env[0].value.as_deref(), Some(value.as_str()));
            }
        }
    }
}
