//! Dead letters: digest batches that could not be processed.
//!
//! A digest part that panics comes back to the writer as failed; the
//! writer records the batch's seq and the reasons here, in the
//! transaction that removes the batch from `digest_log`, and goes on.
//! Administrators list them at `GET /v1/dead-letters`.

use redb::WriteTransaction;

use crate::store::{StoreError, DEAD_LETTERS};

/// Record batch `seq` as failed for `reasons` (joined with `; `). Writer
/// only.
pub fn record(txn: &WriteTransaction, seq: u64, reasons: &[&str]) -> Result<(), StoreError> {
    txn.open_table(DEAD_LETTERS)?
        .insert(seq, reasons.join("; ").as_bytes())?;
    Ok(())
}
