//! The writer's idle compaction: once the writer has had no request for
//! `[storage] compact_idle_secs`, every chunk that can be sealed is (or an
//! hour more has passed: a sensor whose hour is open), and no
//! retention pass or range deletion is running, and the data file has
//! grown past twice its last compacted size, the `sealed` table is first repacked
//! into full leaves (`store::compact::repack_step`, bounded steps in
//! transactions of their own, stopped as soon as a request waits and
//! resumed at the next idle time), then the file is compacted in place
//! (`Store::compact_unused`): what a bulk upload left free inside it
//! goes back to the disk without `overlord compact` and a stop.
//!
//! It runs on this thread, so no write can start meanwhile; queries and
//! management requests that arrive wait until it ends (a fraction of a
//! second for tens of MiB), and if one is in flight it is tried again at
//! the next idle tick. A file is compacted again only once it is larger
//! than twice its compacted size ([`MIN_GROWTH`]): after a bulk upload,
//! not after every quiet moment of a trickle.

use std::time::{Duration, Instant};

use super::WriterState;
use crate::store::compact::RepackFrom;
use crate::store::StoreError;

/// A file is compacted again once it is larger than twice its compacted
/// size and this: redb grows a file by doubling it, so a file compacted
/// to its live size doubles at its next page, and compacting at every
/// growth would bring a repack and a compaction after every quiet half
/// minute of a trickle of readings. Past twice, the live data itself
/// has grown (an upload), or the file holds more free pages than live
/// ones. The first time after a start, any file above this.
const MIN_GROWTH: u64 = 256 << 10;

/// How much longer compaction waits for sensors whose hour is open.
const OPEN_HOUR: Duration = Duration::from_secs(3600);

/// How long compaction rests after it failed.
const COMPACT_RETRY: Duration = Duration::from_secs(60);

impl WriterState {
    /// One repacking step in a transaction of its own, fsynced, so the
    /// pages it frees can be used again two steps later.
    fn repack_txn(&mut self, from: RepackFrom) -> Result<Option<RepackFrom>, StoreError> {
        let txn = self.store.db()?.begin_write()?;
        let next = crate::store::compact::repack_step(&txn, from)?;
        txn.commit()?;
        Ok(next)
    }

    /// Is an idle compaction to run now? Not before every chunk that can
    /// be sealed is (sealing frees pages too, which a compaction before it
    /// would leave inside the file), or, while a sensor's hour is still
    /// open (its last chunk stays hot until the hour is over), an hour
    /// later.
    pub(super) fn compact_due(&self) -> bool {
        let idle = self.ctx.compact_idle;
        let quiet = self
            .ctx
            .clock
            .instant()
            .saturating_duration_since(self.last_request);
        let sealed = self.sealer.pending() == 0 || quiet >= idle.saturating_add(OPEN_HOUR);
        !idle.is_zero()
            && quiet >= idle
            && sealed
            && self.compact_retry_at.is_none_or(|t| Instant::now() >= t)
            && self.ready.is_empty()
            && !self.sealer.due()
            && !self.sweeper.running()
            && !self.purging()
            && !self.store.is_closed()
            && self.store.postgres().is_none()
            && self.store.damaged().is_none()
            && self.store.data_file_len() > self.compacted_len.saturating_mul(2) + MIN_GROWTH
    }

    /// Repack the sealed table (bounded steps, while `busy` says no
    /// request waits), then compact the data file if nobody is using it;
    /// a failure is logged and tried again after [`COMPACT_RETRY`], a
    /// panic inside redb marks the file damaged (as a sealing step's).
    pub(super) fn compact_step(&mut self, busy: impl Fn() -> bool) {
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.repack(&busy)? {
                self.store.compact_unused()
            } else {
                Ok(None) // interrupted: the next idle time goes on
            }
        }));
        let result = result.unwrap_or_else(|p| {
            let why = crate::error::panic_text(&*p, "compaction panicked");
            self.store.mark_damaged(&why);
            Err(StoreError::Damaged(why))
        });
        match result {
            Ok(None) => {} // interrupted, or in use: the next idle tick tries again
            Ok(Some((before, after))) => {
                self.compacted_len = after;
                self.repack_at = Some(None); // repacked again before the next one
                self.metrics.compactions.inc();
                tracing::info!(
                    before_bytes = before,
                    after_bytes = after,
                    ms = started.elapsed().as_millis() as u64,
                    "data file compacted while idle"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "idle repacking or compaction failed; it is tried again later");
                self.compact_retry_at = Some(Instant::now() + COMPACT_RETRY);
                if matches!(e, StoreError::DiskFull | StoreError::Io(_)) {
                    let _ = self.recover();
                }
            }
        }
    }

    /// Repack the sealed table from where it stopped, a step at a time
    /// until it is done (`true`) or `busy` says something waits (`false`).
    fn repack(&mut self, busy: &impl Fn() -> bool) -> Result<bool, StoreError> {
        while let Some(from) = self.repack_at {
            if busy() {
                return Ok(false);
            }
            self.repack_at = self.repack_txn(from)?;
        }
        Ok(true)
    }
}
