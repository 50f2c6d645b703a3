//! Replay and recovery: the writer starting from what is durable.
//!
//! On start, and after a failed write reopened the data file, every
//! batch still in `digest_log` is handed to the digest again, oldest
//! first, before anything new, against the alert states the file holds.
//! So each reading reaches its channels and alerts exactly once, with the
//! same channel indexes and inbox seqs as the first time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{WriterState, NEXT_BATCH};
use crate::alerts;
use crate::store::{StoreError, DIGEST_LOG, META};

impl WriterState {
    /// Hand every undigested batch in the log to the digest, oldest first.
    pub(super) fn replay(&mut self) -> Result<(), StoreError> {
        let batches: Vec<crate::store::digest_log::DigestBatch> = self.store.read(|txn| {
            let log = DIGEST_LOG.read(txn)?;
            let all = log.iter()?.map(|r| r.map(|(_, b)| b)).collect();
            all
        })?;
        let n = batches.len();
        for batch in batches {
            self.next_seq = self.next_seq.max(batch.seq + 1);
            self.dispatch(batch);
        }
        if n > 0 {
            tracing::info!(batches = n, "replaying undigested batches");
        }
        Ok(())
    }

    /// After a failed commit: reopen the data file and carry on from what
    /// is durable, exactly as a restart would. The reopened file may hold
    /// less than the writer assumed (effects-only commits are not fsynced,
    /// and redb drops them with the old handle) or more (an fsync can fail
    /// after the data landed, a "ghost" commit). So digest work in flight
    /// is waited for and dropped, alert states are reloaded from the
    /// store, and every batch still in the digest log is digested again in
    /// order. Readings of a ghost commit that are sent again are
    /// acknowledged as retries.
    pub(super) fn recover(&mut self) -> Result<(), StoreError> {
        // In-flight parts were computed against in-memory alert states
        // that may be ahead of the file; they must all be back before the
        // log is dispatched again (a late part would be taken for a part
        // of the new dispatch).
        let done = self.digest.done_receiver();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.outstanding.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match done.recv_timeout(left) {
                Ok(d) => self.received(d),
                Err(_) => {
                    return Err(StoreError::Io(
                        "the digest did not drain; data file not reopened".into(),
                    ))
                }
            }
        }
        if let Err(e) = self.store.reopen() {
            tracing::error!(error = %e, "data file could not be reopened; refusing writes");
            return Err(e);
        }
        self.ready.clear();
        self.resync().inspect_err(|e| {
            tracing::error!(error = %e, "reading the reopened data file failed");
        })
    }

    /// Reload what the digest depends on from the store, then replay the
    /// digest log (see [`WriterState::recover`]).
    fn resync(&mut self) -> Result<(), StoreError> {
        let (fired, members, next) = self.store.read(|txn| {
            let fired: HashSet<u32> = alerts::fired_ids(txn)?.into_iter().collect();
            let members = alerts::fired_members(txn)?;
            let meta = txn.open_table(META)?;
            let next = meta.get(NEXT_BATCH)?.map(|n| n.value());
            Ok::<_, StoreError>((fired, members, next))
        })?;
        for a in self.ctx.catalog.alerts() {
            a.set_fired(fired.contains(&a.rec.id));
        }
        self.ctx.catalog.load_member_states(&members);
        if let Some(n) = next {
            self.next_seq = self.next_seq.max(n);
        }
        self.replay()
    }
}
