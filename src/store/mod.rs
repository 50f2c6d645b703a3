//! The store: one redb file holding everything Overlord keeps.
//!
//! Tables are declared once here; the key layouts and the reasons for them
//! are in `docs/storage.md`.
//!
//! | table | key | value | written by |
//! |---|---|---|---|
//! | `readings` | `(device, sensor, minute, part)` | a hot [`chunk`] | writer thread |
//! | `sealed` | `(device, sensor, minute, part)` | a [`sealed`] chunk | writer thread |
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

pub mod aggregates;
pub mod chunk;
pub mod chunks;
pub mod digest_log;
pub mod faults;
pub mod overlay;
pub mod parts;
pub mod query;
pub mod records;
pub mod seal;
pub mod sealed;
pub mod varint;

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use faults::DiskFaults;

pub use records::{
    AlertRecord, ChannelRecord, DeviceMeta, DeviceRecord, FileRecord, Role, UserRecord,
};

/// `(device number, sensor code, base minute, part)` → chunk of readings
/// (see [`parts`] for which chunk a reading goes to).
pub const READINGS: TableDefinition<parts::PartKey, &[u8]> = TableDefinition::new("readings");
/// The same keys → sealed chunks, apart from the hot ones in `readings`
/// (a key is in one of the two; see [`chunks`]).
pub const SEALED: TableDefinition<parts::PartKey, &[u8]> = TableDefinition::new("sealed");
/// `(device number, sensor code)` → µs of the commit that stored its first
/// reading: the sensors a device has (written once per sensor).
pub const SENSORS: TableDefinition<(u32, u32), u64> = TableDefinition::new("sensors");
/// Batch sequence → readings committed but not yet digested.
pub const DIGEST_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("digest_log");
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
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// User name → encoded [`UserRecord`].
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Named counters.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Channel name → encoded [`ChannelRecord`].
pub const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
/// `(channel, device, sensor)` → nothing: membership.
pub const CHANNEL_MEMBERS: TableDefinition<(u32, u32, u32), ()> =
    TableDefinition::new("channel_members");
/// Channel number → `(first index kept, next index)`.
pub const CHANNEL_META: TableDefinition<u32, (u64, u64)> = TableDefinition::new("channel_meta");
/// `(channel, index)` → encoded item (see `channels::Item`).
pub const CHANNEL_ITEMS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("channel_items");
/// Alert name → encoded [`AlertRecord`].
pub const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
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
pub const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// `(device, sensor code)` → days its readings are kept (0: forever);
/// sensor 0 is the device's own setting (see `crate::retention`).
pub const RETENTION: TableDefinition<(u32, u32), u32> = TableDefinition::new("retention");
/// `(device, sensor code, unix minute)` → encoded [`aggregates::Agg`]:
/// count, min, max and sum of a minute of an `N` or `I` sensor whose
/// readings the retention sweep removed (`[retention] aggregate_keep_days`).
pub const AGGREGATES: TableDefinition<(u32, u32, u32), &[u8]> = TableDefinition::new("aggregates");
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

/// What went wrong in the store. Mapped to a wire reply in one place
/// (`crate::error`).
#[derive(Debug)]
pub enum StoreError {
    /// The disk is full (ENOSPC): `507 disk_full`.
    DiskFull,
    /// Any other I/O or storage failure: `500 storage`.
    Io(String),
    /// Stored bytes did not decode.
    Corrupt(String),
    /// The data file is known to be damaged (redb panicked reading it):
    /// writes are refused, `500 storage_damaged`, until it is restored.
    Damaged(String),
    /// The data file is locked by another process (a running server).
    InUse,
    /// A uniqueness rule was broken (e.g. a device id that exists).
    Conflict(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::DiskFull => f.write_str("disk full"),
            StoreError::Io(e) => write!(f, "storage error: {e}"),
            StoreError::Corrupt(e) => write!(f, "data file damaged: {e}"),
            StoreError::Damaged(e) => write!(
                f,
                "data file damaged ({e}); writes are refused: stop the server, run `overlord check`, restore a backup"
            ),
            StoreError::InUse => f.write_str("the data file is in use by another process"),
            StoreError::Conflict(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull
            }
            redb::StorageError::Corrupted(s) => corrupt(s),
            other => StoreError::Io(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => StoreError::DiskFull,
                    redb::Error::Corrupted(s) => corrupt(s),
                    redb::Error::DatabaseAlreadyOpen => StoreError::InUse,
                    other => StoreError::Io(other.to_string()),
                }
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

impl From<varint::Corrupt> for StoreError {
    fn from(_: varint::Corrupt) -> Self {
        corrupt("a stored value does not decode".into())
    }
}

/// A read found damage (redb's `Corrupted`, or a stored value that does
/// not decode): the store this thread is using is marked damaged, so that
/// nothing more is acknowledged into it (see [`Damage`]).
fn corrupt(why: String) -> StoreError {
    IN_USE.with(|u| {
        if let Some(d) = u.borrow().upgrade() {
            d.mark(&why);
        }
    });
    StoreError::Corrupt(why)
}

/// The open data file.
///
/// The redb handle can be replaced while the server runs: redb fails every
/// operation after one failed write or fsync (`PreviousIo`) until the file
/// is closed and opened again, so the writer thread calls
/// [`Store::reopen`] after a failed commit. While the file cannot be
/// opened again (the disk is still failing), [`Store::db`] lends a
/// read-only view of it ([`overlay`]) whose writes are refused with the
/// error that kept it closed (a `5xx`), or, if not even that opens,
/// answers with that error.
pub struct Store {
    slot: RwLock<Slot>,
    path: PathBuf,
    faults: Option<DiskFaults>,
    cache_bytes: usize,
    damage: Arc<Damage>,
}

/// Whether the data file is known to be damaged, and why.
///
/// Set when redb panics while this store is in use (a page that does not
/// decode: bytes changed outside redb). From then every write is refused
/// with [`StoreError::Damaged`], so nothing more is acknowledged into a
/// file whose next crash recovery may fail ("all roots are corrupted");
/// reads go on where they can. Only a restart clears it, and a restart
/// should follow `overlord check` and a restore.
#[derive(Default)]
pub struct Damage(parking_lot::Mutex<Option<String>>);

impl Damage {
    fn mark(&self, why: &str) {
        let mut d = self.0.lock();
        if d.is_none() {
            tracing::error!(reason = %why, "data file damaged; refusing writes from now on");
            *d = Some(why.to_string());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

thread_local! {
    /// The store this thread last took a handle of: a redb panic on this
    /// thread marks it damaged (see [`install_panic_hook`]).
    static IN_USE: RefCell<Weak<Damage>> = const { RefCell::new(Weak::new()) };
}

/// Install, once per process, a panic hook that marks the store a thread
/// was using as damaged when redb panics on that thread (redb panics on
/// a page that does not decode instead of returning an error). The
/// previous hook still runs; the panic itself is caught where it lands
/// (a blocking task's `JoinError`, the writer's `catch_unwind`).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("/redb-") || f.contains("\\redb-")
            });
            if in_redb {
                let why = crate::error::panic_text(info.payload(), "redb panicked");
                IN_USE.with(|u| {
                    if let Some(d) = u.borrow().upgrade() {
                        d.mark(&why);
                    }
                });
            }
            prev(info);
        }));
    });
}

/// The redb handle as [`Store::db`] lends it: a [`Database`] whose
/// `begin_write` is refused once the file is known to be damaged (the one
/// choke point for every write, the writer's and management's alike).
pub struct Db {
    db: Database,
    damage: Arc<Damage>,
    /// A read-only view ([`overlay`]) while the file cannot be opened for
    /// writing: why, and every write is refused with it.
    read_only: Option<ClosedBy>,
}

impl Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Db {
    /// `Database::begin_write`, refused with [`StoreError::Damaged`] once
    /// the file is known to be damaged.
    pub fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        if let Some(why) = self.damage.get() {
            return Err(StoreError::Damaged(why));
        }
        if let Some(why) = &self.read_only {
            return Err(why.error());
        }
        Ok(self.db.begin_write()?)
    }
}

/// redb's page cache when nothing else is configured (`cache_mb`).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

enum Slot {
    Open(Arc<Db>),
    /// Closed after a failure; the error that kept it from reopening.
    Closed(ClosedBy),
}

#[derive(Clone)]
enum ClosedBy {
    DiskFull,
    Io(String),
}

impl ClosedBy {
    fn error(&self) -> StoreError {
        match self {
            ClosedBy::DiskFull => StoreError::DiskFull,
            ClosedBy::Io(e) => {
                StoreError::Io(format!("data file closed after a storage failure: {e}"))
            }
        }
    }
}

impl From<&StoreError> for ClosedBy {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::DiskFull => ClosedBy::DiskFull,
            other => ClosedBy::Io(other.to_string()),
        }
    }
}

impl Store {
    /// Open (or create) the data file and make sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_faults(path, None)
    }

    /// [`Store::open`] through the fault-injecting backend when `faults`
    /// is given (disk-fault tests; see [`faults`]).
    pub fn open_with_faults(path: &Path, faults: Option<DiskFaults>) -> Result<Store, StoreError> {
        Self::open_tuned(path, faults, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open_with_faults`] with redb's page cache bounded to
    /// `cache_bytes` (the server's `cache_mb`): it bounds the memory the
    /// store uses for reads and for a large transaction's dirty pages.
    pub fn open_tuned(
        path: &Path,
        faults: Option<DiskFaults>,
        cache_bytes: usize,
    ) -> Result<Store, StoreError> {
        Self::open_verified(path, faults, cache_bytes, false)
    }

    /// [`Store::open_tuned`]; with `verify` (`verify_on_start`) redb
    /// checks the checksum of every page before the file is used, even
    /// after a clean shutdown (after an unclean one it always does, as
    /// part of its repair). Damage then stops the start instead of
    /// surfacing in a later query.
    pub fn open_verified(
        path: &Path,
        faults: Option<DiskFaults>,
        cache_bytes: usize,
        verify: bool,
    ) -> Result<Store, StoreError> {
        install_panic_hook();
        // A file damaged outside redb can make redb panic while it opens
        // (a clean shutdown is trusted, not verified): a clear error
        // instead of a crash.
        let opened = std::panic::catch_unwind(|| {
            Self::open_checked(path, faults.as_ref(), cache_bytes, verify)
        });
        let db = match opened {
            Ok(Err(StoreError::Corrupt(why))) => {
                return Err(StoreError::Corrupt(format!(
                    "{why}; run `overlord check`, then restore a backup (docs/storage.md, \"Damaged data\")"
                )))
            }
            Ok(r) => r?,
            Err(p) => {
                let why = crate::error::panic_text(&*p, "redb panicked");
                return Err(StoreError::Corrupt(format!(
                    "{why}; run `overlord check`, then restore a backup (docs/storage.md, \"Damaged data\")"
                )));
            }
        };
        Ok(Store {
            slot: RwLock::new(Slot::Open(Arc::new(Db {
                db,
                damage: Arc::default(),
                read_only: None,
            }))),
            path: path.to_path_buf(),
            faults,
            cache_bytes,
            damage: Arc::default(),
        }
        .share_damage())
    }

    /// Give the first handle the store's own damage flag.
    fn share_damage(mut self) -> Self {
        if let Slot::Open(db) = &mut *self.slot.get_mut() {
            if let Some(db) = Arc::get_mut(db) {
                db.damage = self.damage.clone();
            }
        }
        self
    }

    /// Open the file and make sure every table exists.
    fn open_checked(
        path: &Path,
        faults: Option<&DiskFaults>,
        cache_bytes: usize,
        verify: bool,
    ) -> Result<Database, StoreError> {
        let db = open_db(path, faults, cache_bytes, verify)?;
        let txn = db.begin_write()?;
        txn.open_table(READINGS)?;
        txn.open_table(SEALED)?;
        txn.open_table(SENSORS)?;
        txn.open_table(DIGEST_LOG)?;
        txn.open_table(LAST_SEEN)?;
        txn.open_table(DEVICES)?;
        txn.open_table(USERS)?;
        txn.open_table(META)?;
        txn.open_table(CHANNELS)?;
        txn.open_table(CHANNEL_MEMBERS)?;
        txn.open_table(CHANNEL_META)?;
        txn.open_table(CHANNEL_ITEMS)?;
        txn.open_table(ALERTS)?;
        txn.open_table(ALERT_STATE)?;
        txn.open_table(ALERT_EVENTS)?;
        txn.open_table(INBOX)?;
        txn.open_table(INBOX_META)?;
        txn.open_table(DEAD_LETTERS)?;
        txn.open_table(GRANTS)?;
        txn.open_table(PRESENCE)?;
        txn.open_table(PRESENCE_EVENTS)?;
        txn.open_table(PRESENCE_NOTIFY)?;
        txn.open_table(FILES)?;
        txn.open_table(RETENTION)?;
        txn.open_table(AGGREGATES)?;
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
        txn.commit()?;
        Ok(db)
    }

    /// The redb handle, for the writer thread and queries. Fails while the
    /// file is closed after a storage failure it could not be reopened from.
    pub fn db(&self) -> Result<Arc<Db>, StoreError> {
        IN_USE.with(|u| *u.borrow_mut() = Arc::downgrade(&self.damage));
        match &*self.slot.read() {
            Slot::Open(db) => Ok(db.clone()),
            Slot::Closed(why) => Err(why.error()),
        }
    }

    /// Why the data file is known to be damaged, if it is (a redb panic
    /// while it was in use). Writes are refused from then on.
    pub fn damaged(&self) -> Option<String> {
        self.damage.get()
    }

    /// Mark the data file damaged (a storage panic caught by a caller).
    pub fn mark_damaged(&self, why: &str) {
        self.damage.mark(why);
    }

    /// Whether a storage failure left the data file closed (the writer
    /// retries [`Store::reopen`]).
    pub fn is_closed(&self) -> bool {
        match &*self.slot.read() {
            Slot::Closed(_) => true,
            Slot::Open(db) => db.read_only.is_some(),
        }
    }

    /// From a read-only view: open the file for writing beside it (the
    /// view holds no lock) and, once the queries using the view are done
    /// (bounded), put the new handle in its place. Reads go on from the
    /// view meanwhile; on failure it stays.
    fn reopen_from_view(&self) -> Result<(), StoreError> {
        let db = open_db(&self.path, self.faults.as_ref(), self.cache_bytes, false)?;
        let mut slot = self.slot.write();
        // A query still reading the view must finish before the new handle
        // may reuse pages the view can see.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match &*slot {
                Slot::Open(view) if Arc::strong_count(view) > 1 => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Io("data file busy; not reopened".into()));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => break,
            }
        }
        *slot = Slot::Open(Arc::new(Db {
            db,
            damage: self.damage.clone(),
            read_only: None,
        }));
        tracing::warn!("data file reopened after a storage failure");
        Ok(())
    }

    /// Close the data file and open it again, which is what redb requires
    /// after a failed write or fsync. redb's recovery on open brings the
    /// file back to its last committed transaction. Called by the writer
    /// thread only. Waits (bounded) for other users of the old handle to
    /// let go of it. On failure the store stays closed ([`Store::db`] fails)
    /// until a later call succeeds.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let is_view = matches!(&*self.slot.read(), Slot::Open(db) if db.read_only.is_some());
        if is_view {
            return self.reopen_from_view();
        }
        let mut slot = self.slot.write();
        if let Slot::Open(db) =
            std::mem::replace(&mut *slot, Slot::Closed(ClosedBy::Io("reopening".into())))
        {
            // Queries and management requests hold clones only for the
            // length of one transaction.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut db = db;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        db = still_shared;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(still_shared) => {
                        *slot = Slot::Open(still_shared);
                        return Err(StoreError::Io("data file busy; not reopened".into()));
                    }
                }
            }
        }
        // A write transaction of the old handle that was still running
        // keeps the file locked until it ends; it fails fast now.
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = loop {
            match open_db(&self.path, self.faults.as_ref(), self.cache_bytes, false) {
                Err(StoreError::InUse) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other,
            }
        };
        match result {
            Ok(db) => {
                *slot = Slot::Open(Arc::new(Db {
                    db,
                    damage: self.damage.clone(),
                    read_only: None,
                }));
                tracing::warn!("data file reopened after a storage failure");
                Ok(())
            }
            Err(e) => {
                // Keep answering queries from what is durable: a read-only
                // view whose repair runs in memory (see `overlay`).
                *slot = match overlay::open(&self.path, self.cache_bytes) {
                    Ok(view) => {
                        tracing::warn!(
                            "serving reads from a read-only view until the data file reopens"
                        );
                        Slot::Open(Arc::new(Db {
                            db: view,
                            damage: self.damage.clone(),
                            read_only: Some(ClosedBy::from(&e)),
                        }))
                    }
                    Err(v) => {
                        tracing::warn!(error = %v, "no read-only view either");
                        Slot::Closed(ClosedBy::from(&e))
                    }
                };
                Err(e)
            }
        }
    }

    /// Every stored presence state: `(device, flags, since)`.
    pub fn load_presence(&self) -> Result<Vec<(u32, u8, i64)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(PRESENCE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (flags, since) = v.value();
            out.push((k.value(), flags, since));
        }
        Ok(out)
    }

    /// Every device record.
    pub fn load_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(DeviceRecord::decode(v.value())?);
        }
        Ok(out)
    }

    /// Every user record.
    pub fn load_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(UserRecord::decode(v.value())?);
        }
        Ok(out)
    }

    /// Last contact per device, as persisted by the digest.
    pub fn load_last_seen(&self) -> Result<Vec<(u32, i64)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(LAST_SEEN)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// Create a device: allocate its number and store the record. Fails
    /// with `Conflict` if the id exists. Blocking: call off the runtime.
    pub fn create_device(&self, rec: DeviceRecord) -> Result<DeviceRecord, StoreError> {
        let mut v = self.create_devices(vec![rec])?;
        Ok(v.remove(0))
    }

    /// Create several devices in one transaction, all or none (an id that
    /// exists is a `Conflict`). Numbers are allocated here. Blocking.
    pub fn create_devices(&self, recs: Vec<DeviceRecord>) -> Result<Vec<DeviceRecord>, StoreError> {
        self.create_devices_with(recs, |_, _| Ok(()))
    }

    /// [`Store::create_devices`], then `then` with the numbered records in
    /// the same transaction (what comes with them, e.g. sensor labels):
    /// all or nothing.
    pub fn create_devices_with(
        &self,
        mut recs: Vec<DeviceRecord>,
        then: impl FnOnce(&redb::WriteTransaction, &[DeviceRecord]) -> Result<(), StoreError>,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut devices = txn.open_table(DEVICES)?;
            let mut meta = txn.open_table(META)?;
            let mut next = meta.get("next_device")?.map_or(1, |v| v.value());
            for rec in &mut recs {
                if devices.get(rec.id.as_str())?.is_some() {
                    return Err(StoreError::Conflict(format!("device '{}' exists", rec.id)));
                }
                rec.num = u32::try_from(next)
                    .map_err(|_| StoreError::Conflict("device numbers exhausted".into()))?;
                next += 1;
                devices.insert(rec.id.as_str(), rec.encode().as_slice())?;
            }
            meta.insert("next_device", next)?;
        }
        then(&txn, &recs)?;
        txn.commit()?;
        Ok(recs)
    }

    /// Replace a device record (same id and number). Blocking.
    pub fn put_device(&self, rec: &DeviceRecord) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(DEVICES)?
            .insert(rec.id.as_str(), rec.encode().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Insert or replace a user record. Blocking.
    pub fn put_user(&self, rec: &UserRecord) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(USERS)?
            .insert(rec.name.as_str(), rec.encode().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Allocate the next number of a named counter (starting at 1) in `txn`.
    pub fn next_number(txn: &redb::WriteTransaction, name: &str) -> Result<u32, StoreError> {
        let mut meta = txn.open_table(META)?;
        let next = meta.get(name)?.map_or(1, |v| v.value());
        meta.insert(name, next + 1)?;
        u32::try_from(next).map_err(|_| StoreError::Conflict(format!("{name} exhausted")))
    }

    /// Every record of a name-keyed table, decoded.
    pub fn load_all<T>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        decode: impl Fn(&[u8]) -> Result<T, varint::Corrupt>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Every grant: `(kind, number, grantee, level)`.
    pub fn load_grants(&self) -> Result<Vec<(u8, u32, String, u8)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(GRANTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (kind, num, who) = k.value();
            out.push((kind, num, who.to_string(), v.value()));
        }
        Ok(out)
    }

    /// Size of the data file in bytes.
    pub fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

/// Open the redb file, through the fault seam when `faults` is given.
fn open_db(
    path: &Path,
    faults: Option<&DiskFaults>,
    cache_bytes: usize,
    verify: bool,
) -> Result<Database, StoreError> {
    // A new data file is created only where none exists. redb would take
    // an existing empty file for a new database and the server would start
    // afresh with a new administrator, silently hiding whatever happened to
    // the real one (a truncation, a wrong mount, an interrupted copy).
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => {
            return Err(StoreError::Corrupt(
                "the file exists but is empty (0 bytes), so it is not an Overlord data \
                 file; a new one is created only where none exists. Restore a backup \
                 (`overlord restore FILE`), or remove the empty file to start afresh"
                    .into(),
            ))
        }
        Ok(m) if !m.is_file() => {
            return Err(StoreError::Corrupt("not a regular file".into()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io(format!("cannot read it: {e}"))),
    }
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes.max(1 << 20));
    builder.set_check_integrity_on_open(verify);
    // redb repairs (and so verifies every page's checksum) only after an
    // unclean shutdown; say so, since on a large file it takes a while.
    builder.set_repair_callback(|session| {
        if session.progress() == 0.0 {
            tracing::warn!(
                "data file not shut down cleanly (or verify_on_start): verifying every page and repairing"
            );
        }
    });
    let opened = match faults {
        None => builder.create(path),
        Some(f) => faults::create(path, f, builder),
    };
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
        other => StoreError::from(other),
    })
}
