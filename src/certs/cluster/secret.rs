//! The certificate Secret: what it holds, reading and writing it, and the
//! watch through which every replica serves what it holds.
//!
//! Keys are those of a `kubernetes.io/tls` Secret plus the CA: `tls.crt`,
//! `tls.key`, `ca.crt` (the trust bundle, two CAs during a rotation) and
//! `ca.key` (the key of the CA that signs now). The state of a CA rotation
//! lives in annotations, so that a new leader resumes where the old one
//! stopped.

use std::{collections::BTreeMap, sync::Arc};

use futures::StreamExt;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::certs::{
    CA_CRT, CA_KEY, Error, PemBundle, PrivateKeyPem, ServingCert, TLS_CRT, TLS_KEY, rfc3339,
};
use crate::clock::Clock;

/// Annotation holding the phase of a CA rotation; absent when none runs.
pub const ROTATION_PHASE_ANNOTATION: &str = "keyhook.io/ca-rotation-phase";
/// Annotation holding when the previous CA may leave `ca.crt` (RFC 3339).
pub const RETIRE_OLD_CA_ANNOTATION: &str = "keyhook.io/old-ca-retire-after";
/// The `type` of the Secret.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";

const PHASE_NEW_CA_PUBLISHED: &str = "new-ca-published";
const PHASE_SERVING_SWITCHED: &str = "serving-switched";

/// Where a CA rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationPhase {
    /// One CA; no rotation under way.
    Stable,
    /// (1) `ca.crt` holds the old and the new CA, `ca.key` is the new CA's;
    /// the serving certificate is still the old CA's until every managed
    /// object carries the two-CA bundle.
    NewCaPublished,
    /// (2) The serving certificate is signed by the new CA; (3) the old CA
    /// leaves `ca.crt` at `retire_old_ca_after` (Unix seconds), when the last
    /// certificate it signed has expired.
    ServingSwitched {
        /// When the old CA may leave the bundle.
        retire_old_ca_after: i64,
    },
}

/// The certificates and rotation state kept in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCerts {
    /// The PEM files; `ca_key` is the signing CA's key.
    pub bundle: PemBundle,
    /// Where a CA rotation stands.
    pub phase: RotationPhase,
}

impl StoredCerts {
    /// Reads the Secret's data and annotations. An error names the key or
    /// annotation that is missing or malformed, never a value.
    pub fn from_secret(secret: &Secret) -> Result<Self, Error> {
        let data = secret.data.as_ref();
        let text = |key: &str| -> Result<String, Error> {
            let bytes = data
                .and_then(|d| d.get(key))
                .ok_or_else(|| Error::parse(format!("Secret key {key}"), "missing"))?;
            String::from_utf8(bytes.0.clone())
                .map_err(|_| Error::parse(format!("Secret key {key}"), "not UTF-8 PEM text"))
        };
        let ca_key = match data.and_then(|d| d.get(CA_KEY)) {
            Some(_) => Some(PrivateKeyPem::new(text(CA_KEY)?)),
            None => None,
        };
        let bundle = PemBundle {
            tls_crt: text(TLS_CRT)?,
            tls_key: PrivateKeyPem::new(text(TLS_KEY)?),
            ca_crt: text(CA_CRT)?,
            ca_key,
        };
        let annotations = secret.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let phase = match annotation(ROTATION_PHASE_ANNOTATION) {
            None => RotationPhase::Stable,
            Some(PHASE_NEW_CA_PUBLISHED) => RotationPhase::NewCaPublished,
            Some(PHASE_SERVING_SWITCHED) => {
                let raw = annotation(RETIRE_OLD_CA_ANNOTATION).ok_or_else(|| {
                    Error::parse(format!("annotation {RETIRE_OLD_CA_ANNOTATION}"), "missing")
                })?;
                let at = time::OffsetDateTime::parse(
                    raw,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| Error::parse(format!("annotation {RETIRE_OLD_CA_ANNOTATION}"), e))?;
                RotationPhase::ServingSwitched {
                    retire_old_ca_after: at.unix_timestamp(),
                }
            }
            Some(other) => {
                return Err(Error::parse(
                    format!("annotation {ROTATION_PHASE_ANNOTATION}"),
                    format!(
                        "unknown phase `{other}` (expected {PHASE_NEW_CA_PUBLISHED} or {PHASE_SERVING_SWITCHED})"
                    ),
                ));
            }
        };
        Ok(Self { bundle, phase })
    }

    /// The Secret holding these certificates. `base` supplies metadata to
    /// keep (labels, the resourceVersion of an update); keyhook's own
    /// annotations are set from the phase.
    pub fn to_secret(&self, base: ObjectMeta) -> Secret {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
        };
        put(TLS_CRT, &self.bundle.tls_crt);
        put(TLS_KEY, self.bundle.tls_key.expose());
        put(CA_CRT, &self.bundle.ca_crt);
        if let Some(ca_key) = &self.bundle.ca_key {
            put(CA_KEY, ca_key.expose());
        }
        let mut metadata = base;
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.remove(ROTATION_PHASE_ANNOTATION);
        annotations.remove(RETIRE_OLD_CA_ANNOTATION);
        match self.phase {
            RotationPhase::Stable => {}
            RotationPhase::NewCaPublished => {
                annotations.insert(
                    ROTATION_PHASE_ANNOTATION.into(),
                    PHASE_NEW_CA_PUBLISHED.into(),
                );
            }
            RotationPhase::ServingSwitched {
                retire_old_ca_after,
            } => {
                annotations.insert(
                    ROTATION_PHASE_ANNOTATION.into(),
                    PHASE_SERVING_SWITCHED.into(),
                );
                annotations.insert(
                    RETIRE_OLD_CA_ANNOTATION.into(),
                    rfc3339(retire_old_ca_after),
                );
            }
        }
        if annotations.is_empty() {
            metadata.annotations = None;
        }
        Secret {
            metadata,
            data: Some(data),
            type_: Some(SECRET_TYPE.into()),
            ..Secret::default()
        }
    }
}

/// A failed request to the apiserver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Someone else changed the object since it was read (HTTP 409).
    #[error("{object} changed since it was read (HTTP 409); it will be read again")]
    Conflict {
        /// The object, e.g. `Secret keyhook/keyhook-tls`.
        object: String,
    },
    /// Any other failure.
    #[error("{action} {object}: {source}")]
    Request {
        /// What keyhook was doing.
        action: &'static str,
        /// The object.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl ApiError {
    pub(crate) fn from_kube(action: &'static str, object: String, source: kube::Error) -> Self {
        match source {
            kube::Error::Api(status) if status.code == 409 => ApiError::Conflict { object },
            source => ApiError::Request {
                action,
                object,
                source,
            },
        }
    }
}

/// The Secret as last read.
#[derive(Debug, Clone)]
pub struct ReadSecret {
    /// Its metadata, kept for the next write (resourceVersion, labels).
    pub metadata: ObjectMeta,
    /// Its content, or why it is broken.
    pub certs: Result<StoredCerts, String>,
}

/// Reads and writes the certificate Secret.
#[derive(Debug, Clone)]
pub struct CertSecret {
    api: Api<Secret>,
    name: String,
    namespace: String,
}

impl CertSecret {
    /// The Secret `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    fn object(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.name)
    }

    /// The Secret, or `None` when it does not exist.
    pub async fn read(&self) -> Result<Option<ReadSecret>, ApiError> {
        let secret = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| ApiError::from_kube("reading", self.object(), e))?;
        Ok(secret.map(|secret| ReadSecret {
            certs: StoredCerts::from_secret(&secret).map_err(|e| e.to_string()),
            metadata: secret.metadata,
        }))
    }

    /// Writes `certs`: a create when `previous` is `None`, else an update
    /// guarded by the resourceVersion that was read.
    pub async fn write(
        &self,
        certs: &StoredCerts,
        previous: Option<&ObjectMeta>,
    ) -> Result<(), ApiError> {
        let pp = PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let result = match previous {
            None => {
                let metadata = ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "keyhook".to_string(),
                    )])),
                    ..ObjectMeta::default()
                };
                self.api
                    .create(&pp, &certs.to_secret(metadata))
                    .await
                    .map_err(|e| ApiError::from_kube("creating", self.object(), e))
            }
            Some(meta) => self
                .api
                .replace(&self.name, &pp, &certs.to_secret(meta.clone()))
                .await
                .map_err(|e| ApiError::from_kube("updating", self.object(), e)),
        };
        result.map(|_| ())
    }

    /// Follows the Secret until `shutdown` and offers every version to
    /// `serving` (without `ca.key`, which no replica needs to serve).
    /// Returns a counter that moves on every change, for the controller to
    /// wake on.
    pub fn follow(
        &self,
        serving: Arc<ServingCert>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> (watch::Receiver<u64>, JoinHandle<()>) {
        let (changes_tx, changes) = watch::channel(0u64);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let stream = watcher(self.api.clone(), config).default_backoff();
        let object = self.object();
        let task = tokio::spawn(async move {
            tokio::pin!(stream);
            let mut last_problem: Option<String> = None;
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = stream.next() => event,
                };
                let Some(event) = event else { return };
                let secret = match event {
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => secret,
                    Ok(watcher::Event::Delete(_)) => {
                        tracing::warn!(%object, "the certificate Secret was deleted; serving the last certificate until the leader recreates it");
                        changes_tx.send_modify(|n| *n += 1);
                        continue;
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(e) => {
                        tracing::warn!(%object, error = %e, "watching the certificate Secret failed; retrying");
                        continue;
                    }
                };
                changes_tx.send_modify(|n| *n += 1);
                let offered = StoredCerts::from_secret(&secret)
                    .map_err(|e| e.to_string())
                    .and_then(|stored| {
                        let bundle = PemBundle {
                            ca_key: None,
                            ..stored.bundle
                        };
                        serving
                            .offer(bundle, clock.unix_now())
                            .map_err(|e| e.to_string())
                    });
                match offered {
                    Ok(true) => {
                        last_problem = None;
                        tracing::info!(%object, "serving the certificate from the Secret to new connections");
                    }
                    Ok(false) => last_problem = None,
                    Err(problem) if last_problem.as_ref() != Some(&problem) => {
                        tracing::error!(%object, %problem, "the Secret holds no usable certificate; still serving the previous one");
                        last_problem = Some(problem);
                    }
                    Err(_) => {}
                }
            }
        });
        (changes, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(phase: RotationPhase) -> StoredCerts {
        StoredCerts {
            bundle: PemBundle {
                tls_crt: "CRT".into(),
                tls_key: PrivateKeyPem::new("KEY".into()),
                ca_crt: "CA".into(),
                ca_key: Some(PrivateKeyPem::new("CAKEY".into())),
            },
            phase,
        }
    }

    #[test]
    fn the_rotation_phase_round_trips_through_annotations() {
        for phase in [
            RotationPhase::Stable,
            RotationPhase::NewCaPublished,
            RotationPhase::ServingSwitched {
                retire_old_ca_after: 1_900_000_000,
            },
        ] {
            let secret = stored(phase).to_secret(ObjectMeta::default());
            assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
            assert_eq!(StoredCerts::from_secret(&secret).unwrap(), stored(phase));
        }
    }

    #[test]
    fn a_missing_key_is_named_without_values() {
        let mut secret = stored(RotationPhase::Stable).to_secret(ObjectMeta::default());
        secret.data.as_mut().unwrap().remove(TLS_KEY);
        let err = StoredCerts::from_secret(&secret).unwrap_err().to_string();
        assert_eq!(err, "Secret key tls.key: missing");
    }

    #[test]
    fn an_unknown_phase_is_refused() {
        let mut secret = stored(RotationPhase::Stable).to_secret(ObjectMeta::default());
        secret.metadata.annotations = Some(BTreeMap::from([(
            ROTATION_PHASE_ANNOTATION.to_string(),
            "halfway".to_string(),
        )]));
        let err = StoredCerts::from_secret(&secret).unwrap_err().to_string();
        assert!(err.contains("unknown phase `halfway`"), "{err}");
    }
}
