//! The store: one redb file holding everything Overlord keeps.
//!
//! The module's map:
//!
//! | file | what |
//! |---|---|
//! | [`tables`] | every table, declared once, and who writes each |
//! | [`typed`] | record tables read and written as their record type |
//! | [`records`] | device, user, channel, alert and file records |
//! | `open.rs` | opening, creating, verifying and reopening the file |
//! | `error.rs` | [`StoreError`] and the damage flag ([`Damage`]) |
//! | `directory.rs` | loading the registries at start; device and user writes |
//! | [`chunk`], [`sealed`], [`parts`], [`chunks`], [`seal`] | readings: the chunk forms, which chunk a reading goes to, the hot and sealed tables read as one, sealing |
//! | [`digest_log`] | committed, undigested readings |
//! | [`aggregates`] | per-minute aggregates of removed readings |
//! | [`query`] | the read path of readings |
//! | [`faults`], [`overlay`] | the disk-fault seam (tests); the read-only view of a failing disk |
//! | [`varint`] | the integer encoding every record uses |

pub mod aggregates;
pub mod chunk;
pub mod chunks;
pub mod compact;
pub mod digest_log;
mod directory;
mod error;
pub mod faults;
pub mod kv;
mod open;
pub mod overlay;
pub mod parts;
pub mod query;
pub mod records;
pub mod seal;
pub mod sealed;
pub mod tables;
pub mod typed;
pub mod varint;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase};

use error::IN_USE;
use faults::DiskFaults;

use error::corrupt;
pub use error::{panic_text, Damage, StoreError};
pub use kv::{Guard, Table, Tx};
pub use records::{
    AlertRecord, ChannelRecord, DeviceMeta, DeviceRecord, FileRecord, Role, UserRecord,
};
pub use tables::*;
pub use typed::{AnyTable, Record, RecordTable, Records};

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

/// A write transaction of either store, owned (see [`Store::begin_write`]).
// One at a time, on the writer's stack: boxing redb's would allocate per
// round for nothing.
#[allow(clippy::large_enum_variant)]
pub enum WriteTxn {
    /// redb's.
    Redb(redb::WriteTransaction),
    /// PostgreSQL's.
    Pg(crate::pg::kv::PgTxn),
}

impl WriteTxn {
    /// Whether the commit waits for the disk. redb may skip the fsync of
    /// a commit whose contents can be derived again after a crash (the
    /// writer's effects-only rounds); PostgreSQL's commits always wait
    /// (`synchronous_commit = on`), so there this changes nothing.
    pub fn set_durable(&mut self, durable: bool) -> Result<(), StoreError> {
        if let WriteTxn::Redb(t) = self {
            let d = if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            };
            t.set_durability(d)
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Commit: `Ok` means stored (durably, unless redb was told not to).
    pub fn commit(self) -> Result<(), StoreError> {
        match self {
            WriteTxn::Redb(t) => Ok(t.commit()?),
            WriteTxn::Pg(t) => t.commit(),
        }
    }
}

impl<'a> From<&'a WriteTxn> for Tx<'a> {
    fn from(t: &'a WriteTxn) -> Self {
        match t {
            WriteTxn::Redb(t) => Tx::Write(t),
            WriteTxn::Pg(t) => Tx::Pg(t),
        }
    }
}

/// redb's page cache when nothing else is configured (`cache_mb`).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

enum Slot {
    Open(Arc<Db>),
    /// Closed after a failure; the error that kept it from reopening.
    Closed(ClosedBy),
    /// The store is a PostgreSQL database, not a redb file
    /// (docs/scale-out.md): transactions go through [`Store::write`] and
    /// [`Store::read`]; [`Store::db`] has no file to lend.
    Postgres(Arc<crate::pg::kv::PgKv>),
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
    /// Run `f` in a write transaction and commit it: `Ok` means durable.
    /// `f` returning an error rolls everything back. The one way a
    /// management write (everything but the writer thread's rounds) opens
    /// a transaction, on either store: on PostgreSQL `f` may be run again
    /// when the database could not serialize it with others
    /// (docs/scale-out.md (a)), so it must change nothing but the
    /// transaction before it returns.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_when(f, |_| true)
    }

    /// As [`Store::write`], but committing only when `f` returns `Some`:
    /// `None` (a refusal decided inside, e.g. a name that is taken) rolls
    /// back, so redb does not spend a commit and its fsync on nothing.
    pub fn write_if<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(Tx<'_>) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        self.write_when(f, Option::is_some)
    }

    /// [`Store::write`] and [`Store::write_if`]: redb commits when
    /// `commit` says so of what `f` returned, else rolls back.
    fn write_when<R, E: From<StoreError>>(
        &self,
        f: impl FnMut(Tx<'_>) -> Result<R, E>,
        commit: impl Fn(&R) -> bool,
    ) -> Result<R, E> {
        let mut f = f;
        if let Some(kv) = self.postgres() {
            self.in_use();
            // A transaction that wrote nothing commits without a flush
            // there.
            return kv.write(|txn| f(Tx::Pg(txn)));
        }
        let db = self.db()?;
        let txn = db.begin_write()?;
        let out = f(Tx::Write(&txn))?;
        if commit(&out) {
            txn.commit().map_err(StoreError::from)?;
        }
        Ok(out)
    }

    /// A write transaction the caller commits, tried once: for the writer
    /// thread, whose rounds keep in-memory state that a transaction run
    /// again would repeat, and whose failed round goes through its own
    /// recovery (`writer::recover`) instead. Everything else uses
    /// [`Store::write`].
    pub fn begin_write(&self) -> Result<WriteTxn, StoreError> {
        if let Some(kv) = self.postgres() {
            self.in_use();
            return Ok(WriteTxn::Pg(kv.begin_write()?));
        }
        Ok(WriteTxn::Redb(self.db()?.begin_write()?))
    }

    /// Run `f` in a read transaction: one snapshot of what was committed.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(kv) = self.postgres() {
            self.in_use();
            let txn = kv.begin_read()?;
            return f(Tx::Pg(&txn));
        }
        let db = self.db()?;
        let txn = db.begin_read().map_err(StoreError::from)?;
        f(Tx::Read(&txn))
    }

    /// A store on PostgreSQL for a tool or a test, without a node's hold
    /// (a node opens with [`Store::open_node`]): the schema is created or
    /// brought to this binary's version first (docs/scale-out.md (f)). At
    /// most `sessions`
    /// connections; a caller waits at most `wait` for one, and a statement
    /// runs at most that long.
    pub fn open_postgres(
        target: crate::pg::Target,
        sessions: usize,
        wait: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let kv = Arc::new(crate::pg::kv::PgKv::new(target, sessions, wait)?);
        kv.migrate()?;
        Ok(Store::on_postgres(kv))
    }

    /// The store a node serves from PostgreSQL (`[store] kind =
    /// "postgres"`): take this node's hold on the database first (a
    /// second node is [`StoreError::InUse`], `crate::pg::hold` says why),
    /// then bring the schema to this binary's version, then pool.
    pub fn open_node(config: &crate::config::StoreConfig) -> Result<Store, StoreError> {
        let target = crate::pg::Target::parse(&config.postgres_url).map_err(StoreError::Io)?;
        let wait = std::time::Duration::from_secs(config.timeout_secs.max(1));
        let kv = Arc::new(crate::pg::kv::PgKv::new(target, config.pool_size, wait)?);
        // Takes the hold, migrates, then claims (`PgKv::hold`).
        kv.hold()?;
        Ok(Store::on_postgres(kv))
    }

    fn on_postgres(kv: Arc<crate::pg::kv::PgKv>) -> Store {
        Store {
            slot: RwLock::new(Slot::Postgres(kv)),
            path: PathBuf::new(),
            faults: None,
            cache_bytes: 0,
            damage: Arc::default(),
        }
    }

    /// The PostgreSQL database, when the store is one.
    pub fn postgres(&self) -> Option<Arc<crate::pg::kv::PgKv>> {
        match &*self.slot.read() {
            Slot::Postgres(kv) => Some(kv.clone()),
            _ => None,
        }
    }

    /// Note this store as the one this thread is using: a value that
    /// does not decode marks it damaged, not another (see `error.rs`).
    fn in_use(&self) {
        IN_USE.with(|u| *u.borrow_mut() = Arc::downgrade(&self.damage));
    }

    /// The redb handle, for the writer thread and queries. Fails while the
    /// file is closed after a storage failure it could not be reopened from.
    pub fn db(&self) -> Result<Arc<Db>, StoreError> {
        IN_USE.with(|u| *u.borrow_mut() = Arc::downgrade(&self.damage));
        match &*self.slot.read() {
            Slot::Open(db) => Ok(db.clone()),
            Slot::Closed(why) => Err(why.error()),
            Slot::Postgres(_) => Err(StoreError::Io(
                "this needs the redb data file; the store is PostgreSQL".into(),
            )),
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
            Slot::Postgres(_) => false,
        }
    }
}
