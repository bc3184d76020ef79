//! What a replica runs in a cluster besides the webhooks: the leader
//! election, the watches every replica needs to serve and to judge its
//! readiness, and (on the leader) the certificate controller.

use std::sync::Arc;

use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    certs::{
        CA_VALIDITY, ServingCert,
        controller::CertController,
        external,
        inject::{self, Injector},
        rotation::IssuePolicy,
        store::SecretStore,
        trust::InjectedTrust,
    },
    clock::Clock,
    config::{CertMode, ServeArgs},
    health::ReadinessCheck,
    leader::{self, LeaderElector, Leadership, LeaseSettings},
    metrics::Metrics,
};

/// The cluster-side tasks of one replica.
pub struct ClusterTasks {
    /// Whether this replica leads; later controllers run under it too.
    pub leadership: Leadership,
    /// The `/readyz` check against the injected caBundle.
    pub readiness: Arc<dyn ReadinessCheck>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterTasks {
    /// Starts everything `args.cluster.cert_mode` needs. The election and
    /// the leader-only controllers stop at `shutdown` (the Lease is released
    /// then, so a successor takes over while this replica drains); the
    /// watches that feed serving and readiness run until `background`.
    pub fn start(
        client: Client,
        args: &ServeArgs,
        serving: Arc<ServingCert>,
        metrics: &Metrics,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        background: CancellationToken,
    ) -> Self {
        let identity = args.certs.service.identity();
        let mut tasks = Vec::new();

        let leadership = if args.cluster.leader_elect {
            let settings = LeaseSettings::new(&identity.namespace, leader::default_identity());
            tracing::info!(identity = %settings.identity, lease = %settings.name, "campaigning for leadership");
            let elector = LeaderElector::new(
                client.clone(),
                settings,
                clock.clone(),
                metrics.cluster.clone(),
            );
            let leadership = elector.leadership();
            tasks.push(tokio::spawn(elector.run(shutdown.clone())));
            leadership
        } else {
            metrics.cluster.set_leader(true);
            Leadership::fixed(true)
        };

        let (managed, watches) = inject::watch_managed(client.clone(), background.clone());
        tasks.extend(watches);
        let readiness: Arc<dyn ReadinessCheck> =
            Arc::new(InjectedTrust::new(serving.clone(), managed.clone()));

        match args.cluster.cert_mode {
            CertMode::SelfManaged => {
                let store = SecretStore::new(
                    client.clone(),
                    &identity.namespace,
                    &args.cluster.cert_secret,
                );
                let (secret_changes, follower) =
                    store.follow(serving, clock.clone(), background.clone());
                tasks.push(follower);
                let policy = IssuePolicy {
                    sans: identity.san_list(&args.certs.service.extra_sans, false),
                    serving_validity: args.certs.cert_validity,
                    ca_validity: CA_VALIDITY,
                };
                let controller = CertController::new(
                    store,
                    Injector::new(client, identity.clone(), metrics.cluster.clone()),
                    managed,
                    secret_changes,
                    policy,
                    identity,
                    clock,
                    metrics.cluster.clone(),
                );
                tasks.push(tokio::spawn(leader::run_while_leader(
                    leadership.clone(),
                    shutdown,
                    "certificates",
                    move |term| controller.clone().run(term),
                )));
            }
            mode @ (CertMode::Openshift | CertMode::External) => {
                let injector = if mode == CertMode::Openshift {
                    external::Injector::OpenShift
                } else {
                    external::Injector::CertManager
                };
                tasks.push(external::spawn_reporter(
                    injector, managed, serving, clock, background,
                ));
            }
        }
        Self {
            leadership,
            readiness,
            tasks,
        }
    }

    /// Waits for every task to end (after both tokens are cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a cluster task failed");
            }
        }
    }
}
