//! Every table of the data file, declared once, and who writes each.
//!
//! The key layouts and the reasons for them are in `docs/storage.md`.
//! A table of records is read and written as its record type
//! ([`super::typed`]): declared here as [`Records`] when the record is the
//! store's own, or as its raw definition here and as `Records::of(..)` in
//! the feature that owns the record type (so `store` imports nothing above
//! it). Every table is listed once more in `crate::ops` (`every_table!`),
//! which copies and checks them.
//!
//! | table | key | value | written by |
//! |---|---|---|---|
//! | `readings` | `(device, sensor, minute, part)` | a hot [`chunk`] | writer thread |
//! | `sealed` | `(device, sensor, minute, part)` | a [`super::sealed`] chunk | writer thread |
//! | `sensors` | `(device, sensor)` | readings stored | writer thread |
//! | `digest_log` | batch seq | committed, undigested readings | writer thread |
//! | `last_seen` | device | UTC µs of last contact | writer thread |
//! | `devices` | device id | [`records::DeviceRecord`] | admin ops |
//! | `users` | user name | [`records::UserRecord`] | admin ops |
//! | `meta` | name | counter | admin ops (`next_device`, `next_channel`, `next_alert`) |
//! | `channels`, `channel_members` | name; (channel, device, sensor) | record; () | admin ops |
//! | `channel_meta`, `channel_items` | channel; (channel, index) | (first, next); item | writer thread |
//! | `alerts` | name | [`records::AlertRecord`] | admin ops |
//! | `alert_state`, `alert_events` | alert; (alert, n) | fired?; event | writer thread |
//! | `inbox`, `inbox_meta` | (device, seq); device | row; (next seq, pending) | writer thread and admin ops |
//! | `dead_letters` | batch seq | reason | writer thread |
//! | `grants` | (kind, number, grantee) | level | admin ops |
//! | `presence` | device | (flags, since) | writer thread |
//! | `presence_events` | index | event | writer thread |
//! | `presence_notify` | owner | (device, channel) | admin ops |
//! | `retention` | (device, sensor code or 0) | keep days (0: forever) | admin ops |
//! | `aggregates` | (device, sensor, minute) | [`aggregates::Agg`] of a removed minute | writer thread (retention sweep) |
//! | `targets` | target name | [`crate::targets::TargetRecord`] | admin ops |
//! | `outbox` | (target, event n) | a notification not yet delivered ([`crate::outbox`]) | writer thread (adds, with its event); sender (removes) |
//! | `outbox_waiting` | target | rows in its outbox (at most `[notify] max_waiting`) | with `outbox` |
//! | `target_history` | (target, n) | one delivery attempt | sender |
//! | `notify_dead` | (target, event n) | a notification given up on, with the last error | sender |
//! | `presence_targets` | owner | target id told of presence changes | admin ops |
//! | `files` | file name | [`records::FileRecord`] (the bytes are in the files directory) | admin ops |
//! | `commands`, `command_meta`, `command_expiry` | (inbox device, seq); inbox device; (expiry, inbox device, seq) | command record; (kept, delivered up to); () | admin ops (send, ack, read) and writer thread (deliveries, expiry) |
//! | `sensor_labels` | (device, sensor code) | label, unit, description | admin ops |
//! | `alert_member_state` | (alert, device, sensor code) | () for a fired member of a channel alert | writer thread (admin ops remove an alert's) |
//! | `channel_labels` | (channel, device, sensor code) | a member's label | admin ops |
//! | `deleted_devices` | device | deletion time | admin ops (delete) and writer thread (removes the device's rows) |
//!
//! Admin ops are rare management writes (create a device, rotate a token).
//! They open their own write transaction from a blocking thread; redb runs
//! one write transaction at a time, so they simply wait for the writer's
//! current group commit.

use redb::{TableDefinition, WriteTransaction};

use super::aggregates::Agg;
use super::digest_log::DigestBatch;
use super::typed::Records;
use super::{parts, StoreError};
use super::{AlertRecord, ChannelRecord, DeviceRecord, FileRecord, UserRecord};

/// `(device number, sensor code, base minute, part)` → chunk of readings
/// (see [`parts`] for which chunk a reading goes to).
pub const READINGS: TableDefinition<parts::PartKey, &[u8]> = TableDefinition::new("readings");
/// The same keys → sealed chunks, apart from the hot ones in `readings`
/// (a key is in one of the two; see [`super::chunks`]).
pub const SEALED: TableDefinition<parts::PartKey, &[u8]> = TableDefinition::new("sealed");
/// `(device number, sensor code)` → µs of the commit that stored its first
/// reading: the sensors a device has (written once per sensor).
pub const SENSORS: TableDefinition<(u32, u32), u64> = TableDefinition::new("sensors");
/// Batch sequence → readings committed but not yet digested.
pub const DIGEST_LOG: Records<DigestBatch> = Records::new("digest_log");
/// Device number → UTC µs of the device's last contact.
pub const LAST_SEEN: TableDefinition<u32, i64> = TableDefinition::new("last_seen");
/// Device number → presence: `(flags, since µs)`; flags bit 0 online,
/// bit 1 damped (see [`crate::presence`]).
pub const PRESENCE: TableDefinition<u32, (u8, i64)> = TableDefinition::new("presence");
/// Presence event index → encoded event (time, device, online, last seen,
/// delivery).
pub const PRESENCE_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("presence_events");
/// Owner → where presence changes of their devices are told:
/// `(device id, channel name)`, either may be empty.
pub const PRESENCE_NOTIFY: TableDefinition<&str, (&str, &str)> =
    TableDefinition::new("presence_notify");

/// Device id → encoded [`DeviceRecord`].
pub const DEVICES: Records<DeviceRecord> = Records::new("devices");
/// User name → encoded [`UserRecord`].
pub const USERS: Records<UserRecord> = Records::new("users");
/// Named counters.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Channel name → encoded [`ChannelRecord`].
pub const CHANNELS: Records<ChannelRecord> = Records::new("channels");
/// `(channel, device, sensor)` → nothing: membership.
pub const CHANNEL_MEMBERS: TableDefinition<(u32, u32, u32), ()> =
    TableDefinition::new("channel_members");
/// Channel number → `(first index kept, next index)`.
pub const CHANNEL_META: TableDefinition<u32, (u64, u64)> = TableDefinition::new("channel_meta");
/// `(channel, index)` → encoded item (see `channels::Item`).
pub const CHANNEL_ITEMS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("channel_items");
/// Alert name → encoded [`AlertRecord`].
pub const ALERTS: Records<AlertRecord> = Records::new("alerts");
/// Alert id → 1 while fired (in the alarm range), 0 while armed.
pub const ALERT_STATE: TableDefinition<u32, u8> = TableDefinition::new("alert_state");
/// `(alert id, event number)` → encoded firing event.
pub const ALERT_EVENTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("alert_events");
/// `(device, seq)` → encoded inbox row.
pub const INBOX: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("inbox");
/// Device → `(next seq, rows pending)`.
pub const INBOX_META: TableDefinition<u32, (u64, u64)> = TableDefinition::new("inbox_meta");
/// `(kind, number, grantee)` → level: see `auth::Level`.
pub const GRANTS: TableDefinition<(u8, u32, &str), u8> = TableDefinition::new("grants");
/// File name → encoded [`FileRecord`]; the content is the file named by
/// its SHA-256 in the files directory (see `crate::files`).
pub const FILES: Records<FileRecord> = Records::new("files");
/// `(device, sensor code)` → days its readings are kept (0: forever);
/// sensor 0 is the device's own setting (see `crate::retention`).
pub const RETENTION: TableDefinition<(u32, u32), u32> = TableDefinition::new("retention");
/// `(device, sensor code, unix minute)` → encoded [`aggregates::Agg`]:
/// count, min, max and sum of a minute of an `N` or `I` sensor whose
/// readings the retention sweep removed (`[retention] aggregate_keep_days`).
pub const AGGREGATES: Records<Agg> = Records::new("aggregates");
/// Target name → encoded [`crate::targets::TargetRecord`].
pub const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets");
/// `(target id, event n)` → a notification committed with its event and
/// not yet delivered or given up on (see [`crate::outbox`]).
pub const OUTBOX: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("outbox");
/// Target id → notifications waiting in its outbox (kept with every
/// `outbox` insert and removal, so the bound is checked in O(1)).
pub const OUTBOX_WAITING: TableDefinition<u32, u64> = TableDefinition::new("outbox_waiting");
/// `(target id, n)` → one delivery attempt, the last `history_kept` per
/// target.
pub const TARGET_HISTORY: TableDefinition<(u32, u64), &[u8]> =
    TableDefinition::new("target_history");
/// `(target id, event n)` → a notification whose retries ran out: its
/// body and the last error (the dead letters of notifications).
pub const NOTIFY_DEAD: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("notify_dead");
/// Owner → the target told of their devices' presence changes (beside
/// `presence_notify`'s device and channel).
pub const PRESENCE_TARGETS: TableDefinition<&str, u32> = TableDefinition::new("presence_targets");
/// Digest-log seq of a batch the digest could not process → the reason.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Number of a deleted device → when it was deleted (µs). Its readings,
/// sensors, aggregates and presence rows are removed by the writer in
/// bounded batches (`crate::deletion`); the row stays, so what a request
/// accepted just before the deletion is removed too, at the latest on
/// the next start.
pub const DELETED_DEVICES: TableDefinition<u32, i64> = TableDefinition::new("deleted_devices");
/// `(device, sensor code)` → encoded label, unit and description of a
/// sensor (`crate::sensors`).
pub const SENSOR_LABELS: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("sensor_labels");
/// `(channel, device, sensor code)` → the member's label (free text,
/// `crate::channel_labels`); a member without one has no row.
pub const CHANNEL_LABELS: TableDefinition<(u32, u32, u32), &str> =
    TableDefinition::new("channel_labels");
/// `(alert, device, sensor code)` of a channel alert's members that are
/// fired (a member without a row is armed; `crate::alerts`).
pub const ALERT_MEMBER_STATE: TableDefinition<(u32, u32, u32), ()> =
    TableDefinition::new("alert_member_state");
/// `(inbox device, seq)` → encoded command record (`crate::commands`):
/// a command's life after its inbox row, kept within a bound per inbox.
pub const COMMANDS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("commands");
/// Inbox device → `(command records kept, commands delivered up to seq)`.
pub const COMMAND_META: TableDefinition<u32, (u64, u64)> = TableDefinition::new("command_meta");
/// `(expiry time µs, inbox device, seq)` of commands that may expire,
/// for the writer's bounded expiry steps.
pub const COMMAND_EXPIRY: TableDefinition<(i64, u32, u64), ()> =
    TableDefinition::new("command_expiry");

/// Create every table that does not exist yet (a new file, or one from a
/// version before a table existed), in `txn`.
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(READINGS)?;
    txn.open_table(SEALED)?;
    txn.open_table(SENSORS)?;
    txn.open_table(DIGEST_LOG.def())?;
    txn.open_table(LAST_SEEN)?;
    txn.open_table(DEVICES.def())?;
    txn.open_table(USERS.def())?;
    txn.open_table(META)?;
    txn.open_table(CHANNELS.def())?;
    txn.open_table(CHANNEL_MEMBERS)?;
    txn.open_table(CHANNEL_META)?;
    txn.open_table(CHANNEL_ITEMS)?;
    txn.open_table(ALERTS.def())?;
    txn.open_table(ALERT_STATE)?;
    txn.open_table(ALERT_EVENTS)?;
    txn.open_table(INBOX)?;
    txn.open_table(INBOX_META)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(GRANTS)?;
    txn.open_table(PRESENCE)?;
    txn.open_table(PRESENCE_EVENTS)?;
    txn.open_table(PRESENCE_NOTIFY)?;
    txn.open_table(FILES.def())?;
    txn.open_table(RETENTION)?;
    txn.open_table(AGGREGATES.def())?;
    txn.open_table(TARGETS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(OUTBOX_WAITING)?;
    txn.open_table(TARGET_HISTORY)?;
    txn.open_table(NOTIFY_DEAD)?;
    txn.open_table(PRESENCE_TARGETS)?;
    txn.open_table(COMMANDS)?;
    txn.open_table(COMMAND_META)?;
    txn.open_table(COMMAND_EXPIRY)?;
    txn.open_table(SENSOR_LABELS)?;
    txn.open_table(CHANNEL_LABELS)?;
    txn.open_table(ALERT_MEMBER_STATE)?;
    txn.open_table(DELETED_DEVICES)?;
    Ok(())
}
