//! The pod rewrite: a JSON patch from a pod, its [`PodRequest`] and the keys
//! of its managed Secret. Pure; the patch names Secret keys, never values.
//!
//! - `value: keyhook:…` becomes `valueFrom.secretKeyRef` in place (the path
//!   names `initContainers` or `containers`, whichever holds it);
//! - each property of an `env-from` key becomes one variable with a
//!   `secretKeyRef`, appended to every container that does not set it
//!   itself (as `envFrom` would let an explicit variable win). An
//!   `envFrom.secretRef` would also export the Secret's other keys — the
//!   pod's single values and file contents — to every container;
//! - files become one `secret` volume with `items` and a read-only mount in
//!   every container;
//! - `keyhook.io/injected: <hash>` marks the pod for reinvocation.

use std::collections::{BTreeMap, BTreeSet};

use super::pod::{AdmittedContainer, AdmittedPod};
use json_patch::Patch;
use serde_json::{Value, json};

use super::reference::{
    ContainerList, ENV_FROM_ANNOTATION, FILE_ANNOTATION_PREFIX, INJECTED_ANNOTATION,
    MOUNT_PATH_ANNOTATION, PodRequest, Reference, ReferenceError,
};

/// The name of the volume holding the files.
pub const VOLUME_NAME: &str = "keyhook-secrets";

/// The prefix of the Secret keys that hold the properties of one `env-from`
/// key; the rest of such a Secret key is the env var name.
pub fn env_from_prefix(reference: &Reference) -> String {
    format!(
        "env.{}.",
        &super::digest(reference.to_string().as_bytes())[..8]
    )
}

/// Escapes one JSON pointer token (RFC 6901).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Builds the patch that injects `request` from the Secret `secret_name`
/// whose data keys are `keys`, and marks the pod with `hash`.
pub fn build(
    pod: &AdmittedPod,
    request: &PodRequest,
    secret_name: &str,
    hash: &str,
    keys: &BTreeSet<String>,
) -> Result<Patch, ReferenceError> {
    let mut ops: Vec<Value> = Vec::new();
    let secret_ref = |key: &str| json!({"secretKeyRef": {"name": secret_name, "key": key}});

    for env in &request.env {
        ops.push(json!({
            "op": "replace",
            "path": format!("/spec/{}/{}/env/{}", env.list.field(), env.container, env.index),
            "value": {"name": env.name, "valueFrom": secret_ref(&env.reference.secret_key())},
        }));
    }

    let env_from = env_from_vars(request, keys)?;
    let spec = pod.spec.as_ref();
    let lists = [
        (
            ContainerList::Init,
            spec.and_then(|s| s.init_containers.as_deref()),
        ),
        (ContainerList::App, spec.map(|s| s.containers.as_slice())),
    ];

    if !request.files.is_empty() {
        let volumes = spec.and_then(|s| s.volumes.as_ref());
        if volumes.is_some_and(|v| v.iter().any(|v| v.name == VOLUME_NAME)) {
            return Err(ReferenceError::Annotation {
                annotation: format!("{FILE_ANNOTATION_PREFIX}*"),
                reason: format!("the pod already has a volume named `{VOLUME_NAME}`"),
            });
        }
        let items: Vec<Value> = request
            .files
            .iter()
            .map(|f| json!({"key": f.reference.secret_key(), "path": f.name}))
            .collect();
        let volume =
            json!({"name": VOLUME_NAME, "secret": {"secretName": secret_name, "items": items}});
        push_append(&mut ops, "/spec/volumes", volumes.is_some(), volume);
    }

    for (list, containers) in lists {
        for (c, container) in containers.into_iter().flatten().enumerate() {
            let base = format!("/spec/{}/{c}", list.field());
            let own: BTreeSet<&str> = container
                .env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect();
            for (name, key) in &env_from {
                // An explicit variable wins over env-from, as with envFrom.
                if own.contains(name.as_str()) {
                    continue;
                }
                let var = json!({"name": name, "valueFrom": secret_ref(key)});
                let exists = container.env.is_some() || ops_created(&ops, &format!("{base}/env"));
                push_append(&mut ops, &format!("{base}/env"), exists, var);
            }
            if !request.files.is_empty() {
                check_mount(list, container, &request.mount_path)?;
                let mount =
                    json!({"name": VOLUME_NAME, "mountPath": request.mount_path, "readOnly": true});
                push_append(
                    &mut ops,
                    &format!("{base}/volumeMounts"),
                    container.volume_mounts.is_some(),
                    mount,
                );
            }
        }
    }

    if pod.metadata.annotations.is_some() {
        ops.push(json!({
            "op": "add",
            "path": format!("/metadata/annotations/{}", token(INJECTED_ANNOTATION)),
            "value": hash,
        }));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: hash}}));
    }
    // Every operation above is a well-formed add or replace.
    serde_json::from_value(Value::Array(ops)).map_err(|e| ReferenceError::Annotation {
        annotation: INJECTED_ANNOTATION.into(),
        reason: format!("internal: patch did not serialize: {e}"),
    })
}

/// The env vars `env-from` adds to every container: name → Secret key.
fn env_from_vars(
    request: &PodRequest,
    keys: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, ReferenceError> {
    let mut vars: BTreeMap<String, (String, &Reference)> = BTreeMap::new();
    for reference in &request.env_from {
        let prefix = env_from_prefix(reference);
        for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
            let name = &key[prefix.len()..];
            if let Some((_, other)) = vars.get(name) {
                return Err(ReferenceError::Annotation {
                    annotation: ENV_FROM_ANNOTATION.into(),
                    reason: format!(
                        "keys `{other}` and `{reference}` both provide the variable `{name}`"
                    ),
                });
            }
            vars.insert(name.to_string(), (key.clone(), reference));
        }
    }
    Ok(vars.into_iter().map(|(n, (k, _))| (n, k)).collect())
}

fn check_mount(
    list: ContainerList,
    container: &AdmittedContainer,
    path: &str,
) -> Result<(), ReferenceError> {
    let taken = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == path);
    if taken {
        return Err(ReferenceError::Annotation {
            annotation: MOUNT_PATH_ANNOTATION.into(),
            reason: format!(
                "{} `{}` already mounts something at `{path}`; choose another directory",
                match list {
                    ContainerList::Init => "init container",
                    ContainerList::App => "container",
                },
                container.name
            ),
        });
    }
    Ok(())
}

/// Whether an earlier operation created the array at `path`.
fn ops_created(ops: &[Value], path: &str) -> bool {
    ops.iter().any(|op| op["path"] == path)
}

/// Appends `value` to the array at `path`, creating it when it is absent.
fn push_append(ops: &mut Vec<Value>, path: &str, exists: bool, value: Value) {
    if exists || ops_created(ops, path) {
        ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": value}));
    } else {
        ops.push(json!({"op": "add", "path": path, "value": [value]}));
    }
}
