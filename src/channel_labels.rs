//! Channels' descriptive text: the member labels (`channel_labels`,
//! one row per labelled `(channel, device, sensor)`) and the rules for a
//! label and a channel description.
//!
//! A label says what a member is *in this channel* ("north wall"), beside
//! the wire names (`device`, `sensor`), which stay the keys. It is written
//! with the membership (`POST /v1/channels/CH/members` with `label=`) and
//! removed with it, with the channel and with the device.

use crate::error::WireError;
use crate::store::{StoreError, CHANNEL_LABELS};

/// Longest member label, in bytes.
pub const MAX_LABEL: usize = 64;
/// Longest channel description, in bytes.
pub const MAX_DESCRIPTION: usize = 1000;

/// `v` as a member label: printable text of at most [`MAX_LABEL`]
/// bytes (`400 bad_value`).
pub fn label(v: &str) -> Result<String, WireError> {
    crate::text::text("label", v, MAX_LABEL)
}

/// `v` as a channel description: printable text of at most
/// [`MAX_DESCRIPTION`] bytes (`400 bad_value`).
pub fn description(v: &str) -> Result<String, WireError> {
    crate::text::text("description", v, MAX_DESCRIPTION)
}

/// Set (or, when empty, clear) the label of a member, in the
/// membership's transaction.
pub fn put<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    key: (u32, u32, u32),
    label: &str,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut t = txn.open_table(CHANNEL_LABELS)?;
    if label.is_empty() {
        t.remove(key)?;
    } else {
        t.insert(key, label)?;
    }
    Ok(())
}

/// Remove a member's label (the member is removed in the same
/// transaction).
pub fn remove<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    key: (u32, u32, u32),
) -> Result<(), StoreError> {
    let txn = txn.into();
    txn.open_table(CHANNEL_LABELS)?.remove(key)?;
    Ok(())
}

/// The labels of channel `ch`'s members: `((device, sensor), label)`.
pub fn of_channel<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    ch: u32,
) -> Result<std::collections::HashMap<(u32, u32), String>, StoreError> {
    let txn = txn.into();
    let t = txn.open_table(CHANNEL_LABELS)?;
    let mut out = std::collections::HashMap::new();
    for row in t.range((ch, 0, 0)..=(ch, u32::MAX, u32::MAX))? {
        let (k, v) = row?;
        let (_, dev, sensor) = k.value();
        out.insert((dev, sensor), v.value().to_string());
    }
    Ok(out)
}
