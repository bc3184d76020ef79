//! Single-flight: concurrent calls for the same key share one execution.
//!
//! The pod injector materializes a workload's Secret once however many of
//! its pods are admitted at the same instant, and a store's client makes
//! one backend call for identical fetches. Both need the same thing: the
//! first caller starts the work, later callers join it, and each stops
//! waiting at its own deadline while the work goes on for those still
//! waiting. The work is driven by whoever polls it, never spawned, so it
//! runs under the first caller's deadline and stops when nobody waits.
//!
//! (moka's `get_with` coalesces too, but it caches the result and restarts
//! the work from scratch when the caller driving it gives up; here the
//! result is never kept and a joined call is never started twice.)

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

/// One call in flight: a future every caller for its key may await.
pub type Flight<V> = Shared<BoxFuture<'static, V>>;

/// The calls in flight, by key. Cheap to clone; clones share the calls.
pub struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        Self {
            flights: Arc::clone(&self.flights),
        }
    }
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight").finish_non_exhaustive()
    }
}

/// What [`SingleFlight::call`] handed out.
pub struct Joined<V> {
    /// The call to await.
    pub flight: Flight<V>,
    /// Whether it was already in flight (this caller did not start it).
    pub joined: bool,
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// No call in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// The call in flight for `key`, or a new one running `work()`. The key
    /// is free again as soon as the work finishes, so a later call starts
    /// afresh.
    pub fn call<F>(&self, key: K, work: impl FnOnce() -> F) -> Joined<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut flights = self.lock();
        if let Some(flight) = flights.get(&key) {
            return Joined {
                flight: flight.clone(),
                joined: true,
            };
        }
        let done = self.clone();
        let started = work();
        let flight = {
            let key = key.clone();
            async move {
                let value = started.await;
                done.lock().remove(&key);
                value
            }
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        Joined {
            flight,
            joined: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        // The map is only inserted into and removed from under the lock,
        // so a panic elsewhere cannot leave it half-changed.
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_share_one_execution_then_the_key_is_free() {
        let flights: SingleFlight<&str, usize> = SingleFlight::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = || {
            let runs = Arc::clone(&runs);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            }
        };
        let first = flights.call("a", work);
        let second = flights.call("a", work);
        let other = flights.call("b", work);
        assert!(!first.joined && second.joined && !other.joined);
        let (a1, a2, b) = tokio::join!(first.flight, second.flight, other.flight);
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(
            !flights.call("a", work).joined,
            "a finished call frees its key"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_leaves_the_call_to_the_others() {
        let flights: SingleFlight<&str, u8> = SingleFlight::new();
        let work = || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            7
        };
        let impatient = flights.call("a", work);
        let patient = flights.call("a", work);
        let gave_up = tokio::time::timeout(Duration::from_secs(1), impatient.flight).await;
        assert!(gave_up.is_err());
        assert_eq!(patient.flight.await, 7);
    }
}
