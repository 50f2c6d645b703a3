//! The writer's sealing step: a bounded batch of chunks re-encoded into
//! the sealed form (`store::seal`), in a transaction of its own between
//! group commits, so no request's reply waits for it.
//!
//! A step runs while a sensor is due and no request is queued (in the
//! gaps of an upload, while the next body is read and parsed), and under
//! a constant stream of requests at least once a second, so sealing keeps
//! up with an upload (hot chunks do not pile up in the file) and delays
//! the next commit by at most one bounded step (`seal_chunks_per_step` chunks, 10 ms of
//! looking). Under load its commit is not fsynced (the next group commit
//! makes it durable); when no request waits, one a second is, so the
//! pages sealing frees can be used again. A crash loses at most the steps since the last
//! fsync, whose chunks are still hot and are sealed again after the start.

use std::time::{Duration, Instant};

use super::WriterState;
use crate::codec::timefmt;
use crate::store::seal::SealStats;
use crate::store::StoreError;

/// Under a constant stream of requests, a sealing step still runs this
/// often.
const SEAL_STARVE: Duration = Duration::from_secs(1);

/// How long sealing rests after a failed step.
const SEAL_RETRY: Duration = Duration::from_secs(1);

impl WriterState {
    /// Is a sealing step to run now? Not while the data file is closed or
    /// damaged, nor within a second of a failed step.
    pub(super) fn seal_due(&self) -> bool {
        self.sealer.due()
            && !self.store.is_closed()
            && self.store.damaged().is_none()
            && self.seal_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Has no sealing step run for [`SEAL_STARVE`] (or for the idle time,
    /// if shorter: `seal_idle_secs = 0` seals after every commit)?
    pub(super) fn seal_starved(&self) -> bool {
        self.last_seal.elapsed() >= SEAL_STARVE.min(self.sealer.idle())
    }

    /// May an idle sealing step be fsynced? At most once a second, so
    /// back-to-back steps do not fsync each.
    pub(super) fn seal_durable_due(&self) -> bool {
        self.last_durable_seal.elapsed() >= SEAL_STARVE
    }

    /// Run one sealing step, fsynced if `durable`. A failure is logged and
    /// the sensors are all looked at again later (the step's transaction
    /// was not committed).
    pub(super) fn seal_step(&mut self, durable: bool) {
        self.seal_retry_at = None;
        self.last_seal = Instant::now();
        if durable {
            self.last_durable_seal = Instant::now();
        }
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.seal_txn(durable)));
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
                self.seal_retry_at = Some(Instant::now() + SEAL_RETRY);
                if matches!(e, StoreError::DiskFull | StoreError::Io(_)) {
                    let _ = self.recover();
                }
                // The step's progress was not committed: look again at
                // every sensor, from its first chunk.
                let _ = self.store.read(|txn| self.sealer.load(txn));
            }
        }
        self.metrics.seal_pending.set(self.sealer.pending() as u64);
    }

    fn seal_txn(&mut self, durable: bool) -> Result<SealStats, StoreError> {
        let mut txn = self.store.begin_write()?;
        if !durable {
            txn.set_durable(false)?;
        }
        let stats = self.sealer.step(&txn, timefmt::now_micros())?;
        txn.commit()?;
        Ok(stats)
    }
}
