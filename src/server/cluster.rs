//! What a replica runs in a cluster besides the webhooks: the leader
//! election, the watches every replica needs to serve and to judge its
//! readiness, (on the leader) the certificate controller, and the caches
//! pod injection reads ([`start_injection`]).

use std::sync::Arc;

use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    certs::{
        CA_VALIDITY, ServiceIdentity, ServingCert,
        cluster::{
            ca_bundle::{self, CaBundleInjector},
            controller::CertController,
            external::{self, ExternalInjector},
            rotation::IssuePolicy,
            secret::CertSecret,
            trust::InjectedTrust,
        },
    },
    clock::Clock,
    config::{CertMode, ServeArgs},
    injection::{ClusterSecrets, ManagedCaches, MeteredSecrets, PodInjector},
    leader::{self, LeaderElector, Leadership, LeaseSettings},
    metrics::Metrics,
    providers::{ClusterCatalog, ProviderSettings, Providers},
    readiness::ReadinessCheck,
};

/// What the cluster-side tasks need to know, from the flags or a test.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Who issues the certificate.
    pub mode: CertMode,
    /// The Service the apiserver dials.
    pub service: ServiceIdentity,
    /// The Secret holding the certificates (self-managed mode).
    pub secret: String,
    /// The Lease to campaign for; `None` when election is disabled.
    pub lease: Option<LeaseSettings>,
    /// What the leader issues (self-managed mode).
    pub policy: IssuePolicy,
}

impl ClusterSettings {
    /// The settings `keyhook serve` was given.
    pub fn from_args(args: &ServeArgs) -> Self {
        let service = args.certs.service.identity();
        Self {
            mode: args.cluster.cert_mode,
            lease: args.cluster.leader_elect.then(|| {
                LeaseSettings::new(
                    &service.namespace,
                    leader::default_identity(args.pod.replica_name()),
                )
            }),
            secret: args.cluster.cert_secret.clone(),
            policy: IssuePolicy {
                sans: service.san_list(&args.certs.service.extra_sans, false),
                serving_validity: args.certs.cert_validity,
                ca_validity: CA_VALIDITY,
            },
            service,
        }
    }
}

/// The cluster-side tasks of one replica.
pub struct ClusterTasks {
    /// Whether this replica leads; later controllers run under it too.
    pub leadership: Leadership,
    /// The `/readyz` check against the injected caBundle.
    pub readiness: Arc<dyn ReadinessCheck>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterTasks {
    /// Starts everything `settings.mode` needs. The election and
    /// the leader-only controllers stop at `shutdown` (the Lease is released
    /// then, so a successor takes over while this replica drains); the
    /// watches that feed serving and readiness run until `background`.
    pub fn start(
        client: Client,
        settings: ClusterSettings,
        serving: Arc<ServingCert>,
        metrics: &Metrics,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        background: CancellationToken,
    ) -> Self {
        let ClusterSettings {
            mode,
            service: identity,
            secret,
            lease,
            policy,
        } = settings;
        let mut tasks = Vec::new();

        let leadership = if let Some(lease) = lease {
            tracing::info!(identity = %lease.identity, lease = %lease.name, "campaigning for leadership");
            let elector = LeaderElector::new(
                client.clone(),
                lease,
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

        let (managed, watches) = ca_bundle::watch_managed(client.clone(), background.clone());
        tasks.extend(watches);
        let readiness: Arc<dyn ReadinessCheck> =
            Arc::new(InjectedTrust::new(serving.clone(), managed.clone()));

        match mode {
            CertMode::SelfManaged => {
                let store = CertSecret::new(client.clone(), &identity.namespace, &secret);
                let (secret_changes, follower) =
                    store.follow(serving, clock.clone(), background.clone());
                tasks.push(follower);
                let controller = CertController::new(
                    store,
                    CaBundleInjector::new(client, identity.clone(), metrics.cluster.clone()),
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
                    ExternalInjector::OpenShift
                } else {
                    ExternalInjector::CertManager
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

    /// Stops every task at once without releasing the Lease: what a crash
    /// or SIGKILL does to a replica.
    pub fn abort(self) {
        for task in self.tasks {
            task.abort();
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

/// Pod injection in a cluster, and the readiness check it needs.
pub struct ClusterInjection {
    /// The injector behind `/mutate-pod`, writing Secrets to the cluster;
    /// the leader's refresh and GC loops read its caches.
    pub injector: PodInjector,
    /// `/readyz`: passes once the stores have been listed (before that,
    /// every store would look absent and every injecting pod be denied).
    pub readiness: Arc<dyn ReadinessCheck>,
}

/// Starts the caches pod injection reads in a cluster: the store catalog
/// (stores, namespace labels, a watch per credential Secret) and the caches
/// of managed Secrets and injected pods. Every replica runs them, so a new
/// leader lists nothing. They stop when the injector is dropped.
pub fn start_injection(
    client: Client,
    settings: ProviderSettings,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
) -> ClusterInjection {
    let catalog = Arc::new(ClusterCatalog::start(client.clone()));
    let readiness = catalog.synced_check();
    let secrets =
        ClusterSecrets::new(client.clone()).with_caches(Arc::new(ManagedCaches::start(client)));
    let providers =
        Providers::new(settings, catalog, metrics.providers.clone()).with_clock(clock.clone());
    ClusterInjection {
        injector: PodInjector::new(
            Arc::new(providers),
            Arc::new(MeteredSecrets::new(secrets, metrics.secret_writes.clone())),
            clock,
            metrics.injections.clone(),
        ),
        readiness,
    }
}
