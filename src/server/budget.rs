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

use std::sync::Arc;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Budget is handed out in units of this many bytes, so that one
/// reservation of up to 4 TiB fits the semaphore's `u32` permit count.
const UNIT: usize = 1024;

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
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    /// Every body's bytes.
    all: Arc<Semaphore>,
    /// The bytes of bodies larger than [`SMALL_BODY`], also counted in `all`.
    large: Arc<Semaphore>,
    limit: usize,
    large_limit: usize,
    in_use: Gauge,
    refusals: Counter,
}

impl MemoryBudget {
    /// A budget of `limit` bytes whose use is shown in `in_use` and whose
    /// refusals are counted in `refusals`.
    pub fn new(limit: usize, in_use: Gauge, refusals: Counter) -> Self {
        let large_limit = limit - limit / KEPT_FOR_SMALL;
        Self {
            all: Arc::new(Semaphore::new(limit.div_ceil(UNIT))),
            large: Arc::new(Semaphore::new(large_limit.div_ceil(UNIT))),
            limit,
            large_limit,
            in_use,
            refusals,
        }
    }

    /// The budget, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `bytes`, waiting for them until `deadline`.
    pub async fn reserve(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Reservation, OverBudget> {
        let mut reservation = Reservation {
            all: None,
            large: None,
            in_use: self.in_use.clone(),
        };
        reservation.grow_to(self, bytes, deadline).await?;
        Ok(reservation)
    }
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    all: Option<OwnedSemaphorePermit>,
    large: Option<OwnedSemaphorePermit>,
    in_use: Gauge,
}

/// Units held in `permit`.
fn units(permit: &Option<OwnedSemaphorePermit>) -> usize {
    permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
}

/// Takes `permit` into `held`.
fn merge(held: &mut Option<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match held {
        Some(held) => held.merge(permit),
        None => *held = Some(permit),
    }
}

/// Waits until `deadline` for `wanted` more units of `semaphore`.
async fn acquire(
    semaphore: &Arc<Semaphore>,
    wanted: usize,
    deadline: Instant,
) -> Option<OwnedSemaphorePermit> {
    let wanted = u32::try_from(wanted).ok()?;
    match tokio::time::timeout_at(deadline, semaphore.clone().acquire_many_owned(wanted)).await {
        Ok(Ok(permit)) => Some(permit),
        // Err(_) inside: the semaphores are never closed.
        Ok(Err(_)) | Err(_) => None,
    }
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        units(&self.all) * UNIT
    }

    /// Holds at least `bytes` in all, waiting for the difference until
    /// `deadline`.
    pub async fn grow_to(
        &mut self,
        budget: &MemoryBudget,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), OverBudget> {
        let wanted = bytes.div_ceil(UNIT);
        let held = units(&self.all);
        if wanted <= held {
            return Ok(());
        }
        let large = bytes > SMALL_BODY;
        // More than the budget can never be had: no use waiting.
        let possible = bytes
            <= if large {
                budget.large_limit
            } else {
                budget.limit
            };
        match possible.then_some(()) {
            Some(()) => self.acquire(budget, wanted, large, deadline).await,
            None => None,
        }
        .ok_or_else(|| {
            budget.refusals.inc();
            OverBudget {
                limit: budget.limit,
            }
        })
    }

    /// Takes `wanted` units in all (and of the large bodies' share when
    /// `large`), always in that order so that two growing reservations
    /// never hold what the other waits for.
    async fn acquire(
        &mut self,
        budget: &MemoryBudget,
        wanted: usize,
        large: bool,
        deadline: Instant,
    ) -> Option<()> {
        if large {
            let more = wanted.saturating_sub(units(&self.large));
            if more > 0 {
                let permit = acquire(&budget.large, more, deadline).await?;
                merge(&mut self.large, permit);
            }
        }
        let more = wanted - units(&self.all);
        let permit = acquire(&budget.all, more, deadline).await?;
        merge(&mut self.all, permit);
        self.in_use
            .inc_by(i64::try_from(more * UNIT).unwrap_or(i64::MAX));
        Some(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = self.bytes();
        if bytes > 0 {
            self.in_use.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
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
        assert_eq!(budget.in_use.get(), 40 * 1024);

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
        assert_eq!(budget.in_use.get(), 0);
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
        assert_eq!(budget.refusals.get(), 1);
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
        assert_eq!(budget.in_use.get(), 1024 * 1024);
        drop((large, small));
        assert_eq!(budget.in_use.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_grows_with_its_body() {
        let budget = budget(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut reservation = budget.reserve(0, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 0);
        reservation.grow_to(&budget, 1500, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 2048);
        reservation.grow_to(&budget, 2000, deadline).await.unwrap();
        assert_eq!(reservation.bytes(), 2048);
        reservation
            .grow_to(&budget, 64 * 1024, deadline)
            .await
            .unwrap();
        assert_eq!(budget.in_use.get(), 64 * 1024);
        drop(reservation);
        assert_eq!(budget.in_use.get(), 0);
    }
}
