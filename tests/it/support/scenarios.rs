//! Multi-replica scenarios, run against the in-memory apiserver under
//! tokio's paused clock (`cluster_scenarios`) and against a real
//! cluster in real time (`e2e`). Each replica is the real
//! `ClusterTasks` of `keyhook serve`; the test only observes, through the
//! API, what a kube-apiserver would: the Secret, the Lease, and the caBundle
//! injected into each managed object, and completes real TLS handshakes.

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

use super::{fake_apiserver::FakeApiServer, fixture, tls::handshake};

pub const NAMESPACE: &str = "keyhook";
pub const SECRET: &str = "keyhook-tls";
const MWC: &str = "keyhook";
const VWC: &str = "keyhook-validate";
const CRD: &str = "externalsecrets.external-secrets.io";

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

enum Backend {
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

async fn create<K>(api: Api<K>, fixture_name: &str)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut value = fixture(fixture_name);
    let metadata = value["metadata"].as_object_mut().unwrap();
    for server_set in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        metadata.remove(server_set);
    }
    value.as_object_mut().unwrap().remove("status");
    let object: K = serde_json::from_value(value).unwrap();
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

async fn get<K>(api: Api<K>, name: &str) -> K
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

fn split_pem(pem: &str) -> Vec<String> {
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

/// Two replicas start together: one takes the Lease; it alone writes the
/// Secret and the caBundles; both serve the certificate from the Secret and
/// become ready. On SIGTERM the holder releases the Lease and the other
/// takes over within a retry period, not a lease duration.
pub async fn two_replicas_only_the_holder_writes(h: &Harness) {
    h.seed().await;
    let a = h.start("replica-a");
    let b = h.start("replica-b");
    let settled = h
        .step_until(
            "the Secret and every caBundle",
            async |_| {},
            |o| o.injected(),
        )
        .await;
    // The watches need a moment to carry the writes to every replica.
    h.step().await;
    let observed = h.observe().await;
    h.assert_trusted_everywhere(&[&a, &b], &observed).await;

    let holder = settled.holder.clone().expect("a holder");
    let (leader, follower) = if holder == a.name { (&a, &b) } else { (&b, &a) };
    assert!(leader.leads() && !follower.leads());
    let writes: Vec<Write> = h
        .writes()
        .into_iter()
        .filter(|w| !w.path.contains("/leases"))
        .collect();
    assert!(!writes.is_empty());
    for write in &writes {
        assert_eq!(
            write.replica, holder,
            "{write:?} by a replica that does not hold the Lease"
        );
    }
    assert!(
        writes
            .iter()
            .any(|w| w.path.ends_with("/secrets") && w.method == "POST"),
        "{writes:?}"
    );
    for (replica, leads) in [(leader, 1), (follower, 0)] {
        let text = replica.metrics.encode().unwrap();
        assert!(
            text.contains(&format!("keyhook_leader {leads}")),
            "{}: {text}",
            replica.name
        );
    }

    // Graceful stop of the holder: the other takes the released Lease at
    // its next retry (2 s), not after the lease duration (15 s).
    let successor = follower.name.clone();
    let (mut stopping, survivor) = if holder == a.name { (a, b) } else { (b, a) };
    stopping.stop().await;
    let stopped_at = h.timing.clock.now();
    loop {
        let observed = h.observe().await;
        if observed.holder.as_deref() == Some(successor.as_str()) {
            break;
        }
        assert!(
            h.timing.clock.now() - stopped_at < time::Duration::seconds(15),
            "the successor waited for the Lease to expire; it should take the released Lease at once"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(h.timing.clock.now() - stopped_at <= time::Duration::seconds(4));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(survivor.leads());
}

/// A full CA overlap cycle with two replicas: at every step, every replica
/// is ready and a client trusting any injected caBundle completes a real
/// handshake. When the backend allows it, injection into one object is held
/// back after step 1 to prove the serving cert does not switch before every
/// object carries the new bundle.
pub async fn full_ca_overlap_cycle(h: &Harness) {
    h.seed().await;
    let a = h.start("replica-a");
    let b = h.start("replica-b");
    let settled = h
        .step_until("the first certificates", async |_| {}, |o| o.injected())
        .await;
    h.step().await;
    let first_ca = settled.cas();
    assert_eq!(first_ca.len(), 1);

    // Steps 1 and 2 follow each other within one reconcile when every
    // object takes the new bundle at once; hold one object back (where the
    // backend can) so that step 1 is observed and checked on its own.
    let mut held = h.hold_injection(true);
    let mut held_steps = 0;
    let mut phases = vec![RotationPhase::Stable];
    let done = h
        .step_until(
            "a full CA rotation",
            async |o: &Observed| {
                if let Some(phase) = o.phase()
                    && phases.last() != Some(&phase)
                {
                    phases.push(phase);
                }
                if held && o.phase() == Some(RotationPhase::NewCaPublished) {
                    // Step 1: the new CA is in the Secret and in every object
                    // but the held one; the serving cert must not switch yet.
                    let secret = o.secret.as_ref().unwrap();
                    assert_eq!(o.cas().len(), 2);
                    let carrying = o
                        .objects
                        .iter()
                        .filter(|obj| obj.carries(&secret.bundle.ca_crt, &service()))
                        .count();
                    assert_eq!(
                        carrying,
                        o.objects.len() - 1,
                        "all but the held object carry the two-CA bundle"
                    );
                    let leaf = keyhook::certs::Inspection::parse(
                        &secret.bundle.tls_crt,
                        &secret.bundle.ca_crt,
                    )
                    .unwrap();
                    assert!(
                        leaf.trusted_by(&first_ca[0], h.timing.clock.unix_now())
                            .is_ok(),
                        "still signed by the old CA"
                    );
                    held_steps += 1;
                    if held_steps == 3 {
                        held = h.hold_injection(false);
                    }
                }
                h.assert_trusted_everywhere(&[&a, &b], o).await;
            },
            |o| {
                o.phase() == Some(RotationPhase::Stable)
                    && o.cas().len() == 1
                    && o.cas() != first_ca
            },
        )
        .await;
    if h.hold_injection(false) {
        assert!(
            phases.contains(&RotationPhase::NewCaPublished),
            "{phases:?}"
        );
        assert_eq!(held_steps, 3);
    }
    assert!(phases.ends_with(&[RotationPhase::Stable]), "{phases:?}");
    assert!(
        phases
            .iter()
            .any(|p| matches!(p, RotationPhase::ServingSwitched { .. })),
        "{phases:?}"
    );
    assert!(done.injected());
    let leader = if a.leads() { &a } else { &b };
    let text = leader.metrics.encode().unwrap();
    assert!(
        text.contains(r#"keyhook_cert_rotations_total{cert="ca"} 2"#),
        "the first CA and its successor: {text}"
    );
}

/// The leader dies (SIGKILL, no release) in the middle of a CA rotation;
/// the other replica takes the Lease when it expires and finishes the
/// rotation from the state in the Secret, with the CA the dead leader
/// generated. `kill_in_step_1` kills it while the new CA is only published
/// (needs a backend that can hold injection), else once the serving
/// certificate switched.
pub async fn leader_killed_mid_rotation(h: &Harness, kill_in_step_1: bool) {
    h.seed().await;
    let mut a = h.start("replica-a");
    let mut b = h.start("replica-b");
    let settled = h
        .step_until("the first certificates", async |_| {}, |o| o.injected())
        .await;
    let first_ca = settled.cas();

    // Hold injection (where the backend can) so that step 1 lasts.
    if kill_in_step_1 {
        assert!(
            h.hold_injection(true),
            "this backend cannot hold a rotation in step 1"
        );
    }
    h.step_until(
        "the leader to be mid-rotation",
        async |_| {},
        |o| match o.phase() {
            Some(RotationPhase::NewCaPublished) => kill_in_step_1,
            Some(RotationPhase::ServingSwitched { .. }) => !kill_in_step_1,
            _ => false,
        },
    )
    .await;
    let at_kill = h.observe().await;
    let new_ca = at_kill.cas().last().cloned().expect("a new CA");
    assert_ne!(Some(&new_ca), first_ca.first());
    let holder = at_kill.holder.clone().unwrap();
    let (dead, survivor) = if holder == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();
    let dead_name = dead.name.clone();
    let writes_before = h.writes().len();
    h.hold_injection(false);

    let done = h
        .step_until(
            "the survivor to finish the rotation",
            async |o: &Observed| h.assert_trusted_everywhere(&[&*survivor], o).await,
            |o| o.phase() == Some(RotationPhase::Stable) && o.cas().len() == 1,
        )
        .await;
    assert_eq!(
        done.cas(),
        [new_ca],
        "the survivor finished with the CA the dead leader generated"
    );
    assert_eq!(done.holder.as_deref(), Some(survivor.name.as_str()));
    let after: Vec<Write> = h.writes()[writes_before..].to_vec();
    assert!(
        after.iter().all(|w| w.replica != dead_name),
        "a dead replica wrote: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|w| w.replica == survivor.name && w.path.contains("/secrets/")),
        "the survivor never wrote the Secret: {after:?}"
    );
}

/// Someone (a `helm upgrade`) overwrites an injected caBundle; the leader
/// notices through its watch and puts the right bundle back within seconds.
pub async fn an_overwritten_bundle_is_re_injected(h: &Harness) {
    h.seed().await;
    let a = h.start("replica-a");
    let b = h.start("replica-b");
    h.step_until("the first certificates", async |_| {}, |o| o.injected())
        .await;
    h.step().await;

    let helm: Api<MutatingWebhookConfiguration> = Api::all(h.client("helm"));
    let mut mwc = helm.get(MWC).await.unwrap();
    let stranger = keyhook::certs::CertificateAuthority::generate(h.timing.clock.now()).unwrap();
    for hook in mwc.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(
            stranger.cert_pem().as_bytes().to_vec(),
        ));
    }
    helm.replace(MWC, &PostParams::default(), &mwc)
        .await
        .unwrap();
    let overwritten_at = h.timing.clock.now();
    loop {
        let observed = h.observe().await;
        if observed.injected() {
            h.assert_trusted_everywhere(&[&a, &b], &observed).await;
            break;
        }
        assert!(
            h.timing.clock.now() - overwritten_at < time::Duration::seconds(10),
            "the overwritten caBundle was not re-injected within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rewrites: Vec<Write> = h
        .writes()
        .into_iter()
        .filter(|w| {
            w.path.ends_with("/mutatingwebhookconfigurations/keyhook") && w.replica != "helm"
        })
        .collect();
    assert!(
        !rewrites.is_empty() && rewrites.iter().all(|w| w.method == "PATCH"),
        "{rewrites:?}"
    );
}

/// A change of the Secret that lands while the leader is reading it is
/// acted on, not marked seen with the data read before it: a harmless edit
/// wakes the controller, whose read is answered 800 ms late, and someone
/// breaks the Secret meanwhile. The leader repairs it within seconds, not
/// at its next scheduled look (tens of minutes away).
pub async fn a_secret_broken_during_the_leaders_read_is_repaired(h: &Harness) {
    h.seed().await;
    let a = h.start("replica-a");
    h.step_until("the first certificates", async |_| {}, |o| o.injected())
        .await;
    h.step().await;
    assert!(a.leads());
    if !h.delay_secret_reads(&a.name, Duration::from_millis(800)) {
        return;
    }

    let secrets: Api<Secret> = Api::namespaced(h.client("someone"), NAMESPACE);
    let mut touched = secrets.get(SECRET).await.unwrap();
    touched
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("example.com/reviewed".into(), "true".into());
    secrets
        .replace(SECRET, &PostParams::default(), &touched)
        .await
        .unwrap();
    // The leader's read of the touched Secret is under way now.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut broken = secrets.get(SECRET).await.unwrap();
    broken.data.as_mut().unwrap().remove("tls.key");
    secrets
        .replace(SECRET, &PostParams::default(), &broken)
        .await
        .unwrap();
    let broken_at = h.timing.clock.now();

    loop {
        let secret = secrets.get(SECRET).await.unwrap();
        if StoredCerts::from_secret(&secret).is_ok() {
            break;
        }
        assert!(
            h.timing.clock.now() - broken_at < time::Duration::seconds(10),
            "the Secret broken during the leader's read was not repaired within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let repairs: Vec<Write> = h
        .writes()
        .into_iter()
        .filter(|w| w.path.ends_with(&format!("/secrets/{SECRET}")) && w.replica == a.name)
        .collect();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
}

/// `--cert-mode openshift`: the service-ca operator (played by the test)
/// issues the certificate into the mounted directory and injects its CA.
/// keyhook reads, hot-reloads and judges readiness against what is
/// injected, naming an object whose bundle does not trust it; it writes
/// nothing but its Lease.
pub async fn openshift_mode_only_reads(h: &Harness) {
    use keyhook::certs::{self, CertificateAuthority, PemBundle};

    h.seed().await;
    let operator = h.client("service-ca-operator");
    let dir = tempfile::tempdir().unwrap();
    let sans = service().san_list(&[], false);
    let issue = |ca: &CertificateAuthority, bundle: String| {
        let (tls_crt, tls_key) = ca
            .issue_serving(&sans, Duration::from_secs(24 * 3600), h.timing.clock.now())
            .unwrap();
        certs::write_bundle(
            dir.path(),
            &PemBundle {
                tls_crt,
                tls_key,
                ca_crt: bundle,
                ca_key: None,
            },
        )
        .unwrap();
    };
    let inject = async |bundle: &str| {
        let pem = bundle.as_bytes().to_vec();
        let api: Api<MutatingWebhookConfiguration> = Api::all(operator.clone());
        let mut o = api.get(MWC).await.unwrap();
        for hook in o.webhooks.iter_mut().flatten() {
            hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(pem.clone()));
        }
        o.metadata.annotations.get_or_insert_default().insert(
            "service.beta.openshift.io/inject-cabundle".into(),
            "true".into(),
        );
        api.replace(MWC, &PostParams::default(), &o).await.unwrap();
        let api: Api<ValidatingWebhookConfiguration> = Api::all(operator.clone());
        let mut o = api.get(VWC).await.unwrap();
        for hook in o.webhooks.iter_mut().flatten() {
            hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(pem.clone()));
        }
        o.metadata.annotations.get_or_insert_default().insert(
            "service.beta.openshift.io/inject-cabundle".into(),
            "true".into(),
        );
        api.replace(VWC, &PostParams::default(), &o).await.unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(operator.clone());
        let mut o = api.get(CRD).await.unwrap();
        if let Some(config) = o
            .spec
            .conversion
            .as_mut()
            .and_then(|c| c.webhook.as_mut())
            .and_then(|w| w.client_config.as_mut())
        {
            config.ca_bundle = Some(k8s_openapi::ByteString(pem.clone()));
        }
        o.metadata.annotations.get_or_insert_default().insert(
            "service.beta.openshift.io/inject-cabundle".into(),
            "true".into(),
        );
        api.replace(CRD, &PostParams::default(), &o).await.unwrap();
    };

    let first = CertificateAuthority::generate(h.timing.clock.now()).unwrap();
    issue(&first, first.cert_pem().to_string());
    inject(first.cert_pem()).await;
    let replica = h.start_in("replica-a", CertMode::Openshift);
    certs::reload_from_dir(dir.path(), &replica.serving, h.timing.clock.unix_now()).unwrap();
    h.until_ready(&replica, true).await;
    let observed = h.observe().await;
    h.assert_trusted_everywhere(&[&replica], &observed).await;

    // The operator rotates: both CAs injected, then a certificate of the new one.
    let second = CertificateAuthority::generate(h.timing.clock.now()).unwrap();
    let both = format!("{}{}", first.cert_pem(), second.cert_pem());
    inject(&both).await;
    issue(&second, both.clone());
    assert!(
        certs::reload_from_dir(dir.path(), &replica.serving, h.timing.clock.unix_now()).unwrap(),
        "hot-reloaded"
    );
    h.until_ready(&replica, true).await;
    let observed = h.observe().await;
    h.assert_trusted_everywhere(&[&replica], &observed).await;

    // Someone injects only the old CA into the CRD: readiness names it.
    let crds: Api<CustomResourceDefinition> = Api::all(operator.clone());
    let mut crd = crds.get(CRD).await.unwrap();
    if let Some(config) = crd
        .spec
        .conversion
        .as_mut()
        .and_then(|c| c.webhook.as_mut())
        .and_then(|w| w.client_config.as_mut())
    {
        config.ca_bundle = Some(k8s_openapi::ByteString(
            first.cert_pem().as_bytes().to_vec(),
        ));
    }
    crds.replace(CRD, &PostParams::default(), &crd)
        .await
        .unwrap();
    let report = h.until_ready(&replica, false).await;
    let failing: Vec<&keyhook::certs::Check> = report.checks.iter().filter(|c| !c.ok).collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(
        failing[0].detail.starts_with("CustomResourceDefinition/externalsecrets.external-secrets.io conversion webhook: caBundle does not trust the served certificate"),
        "{}",
        failing[0].detail
    );

    let own: Vec<Write> = h
        .writes()
        .into_iter()
        .filter(|w| w.replica == "replica-a" && !w.path.contains("/leases"))
        .collect();
    assert!(own.is_empty(), "keyhook wrote in openshift mode: {own:?}");
    assert!(h.observe().await.secret.is_none(), "no Secret is generated");
}
