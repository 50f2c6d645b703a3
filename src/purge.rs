//! Deleting a device's readings in a time range (`DELETE
//! /v1/devices/ID/readings?from=T&to=T[&sensors=..][&aggregates=..]`,
//! `overlord device delete-readings`).
//!
//! The range is `from` inclusive, `to` exclusive, like a query's. The
//! work goes **through the writer**, the only writer of `readings`: the
//! handler queues a [`Purge`] (a bounded queue; full: `503`) and waits
//! for its reply. The writer runs one purge at a time, a bounded
//! [`step`] per transaction (at most [`CHUNKS_PER_STEP`] chunks looked at
//! or aggregate rows removed), interleaved with ingest commits like
//! retention's; the transaction that finishes it is fsynced, and only
//! then is the request answered (`200 ok,<removed>`). So a query after
//! the reply never shows a removed reading, and a reading sent again
//! after it is new and stored again.
//!
//! A chunk wholly inside the range is removed without a decode; one that
//! straddles an end is decoded, its readings in the range dropped and
//! the rest encoded again **in the chunk's own form** (a sealed chunk
//! stays sealed, as retention's trims do; an emptied one is removed).
//! The chunk keeps its key, so the homes of the readings it keeps do not
//! move (`store::parts` invariants).
//!
//! Per-minute aggregates (`store::aggregates`, what retention kept of
//! removed minutes): with `aggregates=remove` (the default) the rows of
//! the minutes wholly inside the range go too; with `aggregates=keep`
//! they stay. A minute only partly inside keeps its row either way (a
//! row cannot be split). The `/sensors` latest values are read from the
//! chunks, so they never show a removed reading. Readings that arrive
//! while a long deletion runs may or may not be removed.

use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::codec::{Micros, SensorId};
use crate::error::WireError;
use crate::store::chunk::{self, MINUTE_US, SPAN_US};
use crate::store::chunks::{self, Place};
use crate::store::parts::{base, minute, scan_start, PartKey};
use crate::store::{StoreError, AGGREGATES, SENSORS};

/// Chunks (or aggregate rows) one step looks at, at most.
pub const CHUNKS_PER_STEP: usize = 512;

/// Purges waiting for the writer, at most (more: `503`).
pub const QUEUE: usize = 16;

/// What to delete.
#[derive(Debug, Clone)]
pub struct Range {
    /// Device number.
    pub device: u32,
    /// Only these sensors (codes); `None`: every sensor of the device.
    pub sensors: Option<Vec<u32>>,
    /// First instant removed.
    pub from: Micros,
    /// First instant kept after the range.
    pub to: Micros,
    /// Remove the aggregates of the minutes wholly inside the range.
    pub aggregates: bool,
}

/// What the writer answers: the readings removed.
pub type PurgeReply = oneshot::Receiver<Result<u64, Arc<StoreError>>>;

/// A queued purge, as the writer takes it.
pub struct Purge {
    /// What to delete.
    pub range: Range,
    /// Where the count goes once the deletion is committed and fsynced.
    pub reply: oneshot::Sender<Result<u64, Arc<StoreError>>>,
}

/// The writer's progress through one [`Purge`].
pub struct Progress {
    /// The purge.
    pub purge: Purge,
    /// Where it is.
    pub at: Cursor,
}

/// Where a purge is: what a failed transaction must roll back.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// Sensors still to do (codes), the current one first; `None`
    /// until the first step lists them.
    todo: Option<Vec<u32>>,
    /// The current sensor's aggregates are done.
    aggregates_done: bool,
    /// The last chunk of the current sensor looked at.
    after: Option<PartKey>,
    /// Readings removed so far (committed or in this transaction).
    pub removed: u64,
    /// Every reading in the range is gone (after this transaction).
    pub done: bool,
}

impl Progress {
    /// A purge not started yet.
    pub fn new(purge: Purge) -> Progress {
        Progress {
            purge,
            at: Cursor::default(),
        }
    }
}

/// Parse the request's options: `from`, `to` (required; instants as in a
/// query), `sensors` (names, comma-separated), `aggregates` (`keep` or
/// `remove`). `get` looks one up.
pub fn parse<'a>(device: u32, get: impl Fn(&str) -> Option<&'a str>) -> Result<Range, WireError> {
    let time = |name: &str| -> Result<Micros, WireError> {
        let v = get(name).ok_or_else(|| {
            WireError::bad_request("missing_field", format!("{name}: required (a time)"))
        })?;
        crate::codec::timefmt::parse_instant(v).map_err(|why| {
            WireError::bad_request(
                "bad_time",
                format!(
                    "{name}: '{}' is not a time ({why})",
                    crate::codec::names::clip(v)
                ),
            )
        })
    };
    let (from, to) = (time("from")?, time("to")?);
    if from >= to {
        return Err(WireError::bad_request(
            "empty_range",
            "from must be before to (from is included, to is not)",
        ));
    }
    let sensors = match get("sensors") {
        None => None,
        Some(list) => {
            let mut codes = Vec::new();
            for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                codes.push(SensorId::parse(s)?.code());
            }
            if codes.is_empty() {
                return Err(WireError::bad_request(
                    "bad_sensor",
                    "sensors: one or more sensor names, comma-separated",
                ));
            }
            codes.sort_unstable();
            codes.dedup();
            Some(codes)
        }
    };
    let aggregates = match get("aggregates") {
        None | Some("remove") => true,
        Some("keep") => false,
        Some(_) => {
            return Err(WireError::bad_request(
                "bad_parameter",
                "aggregates: keep or remove (the default)",
            ))
        }
    };
    Ok(Range {
        device,
        sensors,
        from: from.max(0),
        to,
        aggregates,
    })
}

/// One bounded step of `p` in `txn`: aggregates then chunks, sensor by
/// sensor, at most [`CHUNKS_PER_STEP`] rows. Sets `p.done` when the whole
/// range is done.
pub fn step<'t>(txn: impl Into<crate::store::Tx<'t>>, p: &mut Progress) -> Result<(), StoreError> {
    let txn = txn.into();
    let r = p.purge.range.clone();
    let p = &mut p.at;
    if p.todo.is_none() {
        let known: Vec<u32> = txn
            .open_table(SENSORS)?
            .range((r.device, 0)..=(r.device, u32::MAX))?
            .map(|row| row.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut todo: Vec<u32> = match &r.sensors {
            Some(only) => known.into_iter().filter(|c| only.contains(c)).collect(),
            None => known,
        };
        todo.reverse(); // popped from the back, in key order
        p.todo = Some(todo);
    }
    let mut left = CHUNKS_PER_STEP;
    while let Some(&code) = p.todo.as_ref().and_then(|t| t.last()) {
        if r.aggregates && !p.aggregates_done {
            p.aggregates_done = remove_aggregates(txn, &r, code, &mut left)?;
            if !p.aggregates_done {
                return Ok(());
            }
        }
        if !trim_chunks(txn, &r, code, p, &mut left)? {
            return Ok(());
        }
        if let Some(t) = p.todo.as_mut() {
            t.pop();
        }
        p.aggregates_done = false;
        p.after = None;
    }
    p.done = true;
    Ok(())
}

/// Remove the aggregate rows of `code` for the minutes wholly inside the
/// range, at most `*left`; whether none are left.
fn remove_aggregates<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    r: &Range,
    code: u32,
    left: &mut usize,
) -> Result<bool, StoreError> {
    let txn = txn.into();
    // Minutes starting at or after `from` and ending at or before `to`.
    let first = minute(r.from + MINUTE_US - 1);
    let end = minute(r.to); // exclusive
    if first >= end {
        return Ok(true);
    }
    let mut t = AGGREGATES.open(txn)?;
    let keys: Vec<(u32, u32, u32)> = t
        .keys((r.device, code, first)..(r.device, code, end))?
        .take(left.saturating_add(1))
        .map(|row| row.map(|k| k.value()))
        .collect::<Result<_, _>>()?;
    let all = keys.len() <= *left;
    for k in keys.into_iter().take(*left) {
        t.remove(k)?;
        *left -= 1;
    }
    Ok(all)
}

/// Remove the readings of `code` in the range from the chunks after
/// `p.after`, at most `*left` chunks; whether the sensor is done.
fn trim_chunks<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    r: &Range,
    code: u32,
    p: &mut Cursor,
    left: &mut usize,
) -> Result<bool, StoreError> {
    let txn = txn.into();
    let dev = r.device;
    let kind = SensorId::from_code(code).map(|s| s.kind);
    let lo = match p.after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Included((dev, code, scan_start(minute(r.from)), 0)),
    };
    let hi = Bound::Included((dev, code, minute(r.to - 1), u16::MAX));
    let mut readings = chunks::open(txn)?;
    let mut gone: Vec<(PartKey, Place)> = Vec::new();
    let mut trimmed: Vec<(PartKey, Place, Vec<u8>)> = Vec::new();
    let mut seen = 0usize;
    let mut more = false;
    for row in readings.range((lo, hi))? {
        if seen == *left {
            more = true;
            break;
        }
        let (key, v, place) = row?;
        let bytes = v.value();
        seen += 1;
        p.after = Some(key);
        let b = base(key.2);
        if b >= r.from && b + SPAN_US <= r.to {
            p.removed += chunk::count(bytes)?;
            gone.push((key, place));
            continue;
        }
        // Straddles an end: decode, keep what is outside the range. (A
        // sensor kind this build does not know is left alone.)
        let Some(kind) = kind else { continue };
        let mut keep = Vec::new();
        let mut dropped = 0u64;
        chunk::decode(bytes, kind, |off, val| {
            let t = b + i64::from(off);
            if t >= r.from && t < r.to {
                dropped += 1;
            } else {
                keep.push((off, val));
            }
        })?;
        if dropped == 0 {
            continue;
        }
        p.removed += dropped;
        if keep.is_empty() {
            gone.push((key, place));
        } else {
            let mut buf = Vec::new();
            chunk::encode_like(bytes, &keep, kind, &mut buf);
            trimmed.push((key, place, buf));
        }
    }
    // Each chunk stays in its table (a sealed chunk stays sealed).
    for (k, place) in &gone {
        readings.remove(*place, *k)?;
    }
    for (k, place, bytes) in &trimmed {
        readings.insert(*place, *k, bytes)?;
    }
    *left -= seen;
    Ok(!more)
}
