//! The multi-replica harness the [`crate::scenarios`] run in: replicas that
//! are the real `ClusterTasks` of `keyhook serve`, against the in-memory
//! apiserver under tokio's paused clock or against a real cluster, and the
//! observations a kube-apiserver could make of them (the Secret, the Lease,
//! the caBundle in each managed object, real TLS handshakes).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        coordination::v1::Lease,
        core::v1::{Namespace, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use keyhook::{
    certs::{
        ServiceIdentity, ServingCert,
        cluster::{
            ca_bundle::ManagedObject,
            rotation::IssuePolicy,
            secret::{RotationPhase, StoredCerts},
        },
    },
    clock::{Clock, SystemClock, TokioClock},
    config::CertMode,
    injection::{self, RefreshSettings},
    leader::{self, LeaseSettings},
    metrics::Metrics,
    providers::ProviderSettings,
    readiness::Readiness,
    server::cluster::{ClusterSettings, ClusterTasks},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    client::Body,
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{fake_apiserver::FakeApiServer, fixture_as_created, tls::handshake};

pub const NAMESPACE: &str = "keyhook";
pub const SECRET: &str = "keyhook-tls";
pub const MWC: &str = "keyhook";
pub const VWC: &str = "keyhook-validate";
pub const CRD: &str = "externalsecrets.external-secrets.io";

/// A request that changes something, and the replica that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub replica: String,
    pub method: String,
    pub path: String,
}

/// How fast time runs and what the leader issues.
pub struct Timing {
    pub clock: Arc<dyn Clock>,
    pub serving_validity: Duration,
    pub ca_validity: Duration,
    /// Interval between two observations.
    pub step: Duration,
    /// Longest a scenario may take (in the clock's time).
    pub deadline: Duration,
}

pub enum Backend {
    Fake(FakeApiServer),
    Real(Box<kube::Config>),
}

/// A cluster to run replicas against, recording every write.
pub struct Harness {
    backend: Backend,
    writes: Arc<Mutex<Vec<Write>>>,
    pub timing: Timing,
}

impl Harness {
    /// The in-memory apiserver, with an hour-scale schedule for a paused
    /// clock.
    pub fn fake() -> Self {
        Self {
            backend: Backend::Fake(FakeApiServer::new()),
            writes: Arc::default(),
            timing: Timing {
                clock: Arc::new(TokioClock::starting_at(time::OffsetDateTime::now_utc())),
                serving_validity: Duration::from_secs(3600),
                ca_validity: Duration::from_secs(3 * 3600),
                step: Duration::from_secs(60),
                deadline: Duration::from_secs(6 * 3600),
            },
        }
    }

    /// A real cluster, with a minutes-scale schedule in real time.
    pub async fn real(kubeconfig: &std::path::Path) -> Self {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
            .expect("reading KEYHOOK_E2E_KUBECONFIG");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a usable kubeconfig");
        Self {
            backend: Backend::Real(Box::new(config)),
            writes: Arc::default(),
            // Certificates start 5 minutes in the past (for nodes whose
            // clock lags), so a renewal "when a third of the life is left"
            // needs validities well above 2.5 minutes: these give a serving
            // renewal every minute and a CA rotation after ~4.5 minutes.
            timing: Timing {
                clock: Arc::new(SystemClock),
                serving_validity: Duration::from_secs(4 * 60),
                ca_validity: Duration::from_secs(9 * 60),
                step: Duration::from_secs(1),
                deadline: Duration::from_secs(20 * 60),
            },
        }
    }

    /// A client for `replica` whose writes are recorded.
    pub fn client(&self, replica: &str) -> Client {
        let writes = self.writes.clone();
        let replica_name = replica.to_string();
        let replica = replica.to_string();
        let record = move |request: http::Request<Body>| {
            if request.method() != http::Method::GET {
                writes.lock().unwrap().push(Write {
                    replica: replica.clone(),
                    method: request.method().to_string(),
                    path: request.uri().path().to_string(),
                });
            }
            request
        };
        match &self.backend {
            Backend::Fake(fake) => {
                kube::client::ClientBuilder::new(fake.service(&replica_name), NAMESPACE)
                    .with_layer(&tower::util::MapRequestLayer::new(record))
                    .build()
            }
            Backend::Real(config) => kube::client::ClientBuilder::try_from(config.as_ref().clone())
                .expect("a client for the kubeconfig")
                .with_layer(&tower::util::MapRequestLayer::new(record))
                .build(),
        }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    /// Holds caBundle writes to the MutatingWebhookConfiguration back (the
    /// in-memory apiserver answers them with HTTP 500), to keep a rotation
    /// in step 1. A real cluster cannot be told to; returns whether held.
    pub fn hold_injection(&self, hold: bool) -> bool {
        match &self.backend {
            Backend::Fake(fake) => {
                fake.fail_writes_to(
                    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                    hold,
                );
                true
            }
            Backend::Real(_) => false,
        }
    }

    /// The in-memory apiserver; `None` against a real cluster.
    pub fn api(&self) -> Option<&FakeApiServer> {
        match &self.backend {
            Backend::Fake(fake) => Some(fake),
            Backend::Real(_) => None,
        }
    }

    /// Answers `replica`'s reads (GET by name) of the certificate Secret
    /// `by` late, with the data as it was when each read arrived. A real
    /// cluster cannot be told to; returns whether delayed.
    pub fn delay_secret_reads(&self, replica: &str, by: Duration) -> bool {
        match &self.backend {
            Backend::Fake(fake) => {
                fake.delay(
                    replica,
                    super::fake_apiserver::Verb::Get,
                    &format!("/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"),
                    by,
                );
                true
            }
            Backend::Real(_) => false,
        }
    }

    /// Creates the managed objects from the fixtures (after removing what a
    /// previous run left).
    pub async fn seed(&self) {
        let client = self.client("test");
        if let Backend::Real(_) = self.backend {
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let namespace =
                serde_json::from_value(serde_json::json!({ "metadata": { "name": NAMESPACE } }))
                    .unwrap();
            let _ = namespaces.create(&PostParams::default(), &namespace).await;
            self.cleanup().await;
        }
        create::<MutatingWebhookConfiguration>(
            Api::all(client.clone()),
            "mutatingwebhookconfiguration-keyhook.json",
        )
        .await;
        create::<ValidatingWebhookConfiguration>(
            Api::all(client.clone()),
            "validatingwebhookconfiguration-keyhook.json",
        )
        .await;
        create::<CustomResourceDefinition>(Api::all(client), "crd-externalsecrets.json").await;
        self.writes.lock().unwrap().clear();
    }

    /// Deletes everything the scenarios create.
    pub async fn cleanup(&self) {
        let client = self.client("test");
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(MWC, &dp)
            .await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(VWC, &dp)
            .await;
        let _ = Api::<CustomResourceDefinition>::all(client.clone())
            .delete(CRD, &dp)
            .await;
        let _ = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
            .delete(SECRET, &dp)
            .await;
        let _ = Api::<Lease>::namespaced(client, NAMESPACE)
            .delete("keyhook", &dp)
            .await;
    }

    /// Starts a self-managed replica named `name`.
    pub fn start(&self, name: &str) -> Replica {
        self.start_in(name, CertMode::SelfManaged)
    }

    /// Starts a replica named `name` in `mode`.
    pub fn start_in(&self, name: &str, mode: CertMode) -> Replica {
        let metrics = Metrics::new();
        let serving = Arc::new(ServingCert::new(service(), metrics.certs.clone()));
        let shutdown = CancellationToken::new();
        let background = CancellationToken::new();
        let settings = ClusterSettings {
            mode,
            service: service(),
            secret: SECRET.into(),
            lease: Some(LeaseSettings::new(NAMESPACE, name)),
            policy: IssuePolicy {
                sans: service().san_list(&[], false),
                serving_validity: self.timing.serving_validity,
                ca_validity: self.timing.ca_validity,
            },
        };
        let tasks = ClusterTasks::start(
            self.client(name),
            settings,
            serving.clone(),
            &metrics,
            self.timing.clock.clone(),
            shutdown.clone(),
            background.clone(),
        );
        let readiness = Readiness::new(shutdown.clone())
            .with_check(serving.clone())
            .with_check(tasks.readiness.clone());
        Replica {
            name: name.into(),
            serving,
            metrics,
            readiness,
            tasks: Some(tasks),
            loops: Vec::new(),
            shutdown,
            background,
        }
    }

    /// Starts a self-managed replica named `name` that also serves pod
    /// injection: its store catalog and caches, and (while it leads) the
    /// refresh and GC loops, as `keyhook serve` wires them.
    pub fn start_injecting(&self, name: &str) -> Replica {
        let mut replica = self.start(name);
        let injection = keyhook::server::cluster::start_injection(
            self.client(name),
            ProviderSettings::default(),
            self.timing.clock.clone(),
            &replica.metrics,
        );
        replica.readiness = replica.readiness.clone().with_check(injection.readiness);
        let leadership = replica
            .tasks
            .as_ref()
            .expect("just started")
            .leadership
            .clone();
        let injector = injection.injector;
        let metrics = replica.metrics.secrets.clone();
        let refresh = {
            let injector = injector.clone();
            tokio::spawn(leader::run_while_leader(
                leadership.clone(),
                replica.shutdown.clone(),
                "secret-refresh",
                move |term| {
                    injection::run_refresh(
                        injector.clone(),
                        RefreshSettings::default(),
                        metrics.clone(),
                        term,
                    )
                },
            ))
        };
        let gc = tokio::spawn(leader::run_while_leader(
            leadership,
            replica.shutdown.clone(),
            "secret-gc",
            move |term| injection::run_gc(injector.clone(), RefreshSettings::default(), term),
        ));
        replica.loops = vec![refresh, gc];
        replica
    }

    /// What the API says now.
    pub async fn observe(&self) -> Observed {
        let client = self.client("test");
        let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
            .get_opt(SECRET)
            .await
            .unwrap()
            .map(|s| StoredCerts::from_secret(&s).expect("the Secret keyhook writes parses"));
        let holder = Api::<Lease>::namespaced(client.clone(), NAMESPACE)
            .get_opt("keyhook")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        let objects = vec![
            ManagedObject::from_mutating(&get(Api::all(client.clone()), MWC).await),
            ManagedObject::from_validating(&get(Api::all(client.clone()), VWC).await),
            ManagedObject::from_crd(&get(Api::all(client), CRD).await),
        ];
        Observed {
            secret,
            holder,
            objects,
        }
    }

    /// Steps until `replica`'s `/readyz` report is `ready`; returns it.
    pub async fn until_ready(
        &self,
        replica: &Replica,
        ready: bool,
    ) -> keyhook::readiness::ReadinessReport {
        let start = self.timing.clock.now();
        loop {
            let report = replica.readiness.report(self.timing.clock.unix_now());
            if report.ready == ready {
                return report;
            }
            assert!(
                self.timing.clock.now() - start < self.timing.deadline,
                "{} never became {}: {:?}",
                replica.name,
                if ready { "ready" } else { "unready" },
                report.checks
            );
            self.step().await;
        }
    }

    /// Sleeps one step of the schedule.
    pub async fn step(&self) {
        tokio::time::sleep(self.timing.step).await;
    }

    /// Steps until `done` holds for what is observed, checking `each` at
    /// every step; panics at the deadline.
    pub async fn step_until(
        &self,
        what: &str,
        mut each: impl AsyncFnMut(&Observed),
        mut done: impl FnMut(&Observed) -> bool,
    ) -> Observed {
        let start = self.timing.clock.now();
        loop {
            let observed = self.observe().await;
            each(&observed).await;
            if done(&observed) {
                return observed;
            }
            assert!(
                self.timing.clock.now() - start < self.timing.deadline,
                "gave up waiting for {what}; last seen: phase {:?}, holder {:?}",
                observed.secret.as_ref().map(|s| s.phase),
                observed.holder
            );
            self.step().await;
        }
    }

    /// Asserts that every replica in `replicas` is ready and completes a
    /// handshake with a client trusting each injected caBundle.
    pub async fn assert_trusted_everywhere(&self, replicas: &[&Replica], observed: &Observed) {
        let now = self.timing.clock.unix_now();
        let name = service().apiserver_name();
        for replica in replicas {
            let report = replica.readiness.report(now);
            assert!(
                report.ready,
                "{} is not ready: {:?}",
                replica.name, report.checks
            );
            for object in &observed.objects {
                for config in &object.client_configs {
                    let bundle = config.ca_bundle.as_deref().unwrap_or_else(|| {
                        panic!("{} {} has no caBundle", object.reference, config.location())
                    });
                    if let Err(e) = handshake(replica.serving.clone(), bundle, &name, now).await {
                        panic!(
                            "a client trusting the caBundle of {} {} cannot reach {}: {e} (phase {:?})",
                            object.reference,
                            config.location(),
                            replica.name,
                            observed.secret.as_ref().map(|s| s.phase)
                        );
                    }
                }
            }
        }
    }
}

pub async fn create<K>(api: Api<K>, fixture_name: &str)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(fixture_as_created(fixture_name)).unwrap();
    // A real apiserver may still be finishing the delete of a previous run's
    // object (a CRD waits for its finalizer): retry while it exists.
    for _ in 0..60 {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("creating {fixture_name}: {e}"),
        }
    }
    panic!("{fixture_name} still exists from a previous run after 60 s");
}

pub async fn get<K>(api: Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

pub fn service() -> ServiceIdentity {
    ServiceIdentity {
        name: "keyhook".into(),
        namespace: NAMESPACE.into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// What the API shows at one moment.
#[derive(Debug, Clone)]
pub struct Observed {
    pub secret: Option<StoredCerts>,
    pub holder: Option<String>,
    pub objects: Vec<ManagedObject>,
}

impl Observed {
    pub fn phase(&self) -> Option<RotationPhase> {
        self.secret.as_ref().map(|s| s.phase)
    }

    /// Whether every managed object carries the Secret's `ca.crt`.
    pub fn injected(&self) -> bool {
        self.secret.as_ref().is_some_and(|s| {
            self.objects
                .iter()
                .all(|o| o.carries(&s.bundle.ca_crt, &service()))
        })
    }

    /// The CA certificates in the Secret's `ca.crt`.
    pub fn cas(&self) -> Vec<String> {
        self.secret
            .as_ref()
            .map(|s| split_pem(&s.bundle.ca_crt))
            .unwrap_or_default()
    }
}

pub fn split_pem(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(|c| c.trim().to_string())
        .collect()
}

/// One replica: the cluster tasks of `keyhook serve` and what it serves.
pub struct Replica {
    pub name: String,
    pub serving: Arc<ServingCert>,
    pub metrics: Metrics,
    pub readiness: Readiness,
    tasks: Option<ClusterTasks>,
    /// The refresh and GC loops of a replica serving injection; they own
    /// its injector, whose caches stop with them.
    loops: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    background: CancellationToken,
}

impl Replica {
    /// Whether it leads, by its own account.
    pub fn leads(&self) -> bool {
        self.tasks
            .as_ref()
            .is_some_and(|t| t.leadership.is_leader())
    }

    /// Ends it at once, as SIGKILL would: nothing is released.
    pub fn kill(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            tasks.abort();
        }
        for task in self.loops.drain(..) {
            task.abort();
        }
    }

    /// Ends it gracefully, as SIGTERM would: the Lease is released.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        self.background.cancel();
        if let Some(tasks) = self.tasks.take() {
            tasks.join().await;
        }
        for task in self.loops.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The scenarios.
