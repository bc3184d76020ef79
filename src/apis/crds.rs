//! The three `CustomResourceDefinition`s, as `keyhook crds` prints them and
//! the chart ships them.
//!
//! Each CRD serves `v1alpha1`, `v1beta1` (both deprecated, with a warning) and
//! `v1` (storage), converts through keyhook's `/convert` webhook, and carries
//! `app.kubernetes.io/part-of=keyhook`, the label the cert controller uses to
//! find the CRDs whose `caBundle` it injects. Every object in the schemas
//! preserves unknown fields, so provider blocks and fields keyhook does not
//! model are never pruned.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, ServiceReference, WebhookClientConfig,
    WebhookConversion,
};
use kube::core::CustomResourceExt;
use kube::core::crd::{MergeError, merge_crds};
use serde_json::Value;

use super::{Version, v1, v1alpha1, v1beta1};

/// Label that marks the CRDs as keyhook's.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "keyhook");

/// Where the apiserver sends ConversionReviews.
pub const CONVERSION_SERVICE: (&str, &str) = ("keyhook", "keyhook");
/// Path of the conversion webhook.
pub const CONVERSION_PATH: &str = "/convert";
/// Service port of the conversion webhook.
pub const CONVERSION_PORT: i32 = 443;

/// Why the CRDs could not be built or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdError {
    /// The per-version CRDs do not merge (a programming error in the types).
    #[error("merging the versions of {kind}: {source}")]
    Merge {
        /// The kind whose versions did not merge.
        kind: &'static str,
        /// What `merge_crds` reported.
        source: MergeError,
    },
    /// A CRD did not survive a round trip through JSON.
    #[error("CRD {kind}: {source}")]
    Json {
        /// The kind concerned.
        kind: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// Rendering YAML failed.
    #[error("rendering the CRDs as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// The CRDs of `ExternalSecret`, `SecretStore` and `ClusterSecretStore`, in
/// that order.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, CrdError> {
    [
        (
            "ExternalSecret",
            vec![
                v1alpha1::ExternalSecret::crd(),
                v1beta1::ExternalSecret::crd(),
                v1::ExternalSecret::crd(),
            ],
        ),
        (
            "SecretStore",
            vec![
                v1alpha1::SecretStore::crd(),
                v1beta1::SecretStore::crd(),
                v1::SecretStore::crd(),
            ],
        ),
        (
            "ClusterSecretStore",
            vec![
                v1alpha1::ClusterSecretStore::crd(),
                v1beta1::ClusterSecretStore::crd(),
                v1::ClusterSecretStore::crd(),
            ],
        ),
    ]
    .into_iter()
    .map(|(kind, versions)| {
        let merged = merge_crds(versions, Version::V1.as_str())
            .map_err(|source| CrdError::Merge { kind, source })?;
        finish(kind, merged)
    })
    .collect()
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, CrdError> {
    Ok(serde_saphyr::to_string_multiple(&crds()?)?)
}

/// The file name the chart uses for a CRD, e.g. `externalsecrets.external-secrets.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"))
}

fn finish(
    kind: &'static str,
    mut crd: CustomResourceDefinition,
) -> Result<CustomResourceDefinition, CrdError> {
    crd.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(PART_OF_LABEL.0.to_owned(), PART_OF_LABEL.1.to_owned());
    // Oldest first, as upstream lists them; `merge_crds` puts storage first.
    crd.spec.versions.sort_by_key(|v| {
        Version::ALL
            .iter()
            .position(|known| known.as_str() == v.name)
    });
    for version in &mut crd.spec.versions {
        if version.name != Version::V1.as_str() {
            version.deprecated = Some(true);
            version.deprecation_warning = Some(format!(
                "external-secrets.io/{} {kind} is deprecated; use external-secrets.io/v1",
                version.name
            ));
        }
    }
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "Webhook".to_owned(),
        webhook: Some(WebhookConversion {
            client_config: Some(WebhookClientConfig {
                ca_bundle: None,
                service: Some(ServiceReference {
                    name: CONVERSION_SERVICE.0.to_owned(),
                    namespace: CONVERSION_SERVICE.1.to_owned(),
                    path: Some(CONVERSION_PATH.to_owned()),
                    port: Some(CONVERSION_PORT),
                }),
                url: None,
            }),
            conversion_review_versions: vec!["v1".to_owned()],
        }),
    });
    // Schemas are edited as JSON: the typed schema props are deeply nested
    // options, and the edit is one recursive rule.
    let mut json = serde_json::to_value(&crd).map_err(|source| CrdError::Json { kind, source })?;
    if let Some(Value::Array(versions)) = json.pointer_mut("/spec/versions") {
        for version in versions {
            // kube-derive requires `spec`; upstream's schemas do not, and the
            // webhook answers a missing one naming what it lacks.
            if let Some(Value::Array(required)) =
                version.pointer_mut("/schema/openAPIV3Schema/required")
            {
                required.retain(|field| field != "spec");
            }
            for part in ["spec", "status"] {
                let path = format!("/schema/openAPIV3Schema/properties/{part}");
                if let Some(schema) = version.pointer_mut(&path) {
                    preserve_unknown_fields(schema);
                }
            }
        }
    }
    serde_json::from_value(json).map_err(|source| CrdError::Json { kind, source })
}

/// Marks every object schema below `schema` (itself included) with
/// `x-kubernetes-preserve-unknown-fields: true`.
fn preserve_unknown_fields(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if map.get("type").and_then(Value::as_str) == Some("object") {
        // `additionalProperties` (maps) and preserve-unknown-fields exclude
        // each other in a structural schema.
        if !map.contains_key("additionalProperties") {
            map.insert(
                "x-kubernetes-preserve-unknown-fields".to_owned(),
                Value::Bool(true),
            );
        }
    }
    for key in ["properties"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(preserve_unknown_fields);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            preserve_unknown_fields(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(preserve_unknown_fields);
        }
    }
}
