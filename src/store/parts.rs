//! Writing readings into the chunks of one (device, sensor).
//!
//! A sensor's readings are stored as chunks under the keys
//! `(device, sensor, minute, part)`. A chunk's key `minute` is its *base*:
//! every reading in it lies in the window of [`SPAN_MINUTES`] minutes that
//! starts there, stored as its offset from the base. A sensor reporting
//! every 10 s fills one chunk an hour (360 readings); a faster one fills
//! [`PART_ENTRIES`] readings, and the chunk continues in the next part of
//! the same base, so writing one reading rewrites one bounded chunk. The
//! *start* of a chunk is the time of its first reading.
//!
//! Invariants, for the chunks of one sensor in key order:
//!
//! 1. they are disjoint and ordered: every reading of a chunk is earlier
//!    than every reading of the next one, so a range scan over the keys
//!    yields readings in time order;
//! 2. every reading of chunk `(m, p)` is in `[m, m + SPAN_MINUTES)`
//!    minutes (offsets fit the chunk encoding);
//! 3. a reading's *home* is a function of the stored chunks and its time
//!    alone (see [`locate`]), and once stored a reading stays in its home:
//!    writing other readings never moves the home of a stored one to a
//!    different chunk than the one holding it. So a retried reading always
//!    meets its first copy and is stored once.
//!
//! The home of time `t`: the last chunk starting at or before `t`, if
//! `t` is inside that chunk's window; else the next chunk, if its base
//! minute is at or before `t`'s minute (`t` goes to its front); else a new
//! chunk based at `t`'s minute (no stored chunk has that base then).
//!
//! Only the last part of a base minute is ever split; earlier parts grow
//! only by late readings that belong inside them, which is rare.
//!
//! So the common write — readings later than everything stored — costs a
//! lookup or two and the rewrite of one bounded chunk per (device, sensor),
//! however many readings the request has for it.

use super::kv::Table;

use super::chunk::{self, Entry, MINUTE_US, PART_ENTRIES, SPAN_US};
use super::chunks::{keys, Chunks, Place};
use super::sealed;
use super::StoreError;
use crate::codec::{Micros, SensorKind, Value};

/// The key of one chunk.
pub type PartKey = (u32, u32, u32, u16);

/// The readings table as the writer has it open.
pub type ReadingsTable<'t> = Table<'t, PartKey, &'static [u8]>;

/// The base time of a key minute.
pub fn base(minute: u32) -> Micros {
    i64::from(minute) * MINUTE_US
}

/// The start of the chunk based at `minute` with the encoding `bytes`:
/// the time of its first reading.
fn start_of(minute: u32, bytes: &[u8]) -> Result<Micros, StoreError> {
    Ok(base(minute) + i64::from(chunk::first_offset(bytes)?.unwrap_or(0)))
}

/// The minute key of a time (times are never negative in the store).
pub fn minute(t: Micros) -> u32 {
    u32::try_from(t.max(0) / MINUTE_US).unwrap_or(u32::MAX)
}

/// The first key minute whose chunks can hold readings at or after the
/// start of `minute`: where a time-range scan begins.
pub fn scan_start(minute: u32) -> u32 {
    minute.saturating_sub(chunk::SPAN_MINUTES - 1)
}

/// Where the readings from some time on go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// Into this stored chunk.
    Stored((u32, u16)),
    /// Into a new chunk based at this minute (part 0).
    New(u32),
}

/// The home of time `t` (see the module doc) and the time before which
/// later readings share it.
fn locate(
    table: &Chunks<'_>,
    dev: u32,
    code: u32,
    t: Micros,
) -> Result<(Home, Micros), StoreError> {
    let m = minute(t);
    // The common case first: `t` is at or after the start of the sensor's
    // last chunk (new readings arriving in order). One lookup, no chunk
    // after it.
    if let Some(row) = table
        .range_rev(keys((dev, code, 0, 0), (dev, code, u32::MAX, u16::MAX)))?
        .next()
    {
        let (k, v, _) = row?;
        let (_, _, km, kp) = k;
        let start = start_of(km, v.value())?;
        if start <= t {
            let end = base(km) + SPAN_US;
            return Ok(if t < end {
                (Home::Stored((km, kp)), end)
            } else {
                (Home::New(m), base(m) + SPAN_US)
            });
        }
    }
    // Walk back from the last chunk based at or before `t`'s minute to the
    // first that starts at or before `t`; the ones passed start after it.
    let mut floor = None;
    let mut next: Option<((u32, u16), Micros)> = None;
    for row in table.range_rev(keys((dev, code, 0, 0), (dev, code, m, u16::MAX)))? {
        let (k, v, _) = row?;
        let (_, _, km, kp) = k;
        let start = start_of(km, v.value())?;
        if start <= t {
            floor = Some((km, kp));
            break;
        }
        next = Some(((km, kp), start));
    }
    if next.is_none() && m < u32::MAX {
        if let Some(row) = table
            .range(keys((dev, code, m + 1, 0), (dev, code, u32::MAX, u16::MAX)))?
            .next()
        {
            let (k, v, _) = row?;
            let (_, _, km, kp) = k;
            let start = start_of(km, v.value())?;
            next = Some(((km, kp), start));
        }
    }
    let next_start = next.map_or(Micros::MAX, |(_, s)| s);
    if let Some((fm, fp)) = floor {
        let end = base(fm) + SPAN_US;
        if t < end {
            return Ok((Home::Stored((fm, fp)), end.min(next_start)));
        }
    }
    match next {
        Some(((nm, np), start)) if nm <= m => Ok((Home::Stored((nm, np)), start)),
        _ => Ok((Home::New(m), (base(m) + SPAN_US).min(next_start))),
    }
}

/// Merge `incoming` (sorted by time, ties in arrival order) into the
/// chunks of `(dev, code)`; `fresh(i)` is called for every index of
/// `incoming` that was stored (not a retry or a duplicate). Returns
/// what the write did to the chunks ([`Wrote`]).
///
/// With `seal` (sealing is on: `[storage] seal_chunks_per_step` above 0),
/// a chunk this write *finishes* is written sealed at once, in this
/// transaction, instead of hot and sealed again later: a full part
/// (only late readings can still land in it), and the group of a run
/// that this same write goes on past (in-order readings go to a later
/// chunk from now on: an upload of past data, a board catching up). No
/// extra read or write: the chunk is written anyway; the cost is CPU,
/// the sealed encoding instead of the hot one and, for a finished chunk,
/// decoding what it held where an append would not have (P2: 2–5% with
/// one connection, BENCHMARKS.md). It keeps the hot tree, whose
/// high-water mark the file keeps, at about one open chunk per sensor
/// during an upload (docs/storage.md, "Bytes on disk").
pub fn write_series(
    table: &mut Chunks<'_>,
    (dev, code): (u32, u32),
    kind: SensorKind,
    incoming: &[(Micros, &Value)],
    seal: bool,
    buf: &mut Vec<u8>,
    mut fresh: impl FnMut(usize),
) -> Result<Wrote, StoreError> {
    let mut i = 0;
    let mut wrote = Wrote::default();
    while i < incoming.len() {
        let (home, limit) = locate(table, dev, code, incoming[i].0)?;
        let n = incoming[i..].partition_point(|(t, _)| *t < limit).max(1);
        let run = &incoming[i..i + n];
        let at = i;
        let m = match home {
            Home::New(m) | Home::Stored((m, _)) => m,
        };
        // Finished: this write goes on past the group's window.
        let finished = incoming
            .get(i + n)
            .is_some_and(|(t, _)| *t >= base(m) + SPAN_US);
        let how = Sealing {
            full: seal,
            last: seal && finished,
        };
        match home {
            Home::New(m) => {
                let rel = relative(run, m);
                let merged = chunk::merge_entries(Vec::new(), &rel, |x| fresh(at + x));
                let split = (dev, code, m);
                put_split(table, (split, None), 0, &merged, kind, how, buf, &mut wrote)?;
                wrote.started = true;
            }
            Home::Stored((m, p)) => {
                let key = (dev, code, m, p);
                let f = |x| fresh(at + x);
                merge_into(table, key, kind, run, how, buf, &mut wrote, f)?;
            }
        }
        i += n;
    }
    Ok(wrote)
}

/// Which chunks a write seals as it writes them.
#[derive(Debug, Clone, Copy)]
struct Sealing {
    /// Full parts (they receive only late readings from now on).
    full: bool,
    /// The last part written of a group, too (the group is finished).
    last: bool,
}

/// What [`write_series`] did to the chunks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wrote {
    /// A chunk was started (a new base minute or a new part): an earlier
    /// one may be ready to seal (`store::seal`).
    pub started: bool,
    /// Chunks written sealed into the sealed table.
    pub sealed: u64,
}

/// Times as offsets from the base minute `m` (every time is inside the
/// window: [`locate`] bounded the run).
fn relative<'v>(run: &[(Micros, &'v Value)], m: u32) -> Vec<(u32, &'v Value)> {
    let b = base(m);
    run.iter()
        .map(|(t, v)| {
            debug_assert!(*t >= b && *t - b < SPAN_US);
            ((*t - b) as u32, *v)
        })
        .collect()
}

/// Merge `run` into the stored chunk `key`, splitting it when it is the
/// last part of its base minute and has grown past [`PART_ENTRIES`]
/// (then a part was started); `how`: which of what is written here is
/// sealed.
#[allow(clippy::too_many_arguments)] // the chunk, the run, and where to note it
fn merge_into(
    table: &mut Chunks<'_>,
    key: PartKey,
    kind: SensorKind,
    run: &[(Micros, &Value)],
    how: Sealing,
    buf: &mut Vec<u8>,
    wrote: &mut Wrote,
    fresh: impl FnMut(usize),
) -> Result<(), StoreError> {
    let (dev, code, m, p) = key;
    let rel = relative(run, m);
    let mut old: Vec<Entry> = Vec::new();
    let mut fresh = fresh;
    let mut appended = Vec::new();
    let mut was_sealed = false;
    let mut place = Place::Hot;
    let fast = match table.get(key)? {
        Some((v, at)) => {
            place = at;
            let bytes = v.value();
            was_sealed = sealed::is_sealed(bytes);
            // The common case: everything new is after what is stored and
            // the chunk stays within its bound: append, no merge (unless
            // the chunk is finished: then it is sealed below).
            let total = if how.last {
                None
            } else {
                chunk::append(bytes, kind, &rel, buf, |i| appended.push(i))?
            };
            let fast = total.is_some_and(|n| n <= PART_ENTRIES);
            if !fast {
                appended.clear();
                chunk::decode(bytes, kind, |o, val| old.push((o, val)))?;
            }
            fast
        }
        None => false,
    };
    if fast {
        table.insert(place, key, buf.as_slice())?;
        appended.into_iter().for_each(&mut fresh);
        return Ok(());
    }
    let (old_len, old_max) = (old.len(), old.last().map(|(o, _)| *o));
    let merged = chunk::merge_entries(old, &rel, fresh);
    if merged.len() == old_len {
        return Ok(()); // every reading was a retry
    }
    if was_sealed {
        // A late reading re-opens a sealed chunk: sealed again whole, as
        // one part (it never grows past its window), where it was.
        buf.clear();
        sealed::encode(&merged, kind, buf);
        table.insert(place, key, buf.as_slice())?;
        return Ok(());
    }
    let last_of_minute = p == u16::MAX
        || table
            .range(keys((dev, code, m, p + 1), (dev, code, m, u16::MAX)))?
            .next()
            .is_none();
    if !last_of_minute || merged.len() <= PART_ENTRIES {
        // An earlier part of its minute is full: it receives only late
        // readings.
        let seal = how.last || (how.full && !last_of_minute);
        put(table, (key, Some(place)), &merged, kind, seal, buf, wrote)?;
        return Ok(());
    }
    if old_len >= PART_ENTRIES && merged.get(old_len - 1).map(|(o, _)| *o) == old_max {
        // Everything new is after a full chunk: it is sealed as it is
        // (with sealing on), and the next part started.
        let full = &merged[..old_len];
        put(table, (key, Some(place)), full, kind, how.full, buf, wrote)?;
        let rest = &merged[old_len..];
        put_split(
            table,
            ((dev, code, m), None),
            p + 1,
            rest,
            kind,
            how,
            buf,
            wrote,
        )?;
    } else {
        let at = ((dev, code, m), Some(place));
        put_split(table, at, p, &merged, kind, how, buf, wrote)?;
    }
    wrote.started = true;
    Ok(())
}

/// Write `entries` as parts `first`, `first + 1`, ... of at most
/// [`PART_ENTRIES`] each (the very last possible part takes the rest);
/// part `first` is stored in the table `was` names, if anywhere (the
/// later ones are new).
/// The full parts are sealed if `how.full`, the last one if `how.last`.
#[allow(clippy::too_many_arguments)] // the parts, their form, and where to note it
fn put_split(
    table: &mut Chunks<'_>,
    ((dev, code, m), was): ((u32, u32, u32), Option<Place>),
    first: u16,
    entries: &[Entry],
    kind: SensorKind,
    how: Sealing,
    buf: &mut Vec<u8>,
    wrote: &mut Wrote,
) -> Result<(), StoreError> {
    let mut part = first;
    let mut rest = entries;
    while !rest.is_empty() {
        let take = if part == u16::MAX {
            rest.len()
        } else {
            rest.len().min(PART_ENTRIES)
        };
        let last = take == rest.len();
        let key = (dev, code, m, part);
        let seal = if last { how.last } else { how.full };
        let stored = if part == first { was } else { None };
        put(table, (key, stored), &rest[..take], kind, seal, buf, wrote)?;
        rest = &rest[take..];
        part = part.saturating_add(1);
    }
    Ok(())
}

/// Write one chunk hot, or sealed into the sealed table, where `was`
/// names the table it is stored in now (if any); either way the key is
/// left in one table.
fn put(
    table: &mut Chunks<'_>,
    (key, was): (PartKey, Option<Place>),
    entries: &[Entry],
    kind: SensorKind,
    seal: bool,
    buf: &mut Vec<u8>,
    wrote: &mut Wrote,
) -> Result<(), StoreError> {
    buf.clear();
    let place = if seal {
        sealed::encode(entries, kind, buf);
        wrote.sealed += 1;
        Place::Sealed
    } else {
        chunk::encode(entries, buf);
        Place::Hot
    };
    if let Some(was) = was.filter(|w| *w != place) {
        table.remove(was, key)?;
    }
    table.insert(place, key, buf.as_slice())?;
    Ok(())
}

/// Every reading of `(dev, code)` with its time, in key order, and the
/// keys: for tests and checks of the invariants.
#[cfg(test)]
fn read_sensor(
    table: &super::chunks::ReadChunks,
    dev: u32,
    code: u32,
    kind: SensorKind,
) -> Vec<(PartKey, Vec<(Micros, Value)>)> {
    let mut out = Vec::new();
    for row in table
        .range(keys((dev, code, 0, 0), (dev, code, u32::MAX, u16::MAX)))
        .unwrap()
    {
        let (key, v, _) = row.unwrap();
        let mut entries = Vec::new();
        chunk::decode(v.value(), kind, |o, val| {
            entries.push((base(key.2) + i64::from(o), val))
        })
        .unwrap();
        out.push((key, entries));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunks::{open, open_read};
    use redb::ReadableDatabase;

    const DEV: u32 = 1;
    const CODE: u32 = 2;

    /// Write `times` (value = time) in one call per slice of `batch`, as
    /// requests of that many readings do; return how many were fresh.
    fn write(db: &redb::Database, times: &[Micros], batch: usize) -> usize {
        write_as(db, times, batch, true)
    }

    /// [`write`], with sealing on or off.
    fn write_as(db: &redb::Database, times: &[Micros], batch: usize, seal: bool) -> usize {
        let mut n = 0;
        let txn = db.begin_write().unwrap();
        {
            let mut t = open(&txn).unwrap();
            let mut buf = Vec::new();
            for part in times.chunks(batch.max(1)) {
                let vals: Vec<Value> = part.iter().map(|t| Value::Int(*t)).collect();
                let mut incoming: Vec<(Micros, &Value)> =
                    part.iter().copied().zip(vals.iter()).collect();
                incoming.sort_by_key(|(t, _)| *t);
                write_series(
                    &mut t,
                    (DEV, CODE),
                    SensorKind::Int,
                    &incoming,
                    seal,
                    &mut buf,
                    |_| n += 1,
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        n
    }

    /// Every reading back, checking the invariants on the way.
    fn read_checked(db: &redb::Database) -> (Vec<Micros>, usize) {
        let txn = db.begin_read().unwrap();
        let t = open_read(&txn).unwrap();
        let chunks = read_sensor(&t, DEV, CODE, SensorKind::Int);
        let mut all = Vec::new();
        for ((_, _, m, _), entries) in &chunks {
            assert!(!entries.is_empty());
            for (time, val) in entries {
                assert_eq!(*val, Value::Int(*time));
                assert!(*time >= base(*m) && *time < base(*m) + SPAN_US, "window");
                if let Some(prev) = all.last() {
                    assert!(time > prev, "chunks disjoint and ordered");
                }
                all.push(*time);
            }
        }
        (all, chunks.len())
    }

    /// Move every other hot chunk (by `pick`) to the sealed table in the
    /// sealed form, as sealing does, so writes meet both tables.
    fn seal_some(db: &redb::Database, mut pick: impl FnMut() -> bool) {
        let txn = db.begin_write().unwrap();
        {
            let mut t = open(&txn).unwrap();
            let mut moved = Vec::new();
            for row in t.hot.iter().unwrap() {
                let (k, v) = row.unwrap();
                if !pick() {
                    continue;
                }
                let mut entries = Vec::new();
                chunk::decode(v.value(), SensorKind::Int, |o, val| entries.push((o, val))).unwrap();
                let mut buf = Vec::new();
                sealed::encode(&entries, SensorKind::Int, &mut buf);
                moved.push((k.value(), buf));
            }
            for (k, buf) in moved {
                t.remove(Place::Hot, k).unwrap();
                t.insert(Place::Sealed, k, &buf).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("p.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn a_ten_second_sensor_fills_one_chunk_an_hour() {
        let (_dir, db) = db();
        let t0 = 1_700_000_000 * 1_000_000 / MINUTE_US * MINUTE_US;
        // Six hours, one reading every 10 s, sent 100 at a time.
        let times: Vec<Micros> = (0..6 * 360).map(|i| t0 + i * 10_000_000).collect();
        assert_eq!(write(&db, &times, 100), times.len());
        let (back, chunks) = read_checked(&db);
        assert_eq!(back, times);
        assert_eq!(chunks, 6);
        // Retried in other batch sizes: nothing stored twice.
        assert_eq!(write(&db, &times, 7), 0);
        assert_eq!(write(&db, &times, 1), 0);
        assert_eq!(read_checked(&db).0, times);
    }

    /// (key, in the sealed table?) of every chunk, checking that a key is
    /// in one table only and that the form matches the table.
    fn places(db: &redb::Database) -> Vec<(PartKey, bool)> {
        let txn = db.begin_read().unwrap();
        let t = open_read(&txn).unwrap();
        let all: Vec<(PartKey, bool)> = t
            .range(keys((DEV, CODE, 0, 0), (DEV, CODE, u32::MAX, u16::MAX)))
            .unwrap()
            .map(|r| {
                let (k, v, place) = r.unwrap();
                assert_eq!(sealed::is_sealed(v.value()), place == Place::Sealed);
                (k, place == Place::Sealed)
            })
            .collect();
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "one table each");
        all
    }

    #[test]
    fn a_write_seals_the_chunks_it_finishes() {
        let (_dir, db) = db();
        let t0 = 1_700_000_000 * 1_000_000 / MINUTE_US * MINUTE_US;
        // An upload of six past hours, 10 s apart, in writes of 130 (1,300
        // s each; none ends where an hour does): every write that goes on
        // past an hour finishes it. (A write that ends exactly at the end
        // of an hour leaves it to the sealing step: only the next write
        // tells it is finished, and that one does not touch it.)
        let times: Vec<Micros> = (0..6 * 360).map(|i| t0 + i * 10_000_000).collect();
        assert_eq!(write(&db, &times, 130), times.len());
        let got = places(&db);
        assert_eq!(got.len(), 6);
        assert!(
            got[..5].iter().all(|(_, s)| *s),
            "finished hours sealed: {got:?}"
        );
        assert!(!got[5].1, "the open hour stays hot");
        // One write of a whole day: all but its last hour sealed at once.
        let day: Vec<Micros> = (0..24 * 360)
            .map(|i| t0 + 86_400_000_000 + i * 10_000_000)
            .collect();
        assert_eq!(write(&db, &day, day.len()), day.len());
        let got = places(&db);
        assert_eq!(got.len(), 30);
        assert_eq!(got.iter().filter(|(_, s)| !*s).count(), 2, "{got:?}");
        // One reading a second: every full part is sealed as it fills;
        // only the open group's last part is hot.
        let fast: Vec<Micros> = (0..1_500)
            .map(|i| t0 + 2 * 86_400_000_000 + i * 1_000_000)
            .collect();
        assert_eq!(write(&db, &fast, 100), fast.len());
        let got = places(&db);
        let last = got.last().unwrap().0;
        assert_eq!(last.3, 2, "three parts: {got:?}");
        let hot: Vec<PartKey> = got.iter().filter(|(_, s)| !*s).map(|(k, _)| *k).collect();
        assert_eq!(hot.len(), 3, "{hot:?}");
        assert_eq!(hot[2], last);
        // Retries of everything, in other batch sizes and orders, meet
        // their first copies in either table: nothing stored twice.
        let mut all: Vec<Micros> = [times, day, fast].concat();
        assert_eq!(write(&db, &all, 333), 0);
        all.reverse();
        assert_eq!(write(&db, &all, 1), 0);
        all.reverse();
        assert_eq!(read_checked(&db).0, all);
        // A late reading into a sealed hour: stored once, still sealed.
        let late = [t0 + 5_000_000, t0 + 86_400_000_000 + 1_000_000];
        assert_eq!(write(&db, &late, 2), 2);
        assert_eq!(write(&db, &late, 1), 0);
        let got = places(&db);
        assert!(got[0].1 && got[6].1, "{got:?}");
        let mut want = all;
        want.extend(late);
        want.sort_unstable();
        assert_eq!(read_checked(&db).0, want);
    }

    #[test]
    fn with_sealing_off_a_write_seals_nothing() {
        let (_dir, db) = db();
        let t0 = 1_700_000_000 * 1_000_000 / MINUTE_US * MINUTE_US;
        let times: Vec<Micros> = (0..3_000).map(|i| t0 + i * 5_000_000).collect();
        assert_eq!(write_as(&db, &times, 130, false), times.len());
        let got = places(&db);
        assert!(got.len() > 5 && got.iter().all(|(_, s)| !*s), "{got:?}");
        assert_eq!(read_checked(&db).0, times);
    }

    #[test]
    fn a_busy_minute_splits_into_bounded_ordered_parts() {
        let (_dir, db) = db();
        let t0 = 1_700_000_000 * 1_000_000 / MINUTE_US * MINUTE_US;
        // 2,000 receive-time readings 10 µs apart, one per request.
        let times: Vec<Micros> = (0..2000).map(|i| t0 + 1_000 + i * 10).collect();
        assert_eq!(write(&db, &times, 1), 2000);
        let (back, chunks) = read_checked(&db);
        assert_eq!(back, times);
        assert_eq!(chunks, 2000_usize.div_ceil(PART_ENTRIES));
        let mut again = times.clone();
        again.reverse();
        assert_eq!(write(&db, &again, 1), 0);
        // Late readings land in their home; order stays global.
        let late = [t0, t0 + 1_005, t0 + 6_005, t0 + 19_995, t0 + 25_000];
        assert_eq!(write(&db, &late, 1), late.len());
        let (back, _) = read_checked(&db);
        let mut want = times.clone();
        want.extend(late);
        want.sort_unstable();
        assert_eq!(back, want);
        assert_eq!(write(&db, &late, 1), 0);
    }

    /// A small deterministic generator (no crate needed for a test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn any_order_and_batching_stores_each_time_once() {
        // Times scattered over a day with clusters (busy minutes), sent in
        // shuffled batches of random sizes, twice over: every time is
        // stored exactly once and the invariants hold after every round.
        for seed in 1..=12u64 {
            let (_dir, db) = db();
            let mut rng = Lcg(seed);
            let t0 = 1_700_000_000 * 1_000_000 / MINUTE_US * MINUTE_US;
            let mut times: Vec<Micros> = Vec::new();
            for _ in 0..1500 {
                let t = match rng.next(3) {
                    0 => t0 + rng.next(86_400) as i64 * 1_000_000,
                    1 => t0 + 7_200_000_000 + rng.next(3_000) as i64,
                    _ => t0 + rng.next(86_400_000_000) as i64,
                };
                times.push(t);
            }
            let mut want = times.clone();
            want.sort_unstable();
            want.dedup();
            for round in 0..2 {
                let mut order = times.clone();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.next(i as u64 + 1) as usize);
                }
                let mut stored = 0;
                let mut rest = &order[..];
                while !rest.is_empty() {
                    let n = (1 + rng.next(300) as usize).min(rest.len());
                    stored += write(&db, &rest[..n], n);
                    rest = &rest[n..];
                    if rng.next(8) == 0 {
                        seal_some(&db, || rng.next(3) == 0);
                    }
                }
                let expect = if round == 0 { want.len() } else { 0 };
                assert_eq!(stored, expect, "seed {seed} round {round}");
                assert_eq!(read_checked(&db).0, want, "seed {seed} round {round}");
                // Some chunks move to the sealed table: the retries of the
                // next round meet them there.
                seal_some(&db, || rng.next(2) == 0);
                assert_eq!(read_checked(&db).0, want, "seed {seed} sealed");
            }
        }
    }
}
