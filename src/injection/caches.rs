//! What the leader's refresh and GC loops read instead of listing: metadata
//! caches of the Secrets keyhook manages and of the pods it injected.
//!
//! Each is fed by one metadata watch selected by label
//! (`app.kubernetes.io/managed-by=keyhook`, `keyhook.io/inject=true`), so
//! neither the apiserver nor keyhook ever handles a Secret or pod keyhook has
//! no business with, and the steady state costs no request at all: the
//! watches list once and then only follow changes (a list again only after
//! `410 Gone`). Every replica runs them, so a new leader finds them full.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use tokio_util::task::AbortOnDropHandle;

use super::managed::{
    FETCHED_AT_ANNOTATION, MANAGED_BY_LABEL, ManagedSecret, REFERENCES_ANNOTATION, record_from_meta,
};
use super::reference::{INJECT_LABEL, INJECTED_ANNOTATION};
use crate::FIELD_MANAGER;

/// The caches of managed Secrets and injected pods.
pub struct ManagedCaches {
    secrets: reflector::Store<PartialObjectMeta<Secret>>,
    pods: reflector::Store<PartialObjectMeta<Pod>>,
    _watches: [AbortOnDropHandle<()>; 2],
}

impl std::fmt::Debug for ManagedCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCaches")
            .field("secrets", &self.secrets.len())
            .field("pods", &self.pods.len())
            .finish()
    }
}

impl ManagedCaches {
    /// Starts both watches (needs a Tokio runtime); they stop when the
    /// caches are dropped.
    pub fn start(client: Client) -> Self {
        let (secrets, writer) = reflector::store();
        let managed =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
        let secret_watch = crate::reflectors::spawn(
            "managed Secrets",
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                managed,
            ),
            writer,
            keep_record_only,
            |_| {},
        );
        let (pods, writer) = reflector::store();
        let injected = watcher::Config::default().labels(&format!("{INJECT_LABEL}=true"));
        let pod_watch = crate::reflectors::spawn(
            "injected pods",
            watcher(Api::<PartialObjectMeta<Pod>>::all(client), injected),
            writer,
            keep_injection_only,
            |_| {},
        );
        Self {
            secrets,
            pods,
            _watches: [secret_watch, pod_watch],
        }
    }

    /// Resolves once both watches have listed.
    pub async fn ready(&self) {
        // An error means the watch was stopped (shutting down): nothing to wait for.
        let _ = futures::join!(
            self.secrets.wait_until_ready(),
            self.pods.wait_until_ready()
        );
    }

    /// Every managed Secret (its `keys` left empty), once listed.
    pub async fn managed(&self) -> Vec<ManagedSecret> {
        let _ = self.secrets.wait_until_ready().await;
        self.secrets
            .state()
            .iter()
            .filter_map(|s| record_from_meta(&s.metadata))
            .collect()
    }

    /// `(namespace, name)` of every managed Secret an injected pod uses,
    /// once listed.
    pub async fn in_use(&self) -> BTreeSet<(String, String)> {
        let _ = self.pods.wait_until_ready().await;
        self.pods
            .state()
            .iter()
            .filter_map(|pod| {
                let hash = pod
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(INJECTED_ANNOTATION)?;
                Some((pod.metadata.namespace.clone()?, format!("keyhook-{hash}")))
            })
            .collect()
    }
}

/// A managed Secret's cache needs what [`record_from_meta`] reads.
fn keep_record_only(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == MANAGED_BY_LABEL);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == REFERENCES_ANNOTATION || k == FETCHED_AT_ANNOTATION);
    }
}

/// An injected pod's cache needs its namespace and the injection annotation.
fn keep_injection_only(pod: &mut PartialObjectMeta<Pod>) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.labels = None;
    meta.generate_name = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == INJECTED_ANNOTATION);
    }
}
