//! Log lines a client can cause, throttled: a client that sends garbage in
//! a loop must not be able to flood the log, and what was left out is
//! counted in the next line that is written.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Lines per second one [`Throttle`] lets through, after a burst of as many.
const LINES_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).unwrap();

/// A rate limit for one family of log lines.
#[derive(Debug, Clone)]
pub struct Throttle {
    limiter: Arc<DefaultDirectRateLimiter>,
    suppressed: Arc<AtomicU64>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::per_second(LINES_PER_SECOND)
    }
}

impl Throttle {
    /// At most `lines` a second, after a burst of as many.
    pub fn per_second(lines: NonZeroU32) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(lines))),
            suppressed: Arc::default(),
        }
    }

    /// Whether a line may be written now; when it may, how many were left
    /// out since the last one.
    pub fn admit(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_what_was_left_out_is_counted() {
        let throttle = Throttle::default();
        let admitted = (0..100).filter(|_| throttle.admit().is_some()).count();
        assert_eq!(admitted, LINES_PER_SECOND.get() as usize);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(throttle.admit(), Some(95));
    }
}
