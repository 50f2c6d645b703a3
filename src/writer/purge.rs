//! The writer's side of range deletions (`crate::purge`): one purge at a
//! time, a bounded step in every transaction while it runs, the reply
//! after the commit that finishes it (fsynced) or a failed one.

use std::sync::Arc;

use super::WriterState;
use crate::purge::{Progress, Purge};
use crate::store::{StoreError, WriteTxn};

impl WriterState {
    /// Take `p` up when no purge is running (the caller only receives
    /// when none is).
    pub(super) fn start_purge(&mut self, p: Purge) {
        debug_assert!(self.purge.is_none());
        self.purge = Some(Progress::new(p));
    }

    /// Is a purge running (the loop then does not idle between commits)?
    pub(super) fn purging(&self) -> bool {
        self.purge.is_some()
    }

    /// The running purge's step in `txn`; the transaction that finishes
    /// it is fsynced, since its reply promises the readings are gone.
    pub(super) fn purge_step(&mut self, txn: &mut WriteTxn) -> Result<(), StoreError> {
        let Some(p) = self.purge.as_mut() else {
            return Ok(());
        };
        self.purge_undo = Some(p.at.clone());
        if let Err(e) = crate::purge::step(&*txn, p) {
            // A chunk that does not decode must not fail the ingest in
            // this transaction: the purge alone is answered with it (what
            // its step wrote before the error is within its range).
            tracing::warn!(error = %e, "range deletion abandoned");
            self.purge_failed(&Arc::new(e));
            return Ok(());
        }
        if p.at.done {
            txn.set_durable(true)?;
        }
        Ok(())
    }

    /// After a commit: answer the purge if it is done.
    pub(super) fn purge_committed(&mut self) {
        if self.purge.as_ref().is_some_and(|p| p.at.done) {
            if let Some(p) = self.purge.take() {
                let _ = p.purge.reply.send(Ok(p.at.removed));
            }
        }
    }

    /// A transaction with a purge step failed: its progress did not
    /// happen (the step is tried again from where it was).
    pub(super) fn purge_rollback(&mut self) {
        if let (Some(p), Some(at)) = (self.purge.as_mut(), self.purge_undo.take()) {
            p.at = at;
        }
    }

    /// After a failed commit: the purge is answered with the error (the
    /// steps committed before stay; sending the request again finishes
    /// the job).
    pub(super) fn purge_failed(&mut self, e: &Arc<StoreError>) {
        if let Some(p) = self.purge.take() {
            let _ = p.purge.reply.send(Err(e.clone()));
        }
    }
}
