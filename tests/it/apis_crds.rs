//! The CRD manifests: shape of what `keyhook crds` prints, and the chart's
//! `crds/` kept in sync with it.

use std::path::Path;

use keyhook::apis::crds::{crds, crds_yaml, file_name};
use serde_json::Value;

const CHART_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keyhook/files/crds");

fn as_json() -> Vec<Value> {
    crds()
        .expect("CRDs build")
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD serializes"))
        .collect()
}

#[test]
fn three_crds_serve_every_version_with_v1_as_storage() {
    let crds = as_json();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "externalsecrets.external-secrets.io",
            "secretstores.external-secrets.io",
            "clustersecretstores.external-secrets.io"
        ]
    );
    for crd in &crds {
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let summary: Vec<(&str, bool, bool, bool)> = versions
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap(),
                    v["served"].as_bool().unwrap(),
                    v["storage"].as_bool().unwrap(),
                    v["deprecated"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("v1alpha1", true, false, true),
                ("v1beta1", true, false, true),
                ("v1", true, true, false)
            ]
        );
        for v in &versions[..2] {
            let warning = v["deprecationWarning"].as_str().unwrap();
            assert!(
                warning.contains("deprecated") && warning.contains("external-secrets.io/v1"),
                "{warning}"
            );
        }
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "keyhook"
        );
    }
    assert_eq!(crds[0]["spec"]["scope"], "Namespaced");
    assert_eq!(crds[1]["spec"]["scope"], "Namespaced");
    assert_eq!(crds[2]["spec"]["scope"], "Cluster");
}

#[test]
fn conversion_goes_to_the_keyhook_service() {
    for crd in as_json() {
        assert_eq!(
            crd["spec"]["conversion"],
            serde_json::json!({
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"service": {"name": "keyhook", "namespace": "keyhook", "path": "/convert", "port": 443}},
                    "conversionReviewVersions": ["v1"]
                }
            })
        );
    }
}

#[test]
fn schemas_keep_unknown_fields_and_provider_blocks() {
    for crd in as_json() {
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert_eq!(
                spec["x-kubernetes-preserve-unknown-fields"], true,
                "{}",
                version["name"]
            );
            if let Some(provider) = spec["properties"].get("provider") {
                assert_eq!(provider["x-kubernetes-preserve-unknown-fields"], true);
                assert!(provider["properties"]["vault"].is_object());
            }
        }
    }
}

/// Fails when `charts/keyhook/files/crds/` differs from the generator. Regenerate
/// with `cargo run -- crds --out charts/keyhook/files/crds`, or
/// `KEYHOOK_BLESS=1 cargo test apis_crds`.
#[test]
fn chart_crds_match_the_generator() {
    let bless = std::env::var_os("KEYHOOK_BLESS").is_some();
    for crd in crds().expect("CRDs build") {
        let path = Path::new(CHART_CRDS).join(file_name(&crd));
        let expected = serde_saphyr::to_string(&crd).expect("CRD renders");
        if bless {
            std::fs::write(&path, &expected).expect("write chart CRD");
            continue;
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found == expected,
            "{} is out of date with the CRD generator; regenerate it with \
             `cargo run -- crds --out charts/keyhook/files/crds` \
             (or `KEYHOOK_BLESS=1 cargo test apis_crds`)",
            path.display()
        );
    }
}

#[test]
fn yaml_stream_holds_the_three_crds() {
    let yaml = crds_yaml().expect("CRDs render");
    let documents: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("valid YAML");
    assert_eq!(documents, as_json());
}
