//! Slots for long-polls (`GET /v1/channels/CH/items?wait=S`).
//!
//! A waiting request holds a slot until it answers. Two bounds:
//! `max_long_polls` in all (over it: `503 overloaded`) and
//! `max_long_polls_per_caller` per caller (over it: `429 rate_limited`),
//! so that one caller — a user, a device, or for anonymous callers one
//! source address — cannot take every slot and lock the others out. A
//! slot is given back when its [`Slot`] is dropped: when the request
//! answers, or when hyper drops the request because its connection died,
//! or when the handler sees that the client went away (see
//! [`crate::http::ClientSocket`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::WireError;
use crate::metrics::Metrics;

/// The long-poll slots of a server.
pub struct LongPolls {
    total: Arc<Semaphore>,
    per_caller_max: usize,
    /// Slots held per caller key; a key is removed when its count is 0,
    /// so the map holds at most `max_long_polls` keys.
    held: Mutex<HashMap<String, usize>>,
    metrics: Arc<Metrics>,
}

/// One held slot; dropping it gives it back.
pub struct Slot {
    polls: Arc<LongPolls>,
    key: String,
    _permit: OwnedSemaphorePermit,
}

impl LongPolls {
    /// `total` slots in all, `per_caller` (at least 1) for any one caller.
    pub fn new(total: usize, per_caller: usize, metrics: Arc<Metrics>) -> LongPolls {
        LongPolls {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_caller_max: per_caller.max(1),
            held: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Take a slot for the caller `key`, or refuse at once: `429` when the
    /// caller holds its share, `503` when every slot is taken.
    pub fn take(self: &Arc<Self>, key: String) -> Result<Slot, WireError> {
        let mut held = self.held.lock();
        let n = held.get(&key).copied().unwrap_or(0);
        if n >= self.per_caller_max {
            return Err(WireError::rate_limited(
                format!(
                    "you have {} long-polls waiting already (the most one caller may have)",
                    self.per_caller_max
                ),
                1,
            ));
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| WireError::overloaded("too many long-polls waiting; retry shortly"))?;
        held.insert(key.clone(), n + 1);
        self.metrics.long_polls.add(1);
        Ok(Slot {
            polls: self.clone(),
            key,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.polls.held.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
        self.polls.metrics.long_polls.add(-1);
    }
}
