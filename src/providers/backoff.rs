//! Exponential backoff with full jitter, bounded by the caller's deadline.
//!
//! `backon` retries a fixed number of times; the layer needs "retry while
//! the next attempt can still finish before the deadline", so this is the
//! few lines of AWS's "full jitter": sleep a uniform random time in
//! `[0, min(cap, base · 2^attempt)]`.

use std::time::Duration;

use tokio::time::Instant;

/// Backoff schedule for one fetch.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next sleep, or `None` when sleeping would reach past `deadline`
    /// (no attempt could follow it).
    pub(crate) fn next_delay(&mut self, now: Instant, deadline: Instant) -> Option<Duration> {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let delay = ceiling.mul_f64(fastrand::f64());
        (now + delay < deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        for attempt in 0..12u32 {
            let ceiling = Duration::from_millis(10)
                .saturating_mul(1 << attempt)
                .min(Duration::from_secs(1));
            let delay = backoff
                .next_delay(now, far)
                .expect("deadline is an hour away");
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
        }
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(5));
        let now = Instant::now();
        for _ in 0..100 {
            if let Some(delay) = backoff.next_delay(now, now + Duration::from_millis(1)) {
                assert!(delay < Duration::from_millis(1));
            }
        }
        assert_eq!(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay(now, now),
            None
        );
    }
}
