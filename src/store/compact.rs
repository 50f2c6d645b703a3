//! Giving the data file's free pages back while the server runs.
//!
//! redb writes copy-on-write and grows its file by doubling it (below 4
//! GiB); it reuses freed pages but gives back only a free tail. After a
//! bulk upload the file keeps the largest size the tree and the pages of
//! its last commits ever needed, up to twice that with the doubling,
//! though sealing leaves the live tree a fraction of it
//! (docs/storage.md, "Bytes on disk"). redb's `compact` moves the live
//! pages down and cuts the file after them; it needs the handle to
//! itself (no transaction of anyone's open), which the writer thread
//! arranges when it has been idle ([`crate::writer`]).

use std::sync::Arc;

use super::{Slot, Store, StoreError};

impl Store {
    /// Compact the data file in place if nothing else is using it: no
    /// query, management request or transaction holds the handle. `Ok(None)`:
    /// it was in use (or closed, read-only or damaged), nothing was done;
    /// try later. `Ok(Some((before, after)))`: the file's length before
    /// and after.
    ///
    /// Requests that want the file meanwhile wait until it is done (a
    /// fraction of a second for tens of MiB: BENCHMARKS.md); none is
    /// refused. Each of redb's compaction passes is one atomic commit, so
    /// a crash during it leaves a whole file either way.
    pub fn compact_unused(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(mut slot) = self.slot.try_write() else {
            return Ok(None);
        };
        let Slot::Open(shared) = &mut *slot else {
            return Ok(None);
        };
        // Holders of the handle keep it for one transaction (`Store::db`);
        // with the slot locked, nobody can take it until this returns.
        let Some(db) = Arc::get_mut(shared) else {
            return Ok(None);
        };
        if db.read_only.is_some() || self.damage.get().is_some() {
            return Ok(None);
        }
        let before = Store::file_len(&self.path);
        match db.db.compact() {
            Ok(_) => Ok(Some((before, Store::file_len(&self.path)))),
            // A read transaction that outlived its handle (still being
            // read somewhere): next time.
            Err(redb::CompactionError::TransactionInProgress) => Ok(None),
            Err(redb::CompactionError::Storage(e)) => Err(e.into()),
            Err(e) => Err(StoreError::Io(format!("compaction failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::META;
    use redb::{ReadableDatabase, TableDefinition};

    const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("test_blobs");

    #[test]
    fn a_file_is_compacted_only_when_nobody_holds_it_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = Store::open(&path).unwrap();
        // Grow the file with 20 MB of values, then remove most of them.
        let blob = vec![7u8; 1 << 20];
        for round in 0..20u64 {
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(BLOBS).unwrap();
                t.insert(round, blob.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(BLOBS).unwrap();
            for round in 1..20u64 {
                t.remove(round).unwrap();
            }
            txn.open_table(META).unwrap().insert("kept", 42).unwrap();
        }
        txn.commit().unwrap();
        // Held by someone (a query in flight): not now.
        assert_eq!(store.compact_unused().unwrap(), None);
        let read = db.begin_read().unwrap();
        drop(db);
        // A read transaction that outlived its handle: not now either.
        assert_eq!(store.compact_unused().unwrap(), None);
        drop(read);
        let (before, after) = store.compact_unused().unwrap().expect("compacted");
        assert!(before > 20 << 20, "{before}");
        assert!(after < before / 8, "{before} -> {after}");
        assert_eq!(Store::file_len(&path), after);
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("kept").unwrap().unwrap().value(), 42);
        let t = txn.open_table(BLOBS).unwrap();
        assert_eq!(t.get(0).unwrap().unwrap().value(), blob.as_slice());
    }
}
