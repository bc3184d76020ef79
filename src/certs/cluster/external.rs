//! `--cert-mode openshift` and `--cert-mode external`: someone else issues
//! the certificate and injects the bundle. keyhook reads the certificate
//! from `--cert-dir`, hot-reloads it, and reports, clearly and once per
//! change, which managed object lacks the annotation that asks for the
//! injection or carries a bundle that does not trust the served certificate.

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    ca_bundle::{ManagedObject, ManagedSnapshot},
    trust::untrusting,
};
use crate::certs::ServingCert;
use crate::clock::Clock;

/// OpenShift's service-ca operator injects into objects with this annotation set to `"true"`.
pub const OPENSHIFT_INJECT_ANNOTATION: &str = "service.beta.openshift.io/inject-cabundle";
/// cert-manager's CA injector injects into objects with one of these.
pub const CERT_MANAGER_INJECT_ANNOTATIONS: [&str; 2] = [
    "cert-manager.io/inject-ca-from",
    "cert-manager.io/inject-ca-from-secret",
];

/// Who injects the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalInjector {
    /// OpenShift's service-ca operator.
    OpenShift,
    /// cert-manager's CA injector (or the user).
    CertManager,
}

impl ExternalInjector {
    fn asks_for_injection(self, object: &ManagedObject) -> bool {
        match self {
            ExternalInjector::OpenShift => object
                .annotations
                .get(OPENSHIFT_INJECT_ANNOTATION)
                .is_some_and(|v| v == "true"),
            ExternalInjector::CertManager => CERT_MANAGER_INJECT_ANNOTATIONS
                .iter()
                .any(|a| object.annotations.contains_key(*a)),
        }
    }

    fn annotation_hint(self) -> String {
        match self {
            ExternalInjector::OpenShift => format!("{OPENSHIFT_INJECT_ANNOTATION}: \"true\""),
            ExternalInjector::CertManager => format!(
                "{}: <namespace>/<certificate>",
                CERT_MANAGER_INJECT_ANNOTATIONS[0]
            ),
        }
    }
}

/// Each managed object that does not ask `injector` for the bundle.
pub fn missing_annotations(injector: ExternalInjector, snapshot: &ManagedSnapshot) -> Vec<String> {
    snapshot
        .injectable()
        .filter(|o| !injector.asks_for_injection(o))
        .map(|o| {
            format!(
                "{} lacks the annotation {}; nothing will inject its caBundle",
                o.reference,
                injector.annotation_hint()
            )
        })
        .collect()
}

/// Logs the findings whenever the managed objects or the served certificate
/// change, until `shutdown`.
pub fn spawn_reporter(
    injector: ExternalInjector,
    mut managed: watch::Receiver<ManagedSnapshot>,
    serving: Arc<ServingCert>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported: Vec<String> = Vec::new();
        let mut poll = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Ok(()) = managed.changed() => {}
                _ = poll.tick() => {}
            }
            let snapshot = managed.borrow_and_update().clone();
            if !snapshot.is_synced() {
                continue;
            }
            let mut findings = missing_annotations(injector, &snapshot);
            if let Some(served) = serving.current() {
                let name = serving.identity().apiserver_name();
                findings.extend(untrusting(&snapshot, &served, &name, clock.unix_now()));
            }
            if findings != reported {
                for finding in &findings {
                    tracing::warn!(%finding, "the injected caBundle needs attention");
                }
                if findings.is_empty() && !reported.is_empty() {
                    tracing::info!("every managed object now trusts the served certificate");
                }
                reported = findings;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        certs::cluster::ca_bundle::{ClientConfig, ObjectRef, ServiceRef},
        metrics::InjectionKind,
    };

    fn object(name: &str, annotations: &[(&str, &str)]) -> ManagedObject {
        ManagedObject {
            reference: ObjectRef {
                kind: InjectionKind::Mutating,
                name: name.into(),
            },
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client_configs: vec![ClientConfig {
                webhook: Some("pods.keyhook.io".into()),
                ca_bundle: None,
                service: Some(ServiceRef {
                    namespace: "keyhook".into(),
                    name: "keyhook".into(),
                    port: 443,
                }),
                uses_url: false,
            }],
        }
    }

    fn snapshot(objects: Vec<ManagedObject>) -> ManagedSnapshot {
        ManagedSnapshot {
            synced: vec![
                InjectionKind::Mutating,
                InjectionKind::Validating,
                InjectionKind::Crd,
            ],
            objects: objects
                .into_iter()
                .map(|o| (o.reference.clone(), o))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn openshift_needs_the_inject_cabundle_annotation_set_to_true() {
        let found = missing_annotations(
            ExternalInjector::OpenShift,
            &snapshot(vec![
                object("annotated", &[(OPENSHIFT_INJECT_ANNOTATION, "true")]),
                object("disabled", &[(OPENSHIFT_INJECT_ANNOTATION, "false")]),
                object("bare", &[]),
            ]),
        );
        assert_eq!(
            found,
            [
                "MutatingWebhookConfiguration/bare lacks the annotation service.beta.openshift.io/inject-cabundle: \"true\"; nothing will inject its caBundle",
                "MutatingWebhookConfiguration/disabled lacks the annotation service.beta.openshift.io/inject-cabundle: \"true\"; nothing will inject its caBundle",
            ]
        );
    }

    #[test]
    fn cert_manager_accepts_either_injection_annotation() {
        let found = missing_annotations(
            ExternalInjector::CertManager,
            &snapshot(vec![
                object(
                    "from-cert",
                    &[("cert-manager.io/inject-ca-from", "keyhook/keyhook")],
                ),
                object(
                    "from-secret",
                    &[(
                        "cert-manager.io/inject-ca-from-secret",
                        "keyhook/keyhook-tls",
                    )],
                ),
                object("bare", &[]),
            ]),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with(
            "MutatingWebhookConfiguration/bare lacks the annotation cert-manager.io/inject-ca-from"
        ));
    }
}
