//! The two tables of chunks, read and written as one: `readings` holds
//! the *hot* chunks (rewritten by every write that lands in them) and
//! `sealed` the sealed ones ([`super::sealed`]), which writes almost
//! never touch. Both have the key `(device, sensor, minute, part)`, and a
//! key is in at most one of them, so the chunks of a sensor are the union
//! of its rows in both, in key order; every rule of [`super::parts`]
//! (disjoint, ordered, a reading's home) holds for that union.
//!
//! Why two tables: redb writes copy-on-write and its file never shrinks
//! below the largest the tree ever was. With one table, every upload
//! commit rewrote leaves full of sealed chunks beside each sensor's live
//! one, and the file kept the size of the hot tree. With the sealed
//! chunks apart, an upload commit rewrites only the small hot tree, and a
//! sealing step moves a finished group from one table to the other
//! (`store::seal`), so the hot tree stays about one open group per sensor
//! (docs/storage.md, "Bytes on disk").
//!
//! A file written before the `sealed` table existed has its sealed chunks
//! in `readings`: they are read where they are (the form is told by the
//! first byte, not the table), a late reading re-seals one in place, and
//! the sealer moves them over (`store::seal`).

use std::iter::Peekable;
use std::ops::Bound;

use super::kv::{Guard as AccessGuard, Range};
use super::parts::{PartKey, ReadingsTable};
use super::{StoreError, READINGS, SEALED};

/// Which table a chunk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `readings`: hot chunks (and sealed ones of older files).
    Hot,
    /// `sealed`: sealed chunks only.
    Sealed,
}

/// A row of either table as the store yields it.
pub type Row<'a> = (AccessGuard<'a, PartKey>, AccessGuard<'a, &'static [u8]>);

/// A range of keys, as redb takes it.
pub type KeyRange = (Bound<PartKey>, Bound<PartKey>);

/// An inclusive range of keys.
pub fn keys(lo: PartKey, hi: PartKey) -> KeyRange {
    (Bound::Included(lo), Bound::Included(hi))
}

/// The rows of both tables in one key order (ascending, or descending
/// for a reversed range), each with the table it came from.
pub struct Merged<'a, A, B>
where
    A: Iterator<Item = Result<Row<'a>, StoreError>>,
    B: Iterator<Item = Result<Row<'a>, StoreError>>,
{
    hot: Peekable<A>,
    sealed: Peekable<B>,
    rev: bool,
}

/// A chunk looked up by key: bytes, table.
pub type Found<'a> = (AccessGuard<'a, &'static [u8]>, Place);

/// A chunk from [`Merged`]: key, bytes, table.
pub type Chunk<'a> = (PartKey, AccessGuard<'a, &'static [u8]>, Place);

fn take<'a, I>(it: &mut Peekable<I>, place: Place) -> Option<Result<Chunk<'a>, StoreError>>
where
    I: Iterator<Item = Result<Row<'a>, StoreError>>,
{
    it.next().map(|r| r.map(|(k, v)| (k.value(), v, place)))
}

impl<'a, A, B> Iterator for Merged<'a, A, B>
where
    A: Iterator<Item = Result<Row<'a>, StoreError>>,
    B: Iterator<Item = Result<Row<'a>, StoreError>>,
{
    type Item = Result<Chunk<'a>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let h = match self.hot.peek() {
            Some(Ok((k, _))) => Some(k.value()),
            Some(Err(_)) => return take(&mut self.hot, Place::Hot),
            None => None,
        };
        let s = match self.sealed.peek() {
            Some(Ok((k, _))) => Some(k.value()),
            Some(Err(_)) => return take(&mut self.sealed, Place::Sealed),
            None => None,
        };
        match (h, s) {
            (None, None) => None,
            (Some(_), None) => take(&mut self.hot, Place::Hot),
            (None, Some(_)) => take(&mut self.sealed, Place::Sealed),
            (Some(h), Some(s)) => {
                if (h <= s) != self.rev || h == s {
                    take(&mut self.hot, Place::Hot)
                } else {
                    take(&mut self.sealed, Place::Sealed)
                }
            }
        }
    }
}

/// Ascending merged rows of `range` in two tables.
type Forward<'a> = Merged<'a, Range<'a, PartKey, &'static [u8]>, Range<'a, PartKey, &'static [u8]>>;
/// Descending merged rows of `range` in two tables.
type Backward<'a> = Merged<
    'a,
    std::iter::Rev<Range<'a, PartKey, &'static [u8]>>,
    std::iter::Rev<Range<'a, PartKey, &'static [u8]>>,
>;

/// Both tables, opened in a read or a write transaction.
pub struct Pair<T> {
    /// `readings`.
    pub hot: T,
    /// `sealed`.
    pub sealed: T,
}

impl<'t> Pair<ReadingsTable<'t>> {
    /// The chunks with keys in `range`, in key order.
    pub fn range(&self, range: KeyRange) -> Result<Forward<'_>, StoreError> {
        Ok(Merged {
            hot: self.hot.range(range)?.peekable(),
            sealed: self.sealed.range(range)?.peekable(),
            rev: false,
        })
    }

    /// The chunks with keys in `range`, last first.
    pub fn range_rev(&self, range: KeyRange) -> Result<Backward<'_>, StoreError> {
        Ok(Merged {
            hot: self.hot.range(range)?.rev().peekable(),
            sealed: self.sealed.range(range)?.rev().peekable(),
            rev: true,
        })
    }

    /// The chunk under `key`, and where it is.
    pub fn get(&self, key: PartKey) -> Result<Option<Found<'_>>, StoreError> {
        if let Some(v) = self.hot.get(key)? {
            return Ok(Some((v, Place::Hot)));
        }
        Ok(self.sealed.get(key)?.map(|v| (v, Place::Sealed)))
    }

    /// The table at `place`.
    pub fn at(&self, place: Place) -> &ReadingsTable<'t> {
        match place {
            Place::Hot => &self.hot,
            Place::Sealed => &self.sealed,
        }
    }
}

/// Both tables as the writer has them open.
pub type Chunks<'t> = Pair<ReadingsTable<'t>>;

/// Both tables in a read transaction.
pub type ReadChunks<'t> = Pair<ReadingsTable<'t>>;

/// Open both tables for writing.
pub fn open<'t>(txn: impl Into<crate::store::Tx<'t>>) -> Result<Chunks<'t>, StoreError> {
    let txn = txn.into();
    Ok(Pair {
        hot: txn.open_table(READINGS)?,
        sealed: txn.open_table(SEALED)?,
    })
}

/// Open both tables for reading.
pub fn open_read<'t>(txn: impl Into<crate::store::Tx<'t>>) -> Result<ReadChunks<'t>, StoreError> {
    let txn = txn.into();
    Ok(Pair {
        hot: txn.open_table(READINGS)?,
        sealed: txn.open_table(SEALED)?,
    })
}

impl<'t> Chunks<'t> {
    /// The table at `place`, to change.
    pub fn at_mut(&mut self, place: Place) -> &mut ReadingsTable<'t> {
        match place {
            Place::Hot => &mut self.hot,
            Place::Sealed => &mut self.sealed,
        }
    }

    /// Remove the chunk `key` from `place`.
    pub fn remove(&mut self, place: Place, key: PartKey) -> Result<(), StoreError> {
        self.at_mut(place).remove(key)?;
        Ok(())
    }

    /// Write the chunk `key` into `place`.
    pub fn insert(&mut self, place: Place, key: PartKey, bytes: &[u8]) -> Result<(), StoreError> {
        self.at_mut(place).insert(key, bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn rows_of_both_tables_come_in_one_key_order_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("c.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut c = open(&txn).unwrap();
            for m in [1u32, 4, 5, 9] {
                c.insert(Place::Hot, (1, 2, m, 0), &[m as u8]).unwrap();
            }
            for m in [0u32, 2, 3, 7, 10] {
                c.insert(Place::Sealed, (1, 2, m, 0), &[m as u8]).unwrap();
            }
            c.insert(Place::Sealed, (1, 3, 0, 0), &[99]).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let c = open_read(&txn).unwrap();
        let all = keys((1, 2, 0, 0), (1, 2, u32::MAX, u16::MAX));
        let fwd: Vec<(u32, u8, Place)> = c
            .range(all)
            .unwrap()
            .map(|r| {
                let (k, v, p) = r.unwrap();
                (k.2, v.value()[0], p)
            })
            .collect();
        let ms: Vec<u32> = fwd.iter().map(|x| x.0).collect();
        assert_eq!(ms, [0, 1, 2, 3, 4, 5, 7, 9, 10]);
        assert!(fwd.iter().all(|(m, b, _)| *m == u32::from(*b)));
        assert_eq!(fwd[1].2, Place::Hot);
        assert_eq!(fwd[2].2, Place::Sealed);
        let back: Vec<u32> = c
            .range_rev(keys((1, 2, 2, 0), (1, 2, 9, u16::MAX)))
            .unwrap()
            .map(|r| r.unwrap().0 .2)
            .collect();
        assert_eq!(back, [9, 7, 5, 4, 3, 2]);
        assert_eq!(c.get((1, 2, 7, 0)).unwrap().unwrap().1, Place::Sealed);
        assert_eq!(c.get((1, 2, 9, 0)).unwrap().unwrap().1, Place::Hot);
        assert!(c.get((1, 2, 8, 0)).unwrap().is_none());
    }
}
