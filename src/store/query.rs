//! The read path: readings of chosen sensors of one device over a time
//! range, as CSV rows `time,S1,S2,...` with one row per distinct time and
//! an empty field where a sensor has no value at that time.
//!
//! Each sensor is one range scan over `readings` and `sealed` (merged in
//! key order, [`super::chunks`]) from the key
//! `(device, sensor, minute(from) - 59, 0)` (a chunk spans up to an hour
//! from its base minute, see [`super::parts`]) to
//! `(device, sensor, minute(to), max)`; the sensors' sorted streams are
//! then merged by time.

use super::chunks::{self, keys};
use super::parts::{minute, scan_start};
use super::{chunk, StoreError, SENSORS};
use crate::codec::{timefmt, Micros, SensorId, Value};

/// What to read.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Device number.
    pub device: u32,
    /// Columns, in order. Empty means every sensor the device has.
    pub sensors: Vec<SensorId>,
    /// Inclusive start, UTC µs (≥ 0).
    pub from: Micros,
    /// Inclusive end, UTC µs.
    pub to: Micros,
    /// At most this many rows (distinct times).
    pub limit: usize,
}

/// The CSV text and how many data rows it has.
#[derive(Debug)]
pub struct SeriesCsv {
    /// Header row and data rows, `\n`-terminated.
    pub text: String,
    /// Data rows.
    pub rows: usize,
    /// When `limit` cut the result: the `from` that continues it (the last
    /// row's time plus one microsecond).
    pub next_from: Option<Micros>,
}

/// Every sensor `device` has readings of, in name order (B, D, I, L, N, S;
/// then number), as a person reads it.
pub fn device_sensors<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
) -> Result<Vec<SensorId>, StoreError> {
    let txn = txn.into();
    let t = txn.open_table(SENSORS)?;
    let mut all = Vec::new();
    for row in t.range((device, 0)..=(device, u32::MAX))? {
        let (k, _) = row?;
        all.extend(SensorId::from_code(k.value().1));
    }
    all.sort_by_key(|s| (s.kind.letter(), s.number));
    Ok(all)
}

/// Run a query against the latest committed state. Blocking.
pub fn read_series(store: &crate::store::Store, q: &SeriesQuery) -> Result<SeriesCsv, StoreError> {
    store.read(|txn| {
        let table = chunks::open_read(txn)?;
        let sensors = if q.sensors.is_empty() {
            device_sensors(txn, q.device)?
        } else {
            q.sensors.clone()
        };

        let from = q.from.max(0);
        let to = q.to;
        // One sorted stream per sensor; each needs at most `limit + 1` entries
        // for the merged result to have `limit + 1` distinct times.
        let mut series: Vec<Vec<(Micros, Value)>> = Vec::with_capacity(sensors.len());
        if from <= to {
            let (m0, m1) = (scan_start(minute(from)), minute(to));
            for s in &sensors {
                let mut out = Vec::new();
                let want = q.limit.saturating_add(1);
                let dev = q.device;
                for row in
                    table.range(keys((dev, s.code(), m0, 0), (dev, s.code(), m1, u16::MAX)))?
                {
                    let (k, v, _) = row?;
                    let base = i64::from(k.2) * chunk::MINUTE_US;
                    chunk::decode(v.value(), s.kind, |off, value| {
                        let t = base + i64::from(off);
                        if t >= from && t <= to && out.len() < want {
                            out.push((t, value));
                        }
                    })?;
                    if out.len() >= want {
                        break;
                    }
                }
                series.push(out);
            }
        }

        let mut text = String::with_capacity(64 + series.iter().map(Vec::len).sum::<usize>() * 32);
        text.push_str("time");
        for s in &sensors {
            text.push(',');
            text.push_str(&s.to_string());
        }
        text.push('\n');
        let (rows, next_from) = merge_rows(&series, q.limit, &mut text, |v, out| {
            if let Some(v) = v {
                v.write_csv(out);
            }
        });
        Ok(SeriesCsv {
            text,
            rows,
            next_from,
        })
    })
}

/// Merge per-sensor streams (each sorted by time) into CSV rows, one per
/// distinct time, at most `limit`: `time` then, for each stream, a comma
/// and `cell(value at that time or None)`. Returns the rows written and,
/// when `limit` cut the result, the `from` that continues it (the last
/// row's time plus one microsecond).
pub fn merge_rows<T>(
    series: &[Vec<(Micros, T)>],
    limit: usize,
    text: &mut String,
    mut cell: impl FnMut(Option<&T>, &mut String),
) -> (usize, Option<Micros>) {
    let mut heads = vec![0usize; series.len()];
    let (mut rows, mut last, mut next_from) = (0, None, None);
    loop {
        let next = series
            .iter()
            .zip(&heads)
            .filter_map(|(s, &h)| s.get(h).map(|(t, _)| *t))
            .min();
        let Some(t) = next else { break };
        if rows == limit {
            next_from = last.map(|t: Micros| t + 1);
            break;
        }
        last = Some(t);
        timefmt::write_time(t, text);
        for (s, h) in series.iter().zip(heads.iter_mut()) {
            text.push(',');
            match s.get(*h) {
                Some((ts, v)) if *ts == t => {
                    cell(Some(v), text);
                    *h += 1;
                }
                _ => cell(None, text),
            }
        }
        text.push('\n');
        rows += 1;
    }
    (rows, next_from)
}

/// Most buckets a downsampled query may ask for (a wide screen's pixels).
pub const MAX_BUCKETS: usize = 4096;

/// A downsampled query: `[from, to]` cut into `buckets` equal slices, and
/// per slice and sensor the smallest and largest value (what a chart
/// needs to draw every peak at one slice per pixel).
#[derive(Debug, Clone)]
pub struct BucketQuery {
    /// Device number.
    pub device: u32,
    /// Numeric sensors (`I`, `N`, `L`), in column order.
    pub sensors: Vec<SensorId>,
    /// Inclusive start, UTC µs (≥ 0).
    pub from: Micros,
    /// Inclusive end, UTC µs.
    pub to: Micros,
    /// Number of slices, 1..=[`MAX_BUCKETS`].
    pub buckets: usize,
}

/// A value as a number for min/max, if its sensor type has one.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Num(n) => Some(*n),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Run a downsampled query: CSV `time,N1_min,N1_max,...` with one row per
/// slice that has any value, `time` being the slice's start. Blocking;
/// reads every reading in the range once and keeps only `buckets × sensors`
/// pairs in memory.
pub fn read_buckets(store: &crate::store::Store, q: &BucketQuery) -> Result<String, StoreError> {
    store.read(|txn| {
        let table = chunks::open_read(txn)?;
        let from = q.from.max(0);
        let to = q.to;
        let n = q.buckets.clamp(1, MAX_BUCKETS);
        let span = i128::from(to) - i128::from(from) + 1;
        let mut acc: Vec<Vec<Option<(f64, f64)>>> = vec![vec![None; n]; q.sensors.len()];
        if span > 0 {
            let (m0, m1) = (scan_start(minute(from)), minute(to));
            for (s, slots) in q.sensors.iter().zip(acc.iter_mut()) {
                let dev = q.device;
                for row in
                    table.range(keys((dev, s.code(), m0, 0), (dev, s.code(), m1, u16::MAX)))?
                {
                    let (k, v, _) = row?;
                    let base = i64::from(k.2) * chunk::MINUTE_US;
                    chunk::decode(v.value(), s.kind, |off, value| {
                        let t = base + i64::from(off);
                        if t < from || t > to {
                            return;
                        }
                        let Some(x) = as_number(&value) else { return };
                        let i = ((i128::from(t - from) * n as i128) / span) as usize;
                        let slot = &mut slots[i.min(n - 1)];
                        *slot = Some(match *slot {
                            None => (x, x),
                            Some((lo, hi)) => (lo.min(x), hi.max(x)),
                        });
                    })?;
                }
            }
        }
        let mut text = String::from("time");
        for s in &q.sensors {
            text.push_str(&format!(",{s}_min,{s}_max"));
        }
        text.push('\n');
        for i in 0..n {
            if acc.iter().all(|slots| slots[i].is_none()) {
                continue;
            }
            let start = i128::from(from) + span * i as i128 / n as i128;
            timefmt::write_time(start as Micros, &mut text);
            for slots in &acc {
                match slots[i] {
                    Some((lo, hi)) => text.push_str(&format!(",{lo},{hi}")),
                    None => text.push_str(",,"),
                }
            }
            text.push('\n');
        }
        Ok(text)
    })
}

/// The latest reading of every sensor of a device: `(sensor, time,
/// value)`, in name order. Blocking; one reverse seek per sensor.
pub fn latest(
    store: &crate::store::Store,
    device: u32,
) -> Result<Vec<(SensorId, Micros, Value)>, StoreError> {
    store.read(|txn| {
        let table = chunks::open_read(txn)?;
        let sensors = device_sensors(txn, device)?;
        let mut out = Vec::with_capacity(sensors.len());
        for s in sensors {
            let mut best: Option<(Micros, Value)> = None;
            let mut last_minute = None;
            let all = keys(
                (device, s.code(), 0, 0),
                (device, s.code(), u32::MAX, u16::MAX),
            );
            for row in table.range_rev(all)? {
                let (k, v, _) = row?;
                let m = k.2;
                // Every part of the newest base minute; chunks are ordered in
                // time, so older ones cannot win.
                if last_minute.is_some_and(|l| l != m) {
                    break;
                }
                last_minute = Some(m);
                let base = i64::from(m) * chunk::MINUTE_US;
                chunk::decode(v.value(), s.kind, |off, value| {
                    let t = base + i64::from(off);
                    if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                        best = Some((t, value));
                    }
                })?;
            }
            if let Some((t, v)) = best {
                out.push((s, t, v));
            }
        }
        Ok(out)
    })
}
