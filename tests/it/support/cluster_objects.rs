//! The objects of cluster-sized scenarios, shaped as the apiserver returns
//! them (from the recorded fixtures): namespaces, Secrets keyhook has no
//! business with, pods with and without injection, stores with their
//! credential Secrets, and the Secrets keyhook manages.
//!
//! Shared by the scale tests and `examples/scale_apiserver.rs`, which builds
//! it next to `fake_apiserver.rs`.

#![allow(dead_code)] // each user builds a part

use std::collections::BTreeMap;

use keyhook::injection::ManagedSecret;
use keyhook::providers::SecretValue;
use serde_json::{Value, json};

use super::fake_apiserver::fixture;

/// A unique uid for object `i` of a kind numbered `kind`.
fn uid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012}")
}

/// A Namespace with the label `team`.
pub fn namespace(name: &str, team: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": name, "uid": format!("ns-{name}"),
            "labels": {"team": team, "kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })
}

/// The `i`th TLS Secret of `namespace` that cert-manager issued for an app
/// (about 2.9 KB of JSON, managedFields, labels and annotations included).
pub fn unrelated_secret(namespace: &str, i: usize) -> Value {
    let mut secret = fixture("secret-unrelated-tls.json");
    let metadata = &mut secret["metadata"];
    metadata["name"] = format!("app-{i}-tls").into();
    metadata["namespace"] = namespace.into();
    metadata["uid"] = uid(1, i).into();
    secret
}

/// A running pod of `namespace`; with `injected` (the hash of its
/// references), one keyhook injected, reading the Secret `keyhook-<hash>`.
pub fn pod(namespace: &str, name: &str, i: usize, injected: Option<&str>) -> Value {
    let mut pod = fixture("pod-injected.json");
    let metadata = &mut pod["metadata"];
    metadata["name"] = name.into();
    metadata["namespace"] = namespace.into();
    metadata["uid"] = uid(2, i).into();
    match injected {
        Some(hash) => {
            metadata["annotations"]["keyhook.io/injected"] = hash.into();
            pod["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] =
                format!("keyhook-{hash}").into();
        }
        None => {
            metadata["labels"]
                .as_object_mut()
                .unwrap()
                .remove("keyhook.io/inject");
            metadata.as_object_mut().unwrap().remove("annotations");
            pod["spec"]["containers"][0]["env"][0] =
                json!({"name": "DB_PASSWORD", "value": "not-a-secret"});
        }
    }
    pod
}

/// A Secret holding a backend credential under `token`.
pub fn credential(namespace: &str, name: &str, token: &str) -> Value {
    use base64::Engine;
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("cred-{namespace}-{name}")},
        "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)}
    })
}

/// A ClusterSecretStore of the `fake` provider holding `app/config`.
pub fn fake_cluster_store(name: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": name, "uid": format!("store-{name}"), "generation": 1},
        "spec": {"provider": {"fake": {"data": [
            {"key": "app/config", "value": "{\"password\":\"p4ss\",\"user\":\"app\"}"}
        ]}}}
    })
}

/// A ClusterSecretStore of the `vault` provider whose token is in the
/// Secret `credential` (namespace `keyhook`).
pub fn vault_cluster_store(name: &str, credential: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": name, "uid": format!("store-{name}"), "generation": 1},
        "spec": {"provider": {"vault": {
            "server": "https://vault.example.com:8200", "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": credential, "namespace": "keyhook", "key": "token"}}
        }}}
    })
}

/// A ClusterSecretStore of the `kubernetes` provider reading namespace
/// `remote` of the apiserver at `url` with the bearer token in the Secret
/// `credential` (namespace `keyhook`).
pub fn kubernetes_cluster_store(name: &str, url: &str, credential: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": name, "uid": format!("store-{name}"), "generation": 1},
        "spec": {"provider": {"kubernetes": {
            "remoteNamespace": "remote",
            "server": {"url": url},
            "auth": {"token": {"bearerToken": {"name": credential, "namespace": "keyhook", "key": "token"}}}
        }}}
    })
}

/// The Secret keyhook writes for `secret` (values are placeholders), as the
/// apiserver returns it.
pub fn managed_secret(secret: &ManagedSecret, i: usize) -> Value {
    let data: BTreeMap<String, SecretValue> = secret
        .spec
        .values
        .iter()
        .map(|r| (r.secret_key(), SecretValue::from("v")))
        .collect();
    let mut object =
        serde_json::to_value(keyhook::injection::managed::manifest(secret, &data)).unwrap();
    object["metadata"]["uid"] = uid(3, i).into();
    object
}
