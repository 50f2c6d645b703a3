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

use std::ops::Bound;
use std::sync::Arc;

use super::parts::PartKey;
use super::{Slot, Store, StoreError, SEALED};

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
            // (and savepoints, which this server never makes)
            Err(
                redb::CompactionError::TransactionInProgress
                | redb::CompactionError::PersistentSavepointExists
                | redb::CompactionError::EphemeralSavepointExists,
            ) => Ok(None),
            Err(redb::CompactionError::Storage(e)) => Err(e.into()),
            Err(e) => Err(StoreError::Io(format!("compaction failed: {e}"))), // (non-exhaustive)
        }
    }
}

/// How many sealed chunks one [`repack_step`] rewrites (about 10 ms).
pub const REPACK_PER_STEP: usize = 4096;

/// Where the next [`repack_step`] starts: after this key, or at the start.
pub type RepackFrom = Option<PartKey>;

/// One bounded step of rewriting the `sealed` table into full leaves:
/// take up to [`REPACK_PER_STEP`] chunks after `from` out and put them
/// back in key order through a cursor, which redb packs into leaves as
/// full as they go. Sealed chunks arrive one per sensor-hour at every
/// sensor's end of the key range at once, so leaves split in half and
/// the table sits about two thirds full (docs/storage.md, "Bytes on
/// disk"); repacked, it is nearly full, and compaction then gives the
/// difference back. Keys and values are unchanged: readers see the same
/// chunks before, during and after. Returns where the next step starts,
/// or `None` when the table is done.
pub fn repack_step(
    txn: &redb::WriteTransaction,
    from: RepackFrom,
) -> Result<Option<RepackFrom>, StoreError> {
    let mut table = txn.open_table(SEALED)?;
    let start = from.map_or(Bound::Unbounded, Bound::Excluded);
    let rows: Vec<(PartKey, Vec<u8>)> = table
        .extract_from_if((start, Bound::Unbounded), |_, _| true)?
        .take(REPACK_PER_STEP)
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    let Some(((first, _), (last, _))) = rows.first().zip(rows.last()) else {
        return Ok(None);
    };
    let mut cursor = table.lower_bound_mut(Bound::Included(first))?;
    for (k, v) in &rows {
        cursor.insert_before(k, v.as_slice()).map_err(|e| match e {
            redb::CursorError::Storage(e) => StoreError::from(e),
            // The rows came out of the table in key order.
            redb::CursorError::UnorderedKey => {
                StoreError::Corrupt("sealed chunks out of key order while repacking".into())
            }
            e => StoreError::Io(format!("repacking sealed chunks: {e}")), // (non-exhaustive)
        })?;
    }
    cursor.close()?;
    Ok(if rows.len() < REPACK_PER_STEP {
        None
    } else {
        Some(Some(*last))
    })
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

    /// Every row of the sealed table.
    fn sealed_rows(store: &Store) -> Vec<(PartKey, Vec<u8>)> {
        use redb::ReadableTable;
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(SEALED).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
    }

    fn leaf_pages(store: &Store) -> u64 {
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        let n = txn.stats().unwrap().leaf_pages();
        txn.abort().unwrap();
        n
    }

    #[test]
    fn repacking_fills_the_leaves_and_changes_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.redb")).unwrap();
        // As an upload seals them: each hour, one chunk at the end of
        // every sensor's range (leaves split in half).
        for hour in 0..40u32 {
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(SEALED).unwrap();
                for sensor in 0..300u32 {
                    let v = vec![(sensor + hour) as u8; 150 + (sensor % 60) as usize];
                    t.insert((1, sensor, hour * 60, 0), v.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let before = sealed_rows(&store);
        let pages = leaf_pages(&store);
        let mut from = None;
        let mut steps = 0;
        loop {
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
            let next = repack_step(&txn, from).unwrap();
            txn.commit().unwrap();
            steps += 1;
            match next {
                Some(f) => from = f,
                None => break,
            }
        }
        assert_eq!(steps, 12_000usize.div_ceil(REPACK_PER_STEP));
        assert_eq!(sealed_rows(&store), before, "the same rows");
        let repacked = leaf_pages(&store);
        assert!(
            repacked * 10 <= pages * 8,
            "{pages} leaf pages -> {repacked}"
        );
    }
}
