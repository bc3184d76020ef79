//! The request-memory budget: a webhook request's body is reserved here
//! before it is buffered, so that all requests in flight together never
//! hold more than `--max-inflight-bytes` of bodies.
//!
//! A body with a `Content-Length` reserves that much up front; one without
//! reserves as it grows. When the budget is spent, a request waits for
//! others to finish, until its deadline.
//!
//! Large bodies may use only part of the budget: the rest is kept for
//! bodies up to [`SMALL_BODY`], which every real review is (the apiserver
//! sends a few KiB). Clients that hold large bodies open, on purpose or
//! not, cannot make the apiserver's reviews wait.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{sync::Notify, time::Instant};

/// Bodies up to this size draw on the whole budget; larger ones only on
/// the part not kept for them.
pub const SMALL_BODY: usize = 64 * 1024;

/// The share of the budget kept for small bodies: one part in this many.
const KEPT_FOR_SMALL: usize = 4;

/// The budget was still spent at the request's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "keyhook's request-memory budget of {limit} bytes (--max-inflight-bytes) stayed in use until the deadline"
)]
pub struct OverBudget {
    /// The budget, bytes.
    pub limit: usize,
}

/// The budget shared by every webhook request.
///
/// Every request takes from it and gives back, on every core: the
/// accounting is one atomic add and one subtract, and only a request that
/// has to wait touches anything more.
#[derive(Debug, Clone)]
pub struct MemoryBudget(Arc<Handle>);

/// One holder's way to the budget. A reservation keeps its holder's handle
/// alive: with a handle per connection, counting those references never
/// touches memory that requests on other cores touch too.
#[derive(Debug)]
struct Handle(Arc<Shared>);

impl std::ops::Deref for Handle {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
struct Shared {
    limit: usize,
    large_limit: usize,
    /// Bytes held by every body: the exported gauge is the account itself.
    in_use: Gauge,
    /// Bytes held by bodies larger than [`SMALL_BODY`], also in `in_use`.
    large: AtomicUsize,
    /// Requests waiting for bytes to be given back.
    waiting: AtomicUsize,
    given_back: Notify,
    refusals: Counter,
}

impl MemoryBudget {
    /// A budget of `limit` bytes whose use is kept in `in_use` and whose
    /// refusals are counted in `refusals`.
    pub fn new(limit: usize, in_use: Gauge, refusals: Counter) -> Self {
        Self(Arc::new(Handle(Arc::new(Shared {
            limit,
            large_limit: limit - limit / KEPT_FOR_SMALL,
            in_use,
            large: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            given_back: Notify::new(),
            refusals,
        }))))
    }

    /// The same budget through a handle of its own (for one connection).
    pub fn handle(&self) -> Self {
        Self(Arc::new(Handle(self.0.0.clone())))
    }

    /// The budget, bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Reserves `bytes`, waiting for them until `deadline`.
    pub async fn reserve(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Reservation, OverBudget> {
        let mut reservation = Reservation {
            budget: self.clone(),
            all: 0,
            large: 0,
        };
        reservation.grow_to(bytes, deadline).await?;
        Ok(reservation)
    }
}

impl Shared {
    /// Takes `all` more bytes, `large` of them from the large bodies'
    /// share, if both fit now; all or nothing.
    fn try_take(&self, all: usize, large: usize) -> bool {
        if large > 0 {
            let before = self.large.fetch_add(large, Ordering::AcqRel);
            if before + large > self.large_limit {
                self.large.fetch_sub(large, Ordering::AcqRel);
                return false;
            }
        }
        let before = usize::try_from(self.in_use.inc_by(as_gauge(all))).unwrap_or(usize::MAX);
        if before.saturating_add(all) > self.limit {
            self.in_use.dec_by(as_gauge(all));
            if large > 0 {
                self.large.fetch_sub(large, Ordering::AcqRel);
            }
            return false;
        }
        true
    }

    fn give_back(&self, all: usize, large: usize) {
        if large > 0 {
            self.large.fetch_sub(large, Ordering::AcqRel);
        }
        if all > 0 {
            self.in_use.dec_by(as_gauge(all));
        }
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.given_back.notify_waiters();
        }
    }
}

fn as_gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    all: usize,
    /// The part of `all` counted in the large bodies' share.
    large: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.all
    }

    /// Holds at least `bytes` in all, waiting for the difference until
    /// `deadline`.
    pub async fn grow_to(&mut self, bytes: usize, deadline: Instant) -> Result<(), OverBudget> {
        if bytes <= self.all {
            return Ok(());
        }
        let shared = &self.budget.0;
        // A large body counts whole in the large bodies' share.
        let large = if bytes > SMALL_BODY { bytes } else { 0 };
        let (more, more_large) = (bytes - self.all, large.saturating_sub(self.large));
        // More than the budget can never be had: no use waiting.
        let possible = if large > 0 {
            bytes <= shared.large_limit
        } else {
            bytes <= shared.limit
        };
        if possible && self.take(more, more_large, deadline).await {
            self.all += more;
            self.large += more_large;
            Ok(())
        } else {
            shared.refusals.inc();
            Err(OverBudget {
                limit: shared.limit,
            })
        }
    }

    /// Takes the bytes now if they fit, or waits for others to give theirs
    /// back until `deadline`.
    async fn take(&self, more: usize, more_large: usize, deadline: Instant) -> bool {
        let shared = &self.budget.0;
        if shared.try_take(more, more_large) {
            return true;
        }
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        let taken = tokio::time::timeout_at(deadline, async {
            loop {
                // Registered before the second look, so that bytes given
                // back in between wake it.
                let given_back = shared.given_back.notified();
                tokio::pin!(given_back);
                given_back.as_mut().enable();
                if shared.try_take(more, more_large) {
                    return;
                }
                given_back.await;
            }
        })
        .await
        .is_ok();
        shared.waiting.fetch_sub(1, Ordering::AcqRel);
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.give_back(self.all, self.large);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(limit: usize) -> MemoryBudget {
        MemoryBudget::new(limit, Gauge::default(), Counter::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_for_another_to_end() {
        let budget = budget(64 * 1024);
        let soon = Instant::now() + Duration::from_secs(8);
        let first = budget.reserve(40 * 1024, soon).await.unwrap();
        assert_eq!(budget.0.in_use.get(), 40 * 1024);

        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(40 * 1024, soon).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "it waits while the budget is spent");
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.bytes(), 40 * 1024);
        drop(second);
        assert_eq!(budget.0.in_use.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_refuses_at_the_deadline() {
        let budget = budget(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(8);
        let _held = budget.reserve(64 * 1024, deadline).await.unwrap();
        let refused = budget.reserve(1, deadline).await.unwrap_err();
        assert_eq!(refused, OverBudget { limit: 64 * 1024 });
        assert_eq!(
            Instant::now(),
            deadline,
            "refused at the deadline, not before"
        );
        assert_eq!(budget.0.refusals.get(), 1);
        assert!(refused.to_string().contains("--max-inflight-bytes"));
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_the_whole_budget_is_refused_at_once() {
        let budget = budget(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(8);
        let start = Instant::now();
        assert!(budget.reserve(65 * 1024, deadline).await.is_err());
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn large_bodies_leave_a_share_for_small_ones() {
        let budget = budget(1024 * 1024);
        let deadline = Instant::now() + Duration::from_secs(8);
        let large = budget.reserve(768 * 1024, deadline).await.unwrap();
        // The large bodies' share is spent: another large body waits...
        assert!(budget.reserve(65 * 1024, deadline).await.is_err());
        assert_eq!(Instant::now(), deadline);
        // ...but small ones still fit in the share kept for them.
        let deadline = Instant::now() + Duration::from_secs(8);
        let small: Vec<_> =
            futures::future::join_all((0..4).map(|_| budget.reserve(64 * 1024, deadline)))
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(Instant::now(), deadline - Duration::from_secs(8), "at once");
        assert_eq!(budget.0.in_use.get(), 1024 * 1024);
        drop((large, small));
        assert_eq!(budget.0.in_use.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_grows_with_its_body() {
        let budget = budget(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut reservation = budget.reserve(0, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 0);
        reservation.grow_to(1500, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 1500);
        reservation.grow_to(1000, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 1500, "it never shrinks");
        reservation.grow_to(64 * 1024, deadline).await.unwrap();
        assert_eq!(budget.0.in_use.get(), 64 * 1024);
        drop(reservation);
        assert_eq!(budget.0.in_use.get(), 0);
    }
}
