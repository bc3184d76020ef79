//! The leader's loops over managed Secrets: refresh and GC.
//!
//! **Refresh.** Each Secret is due a little before its store's refresh
//! interval has passed since its last fetch: at `interval × (1 − jitter ×
//! u)`, `u` uniform in `[0, 2)`, i.e. `±jitter` around `interval × (1 −
//! jitter)`, so refreshes of Secrets created together drift apart and none
//! is refreshed later than its interval. When a term starts (after an
//! outage, a restart, a new leader) the overdue Secrets are spread evenly
//! over `--refresh-catchup`, oldest first. Every refresh then waits for its
//! store's pacer, a token bucket in tokio time at the store's rate with no
//! burst, before its fetches go through the provider layer (which applies
//! the same limits again against every other caller): the backend never sees
//! more than the store's rate from refresh.
//!
//! **GC.** A managed Secret that no pod has referenced (the
//! `keyhook.io/injected` annotation) for `--gc-grace` is deleted. The grace
//! is counted from the first pass of this term that found it unreferenced,
//! so a new leader never deletes early.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PodInjector;
use super::managed::ManagedSecret;
use crate::metrics::{RefreshResult, SecretControllerMetrics};
use crate::providers::StoreKind;

/// Settings of the leader loops, from `serve` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshSettings {
    /// Spread of refresh times, a fraction of the interval (`--refresh-jitter`, 0.1).
    pub jitter: f64,
    /// Window over which overdue Secrets are spread at term start (`--refresh-catchup`, 1m).
    pub catchup: Duration,
    /// How long an unreferenced Secret is kept (`--gc-grace`, 15m).
    pub gc_grace: Duration,
    /// How often the managed Secrets are looked at again, to pick up new
    /// ones (1m); in a cluster from the cache, with no request.
    pub rescan: Duration,
    /// How often GC looks for unreferenced Secrets (1m); in a cluster in the
    /// caches, with no request.
    pub gc_period: Duration,
    /// Refreshes in flight at once (64).
    pub concurrency: usize,
    /// Deadline of one refresh (30s).
    pub timeout: Duration,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            jitter: 0.1,
            catchup: Duration::from_secs(60),
            gc_grace: Duration::from_secs(15 * 60),
            rescan: Duration::from_secs(60),
            gc_period: Duration::from_secs(60),
            concurrency: 64,
            timeout: Duration::from_secs(30),
        }
    }
}

type SecretId = (String, String);
type StoreId = (StoreKind, Option<String>, String);

struct Entry {
    secret: ManagedSecret,
    due: Instant,
    /// The fetch time the schedule was computed from.
    scheduled_from: OffsetDateTime,
    running: bool,
}

/// A token bucket without burst in tokio time: one request every `1/qps`.
struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    fn new(qps: f64) -> Self {
        Self {
            period: Duration::from_secs_f64(1.0 / qps.max(1e-3)),
            next: Instant::now(),
        }
    }

    /// Reserves `n` requests; returns when the first may start.
    fn reserve(&mut self, now: Instant, n: u32) -> Instant {
        let start = self.next.max(now);
        self.next = start + self.period * n.max(1);
        start
    }
}

/// The refresh loop of one leader term; returns when `term` is cancelled.
pub async fn run_refresh(
    injector: PodInjector,
    settings: RefreshSettings,
    metrics: SecretControllerMetrics,
    term: CancellationToken,
) {
    metrics.set_exporting(true);
    let mut schedule: HashMap<SecretId, Entry> = HashMap::new();
    let mut queue: BinaryHeap<Reverse<(Instant, SecretId)>> = BinaryHeap::new();
    let mut pacers: HashMap<StoreId, Pacer> = HashMap::new();
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(SecretId, bool)>();
    let mut first_scan = true;
    let mut next_scan = Instant::now();

    loop {
        if Instant::now() >= next_scan {
            // In a cluster the listing waits for the first sync of the
            // caches; leadership may end meanwhile.
            let listed = tokio::select! {
                () = term.cancelled() => break,
                listed = injector.secrets().list() => listed,
            };
            match listed {
                Ok(listed) => {
                    let added = merge(&injector, &settings, &mut schedule, listed, first_scan);
                    for (id, due) in added {
                        queue.push(Reverse((due, id)));
                    }
                    metrics
                        .managed
                        .set(i64::try_from(schedule.len()).unwrap_or(i64::MAX));
                    first_scan = false;
                    next_scan = Instant::now() + settings.rescan;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the managed Secrets failed; retrying");
                    next_scan = Instant::now() + settings.rescan.min(Duration::from_secs(10));
                }
            }
        }
        let wake = queue
            .peek()
            .map_or(next_scan, |Reverse((due, _))| (*due).min(next_scan));
        tokio::select! {
            () = term.cancelled() => break,
            Some((id, ok)) = done_rx.recv() => {
                if let Some(entry) = schedule.get_mut(&id) {
                    entry.running = false;
                    let now = Instant::now();
                    entry.due = if ok {
                        entry.scheduled_from = injector.clock().now();
                        now + next_interval(&injector, &settings, &entry.secret)
                    } else {
                        now + retry_after(&injector, &entry.secret)
                    };
                    queue.push(Reverse((entry.due, id)));
                }
                continue;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        while let Some(Reverse((due, id))) = queue.peek().cloned() {
            if due > now {
                break;
            }
            queue.pop();
            let Some(entry) = schedule.get_mut(&id) else {
                continue;
            };
            if entry.running || entry.due != due {
                continue; // superseded
            }
            entry.running = true;
            let secret = entry.secret.clone();
            let requests = u32::try_from(secret.spec.values.len() + secret.spec.maps.len())
                .unwrap_or(u32::MAX);
            let store = store_id(&secret);
            let qps = injector
                .source()
                .policy(&secret.spec.store_ref(), &secret.namespace)
                .map_or(1.0, |p| p.qps);
            let start = pacers
                .entry(store)
                .or_insert_with(|| Pacer::new(qps))
                .reserve(now, requests);
            let injector = injector.clone();
            let metrics = metrics.clone();
            let slots = Arc::clone(&slots);
            let done = done_tx.clone();
            let timeout = settings.timeout;
            let term = term.clone();
            tokio::spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                tokio::select! {
                    () = term.cancelled() => return,
                    () = tokio::time::sleep_until(start) => {}
                }
                let deadline = Instant::now() + timeout;
                let ok = match injector.refresh(&secret, deadline).await {
                    Ok(()) => {
                        metrics.record_refresh(RefreshResult::Refreshed);
                        metrics
                            .lag
                            .observe(start.saturating_duration_since(due).as_secs_f64());
                        true
                    }
                    Err(error) => {
                        tracing::warn!(secret = %format!("{}/{}", secret.namespace, secret.name), %error, "refresh failed");
                        metrics.record_refresh(RefreshResult::Failed);
                        false
                    }
                };
                let _ = done.send(((secret.namespace.clone(), secret.name.clone()), ok));
            });
        }
    }
    metrics.set_exporting(false);
}

/// Folds a fresh listing into the schedule; returns the entries (re)scheduled.
fn merge(
    injector: &PodInjector,
    settings: &RefreshSettings,
    schedule: &mut HashMap<SecretId, Entry>,
    listed: Vec<ManagedSecret>,
    catch_up: bool,
) -> Vec<(SecretId, Instant)> {
    let now = Instant::now();
    let wall = injector.clock().now();
    let mut listed: BTreeMap<SecretId, ManagedSecret> = listed
        .into_iter()
        .map(|s| ((s.namespace.clone(), s.name.clone()), s))
        .collect();
    schedule.retain(|id, _| listed.contains_key(id));
    let mut changed = Vec::new();
    let mut overdue = Vec::new();
    for (id, secret) in std::mem::take(&mut listed) {
        if let Some(entry) = schedule.get_mut(&id) {
            // An admission re-fetched it meanwhile: schedule from that fetch.
            if secret.fetched_at > entry.scheduled_from && !entry.running {
                entry.scheduled_from = secret.fetched_at;
                entry.due = due_after(injector, settings, &secret, wall, now);
                entry.secret = secret;
                changed.push((id, entry.due));
            }
            continue;
        }
        let due = due_after(injector, settings, &secret, wall, now);
        if due <= now {
            overdue.push((secret.fetched_at, id.clone()));
        } else {
            changed.push((id.clone(), due));
        }
        schedule.insert(
            id,
            Entry {
                scheduled_from: secret.fetched_at,
                secret,
                due,
                running: false,
            },
        );
    }
    // Overdue Secrets, oldest first, spread over the catch-up window (at
    // term start) or over one rescan period (found later).
    overdue.sort();
    let window = if catch_up {
        settings.catchup
    } else {
        settings.rescan
    };
    let n = u32::try_from(overdue.len()).unwrap_or(u32::MAX);
    for (i, (_, id)) in overdue.into_iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let due = now + window.mul_f64(f64::from(i) / f64::from(n.max(1)));
        if let Some(entry) = schedule.get_mut(&id) {
            entry.due = due;
        }
        changed.push((id, due));
    }
    changed
}

fn interval(injector: &PodInjector, secret: &ManagedSecret) -> Duration {
    injector
        .source()
        .policy(&secret.spec.store_ref(), &secret.namespace)
        .map_or(super::source::DEFAULT_REFRESH_INTERVAL, |p| {
            p.refresh_interval
        })
}

/// The time until the next refresh after one that just happened.
fn next_interval(
    injector: &PodInjector,
    settings: &RefreshSettings,
    secret: &ManagedSecret,
) -> Duration {
    let jitter = settings.jitter.clamp(0.0, 0.5);
    interval(injector, secret).mul_f64(1.0 - jitter * 2.0 * fastrand::f64())
}

fn due_after(
    injector: &PodInjector,
    settings: &RefreshSettings,
    secret: &ManagedSecret,
    wall: OffsetDateTime,
    now: Instant,
) -> Instant {
    let next = secret.fetched_at + next_interval(injector, settings, secret);
    let until = next - wall;
    if until.is_positive() {
        now + until.unsigned_abs()
    } else {
        now
    }
}

/// After a failed refresh: a tenth of the interval, at most a minute.
fn retry_after(injector: &PodInjector, secret: &ManagedSecret) -> Duration {
    (interval(injector, secret) / 10).min(Duration::from_secs(60))
}

fn store_id(secret: &ManagedSecret) -> StoreId {
    let namespace =
        (secret.spec.store_kind == StoreKind::SecretStore).then(|| secret.namespace.clone());
    (secret.spec.store_kind, namespace, secret.spec.store.clone())
}

/// The GC loop of one leader term; returns when `term` is cancelled.
pub async fn run_gc(injector: PodInjector, settings: RefreshSettings, term: CancellationToken) {
    let mut unreferenced_since: HashMap<SecretId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = term.cancelled() => return,
            () = gc_pass(&injector, &settings, &mut unreferenced_since) => {}
        }
        tokio::select! {
            () = term.cancelled() => return,
            () = tokio::time::sleep(settings.gc_period) => {}
        }
    }
}

async fn gc_pass(
    injector: &PodInjector,
    settings: &RefreshSettings,
    unreferenced_since: &mut HashMap<SecretId, Instant>,
) {
    let secrets = injector.secrets();
    let (managed, in_use) = match futures::try_join!(secrets.list(), secrets.in_use()) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "GC could not read the managed Secrets or pods; retrying next pass");
            return;
        }
    };
    let now = Instant::now();
    let ids: std::collections::HashSet<SecretId> =
        managed.into_iter().map(|s| (s.namespace, s.name)).collect();
    unreferenced_since.retain(|id, _| ids.contains(id) && !in_use.contains(id));
    for id in ids {
        if in_use.contains(&id) {
            continue;
        }
        let since = *unreferenced_since.entry(id.clone()).or_insert(now);
        if now.duration_since(since) >= settings.gc_grace {
            match secrets.delete(&id.0, &id.1).await {
                Ok(()) => {
                    tracing::info!(secret = %format!("{}/{}", id.0, id.1), "deleted a managed Secret no pod uses");
                    unreferenced_since.remove(&id);
                }
                Err(e) => tracing::warn!(error = %e, "GC delete failed; retrying next pass"),
            }
        }
    }
}
