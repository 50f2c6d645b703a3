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
//!
//! **On PostgreSQL, a round's cache** ([`Pair::prefetch`]). There every
//! lookup is a statement, and a writer round makes several per chunk it
//! touches (where a reading goes, the chunk, the next part). So the round
//! first reads, in one statement per table, each written series' chunks
//! around the minutes it writes ([`Known`]: every row in a key interval,
//! exactly, and the series' last row); lookups inside that interval are
//! answered from it, and the round's writes are kept as final states and
//! sent together ([`Pair::flush`], one round trip per table). A lookup
//! outside it sends the changes kept so far, then asks the database, so
//! the answers are always what the database would give. redb has no
//! cache: every call is the redb call.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;
use std::ops::Bound;

use super::kv::{Guard as AccessGuard, Range};
use super::parts::{PartKey, ReadingsTable};
use super::{StoreError, READINGS, SEALED};

/// Which table a chunk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    /// On PostgreSQL, after [`Pair::prefetch`]: the round's cache.
    cache: Option<RefCell<Cache>>,
}

/// The widest window of minutes a round caches for one series (a week).
const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// What a round knows of the series it writes, and the changes it has
/// not sent yet.
#[derive(Default)]
struct Cache {
    series: HashMap<(u32, u32), Known>,
    /// The final state of each key changed and not sent: bytes, or gone.
    dirty: BTreeMap<(Place, PartKey), Option<Vec<u8>>>,
}

/// A series' rows with keys in `lower..=upper`, exactly (kept current
/// with the round's writes), and its last row when that is above `upper`.
struct Known {
    lower: PartKey,
    upper: PartKey,
    rows: BTreeMap<PartKey, (Vec<u8>, Place)>,
    last: Option<Cached>,
}

impl Known {
    fn holds(&self, key: PartKey) -> bool {
        self.lower <= key && key <= self.upper
    }
}

/// The series both bounds of a range lie in, if they do.
fn series_of(range: &KeyRange) -> Option<(u32, u32)> {
    match range {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b))
            if (a.0, a.1) == (b.0, b.1) =>
        {
            Some((a.0, a.1))
        }
        _ => None,
    }
}

/// Is every key of `range` at or above `key`?
fn starts_at_or_above(range: &KeyRange, key: PartKey) -> bool {
    match range.0 {
        Bound::Included(a) | Bound::Excluded(a) => a >= key,
        Bound::Unbounded => false,
    }
}

/// Is every key of `range` at or below `key`?
fn ends_at_or_below(range: &KeyRange, key: PartKey) -> bool {
    match range.1 {
        Bound::Included(b) | Bound::Excluded(b) => b <= key,
        Bound::Unbounded => false,
    }
}

/// The nearer of two ends: `..=upper` or `end`.
fn min_end(upper: PartKey, end: Bound<PartKey>) -> Bound<PartKey> {
    match end {
        Bound::Included(b) | Bound::Excluded(b) if b <= upper => end,
        _ => Bound::Included(upper),
    }
}

/// The nearer of two starts: `lower..` or `start`.
fn max_start(lower: PartKey, start: Bound<PartKey>) -> Bound<PartKey> {
    match start {
        Bound::Included(a) | Bound::Excluded(a) if a >= lower => start,
        _ => Bound::Included(lower),
    }
}

/// Where the keys of a range starting at `start` and above `upper` begin.
fn later_start(start: Bound<PartKey>, upper: PartKey) -> Bound<PartKey> {
    match start {
        Bound::Included(a) | Bound::Excluded(a) if a > upper => start,
        _ => Bound::Excluded(upper),
    }
}

/// Where the keys of a range ending at `end` and below `lower` end.
fn earlier_end(end: Bound<PartKey>, lower: PartKey) -> Bound<PartKey> {
    match end {
        Bound::Included(b) | Bound::Excluded(b) if b < lower => end,
        _ => Bound::Excluded(lower),
    }
}

/// Does `range` contain `key`?
fn contains(range: &KeyRange, key: PartKey) -> bool {
    std::ops::RangeBounds::contains(range, &key)
}

/// A row the cache holds: key, bytes, table.
type Cached = (PartKey, Vec<u8>, Place);

/// A range split into what the cache knows (in the order asked) and what
/// is left to read from the database.
type Split = (Vec<Cached>, Option<KeyRange>);

/// The rows of `known` in `range` (empty for an empty range).
fn rows_in(known: &Known, range: KeyRange) -> Vec<Cached> {
    let empty = match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    };
    if empty {
        return Vec::new();
    }
    known
        .rows
        .range(range)
        .map(|(k, (v, p))| (*k, v.clone(), *p))
        .collect()
}

/// A cached row as the store yields it.
fn chunk_of<'a>((k, v, p): Cached) -> Chunk<'a> {
    (k, AccessGuard::Pg(crate::pg::kv::Owned::from_bytes(v)), p)
}

/// The rows of a range: those the round's cache knows, then (asked only
/// when reached) the database's for the rest.
pub struct Rows<'a, 't> {
    pair: &'a Pair<ReadingsTable<'t>>,
    known: std::vec::IntoIter<Chunk<'a>>,
    rest: Option<KeyRange>,
    rev: bool,
    db: Option<Db<'a>>,
}

/// A range read from the database.
enum Db<'a> {
    Forward(Forward<'a>),
    Backward(Backward<'a>),
}

impl<'a> Iterator for Rows<'a, '_> {
    type Item = Result<Chunk<'a>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(c) = self.known.next() {
            return Some(Ok(c));
        }
        if let Some(range) = self.rest.take() {
            let db = self.pair.flush().and_then(|()| {
                Ok(if self.rev {
                    Db::Backward(self.pair.db_range_rev(range)?)
                } else {
                    Db::Forward(self.pair.db_range(range)?)
                })
            });
            match db {
                Ok(db) => self.db = Some(db),
                Err(e) => return Some(Err(e)),
            }
        }
        match self.db.as_mut()? {
            Db::Forward(it) => it.next(),
            Db::Backward(it) => it.next(),
        }
    }
}

impl<'t> Pair<ReadingsTable<'t>> {
    fn db_range(&self, range: KeyRange) -> Result<Forward<'_>, StoreError> {
        Ok(Merged {
            hot: self.hot.range(range)?.peekable(),
            sealed: self.sealed.range(range)?.peekable(),
            rev: false,
        })
    }

    fn db_range_rev(&self, range: KeyRange) -> Result<Backward<'_>, StoreError> {
        Ok(Merged {
            hot: self.hot.range(range)?.rev().peekable(),
            sealed: self.sealed.range(range)?.rev().peekable(),
            rev: true,
        })
    }

    /// Rows from the database only.
    fn db_rows(&self, range: KeyRange, rev: bool) -> Result<Rows<'_, 't>, StoreError> {
        self.flush()?;
        let db = if rev {
            Db::Backward(self.db_range_rev(range)?)
        } else {
            Db::Forward(self.db_range(range)?)
        };
        Ok(Rows {
            pair: self,
            known: Vec::new().into_iter(),
            rest: None,
            rev,
            db: Some(db),
        })
    }

    /// The rows of `range`: `split`, what the cache knows (in the order
    /// asked) and what is left to read from the database; without it, all
    /// from the database.
    fn rows(
        &self,
        range: KeyRange,
        rev: bool,
        split: Option<Split>,
    ) -> Result<Rows<'_, 't>, StoreError> {
        let Some((known, rest)) = split else {
            return self.db_rows(range, rev);
        };
        let known: Vec<Chunk<'_>> = known.into_iter().map(chunk_of).collect();
        Ok(Rows {
            pair: self,
            known: known.into_iter(),
            rest,
            rev,
            db: None,
        })
    }

    /// The chunks with keys in `range`, in key order.
    pub fn range(&self, range: KeyRange) -> Result<Rows<'_, 't>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.db_rows(range, false);
        };
        let split = {
            let cache = cache.borrow();
            let known = series_of(&range).and_then(|s| cache.series.get(&s));
            match known {
                Some(k) if starts_at_or_above(&range, k.lower) => {
                    let inside = (range.0, min_end(k.upper, range.1));
                    let rest = (!ends_at_or_below(&range, k.upper))
                        .then_some((later_start(range.0, k.upper), range.1));
                    Some((rows_in(k, inside), rest))
                }
                _ => None,
            }
        };
        self.rows(range, false, split)
    }

    /// The chunks with keys in `range`, last first.
    pub fn range_rev(&self, range: KeyRange) -> Result<Rows<'_, 't>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.db_rows(range, true);
        };
        let split = {
            let cache = cache.borrow();
            let known = series_of(&range).and_then(|s| cache.series.get(&s));
            match known {
                Some(k) if ends_at_or_below(&range, k.upper) => {
                    let inside = (max_start(k.lower, range.0), range.1);
                    let rest = (!starts_at_or_above(&range, k.lower))
                        .then_some((range.0, earlier_end(range.1, k.lower)));
                    let mut rows = rows_in(k, inside);
                    rows.reverse();
                    Some((rows, rest))
                }
                // Above what is known: the series' last row comes first,
                // then the database's below it.
                Some(Known {
                    last: Some((l, v, p)),
                    ..
                }) if contains(&range, *l) => Some((
                    vec![(*l, v.clone(), *p)],
                    Some((range.0, Bound::Excluded(*l))),
                )),
                _ => None,
            }
        };
        self.rows(range, true, split)
    }

    /// The chunk under `key`, and where it is.
    pub fn get(&self, key: PartKey) -> Result<Option<Found<'_>>, StoreError> {
        if let Some(cache) = &self.cache {
            let cache = cache.borrow();
            if let Some(k) = cache.series.get(&(key.0, key.1)).filter(|k| k.holds(key)) {
                return Ok(k.rows.get(&key).map(|(v, p)| {
                    (
                        AccessGuard::Pg(crate::pg::kv::Owned::from_bytes(v.clone())),
                        *p,
                    )
                }));
            }
            drop(cache);
            self.flush()?;
        }
        if let Some(v) = self.hot.get(key)? {
            return Ok(Some((v, Place::Hot)));
        }
        Ok(self.sealed.get(key)?.map(|v| (v, Place::Sealed)))
    }

    /// On PostgreSQL, read the chunks of each series `(device, sensor,
    /// first minute, last minute)` a round is about to write around
    /// those minutes, in one statement per table, and answer the round's
    /// lookups there from them ([`Known`]); the round's writes are kept
    /// until [`Pair::flush`], which the round must call before it
    /// commits. On redb, nothing.
    pub fn prefetch(&mut self, series: &[(u32, u32, u32, u32)]) -> Result<(), StoreError> {
        let (Some(hot), Some(sealed)) = (self.hot.postgres(), self.sealed.postgres()) else {
            return Ok(());
        };
        // A reading at minute m goes to a chunk based at most SPAN_MINUTES
        // before m, or to the one before that window (which starts before
        // m); so the window from there to the last minute, with the rows
        // either side, answers every lookup of the round.
        // A series whose readings span more than a week (a board whose
        // clock was reset sends 1970 beside today) is not cached: its
        // window would be its whole history. Its lookups go to the
        // database, as on redb.
        let windows: Vec<(u32, u32, u32, u32)> = series
            .iter()
            .map(|&(d, c, m0, m1)| (d, c, m0.saturating_sub(super::chunk::SPAN_MINUTES + 1), m1))
            .filter(|w| w.3 - w.2 <= MAX_WINDOW_MINUTES)
            .collect();
        let mut per: Vec<Vec<Cached>> = vec![Vec::new(); windows.len()];
        for (table, place) in [(hot, Place::Hot), (sealed, Place::Sealed)] {
            for (i, key, data) in table.series_windows(&windows)? {
                per[i].push((key, data, place));
            }
        }
        let mut cache = Cache::default();
        for ((dev, code, lo, hi), rows) in windows.into_iter().zip(per) {
            let mut known = Known {
                lower: (dev, code, 0, 0),
                upper: (dev, code, u32::MAX, u16::MAX),
                rows: BTreeMap::new(),
                last: None,
            };
            let (mut below, mut above) = (None::<PartKey>, Vec::new());
            for (key, data, place) in rows {
                if key.2 < lo {
                    below = below.max(Some(key));
                    known.rows.insert(key, (data, place));
                } else if key.2 > hi {
                    above.push((key, data, place));
                } else {
                    known.rows.insert(key, (data, place));
                }
            }
            // Of the rows below the window only the nearest is known to
            // have nothing between it and the window.
            if let Some(b) = below {
                known.lower = b;
                known.rows.retain(|k, _| *k >= b);
            }
            above.sort_by_key(|r| r.0);
            above.dedup_by_key(|r| r.0);
            if let Some(first) = above.first() {
                known.upper = first.0;
                known.rows.insert(first.0, (first.1.clone(), first.2));
                known.last = above.pop();
            }
            cache.series.insert((dev, code), known);
        }
        self.cache = Some(RefCell::new(cache));
        Ok(())
    }

    /// Send the changes the round's cache kept (one round trip per
    /// table); nothing without a cache.
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let dirty = std::mem::take(&mut cache.borrow_mut().dirty);
        if dirty.is_empty() {
            return Ok(());
        }
        for place in [Place::Hot, Place::Sealed] {
            let Some(table) = self.at(place).postgres() else {
                continue;
            };
            table.set_many(
                dirty
                    .iter()
                    .filter(|((p, _), _)| *p == place)
                    .map(|((_, k), v)| (*k, v.as_deref())),
            )?;
        }
        Ok(())
    }

    /// Keep a change in the round's cache when the key is one it knows
    /// (`true`); else the caller writes it to the table at once.
    fn keep(&self, place: Place, key: PartKey, bytes: Option<&[u8]>) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let mut cache = cache.borrow_mut();
        let Some(known) = cache
            .series
            .get_mut(&(key.0, key.1))
            .filter(|k| k.holds(key))
        else {
            return false;
        };
        match bytes {
            Some(b) => {
                known.rows.insert(key, (b.to_vec(), place));
            }
            None => {
                if known.rows.get(&key).is_some_and(|(_, p)| *p == place) {
                    known.rows.remove(&key);
                }
            }
        }
        cache.dirty.insert((place, key), bytes.map(<[u8]>::to_vec));
        true
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
        cache: None,
    })
}

/// Open both tables for reading.
pub fn open_read<'t>(txn: impl Into<crate::store::Tx<'t>>) -> Result<ReadChunks<'t>, StoreError> {
    let txn = txn.into();
    Ok(Pair {
        hot: txn.open_table(READINGS)?,
        sealed: txn.open_table(SEALED)?,
        cache: None,
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
        if !self.keep(place, key, None) {
            self.at_mut(place).remove(key)?;
        }
        Ok(())
    }

    /// Write the chunk `key` into `place`.
    pub fn insert(&mut self, place: Place, key: PartKey, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.keep(place, key, Some(bytes)) {
            self.at_mut(place).insert(key, bytes)?;
        }
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
