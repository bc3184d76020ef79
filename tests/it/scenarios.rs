//! Multi-replica scenarios, run against the in-memory apiserver under
//! tokio's paused clock (`cluster_scenarios`) and against a real
//! cluster in real time (`e2e`). Each replica is the real
//! `ClusterTasks` of `keyhook serve`; a scenario only observes, through the
//! API, what a kube-apiserver would: the Secret, the Lease, and the caBundle
//! injected into each managed object, and completes real TLS handshakes.

use std::time::Duration;

use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use keyhook::{
    certs::cluster::secret::{RotationPhase, StoredCerts},
    config::CertMode,
};
use kube::{Api, api::PostParams};

use crate::support::harness::*;

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
