//! Opening the data file: creating it only where none exists, redb's
//! repair and verification, a clear error for a damaged or locked file,
//! and reopening it after a failed write or fsync (redb refuses every
//! operation after one until the file is opened again).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::Database;

use super::error::install_panic_hook;
use super::faults::{self, DiskFaults};
use super::{overlay, tables, ClosedBy, Db, Slot, Store, StoreError, DEFAULT_CACHE_BYTES};

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
                let why = super::panic_text(&*p, "redb panicked");
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
        tables::create_all(&txn)?;
        txn.commit()?;
        Ok(db)
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
        if self.postgres().is_some() {
            // No file to reopen: a lost session is replaced by the pool.
            return Ok(());
        }
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
