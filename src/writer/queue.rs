//! The writer's queue: what a handler hands over, bounded.
//!
//! [`IngestHandle::try_submit`] puts a request's readings on a bounded
//! crossbeam queue without blocking (full: [`Overloaded`], the caller
//! answers `503` and nothing is written). Each request's storage keys are
//! computed and sorted before it is queued ([`Prepared`]), so the writer —
//! the one serial stage — only merges sorted runs.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use crate::codec::Reading;
use crate::inbox;
use crate::metrics::Metrics;
use crate::store::{parts::minute, StoreError};

/// What a stored request reports back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    /// Readings of the request that are now stored (new and retries).
    pub accepted: usize,
    /// Of those, how many were not stored before.
    pub new: usize,
    /// The sending device's inbox after the commit: pending rows and the
    /// first few of them (see [`IngestHandle::try_submit`]).
    pub inbox: inbox::Pending,
}

/// The reply a submitter waits for.
pub type IngestReply = oneshot::Receiver<Result<IngestOutcome, Arc<StoreError>>>;

/// One queued request, as the writer takes it.
pub(super) struct Job {
    /// The request's readings: (device number, reading).
    pub(super) readings: Vec<(u32, Reading)>,
    /// The readings' storage keys, sorted ([`Prepared`]).
    pub(super) keys: Vec<SortKey>,
    /// Device whose inbox the reply carries, and how many rows.
    pub(super) inbox_for: Option<(u32, usize)>,
    /// Where the outcome goes.
    pub(super) reply: oneshot::Sender<Result<IngestOutcome, Arc<StoreError>>>,
}

/// The submitting side, cloned into every handler.
#[derive(Clone)]
pub struct IngestHandle {
    pub(super) tx: Sender<Job>,
    pub(super) metrics: Arc<Metrics>,
    /// Range deletions (`crate::purge`), a queue of their own.
    pub(super) purges: Sender<crate::purge::Purge>,
}

/// A hasher for `(device, sensor code)` pairs (two `u32`s): one multiply,
/// where the default SipHash costs more than the rest of grouping.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The queue to the writer is full: answer `503` with `Retry-After`.
#[derive(Debug)]
pub struct Overloaded;

/// `(device, sensor code, minute, offset in the minute, index in the
/// request)`: the order readings are merged into storage in. The index
/// breaks ties, so the first of two identical readings is the one kept.
pub type SortKey = (u32, u32, u32, u32, u32);

/// The storage key of reading `i` of a request.
fn sort_key(i: usize, (dev, r): &(u32, Reading)) -> SortKey {
    let m = minute(r.time);
    let off = (r.time - i64::from(m) * crate::store::chunk::MINUTE_US) as u32;
    (*dev, r.sensor.code(), m, off, i as u32)
}

/// A request's readings with their storage keys computed and sorted, so
/// that the writer — the one serial stage — does not spend its time
/// sorting. Large requests prepare on a blocking thread.
pub struct Prepared {
    readings: Vec<(u32, Reading)>,
    keys: Vec<SortKey>,
}

impl Prepared {
    /// Compute and sort the keys (call off the async runtime for large
    /// requests). A request's rows are usually in time order, so this
    /// groups the readings by (device, sensor) with a stable counting
    /// sort and sorts only a group that is not already in time order:
    /// O(n) for the usual request instead of a full sort.
    pub fn new(readings: Vec<(u32, Reading)>) -> Prepared {
        // Group numbers in first-seen order.
        let mut ids: HashMap<(u32, u32), u32, BuildHasherDefault<PairHasher>> = HashMap::default();
        let mut groups: Vec<(u32, u32)> = Vec::new();
        let gid: Vec<u32> = readings
            .iter()
            .map(|(dev, r)| {
                let k = (*dev, r.sensor.code());
                *ids.entry(k).or_insert_with(|| {
                    groups.push(k);
                    groups.len() as u32 - 1
                })
            })
            .collect();
        // Where each group's run starts, groups in key order.
        let mut order: Vec<u32> = (0..groups.len() as u32).collect();
        order.sort_unstable_by_key(|g| groups[*g as usize]);
        let mut count = vec![0usize; groups.len()];
        for g in &gid {
            count[*g as usize] += 1;
        }
        let mut start = vec![0usize; groups.len()];
        let mut at = 0;
        for g in &order {
            start[*g as usize] = at;
            at += count[*g as usize];
        }
        let runs: Vec<(usize, usize)> = order
            .iter()
            .map(|g| (start[*g as usize], count[*g as usize]))
            .collect();
        let mut keys: Vec<SortKey> = vec![(0, 0, 0, 0, 0); readings.len()];
        for (i, (g, r)) in gid.iter().zip(&readings).enumerate() {
            let slot = &mut start[*g as usize];
            keys[*slot] = sort_key(i, r);
            *slot += 1;
        }
        for (s, n) in runs {
            let run = &mut keys[s..s + n];
            if run.windows(2).any(|w| w[0] > w[1]) {
                run.sort_unstable();
            }
        }
        Prepared { readings, keys }
    }

    /// How many readings.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

impl IngestHandle {
    /// Queue the deletion of a device's readings in a time range
    /// (`crate::purge`). Never blocks; the reply comes once the deletion
    /// is committed and fsynced.
    pub fn try_purge(
        &self,
        range: crate::purge::Range,
    ) -> Result<crate::purge::PurgeReply, Overloaded> {
        let (reply, rx) = oneshot::channel();
        self.purges
            .try_send(crate::purge::Purge { range, reply })
            .map(|()| rx)
            .map_err(|_| Overloaded)
    }

    /// Queue a request's readings (device number, reading) for the next
    /// group commit. Never blocks. With `inbox_for = Some((device, n))`
    /// the outcome also carries that device's pending inbox count and
    /// first `n` rows, read right after the commit. Sorts on the calling
    /// thread: for large requests use [`IngestHandle::try_submit_prepared`].
    pub fn try_submit(
        &self,
        readings: Vec<(u32, Reading)>,
        inbox_for: Option<(u32, usize)>,
    ) -> Result<IngestReply, Overloaded> {
        self.try_submit_prepared(Prepared::new(readings), inbox_for)
    }

    /// [`IngestHandle::try_submit`] for readings already prepared.
    pub fn try_submit_prepared(
        &self,
        prepared: Prepared,
        inbox_for: Option<(u32, usize)>,
    ) -> Result<IngestReply, Overloaded> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job {
            readings: prepared.readings,
            keys: prepared.keys,
            inbox_for,
            reply,
        }) {
            Ok(()) => {
                self.metrics.ingest_queue_depth.set(self.tx.len() as u64);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.ingest_rejected.inc();
                Err(Overloaded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{SensorId, Value};

    #[test]
    fn prepared_keys_are_the_full_sort_of_the_readings() {
        // Rows in time order (the usual request), then shuffled groups,
        // repeats and late rows: the keys always equal a plain sort.
        let mut x = 7u64;
        let mut rnd = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 33) % n
        };
        for case in 0..4 {
            let mut readings = Vec::new();
            for i in 0..3000i64 {
                let dev = rnd(20) as u32;
                let sensor = SensorId::parse(["N1", "I2", "L3"][rnd(3) as usize]).unwrap();
                let time = match case {
                    0 => 1_700_000_000_000_000 + i * 10_000_000,
                    1 => 1_700_000_000_000_000 + rnd(86_400) as i64 * 1_000_000,
                    2 => 1_700_000_000_000_000 + (i / 7) * 1_000_000,
                    _ => 1_700_000_000_000_000 + rnd(30) as i64,
                };
                let value = match sensor.kind {
                    crate::codec::SensorKind::Num => Value::Num(i as f64),
                    crate::codec::SensorKind::Int => Value::Int(i),
                    _ => Value::Bool(i % 2 == 0),
                };
                readings.push((
                    dev,
                    Reading {
                        sensor,
                        time,
                        value,
                    },
                ));
            }
            let p = Prepared::new(readings.clone());
            let mut want: Vec<SortKey> = readings
                .iter()
                .enumerate()
                .map(|(i, r)| sort_key(i, r))
                .collect();
            want.sort();
            assert_eq!(p.keys, want, "case {case}");
        }
    }
}
