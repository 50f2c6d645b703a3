//! The writer's idle compaction: once the writer has had no request for
//! `[storage] compact_idle_secs`, nothing is left to seal now and no
//! retention pass or range deletion is running, and the data file has
//! grown since the last compaction, the file is compacted in place
//! (`Store::compact_unused`): what a bulk upload left free inside it
//! goes back to the disk without `overlord compact` and a stop.
//!
//! It runs on this thread, so no write can start meanwhile; queries and
//! management requests that arrive wait until it ends (a fraction of a
//! second for tens of MiB), and if one is in flight it is tried again at
//! the next idle tick. redb grows its file by doubling it, so a file that
//! keeps its size between compactions is not compacted again: at most
//! once per growth.

use std::time::{Duration, Instant};

use super::WriterState;
use crate::store::StoreError;

/// How long compaction rests after it failed.
const COMPACT_RETRY: Duration = Duration::from_secs(60);

impl WriterState {
    /// Is an idle compaction to run now?
    pub(super) fn compact_due(&self) -> bool {
        let idle = self.ctx.compact_idle;
        !idle.is_zero()
            && self
                .ctx
                .clock
                .instant()
                .saturating_duration_since(self.last_request)
                >= idle
            && self.compact_retry_at.is_none_or(|t| Instant::now() >= t)
            && self.ready.is_empty()
            && !self.sealer.due()
            && !self.sweeper.running()
            && !self.purging()
            && !self.store.is_closed()
            && self.store.damaged().is_none()
            && self.store.data_file_len() > self.compacted_len
    }

    /// Compact the data file if nobody is using it; a failure is logged
    /// and tried again after [`COMPACT_RETRY`].
    pub(super) fn compact_step(&mut self) {
        let started = Instant::now();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store.compact_unused()));
        let result = result.unwrap_or_else(|p| {
            let why = crate::error::panic_text(&*p, "compaction panicked");
            self.store.mark_damaged(&why);
            Err(StoreError::Damaged(why))
        });
        match result {
            Ok(None) => {} // in use: the next idle tick tries again
            Ok(Some((before, after))) => {
                self.compacted_len = after;
                self.metrics.compactions.inc();
                tracing::info!(
                    before_bytes = before,
                    after_bytes = after,
                    ms = started.elapsed().as_millis() as u64,
                    "data file compacted while idle"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "idle compaction failed; it is tried again later");
                self.compact_retry_at = Some(Instant::now() + COMPACT_RETRY);
                if matches!(e, StoreError::DiskFull | StoreError::Io(_)) {
                    let _ = self.recover();
                }
            }
        }
    }
}
