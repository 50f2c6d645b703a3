//! The memory budget of request data in flight: one byte count for every
//! request body being read or held, and the readings parsed from it, across
//! all connections at once (`[limits] body_budget_bytes`).
//!
//! `max_body_bytes` bounds one request; without a total, 60 half-sent
//! 32 MiB uploads once took the process from 0.5 GB to 2.4 GB, and
//! `max_connections` of them would be 32 GiB. A request charges what it
//! buffers as it arrives ([`Budget::charge`], [`Charge::grow`]) and gives
//! it back when the [`Charge`] is dropped, with its reply; a charge that
//! does not fit is refused at once (`503 overloaded`, `Retry-After`), never
//! waited for.
//!
//! When the bytes in flight fall back to zero after a spike, the allocator
//! is asked to give free memory back to the system (glibc's `malloc_trim`;
//! elsewhere nothing), on a blocking thread, so the process's footprint
//! goes down with its load instead of staying at its peak.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

/// In flight above this many bytes counts as a spike: when it is over, the
/// allocator is trimmed.
pub const TRIM_AFTER_BYTES: usize = 16 << 20;

/// The budget; shared by every request of a server.
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Set when `used` went over [`TRIM_AFTER_BYTES`] since the last trim.
    spiked: AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

impl Budget {
    /// A budget of `limit` bytes (0: none at all may be held; use a
    /// large value for "unbounded").
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            spiked: AtomicBool::new(false),
            metrics,
        })
    }

    /// The whole budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty charge, to grow as data arrives.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Take `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            });
        match taken {
            Ok(before) => {
                if before + n > TRIM_AFTER_BYTES {
                    self.spiked.store(true, Ordering::Relaxed);
                }
                self.metrics.body_bytes_in_flight.add(n as i64);
                true
            }
            Err(_) => false,
        }
    }

    /// Give `n` bytes back; the last bytes of a spike trim the allocator.
    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.metrics.body_bytes_in_flight.add(-(n as i64));
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before == n && self.spiked.swap(false, Ordering::AcqRel) {
            trim_soon();
        }
    }
}

/// Bytes one request holds of the [`Budget`]; given back on drop. Shared
/// by reference between the threads that parse two halves of a body, so
/// its count is atomic.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: AtomicUsize,
}

impl Charge {
    /// Hold `n` more bytes, if the budget has them.
    pub fn grow(&self, n: usize) -> bool {
        if self.budget.take(n) {
            self.bytes.fetch_add(n, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Hold `n` bytes in all: more or fewer than now.
    pub fn resize(&self, n: usize) -> bool {
        let now = self.bytes();
        if n >= now {
            self.grow(n - now)
        } else {
            self.bytes.fetch_sub(now - n, Ordering::AcqRel);
            self.budget.give(now - n);
            true
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The budget this charge is on.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(*self.bytes.get_mut());
    }
}

/// Ask the allocator to return free memory to the system, on a blocking
/// thread when there is a runtime (it walks the heap).
fn trim_soon() {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            // Raw `spawn_blocking`: detached, nobody waits for the trim,
            // and it may run with no runtime context (`Handle` given).
            rt.spawn_blocking(trim);
        }
        Err(_) => trim(),
    }
}

/// glibc keeps freed memory for reuse, and raises its mmap threshold after
/// large frees, so a spike of big buffers stays in the process for good
/// unless it is trimmed.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no
    // preconditions and touches nothing the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_budget_and_come_back_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let b = Budget::new(100, metrics.clone());
        let a = b.charge();
        assert!(a.grow(60));
        let c = b.charge();
        assert!(!c.grow(41), "over the budget");
        assert!(c.grow(40));
        assert_eq!((b.used(), metrics.body_bytes_in_flight.get()), (100, 100));
        assert!(a.resize(10));
        assert_eq!(b.used(), 50);
        assert!(!a.resize(70));
        assert!(a.resize(60));
        drop(a);
        assert_eq!(b.used(), 40);
        drop(c);
        assert_eq!((b.used(), metrics.body_bytes_in_flight.get()), (0, 0));
    }
}
