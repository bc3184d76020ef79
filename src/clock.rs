//! Wall-clock time, behind a trait so that schedules measured in hours and
//! years (certificate rotation, lease expiry) run in milliseconds under
//! tokio's paused test clock.

use std::{fmt::Debug, time::Duration};

use time::OffsetDateTime;

/// A source of wall-clock time.
pub trait Clock: Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> OffsetDateTime;

    /// The current time in Unix seconds.
    fn unix_now(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The system's wall clock, for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Wall time that advances with tokio's clock from a fixed origin: under
/// `tokio::time::pause()` it moves only when the test (or auto-advance)
/// moves the tokio clock, so wall-clock deadlines and tokio sleeps agree.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_wall: OffsetDateTime,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `origin_wall` now.
    pub fn starting_at(origin_wall: OffsetDateTime) -> Self {
        Self {
            origin_wall,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        let elapsed: Duration = tokio::time::Instant::now() - self.origin;
        self.origin_wall + elapsed
    }
}
