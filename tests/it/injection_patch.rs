//! Pods exactly as the apiserver sends them (from Deployments, Jobs and
//! StatefulSets; init containers; existing env, envFrom and volumes; no env;
//! many containers) go through the injector with the fake provider of
//! `examples/stores.yaml`; keyhook's patch, applied with `json-patch`, must
//! give the expected pod in `tests/fixtures/admission/<name>.patched.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use keyhook::admission::decode_admission;
use keyhook::clock::SystemClock;
use keyhook::injection::{FileSecrets, ManagedSecrets, PodInjector};
use keyhook::metrics::PodInjectionMetrics;
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers};
use serde_json::Value;
use tokio::time::Instant;

const FIXTURES: &[&str] = &[
    "pod-inject-demo",
    "pod-job-init-containers",
    "pod-statefulset-files",
    "pod-many-containers",
    "pod-no-env",
];

/// Every value in examples/stores.yaml; none may appear in a patch.
const VALUES: &[&str] = &[
    "demo-db-password",
    "checkout\"",
    "MIIBdemo",
    "demo-api-token",
    "checkout-v2,fast-path",
    "sentry.example.com/1",
    "eu-west-1",
    "MIIBledger",
    "demo-ledger-key",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn injector(secrets_dir: &Path) -> PodInjector {
    let catalog = Arc::new(FileCatalog::from_file(&root().join("examples/stores.yaml")).unwrap());
    let providers = Providers::new(
        ProviderSettings::default(),
        catalog,
        Arc::new(ProviderMetrics::unregistered()),
    );
    PodInjector::new(
        Arc::new(providers),
        Arc::new(FileSecrets::new(secrets_dir)),
        Arc::new(SystemClock),
        PodInjectionMetrics::default(),
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(8)
}

#[tokio::test]
async fn each_pod_is_patched_into_the_expected_pod() {
    let dir = tempfile::tempdir().unwrap();
    let injector = injector(dir.path());
    for name in FIXTURES {
        let review = read(format!("tests/fixtures/admission/{name}.json"));
        let request = decode_admission(review.as_bytes()).unwrap();
        let response = injector.admit(&request, deadline()).await;
        assert!(response.allowed, "{name}: {:?}", response.result.message);
        assert_eq!(response.uid, request.uid);
        let patch_bytes = response.patch.clone().expect("a patch");
        let patch_text = String::from_utf8(patch_bytes.clone()).unwrap();
        for value in VALUES {
            assert!(
                !patch_text.contains(value),
                "{name}: the patch contains a value"
            );
        }
        let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
        let mut pod: Value =
            serde_json::from_str::<Value>(&review).unwrap()["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Value = serde_json::from_str(&read(format!(
            "tests/fixtures/admission/{name}.patched.json"
        )))
        .unwrap();
        assert_eq!(
            pod, expected,
            "{name}: patched pod differs from the expected one"
        );

        // Reinvocation: the patched pod gets no second patch.
        let mut again: Value = serde_json::from_str(&review).unwrap();
        again["request"]["object"] = pod.clone();
        let request = decode_admission(again.to_string().as_bytes()).unwrap();
        let response = injector.admit(&request, deadline()).await;
        assert!(response.allowed);
        assert!(
            response.patch.is_none(),
            "{name}: reinvocation patched again"
        );
    }
}

#[tokio::test]
async fn init_container_references_are_patched_under_init_containers() {
    let dir = tempfile::tempdir().unwrap();
    let injector = injector(dir.path());
    let review = read("tests/fixtures/admission/pod-job-init-containers.json");
    let response = injector
        .admit(&decode_admission(review.as_bytes()).unwrap(), deadline())
        .await;
    let patch: Value = serde_json::from_slice(&response.patch.unwrap()).unwrap();
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/spec/initContainers/0/env/1"), "{paths:?}");
    assert!(!paths.contains(&"/spec/containers/0/env/1"), "{paths:?}");
    // The container without env gets its env list created.
    assert!(paths.contains(&"/spec/containers/0/env"), "{paths:?}");
}

#[tokio::test]
async fn the_secret_file_holds_the_values_under_the_referenced_keys() {
    let dir = tempfile::tempdir().unwrap();
    let injector = injector(dir.path());
    let review = read("tests/fixtures/admission/pod-inject-demo.json");
    let response = injector
        .admit(&decode_admission(review.as_bytes()).unwrap(), deadline())
        .await;
    let mut pod: Value =
        serde_json::from_str::<Value>(&review).unwrap()["request"]["object"].clone();
    let patch: json_patch::Patch = serde_json::from_slice(&response.patch.unwrap()).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();

    let secret_name = pod["spec"]["volumes"][1]["secret"]["secretName"]
        .as_str()
        .unwrap()
        .to_string();
    let path = dir.path().join("shop").join(format!("{secret_name}.yaml"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    let secret: Secret = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "keyhook");
    let annotations = secret.metadata.annotations.clone().unwrap();
    assert!(annotations["keyhook.io/references"].contains("prod/db"));
    assert!(!annotations["keyhook.io/references"].contains("demo-db-password"));
    assert!(annotations.contains_key("keyhook.io/fetched-at"));
    let data: BTreeMap<String, String> = secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let key_of = |var: &str| {
        env.iter().find(|e| e["name"] == var).unwrap()["valueFrom"]["secretKeyRef"]["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(data[&key_of("DB_PASSWORD")], "demo-db-password");
    assert_eq!(data[&key_of("DB_USER")], "checkout");
    let file_key = pod["spec"]["volumes"][1]["secret"]["items"][0]["key"]
        .as_str()
        .unwrap();
    assert!(data[file_key].starts_with("-----BEGIN CERTIFICATE-----"));
    // The manifest is what `kubectl apply` would take: base64 data.
    let text = std::fs::read_to_string(&path).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode("demo-db-password");
    assert!(text.contains(&encoded));

    // Read back through the backend: the record matches.
    let secrets = FileSecrets::new(dir.path());
    let record = secrets.get("shop", &secret_name).await.unwrap().unwrap();
    assert_eq!(record.keys.len(), 3);
}
