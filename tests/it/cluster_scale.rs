//! keyhook in a cluster full of objects it has no business with, for hours
//! of (paused) time, against the in-memory apiserver: two replicas serving
//! injection as `keyhook serve` wires it, the leader refreshing and
//! collecting managed Secrets, a leader killed, the apiserver's history
//! compacted. What is asserted is what the apiserver was asked.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keyhook::injection::{ManagedSecret, Reference, SecretSpec};
use keyhook::providers::StoreKind;
use serde_json::Value;
use support::cluster_objects::{
    credential, fake_cluster_store, managed_secret, namespace, pod, unrelated_secret,
    vault_cluster_store,
};
use support::fake_apiserver::{ApiRequest, FakeApiServer, Verb};
use support::harness::Harness;
use time::OffsetDateTime;

const NAMESPACES: usize = 50;
const UNRELATED_SECRETS: usize = 5_000;
const UNRELATED_PODS: usize = 2_000;
const WORKLOADS: usize = 40;
const PODS_PER_WORKLOAD: usize = 5;
const STORES: usize = 4;

fn workload_secret(w: usize, fetched_at: OffsetDateTime) -> ManagedSecret {
    let spec = SecretSpec {
        store_kind: StoreKind::ClusterSecretStore,
        store: format!("fake-{}", w % STORES),
        values: vec![Reference::parse("app/config#password").unwrap()],
        maps: vec![],
    };
    ManagedSecret {
        namespace: format!("team-{}", w % NAMESPACES),
        name: spec.secret_name(),
        spec,
        fetched_at,
        keys: BTreeSet::new(),
    }
}

/// The cluster: namespaces full of Secrets and pods keyhook has no business
/// with; stores (half with a credential Secret); 40 workloads of 5 injected
/// pods, each with its managed Secret fetched at some point of the last
/// hour; one managed Secret no pod uses, which is returned.
fn seed(api: &FakeApiServer, now: OffsetDateTime) -> ManagedSecret {
    let mut objects: Vec<Value> = Vec::new();
    for n in 0..NAMESPACES {
        objects.push(namespace(&format!("team-{n}"), &format!("group-{}", n % 5)));
    }
    objects.push(namespace("keyhook", "platform"));
    objects.extend(
        (0..UNRELATED_SECRETS).map(|i| unrelated_secret(&format!("team-{}", i % NAMESPACES), i)),
    );
    objects.extend((0..UNRELATED_PODS).map(|i| {
        let ns = format!("team-{}", i % NAMESPACES);
        pod(&ns, &format!("web-{i}"), i, None)
    }));
    for s in 0..STORES {
        objects.push(fake_cluster_store(&format!("fake-{s}")));
        objects.push(vault_cluster_store(
            &format!("vault-{s}"),
            &format!("vault-token-{s}"),
        ));
        objects.push(credential(
            "keyhook",
            &format!("vault-token-{s}"),
            "s.token",
        ));
    }
    for w in 0..WORKLOADS {
        let age = Duration::from_secs(3600) * u32::try_from(w).unwrap() / WORKLOADS as u32;
        let secret = workload_secret(w, now - age);
        objects.push(managed_secret(&secret, w));
        let hash = secret.spec.hash();
        for p in 0..PODS_PER_WORKLOAD {
            let name = format!("workload-{w}-{p}");
            objects.push(pod(
                &secret.namespace,
                &name,
                UNRELATED_PODS + w * 10 + p,
                Some(&hash),
            ));
        }
    }
    let orphan = workload_secret(WORKLOADS, now);
    objects.push(managed_secret(&orphan, WORKLOADS));
    api.seed_many(objects);
    orphan
}

/// Sleeps `span` of paused time in steps, so the scenario's own clock keeps up.
async fn run_for(h: &Harness, span: Duration) {
    let steps = span.as_secs() / h.timing.step.as_secs();
    for _ in 0..steps {
        h.step().await;
    }
}

/// The LIST a WATCH resumes, by shape.
fn list_shape(request: &ApiRequest) -> String {
    request.shape().replacen("WATCH", "LIST", 1)
}

#[tokio::test(start_paused = true)]
async fn hours_among_unrelated_objects_cost_watches_not_lists() {
    let h = Harness::fake();
    let api = h.api().expect("the in-memory apiserver").clone();
    let orphan = seed(&api, h.timing.clock.now());
    h.seed().await;
    let mut a = h.start_injecting("replica-a");
    let mut b = h.start_injecting("replica-b");
    for replica in [&a, &b] {
        h.until_ready(replica, true).await;
    }
    let (leader, follower) = if a.leads() {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };

    // Three hours: every managed Secret is refreshed about three times, the
    // unreferenced one is deleted after the GC grace; the certificates turn
    // over too.
    run_for(&h, Duration::from_secs(3 * 3600)).await;
    let writes = api.writes();
    let refreshed: BTreeMap<String, usize> = writes
        .iter()
        .filter(|w| w.method == "PATCH" && w.path.contains("/secrets/keyhook-"))
        .fold(BTreeMap::new(), |mut counts, w| {
            *counts.entry(w.path.clone()).or_default() += 1;
            counts
        });
    assert_eq!(
        refreshed.len(),
        WORKLOADS,
        "every workload's Secret is refreshed: {refreshed:?}"
    );
    assert!(
        refreshed.values().all(|n| (3..=4).contains(n)),
        "{refreshed:?}"
    );
    let deleted: Vec<&str> = writes
        .iter()
        .filter(|w| w.method == "DELETE")
        .map(|w| w.path.as_str())
        .collect();
    assert_eq!(
        deleted,
        [format!(
            "/api/v1/namespaces/{}/secrets/{}",
            orphan.namespace, orphan.name
        )],
        "GC deletes the Secret no pod uses, and only it"
    );

    // The leader dies; its successor's caches are already full.
    leader.kill();
    let takeover = loop {
        h.step().await;
        if follower.leads() {
            break api.api_requests().len();
        }
    };
    run_for(&h, Duration::from_secs(2 * 3600)).await;
    let after_takeover = &api.api_requests()[takeover..];
    let successor_lists: Vec<String> = after_takeover
        .iter()
        .filter(|r| r.replica == follower.name && r.verb == Verb::List)
        .map(ToString::to_string)
        .collect();
    assert!(
        successor_lists.is_empty(),
        "the new leader listed {successor_lists:?}"
    );
    assert!(
        api.writes()[writes.len()..]
            .iter()
            .any(|w| w.replica == follower.name && w.path.contains("/secrets/keyhook-")),
        "the new leader refreshes"
    );

    // The apiserver forgets its history and drops every watch: the watches
    // that were behind get 410 Gone and list once more; the rest resume.
    // Keep something changing first, as the Lease always does.
    h.step().await;
    api.compact();
    api.drop_watches();
    run_for(&h, Duration::from_secs(600)).await;

    let requests: Vec<ApiRequest> = api
        .api_requests()
        .into_iter()
        .filter(|r| r.replica.starts_with("replica-"))
        .collect();
    for request in &requests {
        assert!(
            !(matches!(request.resource, "secrets" | "pods")
                && request.is_unfiltered_cluster_wide()),
            "{request}"
        );
    }
    let mut lists: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut gone: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in &requests {
        let key = (request.replica.clone(), list_shape(request));
        if request.starts_list() {
            *lists.entry(key).or_default() += 1;
        } else if request.gone {
            *gone.entry(key).or_default() += 1;
        }
    }
    assert!(
        gone.values().sum::<usize>() > 0,
        "the compaction sent some watch 410 Gone"
    );
    for (key, count) in &lists {
        assert_eq!(
            *count,
            1 + gone.get(key).copied().unwrap_or(0),
            "{key:?} listed again without a 410 Gone"
        );
    }
    // What keyhook asked of Secrets and pods, whatever their number.
    let shapes: BTreeSet<String> = requests
        .iter()
        .filter(|r| matches!(r.resource, "secrets" | "pods") && r.verb == Verb::List)
        .map(ApiRequest::shape)
        .collect();
    let mut expected: BTreeSet<String> = [
        "LIST PODS (all namespaces) labels keyhook.io/inject=true [metadata]".to_string(),
        "LIST SECRETS (all namespaces) labels app.kubernetes.io/managed-by=keyhook [metadata]"
            .to_string(),
        "LIST SECRETS in keyhook fields metadata.name=keyhook-tls".to_string(),
    ]
    .into();
    expected.extend((0..STORES).map(|s| {
        format!("LIST SECRETS in keyhook fields metadata.name=vault-token-{s} [metadata]")
    }));
    assert_eq!(shapes, expected);
}
