//! The writer's sealing step: a bounded batch of chunks re-encoded into
//! the sealed form (`store::seal`), in a transaction of its own between
//! group commits, so no request's reply waits for it.
//!
//! The step runs when a sensor is due and no request is queued, or, under
//! a constant stream of requests, at most once per `seal_idle` (at most a
//! second apart), so sealing keeps up without starving and never delays a
//! reply by more than one bounded step. Its commit is fsynced only when
//! it sealed something (nothing else to keep); a crash loses at most that
//! step, whose chunks are still hot and are sealed again after the start.

use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase};

use super::WriterState;
use crate::codec::timefmt;
use crate::store::seal::SealStats;
use crate::store::StoreError;

/// The longest a due sealing step waits for a moment without requests.
const SEAL_STARVE: Duration = Duration::from_secs(1);

impl WriterState {
    /// Is a sealing step to run now (`queue_empty`: no request waits)?
    pub(super) fn seal_due(&self, queue_empty: bool) -> bool {
        if !self.sealer.due() || self.store.is_closed() || self.store.damaged().is_some() {
            return false;
        }
        queue_empty || self.last_seal.elapsed() >= SEAL_STARVE.min(self.sealer.idle())
    }

    /// Run one sealing step. A failure is logged and the sensors are all
    /// looked at again later (the step's transaction was not committed).
    pub(super) fn seal_step(&mut self) {
        self.last_seal = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.seal_txn()));
        let result = result.unwrap_or_else(|p| {
            let why = crate::error::panic_text(&*p, "sealing panicked");
            self.store.mark_damaged(&why);
            Err(StoreError::Damaged(why))
        });
        match result {
            Ok(stats) => {
                self.metrics.chunks_sealed.add(stats.chunks_in);
            }
            Err(e) => {
                tracing::warn!(error = %e, "sealing step failed; it is tried again later");
                if matches!(e, StoreError::DiskFull | StoreError::Io(_)) {
                    let _ = self.recover();
                }
                // The step's progress was not committed: look again at
                // every sensor, from its first chunk.
                if let Ok(db) = self.store.db() {
                    if let Ok(txn) = db.begin_read() {
                        let _ = self.sealer.load(&txn);
                    }
                }
            }
        }
        self.metrics.seal_pending.set(self.sealer.pending() as u64);
    }

    fn seal_txn(&mut self) -> Result<SealStats, StoreError> {
        let mut txn = self.store.db()?.begin_write()?;
        let stats = self.sealer.step(&txn, timefmt::now_micros())?;
        if stats.sealed == 0 {
            // Nothing changed: no fsync needed.
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        txn.commit()?;
        Ok(stats)
    }
}
