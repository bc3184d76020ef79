//! Refresh and GC schedules under tokio's paused clock: hours of leader
//! behaviour in seconds, against a backend that counts what it sees per
//! second.

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keyhook::clock::{Clock, TokioClock};
use keyhook::injection::{
    ManagedSecret, PodInjector, Reference, RefreshSettings, SecretSpec, run_gc, run_refresh,
};
use keyhook::metrics::{Metrics, PodInjectionMetrics};
use keyhook::providers::StoreKind;
use support::injection::{CountingBackend, MemorySecrets};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const SECRETS: usize = 10_000;
const INTERVAL: Duration = support::injection::INTERVAL;
const STORE_QPS: f64 = support::injection::STORE_QPS;
const CATCHUP: Duration = Duration::from_secs(60);

fn secret(i: usize, fetched_at: OffsetDateTime) -> ManagedSecret {
    let spec = SecretSpec {
        store_kind: StoreKind::SecretStore,
        store: "vault".into(),
        values: vec![Reference::parse(&format!("app/{i}#password")).unwrap()],
        maps: vec![],
    };
    ManagedSecret {
        namespace: format!("team-{}", i % 50),
        name: spec.secret_name(),
        spec,
        fetched_at,
        keys: BTreeSet::new(),
    }
}

fn setup(
    clock: Arc<dyn Clock>,
    secrets: Arc<MemorySecrets>,
    backend: Arc<CountingBackend>,
) -> PodInjector {
    PodInjector::new(backend, secrets, clock, PodInjectionMetrics::default())
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_secrets_through_a_three_hour_outage() {
    let start_wall = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start_wall));
    let backend = Arc::new(CountingBackend::new(Duration::ZERO));
    let secrets = Arc::new(MemorySecrets::default());
    // Steady state: fetches spread over the last hour.
    for i in 0..SECRETS {
        let age = INTERVAL.mul_f64(i as f64 / SECRETS as f64);
        let s = secret(i, start_wall - age);
        secrets
            .secrets
            .lock()
            .unwrap()
            .insert((s.namespace.clone(), s.name.clone()), s);
    }
    let injector = setup(clock.clone(), secrets.clone(), backend.clone());
    let settings = RefreshSettings {
        catchup: CATCHUP,
        ..Default::default()
    };
    let metrics = Metrics::new();

    // Term 1: two hours of leadership.
    let term = CancellationToken::new();
    let leader = tokio::spawn(run_refresh(
        injector.clone(),
        settings.clone(),
        metrics.secrets.clone(),
        term.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(&format!("keyhook_managed_secrets {SECRETS}")),
        "{text}"
    );
    term.cancel();
    leader.await.unwrap();
    // Out of leadership, none of the controller state is exported.
    let text = metrics.encode().unwrap();
    assert!(!text.contains("keyhook_managed_secrets"), "{text}");
    assert!(!text.contains("keyhook_refresh_total"), "{text}");
    let term1_end = clock.now();

    // A three-hour outage: no leader at all.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let restart = clock.now();
    let before_restart = backend.total();

    // Term 2: the new leader catches up, then keeps the schedule.
    let term = CancellationToken::new();
    let leader = tokio::spawn(run_refresh(
        injector.clone(),
        settings.clone(),
        metrics.secrets.clone(),
        term.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    term.cancel();
    leader.await.unwrap();

    let (second, busiest) = backend.busiest_second();
    eprintln!(
        "busiest second {second}: {busiest} calls; {} calls in all",
        backend.total()
    );
    assert!(
        f64::from(busiest) <= STORE_QPS,
        "second {second} saw {busiest} backend calls; the store allows {STORE_QPS}/s"
    );
    assert!(
        backend.total() > before_restart + SECRETS as u64,
        "term 2 refreshed everything"
    );

    let writes = secrets.writes.lock().unwrap();
    assert_eq!(writes.len(), SECRETS, "every Secret was refreshed");
    let slack = time::Duration::seconds(1);
    for (name, times) in writes.iter() {
        // Caught up within --refresh-catchup of the restart.
        let first_after = times
            .iter()
            .find(|t| **t >= restart)
            .expect("refreshed after the restart");
        assert!(
            *first_after <= restart + CATCHUP + slack,
            "{name}: first refresh {} after the restart",
            *first_after - restart
        );
        // Within each term, never later than the interval.
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            let spans_outage = pair[0] <= term1_end && pair[1] >= restart;
            if !spans_outage {
                assert!(gap <= INTERVAL, "{name}: {gap} between refreshes");
            }
        }
    }
    // Within term 1, the first refresh came no later than an interval after
    // the seeded fetch (whose time is not in `writes`).
    for times in writes.values() {
        assert!(times[0] <= start_wall + INTERVAL + slack);
    }
    drop(writes);
    let text = metrics.encode().unwrap();
    assert!(
        !text.contains("keyhook_refresh_lag_seconds"),
        "a follower exports no lag"
    );
}

#[tokio::test(start_paused = true)]
async fn unreferenced_secrets_are_deleted_after_the_grace() {
    let start_wall = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start_wall));
    let secrets = Arc::new(MemorySecrets::default());
    let names: Vec<(String, String)> = (0..3)
        .map(|i| {
            let s = secret(i, start_wall);
            let id = (s.namespace.clone(), s.name.clone());
            secrets.secrets.lock().unwrap().insert(id.clone(), s);
            id
        })
        .collect();
    secrets.in_use.lock().unwrap().insert(names[0].clone());
    let injector = setup(
        clock,
        secrets.clone(),
        Arc::new(CountingBackend::new(Duration::ZERO)),
    );
    let settings = RefreshSettings {
        gc_grace: Duration::from_secs(15 * 60),
        ..Default::default()
    };
    let term = CancellationToken::new();
    let gc = tokio::spawn(run_gc(injector, settings, term.clone()));

    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    // A pod starts using the second Secret: its grace starts over.
    secrets.in_use.lock().unwrap().insert(names[1].clone());
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    secrets.in_use.lock().unwrap().remove(&names[1]);
    tokio::time::sleep(Duration::from_secs(4 * 60 + 30)).await;
    // 16.5 min: the third, never referenced, is gone; the second was
    // unreferenced again only 4.5 min ago.
    let left: Vec<_> = secrets.secrets.lock().unwrap().keys().cloned().collect();
    assert_eq!(
        left,
        vec![names[0].clone(), names[1].clone()]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(12 * 60)).await;
    let left: Vec<_> = secrets.secrets.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, vec![names[0].clone()]);
    term.cancel();
    gc.await.unwrap();
}

/// 100 pods of one workload admitted at once, against a backend answering in
/// 50 ms: one backend call per distinct key and one Secret write.
#[tokio::test(start_paused = true)]
async fn concurrent_admissions_of_a_workload_share_one_write() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(
        OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
    ));
    let backend = Arc::new(CountingBackend::new(Duration::from_millis(50)));
    let secrets = Arc::new(MemorySecrets::default());
    let injector = setup(clock, secrets.clone(), backend.clone());
    let review = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/admission/pod-inject-demo.json"),
    )
    .unwrap();
    let request = keyhook::admission::decode_admission(review.as_bytes()).unwrap();
    let admissions = (0..100).map(|_| {
        let injector = injector.clone();
        let request = request.clone();
        tokio::spawn(async move {
            injector
                .admit(
                    &request,
                    tokio::time::Instant::now() + Duration::from_secs(8),
                )
                .await
        })
    });
    let responses = futures::future::join_all(admissions).await;
    let patches: BTreeSet<Vec<u8>> = responses
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            assert!(r.allowed, "{}", r.result.message);
            r.patch.unwrap()
        })
        .collect();
    assert_eq!(patches.len(), 1, "every pod gets the same patch");
    let per_key = backend.per_key();
    assert_eq!(per_key.len(), 3, "{per_key:?}");
    assert!(per_key.values().all(|calls| *calls == 1), "{per_key:?}");
    let writes = secrets.writes.lock().unwrap();
    assert_eq!(
        writes.values().map(Vec::len).sum::<usize>(),
        1,
        "one Secret write"
    );
}
