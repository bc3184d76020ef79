//! The request-memory budget: a webhook request's body is reserved here
//! before it is buffered, so that all requests in flight together never
//! hold more than `--max-inflight-bytes` of bodies.
//!
//! A body with a `Content-Length` reserves that much up front; one without
//! reserves as it grows. When the budget is spent, a request waits for
//! others to finish, until its deadline.

use std::sync::Arc;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Budget is handed out in units of this many bytes, so that one
/// reservation of up to 4 TiB fits the semaphore's `u32` permit count.
const UNIT: usize = 1024;

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
    units: Arc<Semaphore>,
    limit: usize,
    in_use: Gauge,
    refusals: Counter,
}

impl MemoryBudget {
    /// A budget of `limit` bytes whose use is shown in `in_use` and whose
    /// refusals are counted in `refusals`.
    pub fn new(limit: usize, in_use: Gauge, refusals: Counter) -> Self {
        Self {
            units: Arc::new(Semaphore::new(limit.div_ceil(UNIT))),
            limit,
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
            units: None,
            in_use: self.in_use.clone(),
        };
        reservation.grow_to(self, bytes, deadline).await?;
        Ok(reservation)
    }
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    units: Option<OwnedSemaphorePermit>,
    in_use: Gauge,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.units.as_ref().map_or(0, |units| units.num_permits()) * UNIT
    }

    /// Holds at least `bytes` in all, waiting for the difference until
    /// `deadline`.
    pub async fn grow_to(
        &mut self,
        budget: &MemoryBudget,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), OverBudget> {
        let held = self.bytes();
        if bytes <= held {
            return Ok(());
        }
        let over = OverBudget {
            limit: budget.limit,
        };
        // More than the whole budget can never be had: no use waiting.
        let wanted = (bytes <= budget.limit)
            .then(|| u32::try_from((bytes - held).div_ceil(UNIT)).ok())
            .flatten();
        let Some(wanted) = wanted else {
            budget.refusals.inc();
            return Err(over);
        };
        let acquire = budget.units.clone().acquire_many_owned(wanted);
        let permit = match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => permit,
            // Err(_) inside: the semaphore is never closed.
            Ok(Err(_)) | Err(_) => {
                budget.refusals.inc();
                return Err(over);
            }
        };
        self.in_use.inc_by(i64::from(wanted) * UNIT as i64);
        match &mut self.units {
            Some(units) => units.merge(permit),
            None => self.units = Some(permit),
        }
        Ok(())
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
