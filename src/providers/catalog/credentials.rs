//! Credential Secrets, each watched on its own.
//!
//! Stores name their backend credentials as Secrets. Caching every Secret in
//! the cluster to know the few that stores reference would make keyhook's
//! memory and the apiserver's work grow with the cluster; instead each
//! referenced Secret gets a metadata watch selected by `metadata.name` in
//! its namespace. The apiserver sends that Secret's metadata and nothing
//! else, and a rotation (a new resourceVersion) as it happens. The data is
//! read with a GET only when a client is built.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use tokio_util::task::AbortOnDropHandle;

/// `(namespace, name)` of a Secret.
pub(super) type SecretId = (String, String);

/// One watched Secret: its cache (at most one object) and the watch feeding it.
struct Watched {
    cache: reflector::Store<PartialObjectMeta<Secret>>,
    _watch: AbortOnDropHandle<()>,
}

/// The watches of the credential Secrets the stores reference.
pub(super) struct CredentialWatches {
    client: Client,
    watched: Mutex<HashMap<SecretId, Watched>>,
}

impl CredentialWatches {
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// Watches exactly `wanted`: starts the watches that are missing, stops
    /// those of Secrets no store references any more.
    pub(super) fn follow(&self, wanted: &BTreeSet<SecretId>) {
        let mut watched = self
            .watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watched.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if !watched.contains_key(id) {
                watched.insert(id.clone(), self.watch(id));
            }
        }
    }

    fn watch(&self, (namespace, name): &SecretId) -> Watched {
        let (cache, writer) = reflector::store();
        let api = Api::<PartialObjectMeta<Secret>>::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let watch = crate::reflectors::spawn(
            "credential Secret",
            watcher(api, config),
            writer,
            keep_version_only,
            |_| {},
        );
        Watched {
            cache,
            _watch: watch,
        }
    }

    /// The resourceVersion of a watched Secret; `None` when it does not
    /// exist, or no store references it.
    pub(super) fn version(&self, namespace: &str, name: &str) -> Option<String> {
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cache = &watched
            .get(&(namespace.to_string(), name.to_string()))?
            .cache;
        cache.state().first()?.metadata.resource_version.clone()
    }

    /// Resolves once every Secret watched now has been listed.
    pub(super) async fn ready(&self) {
        let caches: Vec<_> = self
            .watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|w| w.cache.clone())
            .collect();
        // An error means the watch was stopped meanwhile: nothing to wait for.
        futures::future::join_all(caches.iter().map(|c| c.wait_until_ready())).await;
    }
}

/// A credential's cache needs its identity and resourceVersion, nothing else.
fn keep_version_only(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
}
