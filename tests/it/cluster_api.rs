//! Every request keyhook makes to the apiserver, asserted one by one
//! (method, path, query with the field manager, body) against kube's
//! `tower-test` mock, and answered with recorded apiserver JSON.

use crate::support;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::admissionregistration::v1::MutatingWebhookConfiguration,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use keyhook::{
    certs::{
        ServiceIdentity, ServingCert,
        cluster::{
            ca_bundle::{CaBundleInjector, ManagedObject, ManagedSnapshot},
            controller::{CertController, Round},
            rotation::IssuePolicy,
            secret::{CertSecret, StoredCerts},
            trust::{self, InjectedTrust},
        },
    },
    clock::{Clock, SystemClock},
    leader::{LeaderElector, LeaseSettings},
    metrics::{InjectionKind, Metrics},
};
use serde_json::{Value, json};
use support::{ApiServerVerifier, fixture, not_found, typed};
use tokio::sync::watch;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/keyhook/leases/keyhook";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/keyhook/leases?&fieldManager=keyhook";
const SECRET: &str = "/api/v1/namespaces/keyhook/secrets/keyhook-tls";
const MWC: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/keyhook";
const CRD: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/externalsecrets.external-secrets.io";
const APPLY_QUERY: &str = "?&force=true&fieldManager=keyhook";

/// Every scenario runs under a timeout, so a missing answer fails the test
/// instead of hanging it.
async fn scenario<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("scenario timed out");
}

fn service() -> ServiceIdentity {
    ServiceIdentity {
        name: "keyhook".into(),
        namespace: "keyhook".into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn elector(client: kube::Client, identity: &str) -> (LeaderElector, Metrics) {
    let metrics = Metrics::new();
    let elector = LeaderElector::new(
        client,
        LeaseSettings::new("keyhook", identity),
        Arc::new(SystemClock),
        metrics.cluster.clone(),
    );
    (elector, metrics)
}

#[tokio::test]
async fn a_missing_lease_is_created_with_this_replica_as_holder() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let (mut elector, _) = elector(client, "keyhook-0_aa");
        let round = tokio::spawn(async move { elector.try_acquire_or_renew().await });

        api.expect("GET", LEASE)
            .await
            .respond(404, &not_found("leases.coordination.k8s.io", "keyhook"));
        let create = api.expect("POST", LEASES).await;
        let body = create.body.clone().unwrap();
        assert_eq!(body["metadata"]["name"], "keyhook");
        assert_eq!(body["spec"]["holderIdentity"], "keyhook-0_aa");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        assert_eq!(body["spec"]["acquireTime"], body["spec"]["renewTime"]);
        let mut created = fixture("lease-keyhook.json");
        created["spec"] = body["spec"].clone();
        create.respond(201, &created);

        assert!(round.await.unwrap().unwrap(), "the creator leads");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_is_left_alone_until_its_holder_stops_renewing() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let (mut elector, metrics) = elector(client, "keyhook-1_bb");
        let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..3 {
                results_tx
                    .send(elector.try_acquire_or_renew().await.unwrap())
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
        });

        // t=0: held by another replica; only a GET.
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        assert!(!results.recv().await.unwrap());
        // t=8: unchanged, but 15 s have not passed since it was first seen.
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        assert!(!results.recv().await.unwrap());
        // t=16: unchanged for 16 s: taken over with the resourceVersion read.
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        let put = api
            .expect("PUT", &format!("{LEASE}?&fieldManager=keyhook"))
            .await;
        let body = put.body.clone().unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "48213");
        assert_eq!(body["spec"]["holderIdentity"], "keyhook-1_bb");
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        put.respond(200, &body);
        assert!(results.recv().await.unwrap());
        assert!(
            metrics.encode().unwrap().contains("keyhook_leader 0"),
            "a single round does not claim leadership; run() sets the gauge"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_for_an_expired_lease_is_a_409_not_an_error() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let (mut elector, _) = elector(client, "keyhook-2_cc");
        let round = tokio::spawn(async move {
            assert!(!elector.try_acquire_or_renew().await.unwrap());
            tokio::time::sleep(Duration::from_secs(16)).await;
            elector.try_acquire_or_renew().await
        });
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        api.expect("PUT", &format!("{LEASE}?&fieldManager=keyhook"))
            .await
            .respond(409, &fixture("status-409-conflict.json"));
        assert!(!round.await.unwrap().unwrap(), "another candidate won");
    })
    .await;
}

#[tokio::test]
async fn releasing_clears_the_holder_so_a_successor_need_not_wait() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let holder = "keyhook-6f7c9d8b5-x2kqp_4f1e9a2c7b3d5e60";
        let (mut elector, _) = elector(client, holder);
        let release = tokio::spawn(async move { elector.release().await });
        api.expect("GET", LEASE)
            .await
            .respond(200, &fixture("lease-keyhook.json"));
        let put = api
            .expect("PUT", &format!("{LEASE}?&fieldManager=keyhook"))
            .await;
        let body = put.body.clone().unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "48213");
        assert_eq!(body["spec"].get("holderIdentity"), None);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        put.respond(200, &body);
        release.await.unwrap().unwrap();
    })
    .await;
}

fn policy() -> IssuePolicy {
    IssuePolicy {
        sans: service().san_list(&[], false),
        serving_validity: Duration::from_secs(365 * 24 * 3600),
        ca_validity: keyhook::certs::CA_VALIDITY,
    }
}

fn controller(
    client: kube::Client,
    snapshot: ManagedSnapshot,
    metrics: &Metrics,
) -> (CertController, watch::Sender<ManagedSnapshot>) {
    let (managed_tx, managed) = watch::channel(snapshot);
    let (_secret_tx, secret_changes) = watch::channel(0);
    let controller = CertController::new(
        CertSecret::new(client.clone(), "keyhook", "keyhook-tls"),
        CaBundleInjector::new(client, service(), metrics.cluster.clone()),
        managed,
        secret_changes,
        policy(),
        service(),
        Arc::new(SystemClock),
        metrics.cluster.clone(),
    );
    (controller, managed_tx)
}

fn synced(objects: Vec<ManagedObject>) -> ManagedSnapshot {
    ManagedSnapshot {
        synced: vec![
            InjectionKind::Mutating,
            InjectionKind::Validating,
            InjectionKind::Crd,
        ],
        objects: objects
            .into_iter()
            .map(|o| (o.reference.clone(), o))
            .collect(),
    }
}

fn mwc() -> ManagedObject {
    ManagedObject::from_mutating(&typed::<MutatingWebhookConfiguration>(
        "mutatingwebhookconfiguration-keyhook.json",
    ))
}

fn crd() -> ManagedObject {
    ManagedObject::from_crd(&typed::<CustomResourceDefinition>(
        "crd-externalsecrets.json",
    ))
}

fn decode(b64: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_leader_creates_the_missing_secret() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let (mut controller, _managed) = controller(client, ManagedSnapshot::default(), &metrics);
        let round = tokio::spawn(async move { controller.round().await });

        api.expect("GET", SECRET)
            .await
            .respond(404, &fixture("status-404-notfound.json"));
        let create = api
            .expect(
                "POST",
                "/api/v1/namespaces/keyhook/secrets?&fieldManager=keyhook",
            )
            .await;
        let body = create.body.clone().unwrap();
        assert_eq!(body["type"], "kubernetes.io/tls");
        assert_eq!(body["metadata"]["name"], "keyhook-tls");
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "keyhook"
        );
        assert_eq!(
            body["metadata"].get("annotations"),
            None,
            "no rotation under way"
        );
        let mut keys: Vec<&str> = body["data"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
        let inspection = keyhook::certs::Inspection::parse(
            &decode(&body["data"]["tls.crt"]),
            &decode(&body["data"]["ca.crt"]),
        )
        .unwrap();
        for name in service().dns_names() {
            assert!(inspection.leaf.sans.contains(&name), "{name} missing");
        }
        create.respond(201, &body);

        assert_eq!(round.await.unwrap().unwrap(), Round::Wrote);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"keyhook_cert_rotations_total{cert="ca"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyhook_cert_rotations_total{cert="serving"} 1"#),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_broken_secret_is_repaired_with_an_update_guarded_by_its_resource_version() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let (mut controller, _managed) = controller(client, ManagedSnapshot::default(), &metrics);
        let round = tokio::spawn(async move { controller.round().await });

        let mut broken = fixture("secret-keyhook-tls.json");
        let ca_before = broken["data"]["ca.crt"].clone();
        broken["data"]["tls.key"] = "bm90IGEga2V5".into(); // "not a key"
        api.expect("GET", SECRET).await.respond(200, &broken);
        let update = api
            .expect("PUT", &format!("{SECRET}?&fieldManager=keyhook"))
            .await;
        let body = update.body.clone().unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "48190");
        assert_eq!(
            body["metadata"]["uid"],
            "0c7e3a52-81d4-4b8e-9d6a-5f2b1c9e7a43"
        );
        assert_eq!(body["data"]["ca.crt"], ca_before, "the valid CA is kept");
        assert_ne!(body["data"]["tls.key"], "bm90IGEga2V5");
        update.respond(200, &body);
        assert_eq!(round.await.unwrap().unwrap(), Round::Wrote);
    })
    .await;
}

#[tokio::test]
async fn a_conflicting_secret_update_is_reported_for_a_retry() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let (mut controller, _managed) = controller(client, ManagedSnapshot::default(), &metrics);
        let round = tokio::spawn(async move { controller.round().await });
        let mut broken = fixture("secret-keyhook-tls.json");
        broken["data"]["tls.key"] = "bm90IGEga2V5".into();
        api.expect("GET", SECRET).await.respond(200, &broken);
        let mut conflict = fixture("status-409-conflict.json");
        conflict["details"] = json!({ "name": "keyhook-tls", "kind": "secrets" });
        api.expect("PUT", &format!("{SECRET}?&fieldManager=keyhook"))
            .await
            .respond(409, &conflict);
        let err = round.await.unwrap().unwrap_err().to_string();
        assert_eq!(
            err,
            "Secret keyhook/keyhook-tls changed since it was read (HTTP 409); it will be read again"
        );
    })
    .await;
}

#[tokio::test]
async fn injection_applies_exactly_the_owned_fields_of_each_webhook() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let injector = CaBundleInjector::new(client, service(), metrics.cluster.clone());
        let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let object = mwc();
        let inject = tokio::spawn(async move { injector.inject(&object, bundle).await });

        let patch = api.expect("PATCH", &format!("{MWC}{APPLY_QUERY}")).await;
        assert_eq!(patch.content_type.as_deref(), Some("application/apply-patch+yaml"));
        let body = patch.body.clone().unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": { "name": "keyhook" },
                "webhooks": [{
                    "name": "pods.keyhook.io",
                    "clientConfig": {
                        "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
                        "service": { "name": "keyhook", "namespace": "keyhook" },
                    },
                }],
            })
        );
        let mut applied = fixture("mutatingwebhookconfiguration-keyhook.json");
        applied["webhooks"][0]["clientConfig"]["caBundle"] = body["webhooks"][0]["clientConfig"]["caBundle"].clone();
        patch.respond(200, &applied);
        inject.await.unwrap().unwrap();

        let injected = ManagedObject::from_mutating(&serde_json::from_value(applied).unwrap());
        assert!(injected.carries(bundle, &service()));
        assert!(metrics.encode().unwrap().contains(
            r#"keyhook_cabundle_injections_total{kind="MutatingWebhookConfiguration",result="applied"} 1"#
        ));
    })
    .await;
}

#[tokio::test]
async fn injection_into_a_crd_sets_only_its_conversion_client_config() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let injector = CaBundleInjector::new(client, service(), metrics.cluster.clone());
        let object = crd();
        let inject = tokio::spawn(async move { injector.inject(&object, "PEM").await });
        let patch = api.expect("PATCH", &format!("{CRD}{APPLY_QUERY}")).await;
        assert_eq!(
            patch.body.clone().unwrap(),
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": { "name": "externalsecrets.external-secrets.io" },
                "spec": { "conversion": { "strategy": "Webhook", "webhook": { "clientConfig": {
                    "caBundle": "UEVN",
                    "service": { "name": "keyhook", "namespace": "keyhook" },
                } } } },
            })
        );
        patch.respond(200, &fixture("crd-externalsecrets.json"));
        inject.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_failed_injection_names_the_object_and_is_counted() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let injector = CaBundleInjector::new(client, service(), metrics.cluster.clone());
        let object = mwc();
        let inject = tokio::spawn(async move { injector.inject(&object, "PEM").await });
        api.expect("PATCH", &format!("{MWC}{APPLY_QUERY}"))
            .await
            .respond(
                404,
                &not_found("mutatingwebhookconfigurations.admissionregistration.k8s.io", "keyhook"),
            );
        let err = inject.await.unwrap().unwrap_err().to_string();
        assert!(
            err.starts_with("applying the caBundle to MutatingWebhookConfiguration/keyhook:"),
            "{err}"
        );
        assert!(metrics.encode().unwrap().contains(
            r#"keyhook_cabundle_injections_total{kind="MutatingWebhookConfiguration",result="failed"} 1"#
        ));
    })
    .await;
}

#[tokio::test]
async fn the_leader_injects_the_stored_bundle_where_it_is_missing_then_waits() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let metrics = Metrics::new();
        let mut carrying = crd();
        let secret = fixture("secret-keyhook-tls.json");
        let ca_crt = decode(&secret["data"]["ca.crt"]);
        carrying.client_configs[0].ca_bundle = Some(ca_crt.clone());
        let (mut controller, _managed) =
            controller(client, synced(vec![mwc(), carrying]), &metrics);
        let round = tokio::spawn(async move { controller.round().await });

        api.expect("GET", SECRET).await.respond(200, &secret);
        // Only the MutatingWebhookConfiguration lacks the bundle.
        let patch = api.expect("PATCH", &format!("{MWC}{APPLY_QUERY}")).await;
        assert_eq!(
            decode(&patch.body.clone().unwrap()["webhooks"][0]["clientConfig"]["caBundle"]),
            ca_crt
        );
        patch.respond(200, &fixture("mutatingwebhookconfiguration-keyhook.json"));
        match round.await.unwrap().unwrap() {
            Round::Wait(wait) => assert!(wait > Duration::from_secs(60), "{wait:?}"),
            Round::Wrote => panic!("a valid Secret must not be rewritten"),
        }
        api.expect_silence(Duration::from_millis(100)).await;
    })
    .await;
}

#[test]
fn readiness_names_each_object_whose_bundle_does_not_trust_the_served_cert() {
    let secret: k8s_openapi::api::core::v1::Secret = typed("secret-keyhook-tls.json");
    let stored = StoredCerts::from_secret(&secret).unwrap();
    let serving = Arc::new(ServingCert::new(service(), Metrics::new().certs));
    serving
        .offer(stored.bundle.clone(), SystemClock.unix_now())
        .unwrap();

    let mut trusted = crd();
    trusted.client_configs[0].ca_bundle = Some(stored.bundle.ca_crt.clone());
    let other_ca = keyhook::certs::CertificateAuthority::generate(SystemClock.now()).unwrap();
    let mut stale = mwc();
    stale.client_configs[0].ca_bundle = Some(other_ca.cert_pem().to_string());
    let (_tx, managed) = watch::channel(synced(vec![trusted.clone(), stale]));

    let check = InjectedTrust::new(serving.clone(), managed).check(SystemClock.unix_now());
    assert_eq!(check.name, trust::CHECK_NAME);
    assert!(!check.ok);
    assert!(
        check.detail.starts_with(
            "MutatingWebhookConfiguration/keyhook webhook pods.keyhook.io: caBundle does not trust the served certificate for keyhook.keyhook.svc"
        ),
        "{}",
        check.detail
    );
    assert!(
        !check.detail.contains("CustomResourceDefinition"),
        "{}",
        check.detail
    );

    let (_tx, managed) = watch::channel(synced(vec![trusted]));
    let check = InjectedTrust::new(serving.clone(), managed).check(SystemClock.unix_now());
    assert!(check.ok, "{}", check.detail);

    let (_tx, managed) = watch::channel(ManagedSnapshot::default());
    let check = InjectedTrust::new(serving, managed).check(SystemClock.unix_now());
    assert!(!check.ok, "never ready before the first list");
}
