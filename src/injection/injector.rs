//! The pod mutator: decides on one admission, materializing the workload's
//! Secret once however many of its pods are admitted at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::pod::AdmittedPod;
use kube::core::{admission::AdmissionRequest, admission::AdmissionResponse};
use tokio::time::Instant;

use super::InjectionError;
use super::managed::ManagedSecret;
use super::patch::{self, env_from_prefix};
use super::reference::{INJECTED_ANNOTATION, OnError, PodRequest, SecretSpec, env_name};
use super::secret::{ManagedSecrets, SecretsError};
use super::source::ValueSource;
use crate::clock::Clock;
use crate::metrics::{PodInjectionMetrics, PodInjectionResult};
use crate::providers::SecretValue;
use crate::single_flight::SingleFlight;

/// Time kept back from the admission deadline so that a fetch that runs out
/// of time is answered with its own message (store, key, attempts) rather
/// than the generic deadline denial.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

type Keys = Arc<BTreeSet<String>>;

/// The injector every replica runs behind `/mutate-pod`. Cheap to clone.
#[derive(Clone)]
pub struct PodInjector {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn ValueSource>,
    secrets: Arc<dyn ManagedSecrets>,
    clock: Arc<dyn Clock>,
    metrics: PodInjectionMetrics,
    /// Materializations in flight, by `(namespace, name)` of the Secret.
    flights: SingleFlight<(String, String), Result<Keys, InjectionError>>,
}

impl std::fmt::Debug for PodInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodInjector").finish_non_exhaustive()
    }
}

impl PodInjector {
    /// An injector fetching from `source` and keeping Secrets in `secrets`.
    pub fn new(
        source: Arc<dyn ValueSource>,
        secrets: Arc<dyn ManagedSecrets>,
        clock: Arc<dyn Clock>,
        metrics: PodInjectionMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                secrets,
                clock,
                metrics,
                flights: SingleFlight::new(),
            }),
        }
    }

    /// Decides on a pod admission, answering before `deadline`.
    pub async fn admit(
        &self,
        request: &AdmissionRequest<AdmittedPod>,
        deadline: Instant,
    ) -> AdmissionResponse {
        if let Some(response) = super::pod::misrouted(request) {
            return response;
        }
        let Some(pod) = &request.object else {
            return AdmissionResponse::from(request);
        };
        let (response, result) = match self.decide(request, pod, deadline).await {
            Ok(Decision::Unchanged) => (
                AdmissionResponse::from(request),
                PodInjectionResult::Unchanged,
            ),
            Ok(Decision::Patch(patch)) => {
                match AdmissionResponse::from(request).with_patch(patch) {
                    Ok(response) => (response, PodInjectionResult::Injected),
                    Err(e) => (
                        AdmissionResponse::from(request)
                            .deny(format!("keyhook could not encode its patch: {e}")),
                        PodInjectionResult::Denied,
                    ),
                }
            }
            Err((error, OnError::Allow)) if error.is_operational() => {
                tracing::warn!(uid = %request.uid, %error, "injection failed; admitting unchanged (keyhook.io/on-error: allow)");
                let mut response = AdmissionResponse::from(request);
                response.warnings = Some(vec![format!(
                    "keyhook did not inject secrets (keyhook.io/on-error: allow): {error}"
                )]);
                (response, PodInjectionResult::FailedOpen)
            }
            Err((error, _)) => {
                tracing::info!(uid = %request.uid, %error, "pod denied");
                (
                    AdmissionResponse::from(request).deny(format!(
                        "keyhook cannot inject secrets into this pod: {error}"
                    )),
                    PodInjectionResult::Denied,
                )
            }
        };
        self.inner.metrics.record(result);
        response
    }

    async fn decide(
        &self,
        request: &AdmissionRequest<AdmittedPod>,
        pod: &AdmittedPod,
        deadline: Instant,
    ) -> Result<Decision, (InjectionError, OnError)> {
        let deny = |e: InjectionError| (e, OnError::Deny);
        let Some(wanted) = PodRequest::from_pod(pod).map_err(|e| deny(e.into()))? else {
            return Ok(Decision::Unchanged);
        };
        let on_error = wanted.on_error;
        let hash = wanted.spec.hash();
        let already = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_ANNOTATION));
        // Reinvocation (reinvocationPolicy: IfNeeded): the pod already
        // carries an injection. Its rewritten env values no longer read
        // `keyhook:…`, so it is recognised by the annotation with no
        // reference left to rewrite (or by an equal hash).
        if already.is_some_and(|a| *a == hash || wanted.env.is_empty()) {
            return Ok(Decision::Unchanged);
        }
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let name = wanted.spec.secret_name();
        let fetch_deadline = deadline
            .checked_sub(ANSWER_MARGIN)
            .filter(|d| *d > Instant::now())
            .unwrap_or(deadline);
        let keys = if request.dry_run {
            self.inner
                .keys_without_writing(&namespace, &name, &wanted.spec, fetch_deadline)
                .await
        } else {
            self.materialize_shared(&namespace, &name, &wanted.spec, fetch_deadline)
                .await
        }
        .map_err(|e| (e, on_error))?;
        let patch = patch::build(pod, &wanted, &name, &hash, &keys).map_err(|e| deny(e.into()))?;
        Ok(Decision::Patch(patch))
    }

    /// Makes sure the Secret `namespace/name` holds `spec`'s values, fresh;
    /// concurrent callers for one Secret share one materialization.
    async fn materialize_shared(
        &self,
        namespace: &str,
        name: &str,
        spec: &SecretSpec,
        deadline: Instant,
    ) -> Result<Keys, InjectionError> {
        let id = (namespace.to_string(), name.to_string());
        let flight = self.inner.flights.call(id.clone(), || {
            let inner = Arc::clone(&self.inner);
            let spec = spec.clone();
            async move { inner.materialize(&id.0, &id.1, &spec, deadline).await }
        });
        match tokio::time::timeout_at(deadline, flight.flight).await {
            Ok(result) => result,
            Err(_) => Err(InjectionError::Deadline {
                secret: format!("{namespace}/{name}"),
            }),
        }
    }

    /// Re-fetches a managed Secret's values and writes them (the refresh loop).
    pub async fn refresh(
        &self,
        secret: &ManagedSecret,
        deadline: Instant,
    ) -> Result<(), InjectionError> {
        self.inner
            .source
            .policy(&secret.spec.store_ref(), &secret.namespace)?;
        self.inner
            .fetch_and_write(&secret.namespace, &secret.name, &secret.spec, deadline)
            .await
            .map(|_| ())
    }

    /// Where the Secrets are kept.
    pub fn secrets(&self) -> &Arc<dyn ManagedSecrets> {
        &self.inner.secrets
    }

    /// The source values come from.
    pub fn source(&self) -> &Arc<dyn ValueSource> {
        &self.inner.source
    }

    /// The wall clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
}

enum Decision {
    Unchanged,
    Patch(json_patch::Patch),
}

impl Inner {
    /// The existing Secret when it holds `spec` and is younger than the
    /// store's refresh interval. Checks the store admits the namespace first,
    /// so a fresh Secret never bypasses the namespace rules.
    async fn fresh(
        &self,
        namespace: &str,
        name: &str,
        spec: &SecretSpec,
    ) -> Result<Option<ManagedSecret>, InjectionError> {
        let policy = self.source.policy(&spec.store_ref(), namespace)?;
        let existing = self
            .secrets
            .get(namespace, name)
            .await
            .map_err(|reason| secret_error(namespace, name, reason))?;
        let now = self.clock.now();
        Ok(existing.filter(|e| {
            e.spec == *spec && now - e.fetched_at < policy.refresh_interval && e.fetched_at <= now
        }))
    }

    async fn materialize(
        &self,
        namespace: &str,
        name: &str,
        spec: &SecretSpec,
        deadline: Instant,
    ) -> Result<Keys, InjectionError> {
        if let Some(fresh) = self.fresh(namespace, name, spec).await? {
            return Ok(Arc::new(fresh.keys));
        }
        self.fetch_and_write(namespace, name, spec, deadline).await
    }

    async fn keys_without_writing(
        &self,
        namespace: &str,
        name: &str,
        spec: &SecretSpec,
        deadline: Instant,
    ) -> Result<Keys, InjectionError> {
        if let Some(fresh) = self.fresh(namespace, name, spec).await? {
            return Ok(Arc::new(fresh.keys));
        }
        let data = self.fetch(namespace, spec, deadline).await?;
        Ok(Arc::new(data.into_keys().collect()))
    }

    async fn fetch_and_write(
        &self,
        namespace: &str,
        name: &str,
        spec: &SecretSpec,
        deadline: Instant,
    ) -> Result<Keys, InjectionError> {
        let data = self.fetch(namespace, spec, deadline).await?;
        let secret = ManagedSecret {
            namespace: namespace.into(),
            name: name.into(),
            spec: spec.clone(),
            fetched_at: self.clock.now(),
            keys: data.keys().cloned().collect(),
        };
        self.secrets
            .apply(&secret, &data)
            .await
            .map_err(|reason| secret_error(namespace, name, reason))?;
        Ok(Arc::new(secret.keys))
    }

    /// Fetches every value of `spec`, concurrently, as the Secret's data.
    async fn fetch(
        &self,
        namespace: &str,
        spec: &SecretSpec,
        deadline: Instant,
    ) -> Result<BTreeMap<String, SecretValue>, InjectionError> {
        let store = spec.store_ref();
        let values = futures::future::try_join_all(spec.values.iter().map(|reference| {
            let store = &store;
            async move {
                let value = self
                    .source
                    .value(store, namespace, reference, deadline)
                    .await?;
                Ok::<_, InjectionError>((reference.secret_key(), value))
            }
        }));
        let maps = futures::future::try_join_all(spec.maps.iter().map(|reference| {
            let store = &store;
            async move {
                let map = self
                    .source
                    .map(store, namespace, reference, deadline)
                    .await?;
                Ok::<_, InjectionError>((reference, map))
            }
        }));
        let (values, maps) = futures::future::try_join(values, maps).await?;
        let mut data: BTreeMap<String, SecretValue> = values.into_iter().collect();
        for (reference, map) in maps {
            let prefix = env_from_prefix(reference);
            let mut names: BTreeMap<String, &str> = BTreeMap::new();
            for (property, value) in map.iter() {
                let name = env_name(property);
                if let Some(first) = names.insert(name.clone(), property) {
                    return Err(InjectionError::EnvCollision {
                        key: reference.to_string(),
                        first: first.to_string(),
                        second: property.clone(),
                        name,
                    });
                }
                data.insert(format!("{prefix}{name}"), value.clone());
            }
        }
        Ok(data)
    }
}

fn secret_error(namespace: &str, name: &str, source: SecretsError) -> InjectionError {
    InjectionError::Secret {
        secret: format!("{namespace}/{name}"),
        source: Arc::new(source),
    }
}
