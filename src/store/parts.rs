//! Writing readings into the parts of a minute.
//!
//! A minute of one (device, sensor) is stored under the keys
//! `(device, sensor, minute, part)`, part 0, 1, 2, ... Invariants:
//!
//! - parts are disjoint and ordered: every offset in part `p` is below
//!   every offset in part `p + 1`, so a range scan over the key yields the
//!   minute's readings in time order;
//! - a reading's home is the last part whose first offset is at or below
//!   its offset (part 0 for anything earlier than every part), so a retry
//!   always meets its first copy and is recognised;
//! - only the last part is split: once it holds more than
//!   [`chunk::PART_ENTRIES`] readings the excess moves to new parts.
//!   Earlier parts only grow by late readings that belong inside them,
//!   which is rare (a clock that runs backwards within a minute).
//!
//! So the common write — readings later than everything stored — decodes
//! and re-encodes at most one bounded part, however many readings the
//! minute already has.

use redb::{ReadableTable, Table};

use super::chunk::{self, Entry, PART_ENTRIES};
use super::StoreError;
use crate::codec::{SensorKind, Value};

/// The key of one part.
pub type PartKey = (u32, u32, u32, u16);

/// Merge `incoming` (sorted by offset, ties in arrival order) into the
/// minute `(dev, code, m)`; `fresh(i)` is called for every index of
/// `incoming` that was stored (not a retry or a duplicate).
#[allow(clippy::too_many_arguments)]
pub fn write_minute(
    table: &mut Table<'_, PartKey, &'static [u8]>,
    dev: u32,
    code: u32,
    m: u32,
    kind: SensorKind,
    incoming: &[(u32, &Value)],
    buf: &mut Vec<u8>,
    mut fresh: impl FnMut(usize),
) -> Result<(), StoreError> {
    // The last part, decoded: one B-tree lookup serves both the routing
    // (its first offset) and the merge (its entries).
    let last = match table
        .range((dev, code, m, 0)..=(dev, code, m, u16::MAX))?
        .next_back()
    {
        Some(row) => {
            let (k, v) = row?;
            let mut entries = Vec::new();
            chunk::decode(v.value(), kind, |o, val| entries.push((o, val)))?;
            Some((k.value().3, entries))
        }
        None => None,
    };
    let Some((last_part, last_entries)) = last else {
        let merged = chunk::merge_entries(Vec::new(), incoming, &mut fresh);
        return put_split(table, (dev, code, m), 0, &merged, buf);
    };
    let last_lo = last_entries.first().map_or(0, |(o, _)| *o);

    // Readings before the last part's first offset belong to earlier parts.
    let split = incoming.partition_point(|(o, _)| *o < last_lo);
    let (early, tail) = incoming.split_at(split);
    let old = if early.is_empty() {
        last_entries
    } else {
        write_early(
            table,
            (dev, code, m),
            last_part,
            kind,
            early,
            buf,
            &mut fresh,
        )?;
        if tail.is_empty() {
            return Ok(());
        }
        // The early readings may have landed in the last part itself.
        read_part(table, (dev, code, m, last_part), kind)?
    };
    let (old_len, old_max) = (old.len(), old.last().map(|(o, _)| *o));
    let merged = chunk::merge_entries(old, tail, |i| fresh(split + i));
    if merged.len() == old_len {
        return Ok(()); // every reading was a retry
    }
    if old_len >= PART_ENTRIES && merged.get(old_len - 1).map(|(o, _)| *o) == old_max {
        // Everything new is after a full part: leave it, start the next.
        if let Some(next) = last_part.checked_add(1) {
            return put_split(table, (dev, code, m), next, &merged[old_len..], buf);
        }
    }
    put_split(table, (dev, code, m), last_part, &merged, buf)
}

/// Write `entries` as parts `first`, `first + 1`, ... of at most
/// [`PART_ENTRIES`] each (the very last possible part takes the rest).
fn put_split(
    table: &mut Table<'_, PartKey, &'static [u8]>,
    (dev, code, m): (u32, u32, u32),
    first: u16,
    entries: &[Entry],
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let mut part = first;
    let mut rest = entries;
    while !rest.is_empty() {
        let take = if part == u16::MAX {
            rest.len()
        } else {
            rest.len().min(PART_ENTRIES)
        };
        buf.clear();
        chunk::encode(&rest[..take], buf);
        table.insert((dev, code, m, part), buf.as_slice())?;
        rest = &rest[take..];
        part = part.saturating_add(1);
    }
    Ok(())
}

fn read_part(
    table: &Table<'_, PartKey, &'static [u8]>,
    key: PartKey,
    kind: SensorKind,
) -> Result<Vec<Entry>, StoreError> {
    let mut old = Vec::new();
    if let Some(v) = table.get(key)? {
        chunk::decode(v.value(), kind, |o, v| old.push((o, v)))?;
    }
    Ok(old)
}

/// The rare path: readings that land before the last part's first offset.
/// Each goes to its home part (see the module doc); parts are not split.
#[allow(clippy::too_many_arguments)]
fn write_early(
    table: &mut Table<'_, PartKey, &'static [u8]>,
    (dev, code, m): (u32, u32, u32),
    last_part: u16,
    kind: SensorKind,
    early: &[(u32, &Value)],
    buf: &mut Vec<u8>,
    fresh: &mut impl FnMut(usize),
) -> Result<(), StoreError> {
    // First offsets of the parts before the last, ascending.
    let mut heads: Vec<(u16, u32)> = Vec::new();
    for row in table.range((dev, code, m, 0)..(dev, code, m, last_part))? {
        let (k, v) = row?;
        if let Some(lo) = chunk::first_offset(v.value())? {
            heads.push((k.value().3, lo));
        }
    }
    if heads.is_empty() {
        // Only the last part exists: it is everyone's home.
        heads.push((last_part, 0));
    }
    let home = |off: u32| {
        let i = heads.partition_point(|(_, lo)| *lo <= off);
        heads[i.saturating_sub(1)].0
    };
    let mut i = 0;
    while i < early.len() {
        let part = home(early[i].0);
        let mut j = i + 1;
        while j < early.len() && home(early[j].0) == part {
            j += 1;
        }
        let old = read_part(table, (dev, code, m, part), kind)?;
        let old_len = old.len();
        let merged = chunk::merge_entries(old, &early[i..j], |n| fresh(i + n));
        if merged.len() != old_len {
            buf.clear();
            chunk::encode(&merged, buf);
            table.insert((dev, code, m, part), buf.as_slice())?;
        }
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::READINGS;
    use redb::ReadableDatabase;

    /// Write `offs` one call at a time (as single-reading requests do) and
    /// return how many were fresh.
    fn write(db: &redb::Database, offs: &[u32]) -> usize {
        let mut n = 0;
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(READINGS).unwrap();
            let mut buf = Vec::new();
            for off in offs {
                let v = Value::Int(i64::from(*off));
                write_minute(
                    &mut t,
                    1,
                    2,
                    3,
                    SensorKind::Int,
                    &[(*off, &v)],
                    &mut buf,
                    |_| n += 1,
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        n
    }

    /// Every part's entries in key order, and the number of parts.
    fn read_all(db: &redb::Database) -> (Vec<u32>, usize) {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(READINGS).unwrap();
        let mut offs = Vec::new();
        let mut parts = 0;
        for row in t.range((1, 2, 3, 0)..=(1, 2, 3, u16::MAX)).unwrap() {
            let (_, v) = row.unwrap();
            parts += 1;
            chunk::decode(v.value(), SensorKind::Int, |o, val| {
                assert_eq!(val, Value::Int(i64::from(o)));
                offs.push(o);
            })
            .unwrap();
        }
        (offs, parts)
    }

    #[test]
    fn a_busy_minute_splits_into_bounded_ordered_parts() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("p.redb")).unwrap();
        // 2,000 receive-time readings, 10 µs apart, in arrival order.
        let offs: Vec<u32> = (0..2000).map(|i| 1_000 + i * 10).collect();
        assert_eq!(write(&db, &offs), 2000);
        let (back, parts) = read_all(&db);
        assert_eq!(back, offs);
        assert_eq!(parts, 2000_usize.div_ceil(PART_ENTRIES));
        // Retries of every one of them, in any order, store nothing.
        let mut again = offs.clone();
        again.reverse();
        assert_eq!(write(&db, &again), 0);
        // Late readings land in their home part; order stays global.
        let late = [0, 1_005, 6_005, 19_995, 25_000];
        assert_eq!(write(&db, &late), late.len());
        let (back, parts2) = read_all(&db);
        let mut want = offs.clone();
        want.extend(late);
        want.sort_unstable();
        assert_eq!(back, want);
        assert!(parts2 >= parts, "{parts2} parts");
        // A retry of a late reading is still recognised.
        assert_eq!(write(&db, &late), 0);
    }
}
