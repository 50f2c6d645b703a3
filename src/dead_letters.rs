//! Dead letters: digest batches that could not be processed.
//!
//! A digest part that panics comes back to the writer as failed; the
//! writer records the batch's seq and the reasons here, in the
//! transaction that removes the batch from `digest_log`, and goes on.
//! Administrators list them at `GET /v1/dead-letters`.

use crate::store::varint::Corrupt;
use crate::store::{Record, Records, StoreError, DEAD_LETTERS};

/// The `dead_letters` table, read and written as [`Reasons`].
pub const LETTERS: Records<Reasons> = Records::of(DEAD_LETTERS);

/// Why a batch could not be processed: its reasons joined with `; `.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasons(pub String);

impl Record for Reasons {
    type Key = u64;
    fn to_row(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
    /// Never fails: text that is not UTF-8 is shown with replacement
    /// characters (a reason is diagnostic text).
    fn from_row(_: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        Ok(Reasons(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// Record batch `seq` as failed for `reasons` (joined with `; `). Writer
/// only.
pub fn record<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    seq: u64,
    reasons: &[&str],
) -> Result<(), StoreError> {
    let txn = txn.into();
    LETTERS
        .open(txn)?
        .insert(seq, &Reasons(reasons.join("; ")))?;
    Ok(())
}
