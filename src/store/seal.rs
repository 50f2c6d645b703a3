//! Sealing: re-encoding the chunks that can no longer receive in-order
//! appends into the compact [`super::sealed`] form, a bounded batch at a
//! time, in the writer's own transactions between group commits. (A
//! write seals the chunks it finishes itself, as it writes them:
//! `parts::write_series`; this is for the rest.)
//!
//! A sensor's chunks are grouped by base minute (a busy hour has several
//! parts). A group is sealed into one part (`(minute, 0)`, the others
//! removed) when it is not the sensor's last group (in-order readings go
//! to a later chunk), or when it is the last and its window has ended and
//! the sensor has not been written for its idle time. A late reading
//! into a sealed chunk decodes, merges and seals it again
//! (`parts::merge_into`), so retries still meet their first copy.
//!
//! What to look at is kept in memory: every (device, sensor) written since
//! it was last fully sealed, with the earliest minute that may be hot. A
//! sensor is looked at at once when it is new or written past the window
//! of the group that was open at its last look (that group is finished
//! now), and again `idle` after a look that found its last group open. On
//! start every sensor is looked at from minute 0,
//! so chunks of older files, or left hot by a crash, are sealed over time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::chunk::{self, Entry, SPAN_MINUTES, SPAN_US};
use super::chunks::{self, keys, Chunks, Place};
use super::parts::{base, scan_start, PartKey};
use super::{sealed, StoreError};
use crate::codec::{Micros, SensorId, SensorKind};

/// The longest one step keeps looking for more to seal (besides its
/// budget of chunks): the next group commit waits for it.
const STEP_TIME: Duration = Duration::from_millis(10);

/// One sensor waiting to be (fully) sealed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The earliest key minute that may hold a hot chunk.
    from: u32,
    /// The last write to it.
    last_write: Instant,
    /// In the queue of sensors to look at now.
    urgent: bool,
}

/// The sensors with chunks that may be hot, and the bounds of a step.
#[derive(Debug)]
pub struct Sealer {
    state: Mutex<State>,
    idle: Duration,
    per_step: usize,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<(u32, u32), Pending>,
    /// Sensors to look at now: new ones, and those written past the
    /// window of the group that was open when they were last looked at.
    now: VecDeque<(u32, u32)>,
    /// Sensors whose last group was open, by when to look again.
    later: VecDeque<((u32, u32), Instant)>,
}

/// What one [`Sealer::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SealStats {
    /// Chunks (parts) re-encoded into sealed ones.
    pub chunks_in: u64,
    /// Sealed chunks written.
    pub sealed: u64,
    /// Bytes of the chunks re-encoded, and of what they became.
    pub bytes_in: u64,
    /// Bytes of the sealed chunks written.
    pub bytes_out: u64,
}

/// Where one sensor stands after a look.
enum Outcome {
    /// Every chunk is sealed.
    Done,
    /// The step's budget ran out at this minute.
    Budget(u32),
    /// The last group is still open (its window or idle time not over).
    Open(u32),
}

impl Sealer {
    /// A sealer that seals a sensor's last chunk after `idle` without a
    /// write, and re-encodes at most `per_step` chunks a step; `0` turns
    /// sealing off (every chunk stays hot, as before sealing existed).
    pub fn new(idle: Duration, per_step: usize) -> Sealer {
        Sealer {
            state: Mutex::new(State::default()),
            idle,
            per_step,
        }
    }

    /// Is sealing on (a write seals the chunks it finishes, too)?
    pub fn enabled(&self) -> bool {
        self.per_step > 0
    }

    /// The idle time after which a sensor's last chunk is sealed.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note writes: `(device, sensor, earliest key minute written, a
    /// chunk was started)`.
    pub fn touched(&self, written: &[(u32, u32, u32, bool)]) {
        if written.is_empty() || self.per_step == 0 {
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        let State {
            pending,
            now: queue,
            ..
        } = &mut *st;
        for &(dev, code, minute, started) in written {
            let mut fresh = false;
            let p = pending.entry((dev, code)).or_insert_with(|| {
                fresh = true;
                Pending {
                    from: minute,
                    last_write: now,
                    urgent: false,
                }
            });
            p.last_write = now;
            // A new sensor, or a write past the open group's window (a new
            // group began: the open one is finished) or before it, or a
            // new chunk (a part of the open group filled up): due at once,
            // so sealing keeps pace with an upload.
            let new_group = minute >= p.from.saturating_add(SPAN_MINUTES) || minute < p.from;
            p.from = p.from.min(minute);
            if !p.urgent && (fresh || new_group || started) {
                p.urgent = true;
                queue.push_back((dev, code));
            }
        }
    }

    /// Every sensor of the data file is looked at from its first chunk:
    /// what a start does (older files, chunks a crash left hot).
    pub fn load<'t>(&self, txn: impl Into<crate::store::Tx<'t>>) -> Result<(), StoreError> {
        let txn = txn.into();
        if self.per_step == 0 {
            return Ok(());
        }
        let sensors = txn.open_table(super::SENSORS)?;
        let long_ago = Instant::now()
            .checked_sub(self.idle)
            .unwrap_or_else(Instant::now);
        let mut st = self.lock();
        for row in sensors.iter()? {
            let (k, _) = row?;
            let key = k.value();
            if st.pending.contains_key(&key) {
                continue;
            }
            st.pending.insert(
                key,
                Pending {
                    from: 0,
                    last_write: long_ago,
                    urgent: true,
                },
            );
            st.now.push_back(key);
        }
        Ok(())
    }

    /// Sensors waiting to be fully sealed (`/metrics`).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Is a sensor due to be looked at now?
    pub fn due(&self) -> bool {
        let now = Instant::now();
        let st = self.lock();
        !st.now.is_empty() || st.later.front().is_some_and(|(_, at)| *at <= now)
    }

    /// One bounded step in `txn`: look at the due sensors in turn and
    /// seal what may be sealed, up to the step's budget of chunks.
    pub fn step<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        now: Micros,
    ) -> Result<SealStats, StoreError> {
        let txn = txn.into();
        let mut table = chunks::open(txn)?;
        let mut stats = SealStats::default();
        let mut budget = self.per_step;
        let clock = Instant::now();
        let mut st = self.lock();
        while budget > 0 && clock.elapsed() < STEP_TIME {
            let key = if let Some(key) = st.now.pop_front() {
                if let Some(p) = st.pending.get_mut(&key) {
                    p.urgent = false;
                }
                key
            } else {
                match st.later.front() {
                    Some(&(key, at)) if at <= clock => {
                        st.later.pop_front();
                        key
                    }
                    _ => break,
                }
            };
            let Some(p) = st.pending.get(&key).copied() else {
                continue; // sealed since it was queued
            };
            let idle = clock.saturating_duration_since(p.last_write) >= self.idle;
            let outcome = seal_sensor(&mut table, key, p.from, now, idle, &mut budget, &mut stats)?;
            match outcome {
                Outcome::Done => {
                    st.pending.remove(&key);
                }
                Outcome::Budget(from) => {
                    let urgent = true;
                    st.pending.insert(key, Pending { from, urgent, ..p });
                    st.now.push_front(key);
                }
                Outcome::Open(from) => {
                    st.pending.insert(key, Pending { from, ..p });
                    st.later.push_back((key, clock + self.idle));
                }
            }
        }
        Ok(stats)
    }
}

/// One chunk of a group: its part, table, and whether it is sealed.
type PartAt = (u16, Place, bool);

/// Look at the chunks of one sensor from `from` (a key minute) on and
/// seal every group that may be sealed, charging `budget`.
fn seal_sensor(
    table: &mut Chunks<'_>,
    (dev, code): (u32, u32),
    from: u32,
    now: Micros,
    idle: bool,
    budget: &mut usize,
    stats: &mut SealStats,
) -> Result<Outcome, StoreError> {
    let Some(kind) = SensorId::from_code(code).map(|s| s.kind) else {
        return Ok(Outcome::Done); // not a sensor this build knows
    };
    let all = keys((dev, code, 0, 0), (dev, code, u32::MAX, u16::MAX));
    let last = match table.range_rev(all)?.next() {
        Some(row) => row?.0 .2,
        None => return Ok(Outcome::Done),
    };
    // The groups from `from`'s window on: minute and parts. At most a
    // budget's worth of groups; the rest is for the next step.
    let mut groups: Vec<(u32, Vec<PartAt>)> = Vec::new();
    let mut rest: Option<u32> = None;
    let scan = keys(
        (dev, code, scan_start(from), 0),
        (dev, code, u32::MAX, u16::MAX),
    );
    for row in table.range(scan)? {
        let (k, v, place) = row?;
        let (_, _, m, p) = k;
        let part = (p, place, sealed::is_sealed(v.value()));
        match groups.last_mut() {
            Some(g) if g.0 == m => g.1.push(part),
            _ => {
                if groups.len() >= *budget {
                    rest = Some(m);
                    break;
                }
                groups.push((m, vec![part]));
            }
        }
    }
    for (m, parts) in groups {
        if matches!(parts[..], [(_, Place::Sealed, true)]) {
            // Looked at (read), nothing to do: it costs a little too.
            *budget = budget.saturating_sub(1);
            continue;
        }
        if m == last && !(idle && base(m) + SPAN_US <= now) {
            // The open group: its parts before the last one are full and
            // receive only late readings; they go to the sealed table now
            // (a sensor reporting every second: 7 parts an hour).
            let (_, early) = parts.split_last().expect("a group has a part");
            for &(p, place, _) in early.iter().filter(|(_, at, _)| *at == Place::Hot) {
                if *budget == 0 {
                    return Ok(Outcome::Budget(m));
                }
                seal_part(table, (dev, code, m, p), place, kind, stats)?;
                *budget -= 1;
            }
            return Ok(Outcome::Open(m));
        }
        if *budget == 0 {
            return Ok(Outcome::Budget(m));
        }
        seal_group(table, (dev, code, m), kind, stats)?;
        *budget = budget.saturating_sub(parts.len());
    }
    Ok(rest.map_or(Outcome::Done, Outcome::Budget))
}

/// Seal the one chunk `key` (a full part of the open group) into the
/// sealed table under the same key.
fn seal_part(
    table: &mut Chunks<'_>,
    key: PartKey,
    place: Place,
    kind: SensorKind,
    stats: &mut SealStats,
) -> Result<(), StoreError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut buf = Vec::new();
    if let Some(v) = table.at(place).get(key)? {
        stats.bytes_in += v.value().len() as u64;
        chunk::decode(v.value(), kind, |o, val| entries.push((o, val)))?;
        sealed::encode(&entries, kind, &mut buf);
    }
    table.remove(place, key)?;
    if !entries.is_empty() {
        table.insert(Place::Sealed, key, &buf)?;
        stats.chunks_in += 1;
        stats.sealed += 1;
        stats.bytes_out += buf.len() as u64;
    }
    Ok(())
}

/// Seal every part of the group `(dev, code, m)`, in either table, into
/// part 0 of the sealed table.
fn seal_group(
    table: &mut Chunks<'_>,
    (dev, code, m): (u32, u32, u32),
    kind: SensorKind,
    stats: &mut SealStats,
) -> Result<(), StoreError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut parts: Vec<(PartKey, Place)> = Vec::new();
    for row in table.range(keys((dev, code, m, 0), (dev, code, m, u16::MAX)))? {
        let (k, v, place) = row?;
        stats.bytes_in += v.value().len() as u64;
        chunk::decode(v.value(), kind, |o, val| entries.push((o, val)))?;
        parts.push((k, place));
    }
    // The parts of a group are disjoint and ordered (`parts` invariant 1);
    // a stable sort keeps the first of any repeat, should one be there.
    if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
        entries.sort_by_key(|(o, _)| *o);
        entries.dedup_by_key(|(o, _)| *o);
    }
    if entries.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    sealed::encode(&entries, kind, &mut buf);
    // Every part is removed before the sealed chunk goes in, so a key is
    // in one table only; a removal also lets redb merge a leaf with a
    // neighbour once it falls below a third full.
    for (k, place) in &parts {
        table.remove(*place, *k)?;
    }
    table.insert(Place::Sealed, (dev, code, m, 0), &buf)?;
    stats.chunks_in += parts.len() as u64;
    stats.sealed += 1;
    stats.bytes_out += buf.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{SensorKind, Value};
    use crate::store::parts::{minute, write_series};
    use redb::ReadableDatabase;

    /// Every chunk of sensor (1, code) as (key, sealed?), checking that
    /// every sealed one is in the sealed table and every hot one not.
    fn chunks(db: &redb::Database, code: u32) -> Vec<(PartKey, bool)> {
        let txn = db.begin_read().unwrap();
        let t = chunks::open_read(&txn).unwrap();
        t.range(keys((1, code, 0, 0), (1, code, u32::MAX, u16::MAX)))
            .unwrap()
            .map(|r| {
                let (k, v, place) = r.unwrap();
                let is = sealed::is_sealed(v.value());
                assert_eq!(is, place == Place::Sealed, "{k:?}");
                (k, is)
            })
            .collect()
    }

    /// (One long scenario on purpose: each step's assertions depend on the
    /// state the previous steps left, read top to bottom.)
    #[test]
    fn small_steps_seal_everything_but_the_open_group_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("s.redb")).unwrap();
        let code = SensorId::parse("I1").unwrap().code();
        let t0: Micros = 1_700_000_000 * 1_000_000 / 60_000_000 * 60_000_000;
        // Ten hours, one reading every 5 s (720 an hour: two parts each).
        let times: Vec<Micros> = (0..7200).map(|i| t0 + i * 5_000_000).collect();
        let vals: Vec<Value> = times.iter().map(|t| Value::Int(*t / 7)).collect();
        let txn = db.begin_write().unwrap();
        {
            let mut t = chunks::open(&txn).unwrap();
            let incoming: Vec<(Micros, &Value)> = times.iter().copied().zip(&vals).collect();
            for run in incoming.chunks(100) {
                write_series(
                    &mut t,
                    (1, code),
                    SensorKind::Int,
                    run,
                    false, // written hot: this test is of the step
                    &mut Vec::new(),
                    |_| {},
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        assert!(chunks(&db, code).len() >= 20, "two parts an hour");
        // Not idle: everything but the last group is sealed, 3 chunks a
        // step; the last group stays open.
        let sealer = Sealer::new(Duration::from_secs(3600), 3);
        sealer.touched(&[(1, code, minute(t0), true)]);
        let now = times[times.len() - 1] + SPAN_US * 2;
        for _ in 0..100 {
            if !sealer.due() {
                break;
            }
            let txn = db.begin_write().unwrap();
            sealer.step(&txn, now).unwrap();
            txn.commit().unwrap();
        }
        let got = chunks(&db, code);
        let (last, last_part) = (got.last().unwrap().0 .2, got.last().unwrap().0 .3);
        assert!(last_part > 0, "the open group has two parts: {got:?}");
        // The open group's full first part is sealed already (in place),
        // its last part is hot; every finished group is one sealed chunk.
        assert!(
            got.iter().all(|((_, _, m, p), s)| if *m == last {
                *s == (*p < last_part)
            } else {
                *s && *p == 0
            }),
            "{got:?}"
        );
        assert_eq!(sealer.pending(), 1);
        // Idle (the sealer's idle time is zero): the last one too.
        let sealer = Sealer::new(Duration::ZERO, 3);
        sealer.touched(&[(1, code, 0, true)]);
        for _ in 0..100 {
            if !sealer.due() {
                break;
            }
            let txn = db.begin_write().unwrap();
            sealer.step(&txn, now).unwrap();
            txn.commit().unwrap();
        }
        let got = chunks(&db, code);
        assert_eq!(got.len(), 10, "one sealed chunk an hour: {got:?}");
        assert!(got.iter().all(|(_, s)| *s));
        assert_eq!(sealer.pending(), 0);
        // Every reading is there, once, in order, with its value.
        let txn = db.begin_read().unwrap();
        let t = chunks::open_read(&txn).unwrap();
        let mut back = Vec::new();
        for r in t
            .range(keys((1, code, 0, 0), (1, code, u32::MAX, u16::MAX)))
            .unwrap()
        {
            let (k, v, _) = r.unwrap();
            let b = base(k.2);
            chunk::decode(v.value(), SensorKind::Int, |o, val| {
                back.push((b + i64::from(o), val))
            })
            .unwrap();
        }
        let want: Vec<(Micros, Value)> = times.iter().copied().zip(vals).collect();
        assert_eq!(back, want);
    }
}
