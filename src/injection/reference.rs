//! What a pod asks for: the `keyhook.io/*` annotations and the
//! `keyhook:<key>[#<property>][@<version>]` env values, parsed into a
//! [`PodRequest`] without any I/O.

use std::{collections::BTreeMap, fmt};

use super::pod::{AdmittedContainer, AdmittedPod};
use serde::{Deserialize, Serialize};

use crate::providers::{RemoteRef, StoreKind, StoreRef};

/// The prefix of every annotation keyhook reads or writes.
pub const ANNOTATION_PREFIX: &str = "keyhook.io/";
/// The opt-in label; the webhook's `objectSelector` matches it.
pub const INJECT_LABEL: &str = "keyhook.io/inject";
/// A SecretStore in the pod's namespace.
pub const STORE_ANNOTATION: &str = "keyhook.io/store";
/// A ClusterSecretStore that admits the pod's namespace.
pub const CLUSTER_STORE_ANNOTATION: &str = "keyhook.io/cluster-store";
/// Comma-separated keys whose every property becomes an env var.
pub const ENV_FROM_ANNOTATION: &str = "keyhook.io/env-from";
/// Prefix of the file annotations: `keyhook.io/file.<name>: <reference>`.
pub const FILE_ANNOTATION_PREFIX: &str = "keyhook.io/file.";
/// Overrides the directory the files are mounted in.
pub const MOUNT_PATH_ANNOTATION: &str = "keyhook.io/mount-path";
/// `allow`: admit the pod unchanged (with a warning) when injection fails.
pub const ON_ERROR_ANNOTATION: &str = "keyhook.io/on-error";
/// Set on an injected pod: the hash of what was injected.
pub const INJECTED_ANNOTATION: &str = "keyhook.io/injected";
/// Where files are mounted unless `keyhook.io/mount-path` says otherwise.
pub const DEFAULT_MOUNT_PATH: &str = "/var/run/secrets/keyhook";
/// The prefix that marks an env value as a reference.
pub const VALUE_PREFIX: &str = "keyhook:";

/// Why a pod's request cannot be understood. Each message names the place
/// (container and variable, or annotation) and what is wrong; the text of a
/// reference is quoted, never a fetched value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// An env value `keyhook:…` does not parse.
    #[error("{container_kind} `{container}`, env `{variable}`: {reason}")]
    EnvValue {
        /// `container` or `init container`.
        container_kind: &'static str,
        /// The container's name.
        container: String,
        /// The variable's name.
        variable: String,
        /// What is wrong.
        reason: String,
    },
    /// An annotation is malformed or contradicts another.
    #[error("annotation `{annotation}`: {reason}")]
    Annotation {
        /// The annotation's key.
        annotation: String,
        /// What is wrong.
        reason: String,
    },
}

/// One reference: a key of the store, optionally one property and a version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// The key (path, name, item title …).
    pub key: String,
    /// One property of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A pinned version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Reference {
    /// Parses `<key>[#<property>][@<version>]` (without the `keyhook:` prefix).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (rest, version) = match text.rsplit_once('@') {
            Some((rest, version)) => (rest, Some(version)),
            None => (text, None),
        };
        let (key, property) = match rest.split_once('#') {
            Some((key, property)) => (key, Some(property)),
            None => (rest, None),
        };
        if key.is_empty() {
            return Err(format!(
                "reference `{text}` has no key (expected <key>[#<property>][@<version>])"
            ));
        }
        if property.is_some_and(str::is_empty) {
            return Err(format!(
                "reference `{text}` has an empty property after `#`"
            ));
        }
        if version.is_some_and(str::is_empty) {
            return Err(format!("reference `{text}` has an empty version after `@`"));
        }
        if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("reference `{text}`: key contains {c:?}"));
        }
        Ok(Self {
            key: key.into(),
            property: property.map(Into::into),
            version: version.map(Into::into),
        })
    }

    /// The provider layer's form of this reference.
    pub fn remote(&self) -> RemoteRef {
        RemoteRef {
            key: self.key.clone(),
            property: self.property.clone(),
            version: self.version.clone(),
        }
    }

    /// The data key under which this value is kept in the managed Secret:
    /// readable, valid (`[-._a-zA-Z0-9]+`), and unique per reference.
    pub fn secret_key(&self) -> String {
        let readable: String = self
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        let readable = readable.trim_matches('.');
        let readable: String = readable.chars().take(200).collect();
        format!(
            "{readable}-{}",
            &super::digest(self.to_string().as_bytes())[..8]
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(property) = &self.property {
            write!(f, "#{property}")?;
        }
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

/// Everything a managed Secret holds, by reference: the identity of the
/// Secret (its name is a hash of this) and what refresh re-fetches. Never
/// holds a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    /// `SecretStore` or `ClusterSecretStore`.
    #[serde(with = "store_kind")]
    pub store_kind: StoreKind,
    /// The store's name.
    pub store: String,
    /// Single values, sorted and deduplicated.
    pub values: Vec<Reference>,
    /// Keys whose every property is wanted (`env-from`), sorted and deduplicated.
    pub maps: Vec<Reference>,
}

impl SecretSpec {
    /// The store reference for the provider layer.
    pub fn store_ref(&self) -> StoreRef {
        StoreRef {
            kind: self.store_kind,
            name: self.store.clone(),
        }
    }

    /// The hash naming the Secret: over store and sorted references.
    pub fn hash(&self) -> String {
        // Serializing a struct of strings and vectors cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        super::digest(&canonical)[..16].to_string()
    }

    /// `keyhook-<hash>`.
    pub fn secret_name(&self) -> String {
        format!("keyhook-{}", self.hash())
    }
}

/// `StoreKind` as its kind name.
mod store_kind {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::providers::StoreKind;

    pub fn serialize<S: Serializer>(kind: &StoreKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StoreKind, D::Error> {
        let kind = String::deserialize(d)?;
        StoreKind::from_kind(&kind)
            .ok_or_else(|| D::Error::custom(format!("unknown store kind `{kind}`")))
    }
}

/// Which list of a pod spec a container is in; patch paths differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    App,
}

impl ContainerList {
    /// The JSON field name in a pod spec.
    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Init => "initContainers",
            ContainerList::App => "containers",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ContainerList::Init => "init container",
            ContainerList::App => "container",
        }
    }
}

/// An env var whose value is a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvReference {
    /// Which container list.
    pub list: ContainerList,
    /// Index of the container in that list.
    pub container: usize,
    /// Index of the variable in the container's `env`.
    pub index: usize,
    /// The variable's name.
    pub name: String,
    /// What it refers to.
    pub reference: Reference,
}

/// A file to mount: `keyhook.io/file.<name>: <reference>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// The file name inside the mount directory.
    pub name: String,
    /// What it holds.
    pub reference: Reference,
}

/// Whether a failed injection denies the pod or admits it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Deny the pod (the default).
    #[default]
    Deny,
    /// Admit the pod unchanged, with an admission warning.
    Allow,
}

/// What one pod asks keyhook to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRequest {
    /// What the managed Secret holds.
    pub spec: SecretSpec,
    /// Env values to rewrite.
    pub env: Vec<EnvReference>,
    /// Keys whose properties become env vars, in annotation order.
    pub env_from: Vec<Reference>,
    /// Files to mount.
    pub files: Vec<FileReference>,
    /// Directory the files are mounted in.
    pub mount_path: String,
    /// What to do when injection fails.
    pub on_error: OnError,
}

impl PodRequest {
    /// Reads a pod's request. `Ok(None)` when the pod asks for nothing
    /// (no reference anywhere and no keyhook annotation).
    pub fn from_pod(pod: &AdmittedPod) -> Result<Option<Self>, ReferenceError> {
        let no_annotations = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
        let annotation = |key: &str| annotations.get(key).map(|v| v.trim());
        let bad = |annotation: &str, reason: String| ReferenceError::Annotation {
            annotation: annotation.into(),
            reason,
        };

        let on_error = match annotation(ON_ERROR_ANNOTATION) {
            None | Some("deny") => OnError::Deny,
            Some("allow") => OnError::Allow,
            Some(other) => {
                return Err(bad(
                    ON_ERROR_ANNOTATION,
                    format!("`{other}` is neither `allow` nor `deny`"),
                ));
            }
        };

        let mut env = Vec::new();
        let spec = pod.spec.as_ref();
        let lists = [
            (
                ContainerList::Init,
                spec.and_then(|s| s.init_containers.as_ref()),
            ),
            (ContainerList::App, spec.map(|s| &s.containers)),
        ];
        for (list, containers) in lists {
            for (c, container) in containers.into_iter().flatten().enumerate() {
                env.extend(env_references(list, c, container)?);
            }
        }

        let mut env_from = Vec::new();
        if let Some(value) = annotation(ENV_FROM_ANNOTATION) {
            for part in value.split(',').map(str::trim) {
                if part.is_empty() {
                    continue;
                }
                let reference = Reference::parse(part).map_err(|r| bad(ENV_FROM_ANNOTATION, r))?;
                if !env_from.contains(&reference) {
                    env_from.push(reference);
                }
            }
            if env_from.is_empty() {
                return Err(bad(ENV_FROM_ANNOTATION, "names no key".into()));
            }
        }

        let mut files = Vec::new();
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(FILE_ANNOTATION_PREFIX) else {
                continue;
            };
            if !is_file_name(name) {
                return Err(bad(
                    key,
                    format!(
                        "`{name}` is not a valid file name (letters, digits, `-`, `_`, `.`; not `.` or `..`)"
                    ),
                ));
            }
            let reference = Reference::parse(value).map_err(|r| bad(key, r))?;
            files.push(FileReference {
                name: name.into(),
                reference,
            });
        }

        let mount_path = match annotation(MOUNT_PATH_ANNOTATION) {
            Some(path) if !path.starts_with('/') || path.contains(':') => {
                return Err(bad(
                    MOUNT_PATH_ANNOTATION,
                    format!("`{path}` is not an absolute path"),
                ));
            }
            Some(path) => path.trim_end_matches('/').to_string(),
            None => DEFAULT_MOUNT_PATH.to_string(),
        };

        let store = annotation(STORE_ANNOTATION).filter(|s| !s.is_empty());
        let cluster_store = annotation(CLUSTER_STORE_ANNOTATION).filter(|s| !s.is_empty());
        let asks = !env.is_empty() || !env_from.is_empty() || !files.is_empty();
        let (store_kind, store) = match (store, cluster_store) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    STORE_ANNOTATION,
                    format!(
                        "set either `{STORE_ANNOTATION}` or `{CLUSTER_STORE_ANNOTATION}`, not both"
                    ),
                ));
            }
            (Some(name), None) => (StoreKind::SecretStore, name),
            (None, Some(name)) => (StoreKind::ClusterSecretStore, name),
            (None, None) if asks => {
                return Err(bad(
                    STORE_ANNOTATION,
                    format!(
                        "the pod references secrets but names no store: set `{STORE_ANNOTATION}` (a SecretStore in its namespace) or `{CLUSTER_STORE_ANNOTATION}`"
                    ),
                ));
            }
            (None, None) => return Ok(None),
        };
        if !asks {
            return Ok(None);
        }

        let mut values: Vec<Reference> = env
            .iter()
            .map(|e| e.reference.clone())
            .chain(files.iter().map(|f| f.reference.clone()))
            .collect();
        values.sort();
        values.dedup();
        let mut maps = env_from.clone();
        maps.sort();
        Ok(Some(Self {
            spec: SecretSpec {
                store_kind,
                store: store.to_string(),
                values,
                maps,
            },
            env,
            env_from,
            files,
            mount_path,
            on_error,
        }))
    }
}

fn env_references(
    list: ContainerList,
    c: usize,
    container: &AdmittedContainer,
) -> Result<Vec<EnvReference>, ReferenceError> {
    let mut found = Vec::new();
    for (index, var) in container.env.iter().flatten().enumerate() {
        let Some(text) = var
            .value
            .as_deref()
            .and_then(|v| v.strip_prefix(VALUE_PREFIX))
        else {
            continue;
        };
        let reference = Reference::parse(text).map_err(|reason| ReferenceError::EnvValue {
            container_kind: list.describe(),
            container: container.name.clone(),
            variable: var.name.clone(),
            reason,
        })?;
        found.push(EnvReference {
            list,
            container: c,
            index,
            name: var.name.clone(),
            reference,
        });
    }
    Ok(found)
}

fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Turns a property name into a valid env var name (`[A-Za-z_][A-Za-z0-9_]*`):
/// other characters become `_`, a leading digit gets a `_` in front.
pub fn env_name(property: &str) -> String {
    let mut name: String = property
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod is told apart from one that asks for nothing by this prefix
    /// (`pod::may_ask`), so every annotation keyhook reads must carry it.
    #[test]
    fn every_annotation_carries_the_prefix() {
        let annotations = [
            STORE_ANNOTATION,
            CLUSTER_STORE_ANNOTATION,
            ENV_FROM_ANNOTATION,
            FILE_ANNOTATION_PREFIX,
            MOUNT_PATH_ANNOTATION,
            ON_ERROR_ANNOTATION,
            INJECTED_ANNOTATION,
        ];
        for annotation in annotations {
            assert!(annotation.starts_with(ANNOTATION_PREFIX), "{annotation}");
        }
    }

    #[test]
    fn references_parse_with_property_and_version() {
        let r = Reference::parse("prod/db#password@3").unwrap();
        assert_eq!(r.key, "prod/db");
        assert_eq!(r.property.as_deref(), Some("password"));
        assert_eq!(r.version.as_deref(), Some("3"));
        assert_eq!(r.to_string(), "prod/db#password@3");
        assert_eq!(Reference::parse("k").unwrap().to_string(), "k");
        for bad in ["", "#p", "k#", "k@", "k ey"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_keys_are_valid_and_distinct() {
        let a = Reference::parse("prod/db#password").unwrap().secret_key();
        let b = Reference::parse("prod/db.password").unwrap().secret_key();
        assert_ne!(a, b);
        for key in [a, b] {
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
                "{key}"
            );
        }
    }

    #[test]
    fn env_names_are_sanitized() {
        assert_eq!(env_name("db-user"), "db_user");
        assert_eq!(env_name("1st"), "_1st");
        assert_eq!(env_name("ok_NAME"), "ok_NAME");
    }
}
