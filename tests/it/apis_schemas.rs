//! keyhook's CRD schemas as the kube-apiserver applies them (pruning,
//! defaults, enums, required fields, CEL rules): every fixture (each written
//! to upstream's schemas) is stored as written, and whatever keyhook's
//! conversion emits is a valid object of the version it was converted to.

use std::path::{Path, PathBuf};

use keyhook::apis::{Version, convert_object, crds};
use serde_json::{Value, json};

use crate::support::schema::admit;

/// keyhook's `openAPIV3Schema` for `kind` in `version`.
pub fn keyhook_schema(kind: &str, version: Version) -> Value {
    let crds = crds().unwrap();
    let crd = crds
        .iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version.as_str())
        .unwrap();
    serde_json::to_value(
        served
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The path of every fixture under `tests/fixtures/apis`, in order.
pub fn fixture_paths() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apis");
    let mut paths: Vec<PathBuf> = ["v1alpha1", "v1beta1", "v1"]
        .iter()
        .flat_map(|v| std::fs::read_dir(root.join(v)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() > 10, "fixtures missing: {}", root.display());
    paths
}

/// Every fixture under `tests/fixtures/apis`, parsed, with its path.
pub fn fixtures() -> Vec<(PathBuf, Value)> {
    fixture_paths()
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, value)
        })
        .collect()
}

pub fn version_of(object: &Value) -> Version {
    Version::from_api_version(object["apiVersion"].as_str().unwrap()).unwrap()
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap()
}

#[test]
fn every_fixture_is_stored_as_written_by_keyhooks_crds() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 20, "{} fixtures", fixtures.len());
    for (path, object) in fixtures {
        let schema = keyhook_schema(kind_of(&object), version_of(&object));
        let admitted = admit(&schema, &object)
            .unwrap_or_else(|errors| panic!("{} refused: {errors:#?}", path.display()));
        assert!(
            admitted.pruned.is_empty(),
            "{}: {:?}",
            path.display(),
            admitted.pruned
        );
    }
}

#[test]
fn what_conversion_emits_is_a_valid_object_of_the_target_version() {
    for (path, object) in fixtures() {
        let stored = admit(
            &keyhook_schema(kind_of(&object), version_of(&object)),
            &object,
        )
        .unwrap()
        .stored;
        for to in Version::ALL {
            let converted = convert_object(stored.clone(), to).unwrap();
            let admitted =
                admit(&keyhook_schema(kind_of(&object), to), &converted).unwrap_or_else(|errors| {
                    panic!(
                        "{} as {to} refused: {errors:#?}\n{converted:#}",
                        path.display()
                    )
                });
            assert!(
                admitted.pruned.is_empty(),
                "{} as {to}: {:?}",
                path.display(),
                admitted.pruned
            );
        }
    }
}

#[test]
fn upstreams_defaults_apply() {
    let stored = |path: &str| {
        let (_, object) = fixtures()
            .into_iter()
            .find(|(p, _)| p.ends_with(path))
            .unwrap();
        admit(
            &keyhook_schema(kind_of(&object), version_of(&object)),
            &object,
        )
        .unwrap()
        .stored
    };
    let ldap = stored("v1beta1/secretstore-vault-ldap.yaml");
    assert_eq!(
        ldap["spec"]["provider"]["vault"]["auth"]["ldap"]["path"],
        "ldap"
    );
    let userpass = stored("v1/secretstore-vault-userpass.yaml");
    assert_eq!(
        userpass["spec"]["provider"]["vault"]["auth"]["userPass"]["path"],
        "userpass"
    );
    // v1beta1 defaults a remote reference's strategies; v1 does not.
    let beta = stored("v1beta1/externalsecret-find-rewrite.yaml");
    assert_eq!(
        beta["spec"]["dataFrom"][1]["find"]["conversionStrategy"],
        "Default"
    );
    assert_eq!(beta["spec"]["refreshInterval"], "10m");
    let v1 = stored("v1/externalsecret-manifest-target.yaml");
    assert!(
        v1["spec"]["data"][0]["remoteRef"]
            .get("conversionStrategy")
            .is_none()
    );
    assert_eq!(
        v1["spec"]["target"]["template"]["templateFrom"][1]["target"],
        "spec.storage"
    );
}

#[test]
fn what_upstream_refuses_keyhook_refuses_too() {
    let cases = [
        (
            json!({"target": {"creationPolicy": "Sometimes"}}),
            "spec.target.creationPolicy: Unsupported value",
        ),
        (
            json!({"data": [{"remoteRef": {"key": "k"}}]}),
            "spec.data[0].secretKey: Required value",
        ),
        (
            json!({"dataFrom": [{"sourceRef": {"generatorRef": {"kind": "Uuid", "name": "u"}}}]}),
            "spec.dataFrom[0].sourceRef.generatorRef.kind: Unsupported value: \"Uuid\"",
        ),
        (
            json!({"data": [{"secretKey": "has space", "remoteRef": {"key": "k"}}]}),
            "spec.data[0].secretKey: should match",
        ),
    ];
    for (spec, expected) in cases {
        let object = json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "x"}, "spec": spec});
        let errors = admit(&keyhook_schema("ExternalSecret", Version::V1), &object).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{errors:?} lacks {expected}"
        );
    }
    let two_providers = json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": {"name": "x"},
        "spec": {"provider": {"fake": {"data": []}, "gcpsm": {}}}});
    let errors = admit(&keyhook_schema("SecretStore", Version::V1), &two_providers).unwrap_err();
    assert_eq!(errors, ["spec.provider: maxProperties 1"]);
}

#[test]
fn an_object_without_spec_is_stored() {
    for kind in ["ExternalSecret", "SecretStore", "ClusterSecretStore"] {
        for version in Version::ALL {
            let object = json!({"apiVersion": version.api_version(), "kind": kind, "metadata": {"name": "bare"}});
            let admitted = admit(&keyhook_schema(kind, version), &object);
            assert!(admitted.is_ok(), "{kind} {version}: {admitted:?}");
        }
    }
}
