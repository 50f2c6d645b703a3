//! Inbox operations of management requests and devices, shared by the
//! HTTP handlers (`api/inbox.rs`, `api/channels.rs`) and MQTT
//! (`mqtt/publish.rs`): queue a row to devices, all or none ([`deliver`]);
//! read a device's pending rows, recording commands read for the first
//! time ([`read`]); acknowledge rows ([`ack`]). Each runs its own
//! transaction and is blocking; callers run it through `blocking::run`.
//! They take the parts of the server they use ([`Inboxes`], a [`Store`]),
//! not the whole `App`, so the inbox sits below the app in the imports.

use std::sync::Arc;

use super::Bells;
use super::{Full, Row};
use crate::auth::Directory;
use crate::catalog::Catalog;
use crate::codec::{timefmt, Micros};
use crate::commands;
use crate::error::WireError;
use crate::outbox::Notification;
use crate::store::{Store, StoreError};
use crate::targets::TargetError;
use crate::targets::TargetRecord;

/// Why rows were not queued (`error.rs` makes each a wire error).
#[derive(Debug)]
pub enum SendError {
    /// Device `device`'s inbox holds `len` of its `max` rows: `409
    /// inbox_full`. Nothing was queued.
    InboxFull {
        /// The device's id.
        device: String,
        /// Rows in its inbox.
        len: u64,
        /// `[limits] max_inbox`.
        max: u64,
    },
    /// The notification target's outbox is full: `409 target_full`.
    TargetFull(String),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Store(e)
    }
}

/// One row for some devices, and what goes with it.
pub struct Message {
    /// The row (its `device` is set per recipient behind a gateway).
    pub row: Row,
    /// A command's expiry, unless delivered by then.
    pub expires: Option<Micros>,
    /// A notification for a target (a webhook or e-mail), queued in the
    /// same transaction as the rows.
    pub hook: Option<(Arc<TargetRecord>, Notification)>,
}

/// What [`deliver`] needs of the server (`App::inboxes` lends it).
pub struct Inboxes<'a> {
    /// The data file.
    pub store: &'a Store,
    /// Devices, for routing through a gateway.
    pub directory: &'a Directory,
    /// Notification targets and their bound.
    pub catalog: &'a Catalog,
    /// Rung after the commit, for MQTT inbox subscribers.
    pub bells: &'a Bells,
    /// `[limits] max_inbox`.
    pub max_inbox: u64,
    /// `[limits] commands_kept`.
    pub commands_kept: u64,
}

/// Put `msg.row` into the inbox of each of `to` (`(number, id)`), all or
/// none, a command with its record (`crate::commands`) in the same
/// transaction; the rows' sequence numbers. A device behind a gateway
/// gets its rows through the gateway. Rings the inboxes' subscribers
/// after the commit. Blocking.
pub fn deliver(
    at: &Inboxes<'_>,
    to: &[(u32, String)],
    msg: &Message,
) -> Result<Vec<u64>, SendError> {
    let (max, kept) = (at.max_inbox, at.commands_kept);
    let seqs = at.store.write(|txn| {
        if let Some((t, note)) = &msg.hook {
            let waiting = at.catalog.targets().max_waiting();
            if crate::outbox::push(txn, t, note, timefmt::now_micros(), waiting)?.is_none() {
                return Err(SendError::TargetFull(t.name.clone()));
            }
        }
        let mut seqs = Vec::with_capacity(to.len());
        for (num, id) in to {
            let (inbox_of, below) = super::route(at.directory, *num);
            let routed = Row {
                device: below,
                ..msg.row.clone()
            };
            match super::push(txn, inbox_of, std::slice::from_ref(&routed), max)? {
                Ok(s) => {
                    if routed.kind == super::Kind::Command {
                        commands::record(txn, inbox_of, s[0], &routed, msg.expires, kept)?;
                    }
                    seqs.push(s[0]);
                }
                Err(Full(len, max)) => {
                    // Dropping the transaction aborts it: nothing is queued
                    // (the ring is a spurious wake-up; it clears the list).
                    at.bells.ring_pending();
                    return Err(SendError::InboxFull {
                        device: id.clone(),
                        len,
                        max,
                    });
                }
            }
        }
        Ok(seqs)
    })?;
    // MQTT inbox subscribers read the new rows.
    at.bells.ring_pending();
    Ok(seqs)
}

/// Device `num`'s pending rows, oldest first, at most `limit`:
/// `(remaining, rows)`. Commands among them read for the first time are
/// recorded as delivered, in the same write transaction that reads the
/// rows (`commands::read_delivering`: written only then, not on every
/// poll). Blocking.
pub fn read(store: &Store, num: u32, limit: usize) -> Result<super::Pending, StoreError> {
    commands::read_delivering(store, num, limit)
}

/// Remove every row of device `num`'s inbox with `seq <= upto`, durably,
/// the commands among them recorded as acknowledged with `result` (per
/// sequence number); `(removed, remaining)`. Blocking.
pub fn ack(
    store: &Store,
    num: u32,
    upto: u64,
    result: impl Fn(u64) -> Option<String>,
) -> Result<(u64, u64), StoreError> {
    let r = store.write(|txn| {
        let r = super::ack(txn, num, upto)?;
        commands::acknowledge(txn, num, upto, timefmt::now_micros(), &result)?;
        Ok::<_, StoreError>(r)
    })?;
    Ok(r)
}

impl From<SendError> for WireError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::InboxFull { device, len, max } => WireError::new(
                409,
                "inbox_full",
                format!("device '{device}' has {len} of {max} rows unacknowledged"),
            ),
            SendError::TargetFull(name) => TargetError::Full(name).into(),
            SendError::Store(s) => s.into(),
        }
    }
}
