//! Cluster writes of the injector against kube's `tower-test` mock: each
//! request is asserted exactly (method, path and query, content type, body)
//! and answered with recorded apiserver JSON. What the leader's loops read
//! comes from watches, tested against the in-memory apiserver.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keyhook::admission::decode_admission;
use keyhook::clock::{Clock, TokioClock};
use keyhook::injection::{
    ClusterSecrets, ManagedCaches, ManagedSecret, ManagedSecrets, MeteredSecrets, PodInjector,
    Reference, SecretSpec,
};
use keyhook::metrics::providers::ProviderMetrics;
use keyhook::metrics::{
    PodInjectionMetrics, SecretWrite, SecretWriteLabels, SecretWriteMetrics, WriteResult,
};
use keyhook::providers::{FileCatalog, ProviderSettings, Providers, SecretValue, StoreKind};
use serde_json::json;
use support::cluster_objects;
use support::fake_apiserver::{ApiRequest, FakeApiServer, Verb};
use support::{ApiServerVerifier, fixture, not_found};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::time::Instant;

const NAME: &str = "keyhook-76f47e4afc42517b";
const SECRET: &str = "/api/v1/namespaces/shop/secrets/keyhook-76f47e4afc42517b";
const APPLY_QUERY: &str = "?&force=true&fieldManager=keyhook";
/// The `keyhook.io/fetched-at` of the recorded Secret.
const FETCHED_AT: OffsetDateTime = datetime!(2026-11-21 09:30:12 UTC);

async fn scenario(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("scenario finished in time");
}

fn demo_spec() -> SecretSpec {
    SecretSpec {
        store_kind: StoreKind::SecretStore,
        store: "demo".into(),
        values: ["prod/db#ca", "prod/db#password", "prod/db#username"]
            .iter()
            .map(|r| Reference::parse(r).unwrap())
            .collect(),
        maps: vec![],
    }
}

/// The injector over the recorded apiserver, with its provider metrics and
/// the metrics of its Secret writes.
fn injector(
    client: kube::Client,
    clock: Arc<dyn Clock>,
) -> (PodInjector, Arc<ProviderMetrics>, SecretWriteMetrics) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let catalog = Arc::new(FileCatalog::from_file(&root.join("examples/stores.yaml")).unwrap());
    let metrics = Arc::new(ProviderMetrics::unregistered());
    let providers = Providers::new(ProviderSettings::default(), catalog, metrics.clone());
    let writes = SecretWriteMetrics::default();
    let injector = PodInjector::new(
        Arc::new(providers),
        Arc::new(MeteredSecrets::new(
            ClusterSecrets::new(client),
            writes.clone(),
        )),
        clock,
        PodInjectionMetrics::default(),
    );
    (injector, metrics, writes)
}

fn demo_review() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission/pod-inject-demo.json");
    std::fs::read_to_string(path).unwrap()
}

fn backend_calls(metrics: &ProviderMetrics) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("calls", "", metrics.requests.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn apply_sends_the_managed_secret_and_retries_a_conflict() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let secrets = ClusterSecrets::new(client);
        let secret = ManagedSecret {
            namespace: "shop".into(),
            name: NAME.into(),
            spec: demo_spec(),
            fetched_at: FETCHED_AT,
            keys: BTreeSet::new(),
        };
        let data: BTreeMap<String, SecretValue> = [
            ("prod.db.ca-d7cba824", "-----BEGIN CERTIFICATE-----\nMIIBdemo\n-----END CERTIFICATE-----\n"),
            ("prod.db.password-cad64cb2", "demo-db-password"),
            ("prod.db.username-6b90c03d", "checkout"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), SecretValue::from(v)))
        .collect();
        let apply = tokio::spawn(async move { secrets.apply(&secret, &data).await });

        let recorded = fixture("secret-keyhook-managed.json");
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": NAME,
                "namespace": "shop",
                "labels": {"app.kubernetes.io/managed-by": "keyhook"},
                "annotations": recorded["metadata"]["annotations"],
            },
            "type": "Opaque",
            "data": recorded["data"],
        });
        let first = api.expect("PATCH", &format!("{SECRET}{APPLY_QUERY}")).await;
        assert_eq!(first.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert_eq!(first.body.as_ref(), Some(&expected));
        let mut conflict = fixture("status-409-conflict.json");
        conflict["message"] = format!("Operation cannot be fulfilled on secrets \"{NAME}\": the object has been modified; please apply your changes to the latest version and try again").into();
        conflict["details"] = json!({"name": NAME, "kind": "secrets"});
        first.respond(409, &conflict);

        let second = api.expect("PATCH", &format!("{SECRET}{APPLY_QUERY}")).await;
        assert_eq!(second.body.as_ref(), Some(&expected));
        second.respond(200, &recorded);
        apply.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_fresh_secret_is_reused_without_a_backend_call() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        // Ten minutes after the recorded fetch; the store refreshes hourly.
        let clock = Arc::new(TokioClock::starting_at(
            FETCHED_AT + Duration::from_secs(600),
        ));
        let (injector, metrics, _) = injector(client, clock);
        let review = demo_review();
        let admit = tokio::spawn(async move {
            let request = decode_admission(review.as_bytes()).unwrap();
            injector
                .admit(&request, Instant::now() + Duration::from_secs(8))
                .await
        });
        api.expect("GET", SECRET)
            .await
            .respond(200, &fixture("secret-keyhook-managed.json"));
        let response = admit.await.unwrap();
        assert!(response.allowed, "{}", response.result.message);
        assert!(response.patch.is_some());
        api.expect_silence(Duration::from_millis(200)).await;
        assert_eq!(
            backend_calls(&metrics),
            0,
            "a fresh Secret needs no backend call"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_stale_secret_is_fetched_and_applied() {
    for (clock_at, existing) in [
        (FETCHED_AT, None),
        // Two hours later the recorded Secret is stale.
        (
            FETCHED_AT + Duration::from_secs(7200),
            Some(fixture("secret-keyhook-managed.json")),
        ),
    ] {
        scenario(async {
            let (client, mut api) = ApiServerVerifier::new();
            let (injector, metrics, _) =
                injector(client, Arc::new(TokioClock::starting_at(clock_at)));
            let review = demo_review();
            let admit = tokio::spawn(async move {
                let request = decode_admission(review.as_bytes()).unwrap();
                injector
                    .admit(&request, Instant::now() + Duration::from_secs(8))
                    .await
            });
            let get = api.expect("GET", SECRET).await;
            match &existing {
                Some(secret) => get.respond(200, secret),
                None => get.respond(404, &not_found("secrets", NAME)),
            }
            let apply = api.expect("PATCH", &format!("{SECRET}{APPLY_QUERY}")).await;
            let body = apply.body.clone().unwrap();
            let fetched_at = body["metadata"]["annotations"]["keyhook.io/fetched-at"]
                .as_str()
                .unwrap();
            let fetched_at =
                OffsetDateTime::parse(fetched_at, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert!(
                (fetched_at - clock_at).abs() < time::Duration::seconds(5),
                "{fetched_at}"
            );
            assert_eq!(body["data"], fixture("secret-keyhook-managed.json")["data"]);
            apply.respond(200, &fixture("secret-keyhook-managed.json"));
            let response = admit.await.unwrap();
            assert!(response.allowed, "{}", response.result.message);
            assert_eq!(backend_calls(&metrics), 3, "one call per reference");
        })
        .await;
    }
}

#[tokio::test]
async fn a_write_failing_for_good_denies_the_pod() {
    scenario(async {
        let (client, mut api) = ApiServerVerifier::new();
        let (injector, _, writes) = injector(client, Arc::new(TokioClock::starting_at(FETCHED_AT)));
        let review = demo_review();
        let admit = tokio::spawn(async move {
            let request = decode_admission(review.as_bytes()).unwrap();
            injector.admit(&request, Instant::now() + Duration::from_secs(8)).await
        });
        api.expect("GET", SECRET).await.respond(404, &not_found("secrets", NAME));
        let forbidden = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("secrets \"{NAME}\" is forbidden: User \"system:serviceaccount:keyhook:keyhook\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"shop\""),
            "reason": "Forbidden", "details": {"name": NAME, "kind": "secrets"}, "code": 403,
        });
        api.expect("PATCH", &format!("{SECRET}{APPLY_QUERY}")).await.respond(403, &forbidden);
        let response = admit.await.unwrap();
        assert!(!response.allowed);
        assert!(response.result.message.contains(&format!("managed Secret shop/{NAME}")), "{}", response.result.message);
        assert!(response.result.message.contains("forbidden"), "{}", response.result.message);
        assert!(!response.result.message.contains("demo-db-password"));
        let count = |result| {
            writes
                .writes
                .get_or_create(&SecretWriteLabels { operation: SecretWrite::Apply, result })
                .get()
        };
        assert_eq!((count(WriteResult::Failed), count(WriteResult::Ok)), (1, 0));
    })
    .await;
}

/// The recorded items of a `PartialObjectMetadataList` fixture as the full
/// objects the apiserver holds (`body` supplies what metadata lacks).
fn objects_of(list: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
    fixture(list)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let mut object = body.clone();
            object["metadata"] = item["metadata"].clone();
            object
        })
        .collect()
}

#[tokio::test]
async fn refresh_and_gc_read_managed_secrets_and_injected_pods_from_watches() {
    scenario(async {
        let api = FakeApiServer::new();
        // Secrets and pods keyhook has no business with, in the same namespace.
        api.seed_many((0..300).map(|i| cluster_objects::unrelated_secret("shop", i)));
        api.seed_many((0..300).map(|i| cluster_objects::pod("shop", &format!("web-{i}"), i, None)));
        for secret in objects_of(
            "secret-metadata-list-keyhook-managed.json",
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {}}),
        ) {
            api.seed(secret);
        }
        for pod in objects_of("pod-metadata-list-injected.json", fixture("pod-injected.json")) {
            api.seed(pod);
        }
        let client = api.client("keyhook");
        let secrets = ClusterSecrets::new(client.clone())
            .with_caches(Arc::new(ManagedCaches::start(client)));

        let listed = secrets.list().await.unwrap();
        // The Secret with unreadable annotations is not taken as keyhook's.
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, NAME);
        assert_eq!(listed[0].spec, demo_spec());
        assert_eq!(listed[0].fetched_at, FETCHED_AT);
        assert!(listed[0].keys.is_empty(), "listed from metadata only");
        assert_eq!(
            secrets.in_use().await.unwrap(),
            BTreeSet::from([("shop".to_string(), NAME.to_string())])
        );

        // Changes arrive through the watches: the workload's pods go, a
        // new managed Secret is written, GC deletes the broken one.
        let pods: kube::Api<Pod> = kube::Api::namespaced(api.client("kubelet"), "shop");
        for pod in ["checkout-7b9c4d8f6d-x2k9q", "checkout-7b9c4d8f6d-m4n7p"] {
            pods.delete(pod, &Default::default()).await.unwrap();
        }
        support::eventually_async("the pods' deletion", Duration::from_secs(10), || async {
            secrets.in_use().await.unwrap().is_empty()
        })
        .await;
        let written = ManagedSecret {
            namespace: "billing".into(),
            name: "keyhook-1111111111111111".into(),
            spec: demo_spec(),
            fetched_at: FETCHED_AT,
            keys: BTreeSet::new(),
        };
        secrets.apply(&written, &BTreeMap::new()).await.unwrap();
        support::eventually_async("the new Secret", Duration::from_secs(10), || async {
            secrets.list().await.unwrap().iter().any(|s| s.namespace == "billing")
        })
        .await;
        for _ in 0..2 {
            secrets.delete("shop", "keyhook-0000000000000000").await.unwrap();
        }
        assert!(api.object("secrets", "shop", "keyhook-0000000000000000").is_none());

        // However often the loops look, the apiserver saw one LIST and one
        // WATCH per cache, selected by label, for metadata only.
        for _ in 0..100 {
            secrets.list().await.unwrap();
            secrets.in_use().await.unwrap();
        }
        let reads: Vec<ApiRequest> = api
            .api_requests()
            .into_iter()
            .filter(|r| r.replica == "keyhook" && matches!(r.verb, Verb::List | Verb::Watch))
            .collect();
        let shapes: BTreeSet<String> = reads.iter().map(ApiRequest::shape).collect();
        assert_eq!(
            shapes,
            BTreeSet::from([
                "LIST PODS (all namespaces) labels keyhook.io/inject=true [metadata]".to_string(),
                "WATCH PODS (all namespaces) labels keyhook.io/inject=true [metadata]".to_string(),
                "LIST SECRETS (all namespaces) labels app.kubernetes.io/managed-by=keyhook [metadata]".to_string(),
                "WATCH SECRETS (all namespaces) labels app.kubernetes.io/managed-by=keyhook [metadata]".to_string(),
            ])
        );
        assert_eq!(reads.iter().filter(|r| r.starts_list()).count(), 2, "{reads:#?}");
    })
    .await;
}
