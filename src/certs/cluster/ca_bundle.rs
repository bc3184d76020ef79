//! The objects that call keyhook, and the caBundle in each.
//!
//! They are the MutatingWebhookConfigurations, ValidatingWebhookConfigurations
//! and CRDs (with a conversion webhook) labelled
//! `app.kubernetes.io/part-of=keyhook`. Every replica watches them: readiness
//! is judged against the bundle they actually carry. The leader writes the
//! bundle with server-side apply under the field manager `keyhook`, owning
//! exactly `caBundle` and the service's name and namespace in each client
//! config, so a concurrent writer (a `helm upgrade`) never makes it fail on
//! a resourceVersion conflict, and re-applies within seconds when someone
//! overwrites the bundle.

use std::{collections::BTreeMap, fmt, sync::Arc};

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::{
    api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::secret::ApiError;
use crate::FIELD_MANAGER;
use crate::certs::ServiceIdentity;
use crate::metrics::{ClusterMetrics, InjectionKind, InjectionResult};

/// The label that marks an object as calling keyhook.
pub const PART_OF_SELECTOR: &str = "app.kubernetes.io/part-of=keyhook";

/// One managed object, by kind and name (all three kinds are cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: InjectionKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", kind_name(self.kind), self.name)
    }
}

/// One client config of a managed object: a webhook of a configuration, or
/// the conversion webhook of a CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The webhook's name; `None` for a CRD's conversion webhook.
    pub webhook: Option<String>,
    /// The caBundle, PEM text; `None` when unset or not UTF-8.
    pub ca_bundle: Option<String>,
    /// The Service it calls.
    pub service: Option<ServiceRef>,
    /// Whether it calls a URL instead of a Service.
    pub uses_url: bool,
}

/// The Service port a client config calls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Service port: the config's `service.port`, 443 when it names none.
    pub port: u16,
}

impl ServiceRef {
    /// From the fields both webhook and CRD client configs have. The
    /// apiserver validates a set port to 1–65535 and defaults it to 443.
    fn new(namespace: &str, name: &str, port: Option<i32>) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(443),
        }
    }

    /// Whether it is the Service `identity` names (on any port).
    pub fn is(&self, identity: &ServiceIdentity) -> bool {
        self.namespace == identity.namespace && self.name == identity.name
    }
}

impl ClientConfig {
    /// Where it is, for messages: `webhook pods.keyhook.io` or `conversion webhook`.
    pub fn location(&self) -> String {
        match &self.webhook {
            Some(name) => format!("webhook {name}"),
            None => "conversion webhook".into(),
        }
    }
}

/// A managed object as keyhook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedObject {
    /// Kind and name.
    pub reference: ObjectRef,
    /// Its annotations (OpenShift and cert-manager injection requests).
    pub annotations: BTreeMap<String, String>,
    /// Its client configs; empty for a CRD without webhook conversion.
    pub client_configs: Vec<ClientConfig>,
}

fn bundle_text(bytes: Option<&k8s_openapi::ByteString>) -> Option<String> {
    bytes.and_then(|b| String::from_utf8(b.0.clone()).ok())
}

macro_rules! webhook_configuration {
    ($fn:ident, $ty:ty, $kind:expr) => {
        /// Reads the object's client configs.
        pub fn $fn(object: &$ty) -> Self {
            let client_configs = object
                .webhooks
                .iter()
                .flatten()
                .map(|hook| ClientConfig {
                    webhook: Some(hook.name.clone()),
                    ca_bundle: bundle_text(hook.client_config.ca_bundle.as_ref()),
                    service: hook
                        .client_config
                        .service
                        .as_ref()
                        .map(|s| ServiceRef::new(&s.namespace, &s.name, s.port)),
                    uses_url: hook.client_config.url.is_some(),
                })
                .collect();
            Self {
                reference: ObjectRef {
                    kind: $kind,
                    name: object.metadata.name.clone().unwrap_or_default(),
                },
                annotations: object.metadata.annotations.clone().unwrap_or_default(),
                client_configs,
            }
        }
    };
}

impl ManagedObject {
    webhook_configuration!(
        from_mutating,
        MutatingWebhookConfiguration,
        InjectionKind::Mutating
    );
    webhook_configuration!(
        from_validating,
        ValidatingWebhookConfiguration,
        InjectionKind::Validating
    );

    /// Reads a CRD's conversion webhook, if its strategy is `Webhook`.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Self {
        let client_configs = crd
            .spec
            .conversion
            .as_ref()
            .filter(|c| c.strategy == "Webhook")
            .map(|c| {
                let config = c.webhook.as_ref().and_then(|w| w.client_config.as_ref());
                ClientConfig {
                    webhook: None,
                    ca_bundle: bundle_text(config.and_then(|c| c.ca_bundle.as_ref())),
                    service: config
                        .and_then(|c| c.service.as_ref())
                        .map(|s| ServiceRef::new(&s.namespace, &s.name, s.port)),
                    uses_url: config.is_some_and(|c| c.url.is_some()),
                }
            })
            .into_iter()
            .collect();
        Self {
            reference: ObjectRef {
                kind: InjectionKind::Crd,
                name: crd.metadata.name.clone().unwrap_or_default(),
            },
            annotations: crd.metadata.annotations.clone().unwrap_or_default(),
            client_configs,
        }
    }

    /// Whether every client config carries `bundle` and calls `service`.
    pub fn carries(&self, bundle: &str, service: &ServiceIdentity) -> bool {
        self.client_configs.iter().all(|config| {
            config.ca_bundle.as_deref().map(str::trim) == Some(bundle.trim())
                && (config.uses_url || config.service.as_ref().is_some_and(|s| s.is(service)))
        })
    }

    /// The server-side apply body that sets `bundle` and `service` in every
    /// client config, and nothing else. A client config that calls a URL
    /// gets only the bundle: a Service next to a URL would be invalid.
    pub fn apply_body(&self, bundle: &str, service: &ServiceIdentity) -> Value {
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes());
        let client_config = |config: &ClientConfig| {
            if config.uses_url {
                json!({ "caBundle": ca_bundle })
            } else {
                json!({
                    "caBundle": ca_bundle,
                    "service": { "name": service.name, "namespace": service.namespace },
                })
            }
        };
        let name = &self.reference.name;
        match self.reference.kind {
            InjectionKind::Mutating | InjectionKind::Validating => {
                let kind = kind_name(self.reference.kind);
                let webhooks: Vec<Value> = self
                    .client_configs
                    .iter()
                    .map(|config| {
                        json!({
                            "name": config.webhook,
                            "clientConfig": client_config(config),
                        })
                    })
                    .collect();
                json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": kind,
                    "metadata": { "name": name },
                    "webhooks": webhooks,
                })
            }
            InjectionKind::Crd => {
                let config = self.client_configs.first().map(client_config);
                json!({
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": { "name": name },
                    "spec": { "conversion": { "strategy": "Webhook", "webhook": { "clientConfig": config } } },
                })
            }
        }
    }
}

/// The managed objects as last listed and watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedSnapshot {
    /// The kinds whose first list has completed.
    pub synced: Vec<InjectionKind>,
    /// Every managed object.
    pub objects: BTreeMap<ObjectRef, ManagedObject>,
}

impl ManagedSnapshot {
    /// Whether all three kinds have been listed at least once.
    pub fn is_synced(&self) -> bool {
        [
            InjectionKind::Mutating,
            InjectionKind::Validating,
            InjectionKind::Crd,
        ]
        .iter()
        .all(|k| self.synced.contains(k))
    }

    /// The objects with a client config that keyhook writes into.
    pub fn injectable(&self) -> impl Iterator<Item = &ManagedObject> {
        self.objects
            .values()
            .filter(|o| !o.client_configs.is_empty())
    }

    /// Whether the first lists are done and every object carries `bundle`.
    pub fn all_carry(&self, bundle: &str, service: &ServiceIdentity) -> bool {
        self.is_synced() && self.injectable().all(|o| o.carries(bundle, service))
    }
}

/// Watches the managed objects of all three kinds until `shutdown`.
pub fn watch_managed(
    client: Client,
    shutdown: CancellationToken,
) -> (watch::Receiver<ManagedSnapshot>, Vec<JoinHandle<()>>) {
    let (tx, rx) = watch::channel(ManagedSnapshot::default());
    let tx = Arc::new(tx);
    let tasks = vec![
        spawn_kind_watch(
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            InjectionKind::Mutating,
            ManagedObject::from_mutating,
            tx.clone(),
            shutdown.clone(),
        ),
        spawn_kind_watch(
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            InjectionKind::Validating,
            ManagedObject::from_validating,
            tx.clone(),
            shutdown.clone(),
        ),
        spawn_kind_watch(
            Api::<CustomResourceDefinition>::all(client),
            InjectionKind::Crd,
            ManagedObject::from_crd,
            tx,
            shutdown,
        ),
    ];
    (rx, tasks)
}

fn spawn_kind_watch<K>(
    api: Api<K>,
    kind: InjectionKind,
    view: fn(&K) -> ManagedObject,
    tx: Arc<watch::Sender<ManagedSnapshot>>,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let config = watcher::Config::default().labels(PART_OF_SELECTOR);
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(async move {
        tokio::pin!(stream);
        let mut relisting: Option<BTreeMap<ObjectRef, ManagedObject>> = None;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            let Some(event) = event else { return };
            match event {
                Ok(watcher::Event::Init) => relisting = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    let object = view(&object);
                    if let Some(list) = relisting.as_mut() {
                        list.insert(object.reference.clone(), object);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let listed = relisting.take().unwrap_or_default();
                    tx.send_if_modified(|snapshot| {
                        let before = snapshot.clone();
                        snapshot.objects.retain(|r, _| r.kind != kind);
                        snapshot.objects.extend(listed);
                        if !snapshot.synced.contains(&kind) {
                            snapshot.synced.push(kind);
                        }
                        *snapshot != before
                    });
                }
                Ok(watcher::Event::Apply(object)) => {
                    let object = view(&object);
                    tx.send_if_modified(|snapshot| {
                        let previous = snapshot
                            .objects
                            .insert(object.reference.clone(), object.clone());
                        previous.as_ref() != Some(&object)
                    });
                }
                Ok(watcher::Event::Delete(object)) => {
                    let reference = view(&object).reference;
                    tx.send_if_modified(|snapshot| snapshot.objects.remove(&reference).is_some());
                }
                Err(e) => {
                    tracing::warn!(kind = kind_name(kind), error = %e, "watching managed objects failed; retrying")
                }
            }
        }
    })
}

pub(crate) fn kind_name(kind: InjectionKind) -> &'static str {
    match kind {
        InjectionKind::Mutating => "MutatingWebhookConfiguration",
        InjectionKind::Validating => "ValidatingWebhookConfiguration",
        InjectionKind::Crd => "CustomResourceDefinition",
    }
}

/// Writes caBundles (leader only).
#[derive(Clone)]
pub struct CaBundleInjector {
    client: Client,
    service: ServiceIdentity,
    metrics: ClusterMetrics,
}

impl fmt::Debug for CaBundleInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundleInjector")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl CaBundleInjector {
    /// An injector pointing objects at `service`.
    pub fn new(client: Client, service: ServiceIdentity, metrics: ClusterMetrics) -> Self {
        Self {
            client,
            service,
            metrics,
        }
    }

    /// Applies `bundle` to every object of `snapshot` that does not carry
    /// it. Every object is tried; the first failure is returned after.
    pub async fn inject_all(
        &self,
        snapshot: &ManagedSnapshot,
        bundle: &str,
    ) -> Result<usize, ApiError> {
        let mut applied = 0;
        let mut first_error = None;
        for object in snapshot.injectable() {
            if object.carries(bundle, &self.service) {
                continue;
            }
            match self.inject(object, bundle).await {
                Ok(()) => applied += 1,
                Err(e) => {
                    tracing::warn!(object = %object.reference, error = %e, "caBundle injection failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(applied), Err)
    }

    /// Applies `bundle` to one object.
    pub async fn inject(&self, object: &ManagedObject, bundle: &str) -> Result<(), ApiError> {
        let body = object.apply_body(bundle, &self.service);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let name = &object.reference.name;
        let patch = Patch::Apply(&body);
        let result = match object.reference.kind {
            InjectionKind::Mutating => {
                Api::<MutatingWebhookConfiguration>::all(self.client.clone())
                    .patch(name, &params, &patch)
                    .await
                    .map(|_| ())
            }
            InjectionKind::Validating => {
                Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                    .patch(name, &params, &patch)
                    .await
                    .map(|_| ())
            }
            InjectionKind::Crd => Api::<CustomResourceDefinition>::all(self.client.clone())
                .patch(name, &params, &patch)
                .await
                .map(|_| ()),
        };
        let outcome = if result.is_ok() {
            InjectionResult::Applied
        } else {
            InjectionResult::Failed
        };
        self.metrics
            .record_injection(object.reference.kind, outcome);
        if result.is_ok() {
            tracing::info!(object = %object.reference, "injected the caBundle");
        }
        result.map_err(|e| {
            ApiError::from_kube("applying the caBundle to", object.reference.to_string(), e)
        })
    }
}
