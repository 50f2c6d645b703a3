//! Brute-force throttling and the per-device write rate limit.
//!
//! **Failed credentials.** A credential check is counted as a failure
//! *before* the secret is checked ([`Throttle::begin`]) and un-counted
//! when it turns out right ([`Attempt::succeeded`]), so concurrent wrong
//! guesses cannot all slip past the check while the first ones are still
//! being hashed. Failures are counted against three keys ([`Keys`]):
//!
//! - **(source address, id)**: after `limit` failures within one
//!   `window`, that source gets `429 rate_limited` with `Retry-After` for
//!   that id until the window ends, even with the right secret. Only a
//!   client guessing from that address at that id is refused.
//! - **source address**: after `limit` failures (at any ids), that source
//!   is checked at a reduced rate — one check per [`SLOW_CHECK`] — and
//!   other requests from it get `429` with `Retry-After: 1`. This bounds
//!   one client spraying guesses over many ids, while a legitimate client
//!   behind the same NAT still gets in, slowed, with its right secret.
//! - **id** (human passwords only: logins; tokens and file passwords are
//!   128 random bits, so guessing one from many addresses is hopeless):
//!   after `limit` failures from anywhere, the id is checked at the same
//!   reduced rate, which bounds a distributed guesser; a right password
//!   that is checked always succeeds.
//!
//! So an attacker can never make a credential holder's right secret be
//! refused outright from another address: at most it is checked at the
//! reduced rate. Windows end by themselves. Keys are bounded; when full,
//! expired windows are dropped first, then the oldest.
//!
//! **Device writes.** A token bucket per device: `rate` requests per
//! second, bursts up to `burst`. A request over it gets `429` with
//! `Retry-After`, never a silent drop. The unit is the request, not the
//! row, so a backlog after an outage gets in as CSV batches.
//!
//! Both read time from the server's [`Clock`], so a test lets a window
//! end or a bucket refill by moving the clock instead of sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::codec::names::log_safe;

/// Most keys the failure table holds.
pub const MAX_KEYS: usize = 100_000;

/// Once a source or an id is over its limit, one credential check per
/// this interval is let through.
pub const SLOW_CHECK: Duration = Duration::from_secs(1);

/// What one credential check is counted against.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// (source, id): refused outright when over the limit.
    pair: Option<String>,
    /// The source address: slowed when over the limit.
    source: Option<String>,
    /// The id across all sources (passwords only): slowed when over.
    id: Option<String>,
}

impl Keys {
    /// A token or random-password check: `kind` names the id's namespace
    /// (`dev`, `file`, ...); `id` is `None` for a bare Bearer token.
    pub fn token(peer: Option<IpAddr>, kind: &str, id: Option<&str>) -> Keys {
        Keys {
            // `@`, `#` and `/` keep the three kinds of key apart whatever
            // id a client names (an address never holds a `/`), so no
            // name can be chosen to hit someone else's counter.
            pair: peer
                .zip(id)
                .map(|(ip, id)| format!("{kind}@{ip}/{}", bounded(id))),
            source: peer.map(|ip| format!("src:{ip}")),
            id: None,
        }
    }

    /// A human password check for user `name` (a login, or the current
    /// password given to change credentials).
    pub fn password(peer: Option<IpAddr>, name: &str) -> Keys {
        Keys {
            id: Some(format!("login#{}", bounded(name))),
            ..Keys::token(peer, "login", Some(name))
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.pair.iter().chain(&self.source).chain(&self.id)
    }
}

/// Longest id kept whole in a key; ids, user and file names are at
/// most 128 bytes.
const MAX_ID: usize = 128;

/// `id`, or for one longer than any valid id its first [`MAX_ID`] bytes
/// and `…` (no valid id holds it, so no valid id's key is hit), so a
/// client naming huge ids cannot make the keys of the bounded table huge.
fn bounded(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= MAX_ID {
        return id.into();
    }
    let mut end = MAX_ID;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\u{2026}", &id[..end]).into()
}

struct Entry {
    failures: u32,
    start: Instant,
    /// When the next slowed check may run.
    next_check: Instant,
}

/// Failed-credential counters.
pub struct Throttle {
    limit: u32,
    window: Duration,
    clock: Clock,
    failures: Mutex<HashMap<String, Entry>>,
}

/// A credential check in progress, counted as a failure until
/// [`Attempt::succeeded`] says otherwise (so a dropped one stays counted).
#[must_use = "say whether the secret was right"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: Keys,
}

impl Throttle {
    /// `limit` failures per key per `window` of `clock`'s time; `limit ==
    /// 0` turns it off.
    pub fn new(limit: u32, window: Duration, clock: Clock) -> Throttle {
        Throttle {
            limit,
            window,
            clock,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Start a credential check: `Err(seconds)` (to send as `Retry-After`)
    /// while it may not run; otherwise it is counted as a failure at once
    /// and the returned [`Attempt`] un-counts it on success.
    pub fn begin(&self, keys: &Keys) -> Result<Attempt<'_>, u64> {
        let attempt = Attempt {
            throttle: self,
            keys: keys.clone(),
        };
        if self.limit == 0 {
            return Ok(attempt);
        }
        let now = self.clock.instant();
        let mut map = self.failures.lock();
        let over = |map: &HashMap<String, Entry>, k: &String| {
            map.get(k)
                .filter(|e| e.failures >= self.limit && now < e.start + self.window)
                .map(|e| (e.start + self.window - now, e.next_check))
        };
        if let Some((left, _)) = keys.pair.as_ref().and_then(|k| over(&map, k)) {
            return Err(left.as_secs().max(1));
        }
        let slowed: Vec<&String> = keys
            .source
            .iter()
            .chain(&keys.id)
            .filter(|k| over(&map, k).is_some())
            .collect();
        for k in &slowed {
            if let Some((_, next)) = over(&map, k) {
                if now < next {
                    return Err((next - now).as_secs().max(1));
                }
            }
        }
        for k in slowed {
            if let Some(e) = map.get_mut(k) {
                e.next_check = now + SLOW_CHECK;
            }
        }
        for k in keys.all() {
            self.bump(&mut map, k, now);
        }
        Ok(attempt)
    }

    fn bump(&self, map: &mut HashMap<String, Entry>, key: &str, now: Instant) {
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, e| now < e.start + self.window);
            if map.len() >= MAX_KEYS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.start)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            start: now,
            next_check: now,
        });
        if now >= e.start + self.window {
            *e = Entry {
                failures: 0,
                start: now,
                next_check: now,
            };
        }
        e.failures += 1;
        if e.failures == self.limit {
            tracing::warn!(target: "overlord::auth", key = %log_safe(key), "failed credentials: throttled for the rest of the window");
        }
    }
}

impl Attempt<'_> {
    /// The secret was right: take back the failure counted by
    /// [`Throttle::begin`].
    pub fn succeeded(self) {
        if self.throttle.limit == 0 {
            return;
        }
        let mut map = self.throttle.failures.lock();
        for k in self.keys.all() {
            if let Some(e) = map.get_mut(k) {
                e.failures = e.failures.saturating_sub(1);
            }
        }
    }

    /// The secret was wrong: it stays counted.
    pub fn failed(self) {}
}

/// Per-device token buckets.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    clock: Clock,
    buckets: Mutex<HashMap<u32, (f64, Instant)>>,
}

impl RateLimit {
    /// `rate` requests per second (of `clock`'s time) with bursts of
    /// `burst`; `rate <= 0` turns it off.
    pub fn new(rate: f64, burst: f64, clock: Clock) -> RateLimit {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `device`, or `Err(seconds)` to wait.
    pub fn take(&self, device: u32) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = self.clock.instant();
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
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        let clock = Clock::system();
        let t = Throttle::new(3, Duration::from_secs(60), clock.clone());
        let bad = Keys::token(ip(2), "dev", Some("x"));
        for _ in 0..3 {
            t.begin(&bad).unwrap().failed();
        }
        assert!(t.begin(&bad).is_err(), "the guessing pair is refused");
        t.begin(&Keys::token(ip(1), "dev", Some("x")))
            .expect("another source is not refused for that id")
            .succeeded();
        let other = Keys::token(ip(2), "dev", Some("y"));
        t.begin(&other)
            .expect("the slowed source gets one check")
            .succeeded();
        assert!(t.begin(&other).is_err(), "...then waits for the next slot");
        assert!(t.begin(&bad).is_err(), "still within the window");
        clock.advance(Duration::from_secs(61));
        assert!(t.begin(&bad).is_ok(), "the window ends by itself");
    }

    #[test]
    fn no_chosen_name_hits_another_key() {
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let ann = Keys::password(ip, "ann");
        for name in [
            "127.0.0.1:ann",
            "127.0.0.1/ann",
            "login@127.0.0.1/ann",
            "login#ann",
            "src:127.0.0.1",
        ] {
            let k = Keys::password(Some(IpAddr::from([10, 0, 0, 1])), name);
            for a in ann.all() {
                assert!(k.all().all(|b| a != b), "{name}: {a}");
            }
        }
    }

    #[test]
    fn keys_stay_short_whatever_id_is_named() {
        let huge = "x".repeat(16 * 1024);
        let k = Keys::password(Some(IpAddr::from([127, 0, 0, 1])), &huge);
        assert!(k.all().all(|key| key.len() < 200));
    }

    #[test]
    fn a_success_is_not_counted() {
        let t = Throttle::new(2, Duration::from_secs(60), Clock::system());
        let k = Keys::password(Some(IpAddr::from([127, 0, 0, 1])), "ann");
        for _ in 0..10 {
            t.begin(&k).unwrap().succeeded();
        }
        t.begin(&k).unwrap().failed();
        assert!(t.begin(&k).is_ok());
    }

    #[test]
    fn buckets_allow_bursts_then_refill() {
        let clock = Clock::system();
        let r = RateLimit::new(1.0, 3.0, clock.clone());
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_err());
        assert!(r.take(2).is_ok(), "per device");
        clock.advance(Duration::from_millis(1001));
        assert!(r.take(1).is_ok());
        assert!(r.take(1).is_err(), "one request refilled in a second");
        assert!(RateLimit::new(0.0, 1.0, Clock::system()).take(1).is_ok());
    }
}
