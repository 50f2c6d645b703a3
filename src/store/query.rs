//! The read path: readings of chosen sensors of one device over a time
//! range, as CSV rows `time,S1,S2,...` with one row per distinct time and
//! an empty field where a sensor has no value at that time.
//!
//! Each sensor is one range scan over `readings` from the key
//! `(device, sensor, minute(from), 0)` to `(device, sensor, minute(to), max)`; the
//! sensors' sorted streams are then merged by time.

use redb::ReadableDatabase;

use super::{chunk, StoreError, READINGS, SENSORS};
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

/// Run a query against the latest committed state. Blocking.
pub fn read_series(db: &redb::Database, q: &SeriesQuery) -> Result<SeriesCsv, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(READINGS)?;
    let sensors = if q.sensors.is_empty() {
        let t = txn.open_table(SENSORS)?;
        let mut all = Vec::new();
        for row in t.range((q.device, 0)..=(q.device, u32::MAX))? {
            let (k, _) = row?;
            all.extend(SensorId::from_code(k.value().1));
        }
        // Name order (B, D, I, L, N, S; then number), as a person reads it.
        all.sort_by_key(|s| (s.kind.letter(), s.number));
        all
    } else {
        q.sensors.clone()
    };

    let from = q.from.max(0);
    let to = q.to;
    // One sorted stream per sensor; each needs at most `limit + 1` entries
    // for the merged result to have `limit + 1` distinct times.
    let mut series: Vec<Vec<(Micros, Value)>> = Vec::with_capacity(sensors.len());
    if from <= to {
        let (m0, m1) = (minute(from), minute(to));
        for s in &sensors {
            let mut out = Vec::new();
            let want = q.limit.saturating_add(1);
            for row in
                table.range((q.device, s.code(), m0, 0)..=(q.device, s.code(), m1, u16::MAX))?
            {
                let (k, v) = row?;
                let base = i64::from(k.value().2) * chunk::MINUTE_US;
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

/// The minute key of a time (times are never negative in the store).
pub fn minute(t: Micros) -> u32 {
    u32::try_from(t.max(0) / chunk::MINUTE_US).unwrap_or(u32::MAX)
}
