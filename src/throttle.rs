//! Brute-force throttling and the per-device write rate limit.
//!
//! **Failed credentials.** Every failed token, password or Basic check is
//! counted against its source address and against the id it named. When
//! either has `limit` failures within one `window`, further attempts for
//! it get `429 rate_limited` with `Retry-After` until that window ends —
//! even with the right token, so guessing gains nothing. Windows end by
//! themselves: a legitimate device behind the same address is never
//! locked out for longer than one window. Keys are bounded; when full,
//! expired windows are dropped first, then the oldest.
//!
//! **Device writes.** A token bucket per device: `rate` requests per
//! second, bursts up to `burst`. A request over it gets `429` with
//! `Retry-After`, never a silent drop. The unit is the request, not the
//! row, so a backlog after an outage gets in as CSV batches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most keys the failure table holds.
pub const MAX_KEYS: usize = 100_000;

/// Failed-credential counters.
pub struct Throttle {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// `limit` failures per key per `window`; `limit == 0` turns it off.
    pub fn new(limit: u32, window: Duration) -> Throttle {
        Throttle {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` while `key` is throttled.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let map = self.failures.lock();
        match map.get(key) {
            Some(&(n, start)) if n >= self.limit && now < start + self.window => {
                Err((start + self.window - now).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Count a failure for `key`. Returns true when this one reached the
    /// limit (for a single log line per window).
    pub fn fail(&self, key: &str) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, (_, start)| now < *start + self.window);
            if map.len() >= MAX_KEYS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(key.to_string()).or_insert((0, now));
        if now >= e.1 + self.window {
            *e = (0, now);
        }
        e.0 += 1;
        e.0 == self.limit
    }
}

/// Per-device token buckets.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<u32, (f64, Instant)>>,
}

impl RateLimit {
    /// `rate` requests per second with bursts of `burst`; `rate <= 0`
    /// turns it off.
    pub fn new(rate: f64, burst: f64) -> RateLimit {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `device`, or `Err(seconds)` to wait.
    pub fn take(&self, device: u32) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock();
        let b = map.entry(device).or_insert((self.burst, now));
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.0) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_per_key_and_lifts() {
        let t = Throttle::new(3, Duration::from_millis(200));
        assert!(t.check("a").is_ok());
        assert!(!t.fail("a"));
        assert!(!t.fail("a"));
        assert!(t.check("a").is_ok());
        assert!(t.fail("a"));
        assert!(t.check("a").is_err());
        assert!(t.check("b").is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check("a").is_ok(), "the window ends by itself");
    }

    #[test]
    fn buckets_allow_bursts_then_refill() {
        let r = RateLimit::new(1000.0, 3.0);
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_err());
        assert!(r.take(2).is_ok(), "per device");
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.take(1).is_ok());
        assert!(RateLimit::new(0.0, 1.0).take(1).is_ok());
    }
}
