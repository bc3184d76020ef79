//! CPU-heavy work (decoding and deciding large reviews, conversion) off the
//! async workers, a bounded number of jobs at a time, under the request's
//! deadline.
//!
//! The async workers serve every connection and `/readyz`: a review that
//! takes a worker for a second stalls every request queued behind it.
//! Offloaded jobs run on tokio's blocking threads instead, on at most half
//! the cores at once ([`CpuPool::for_this_machine`]) so that they cannot
//! take every core, and a request whose deadline passes while its job waits
//! or runs is answered at the deadline (the job finishes in the background
//! and is discarded).

use std::sync::Arc;

use tokio::{sync::Semaphore, time::Instant};

/// Bodies at least this large are decoded and decided on the pool; smaller
/// ones cost less than handing them over would.
pub const OFFLOAD_FROM_BYTES: usize = 64 * 1024;

/// The deadline passed before the job finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

/// A bounded pool of blocking threads for CPU-heavy jobs.
#[derive(Debug, Clone)]
pub struct CpuPool {
    slots: Arc<Semaphore>,
}

impl CpuPool {
    /// A pool running at most `slots` jobs at once.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// A pool leaving at least one core to the async workers: half the
    /// available cores, at least one.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores / 2)
    }

    /// Runs `job` on the pool, waiting for a slot; gives up at `deadline`.
    pub async fn run<T, F>(&self, deadline: Instant, job: F) -> Result<T, Overrun>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Overrun)?
            // The semaphore is never closed.
            .map_err(|_| Overrun)?;
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            job()
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) => {
                // A panic in the job: reraise it here, as an inline call would.
                std::panic::resume_unwind(join.into_panic())
            }
            Err(_) => Err(Overrun),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_job_runs_and_returns_its_value() {
        let pool = CpuPool::new(1);
        let deadline = Instant::now() + Duration::from_secs(8);
        assert_eq!(pool.run(deadline, || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_job_that_waits_for_a_slot_past_its_deadline_overruns() {
        let pool = CpuPool::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let long = Instant::now() + Duration::from_secs(60);
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(long, move || held.recv().is_ok()).await }
        });
        // Let the first job take the only slot.
        while pool.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(pool.run(soon, || ()).await, Err(Overrun));
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn a_job_still_running_at_its_deadline_overruns() {
        let pool = CpuPool::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            pool.run(soon, move || held.recv().is_ok()).await,
            Err(Overrun)
        );
        release.send(()).unwrap();
    }
}
