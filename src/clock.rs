//! The server's clock: what presence, retention and the writer's commits
//! take as "now".
//!
//! A [`Clock`] is the system clock plus an offset that only moves
//! forward. A running server's offset is always zero; tests hold a handle
//! (set through [`crate::app::OpenOptions::clock`]) and call
//! [`Clock::advance`] to let a device fall silent, or a retention pass
//! come due, without sleeping. Everything that decides by the time of a
//! presence contact or a retention pass reads this clock, so they agree:
//! contacts recorded by requests (`auth::authenticate`) and by commits,
//! the presence sweep, the retention cutoff and its pass schedule. The
//! credential throttle's windows and the per-device request buckets
//! (`crate::throttle`) read it too, so a test lets them lift by moving
//! it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{timefmt, Micros};

/// The system clock, moved forward by [`Clock::advance`] (tests only).
/// Cheap to clone; clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Microseconds added to the system clock.
    ahead: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, not moved.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> Micros {
        timefmt::now_micros().saturating_add(self.ahead.load(Ordering::Relaxed))
    }

    /// Now, as a monotonic instant (for schedules such as the retention
    /// pass).
    pub fn instant(&self) -> Instant {
        Instant::now() + Duration::from_micros(self.ahead.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Move this clock (and every clone) forward by `by`. It never goes
    /// back.
    pub fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.ahead.fetch_add(us, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone_forward_only() {
        let c = Clock::system();
        let other = c.clone();
        let (t0, i0) = (c.now_micros(), c.instant());
        other.advance(Duration::from_secs(90));
        assert!(c.now_micros() >= t0 + 90_000_000);
        assert!(c.instant() >= i0 + Duration::from_secs(90));
        assert!(Clock::system().now_micros() < t0 + 90_000_000);
    }
}
