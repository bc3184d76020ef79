//! Property: for arbitrary pods and references, keyhook's patch applies
//! cleanly, a reinvocation on the patched pod patches nothing, no `keyhook:`
//! value is left, and the serialized patch never contains a secret value.

use std::sync::Arc;
use std::time::Duration;

use keyhook::admission::decode_admission;
use keyhook::clock::SystemClock;
use keyhook::injection::{FileSecrets, PodInjector};
use keyhook::metrics::PodInjectionMetrics;
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::providers::{FileCatalog, ProviderSettings, Providers};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;

const KEYS: &[&str] = &["prod/db", "a/b", "x"];
const PROPERTIES: &[&str] = &["p", "user-name", "1st"];

#[derive(Debug, Clone)]
struct Ref {
    key: usize,
    property: Option<usize>,
    version: bool,
}

impl Ref {
    fn text(&self) -> String {
        let mut text = KEYS[self.key].to_string();
        if let Some(p) = self.property {
            text.push('#');
            text.push_str(PROPERTIES[p]);
        }
        if self.version {
            text.push_str("@1");
        }
        text
    }
}

fn reference() -> impl Strategy<Value = Ref> {
    (
        0..KEYS.len(),
        proptest::option::of(0..PROPERTIES.len()),
        any::<bool>(),
    )
        .prop_map(|(key, property, version)| Ref {
            key,
            property,
            version,
        })
}

/// One env entry: a plain value, a reference, or a fieldRef.
fn env_var() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|v| json!({"value": v})),
        reference().prop_map(|r| json!({"value": format!("keyhook:{}", r.text())})),
        Just(json!({"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}})),
        Just(json!({"value": "p-explicit"})),
    ]
}

fn container(prefix: &'static str) -> impl Strategy<Value = (Option<Vec<Value>>, bool)> {
    let _ = prefix;
    (
        proptest::option::of(proptest::collection::vec(env_var(), 0..4)),
        any::<bool>(),
    )
}

#[derive(Debug, Clone)]
struct Case {
    init: Vec<(Option<Vec<Value>>, bool)>,
    apps: Vec<(Option<Vec<Value>>, bool)>,
    env_from: Option<usize>,
    files: Vec<Ref>,
    has_volumes: bool,
    values: Vec<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(container("init"), 0..3),
        proptest::collection::vec(container("app"), 1..4),
        proptest::option::of(0..KEYS.len()),
        proptest::collection::vec(reference(), 0..3),
        any::<bool>(),
        // One value per (key, version, property): 3 × 2 × 3.
        proptest::collection::vec("[A-Za-z0-9]{12,20}", 18),
    )
        .prop_map(|(init, apps, env_from, files, has_volumes, values)| Case {
            init,
            apps,
            env_from,
            files,
            has_volumes,
            values: values.into_iter().map(|v| format!("SV{v}")).collect(),
        })
}

fn stores_yaml(values: &[String]) -> String {
    let mut data = Vec::new();
    let mut i = 0;
    for key in KEYS {
        for version in ["", "1"] {
            let object: serde_json::Map<String, Value> = PROPERTIES
                .iter()
                .map(|p| {
                    let v = values[i].clone();
                    i += 1;
                    (p.to_string(), Value::String(v))
                })
                .collect();
            data.push(
                json!({"key": key, "version": version, "value": Value::Object(object).to_string()}),
            );
        }
    }
    let store = json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": "s", "namespace": "shop"},
        "spec": {"provider": {"fake": {"data": data}}},
    });
    // JSON is YAML.
    store.to_string()
}

fn pod(case: &Case) -> Value {
    let make = |list: &[(Option<Vec<Value>>, bool)], prefix: &str| -> Vec<Value> {
        list.iter()
            .enumerate()
            .map(|(c, (env, mounts))| {
                let mut container =
                    json!({"name": format!("{prefix}{c}"), "image": "busybox:1.36"});
                if let Some(env) = env {
                    let env: Vec<Value> = env
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            let mut e = e.clone();
                            let name = if e["value"] == "p-explicit" {
                                "p".to_string()
                            } else {
                                format!("VAR{i}")
                            };
                            e["name"] = name.into();
                            e
                        })
                        .collect();
                    container["env"] = env.into();
                }
                if *mounts {
                    container["volumeMounts"] = json!([{"name": "cache", "mountPath": "/cache"}]);
                }
                container
            })
            .collect()
    };
    let mut annotations = json!({"keyhook.io/store": "s"});
    if let Some(k) = case.env_from {
        annotations["keyhook.io/env-from"] = KEYS[k].into();
    }
    for (i, f) in case.files.iter().enumerate() {
        annotations[format!("keyhook.io/file.f{i}")] = f.text().into();
    }
    let mut spec = json!({"containers": make(&case.apps, "app")});
    if !case.init.is_empty() {
        spec["initContainers"] = make(&case.init, "init").into();
    }
    if case.has_volumes {
        spec["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
    }
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"generateName": "w-", "namespace": "shop", "labels": {"keyhook.io/inject": "true"}, "annotations": annotations},
        "spec": spec,
    })
}

fn review(pod: &Value) -> String {
    json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "11111111-2222-4333-8444-555555555555",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "dryRun": false,
        }
    })
    .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn patches_apply_are_idempotent_and_hold_no_value(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let catalog = Arc::new(FileCatalog::from_yaml(&stores_yaml(&case.values)).unwrap());
            let providers = Providers::new(ProviderSettings { qps: 1e6, burst: 10_000, ..Default::default() }, catalog, Arc::new(ProviderMetrics::unregistered()));
            let injector = PodInjector::new(Arc::new(providers), Arc::new(FileSecrets::new(dir.path())), Arc::new(SystemClock), PodInjectionMetrics::default());
            let deadline = || Instant::now() + Duration::from_secs(8);

            let mut pod = pod(&case);
            let request = decode_admission(review(&pod).as_bytes()).unwrap();
            let response = injector.admit(&request, deadline()).await;
            prop_assert!(response.allowed, "denied: {}", response.result.message);
            let Some(bytes) = response.patch else {
                // Nothing referenced: nothing to patch.
                prop_assert!(case.files.is_empty() && case.env_from.is_none());
                return Ok(());
            };
            let text = String::from_utf8(bytes.clone()).unwrap();
            for value in &case.values {
                prop_assert!(!text.contains(value.as_str()), "the patch contains a value");
            }
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut pod, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!pod.to_string().contains("keyhook:"), "a reference is left: {pod}");

            let again = injector.admit(&decode_admission(review(&pod).as_bytes()).unwrap(), deadline()).await;
            prop_assert!(again.allowed);
            prop_assert!(again.patch.is_none(), "reinvocation patched again");
            Ok(())
        })?;
    }
}
