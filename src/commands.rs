//! Commands as records: what became of a command after its inbox row.
//!
//! A command sent to a device (`POST /v1/devices/ID/inbox` with
//! `kind=command`, or to a channel's members) gets a record in the same
//! transaction as its inbox row, keyed like the row: `(inbox device,
//! seq)` — for a device behind a gateway, the gateway's inbox and seq,
//! with the device's id in the record. Its life:
//!
//! - **queued**: the row is in the inbox;
//! - **delivered**: the device was handed it for the first time
//!   (`GET /v1/inbox`, a heartbeat's reply and the MQTT inbox feed through
//!   [`read_delivering`]; the rows a readings reply carries in the
//!   writer's commit of those readings, [`deliver_in`]), with the time;
//! - **acknowledged**: the device acknowledged it (`/v1/inbox/ack`), with
//!   the time and the `result` the device reported, if any;
//! - **expired**: it had an `expires` time and was still undelivered then;
//!   its inbox row is removed by the writer ([`expire_step`], a bounded
//!   batch per commit). A command the device has read stays until it is
//!   acknowledged: the device may be applying it.
//!
//! Bounded: an inbox keeps at most `[limits] commands_kept` finished
//! (acknowledged or expired) records; the oldest finished ones are removed
//! as new commands come. Unfinished ones are bounded by `max_inbox`.
//!
//! Who writes: management requests (send, ack, the device's inbox read,
//! a heartbeat, the MQTT inbox feed) on blocking threads, and the writer
//! (deliveries in readings replies, expiry), each in its own transaction; redb serialises them.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::codec::names::write_csv_text;
use crate::codec::{timefmt, Micros};
use crate::inbox::{self, Kind, Row};
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{Records, StoreError, COMMANDS, COMMAND_EXPIRY, COMMAND_META};

/// Commands the writer expires per commit at most.
pub const EXPIRE_BATCH: usize = 256;

/// Longest `result` a device may report, in bytes.
pub const MAX_RESULT_BYTES: usize = 200;

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the inbox, not read yet.
    Queued,
    /// Read by the device, not acknowledged.
    Delivered,
    /// Acknowledged by the device.
    Acknowledged,
    /// Removed unread at its expiry time.
    Expired,
}

impl State {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Delivered => "delivered",
            State::Acknowledged => "acknowledged",
            State::Expired => "expired",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> Result<State, Corrupt> {
        Ok(match c {
            0 => State::Queued,
            1 => State::Delivered,
            2 => State::Acknowledged,
            3 => State::Expired,
            _ => return Err(Corrupt),
        })
    }

    /// Acknowledged or expired: nothing more will happen to it.
    pub fn finished(self) -> bool {
        matches!(self, State::Acknowledged | State::Expired)
    }
}

/// `commands`, read and written as [`Record`]s.
pub const RECORDS: Records<Record> = Records::of(COMMANDS);
record!(Record, (u32, u64));

/// One command's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it is.
    pub state: State,
    /// The device below a gateway it is for (empty: the inbox's device).
    pub device: String,
    /// Who sent it (`user:ann`, `channel:greenhouse`).
    pub from: String,
    /// The sensor to set.
    pub sensor: String,
    /// The value to set it to.
    pub value: String,
    /// When it was queued.
    pub queued: Micros,
    /// When the device first read it (0: not yet).
    pub delivered: Micros,
    /// When it was acknowledged or expired (0: not yet).
    pub done: Micros,
    /// When it expires unless delivered (0: never).
    pub expires: Micros,
    /// What the device reported when it acknowledged it.
    pub result: String,
}

/// The CSV header of `GET /v1/devices/ID/commands`.
pub const HEADER: &str = "seq,state,queued,delivered,done,expires,from,sensor,value,result\n";

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.state.code()];
        for t in [self.queued, self.delivered, self.done, self.expires] {
            varint::put_i64(&mut out, t);
        }
        for s in [
            &self.device,
            &self.from,
            &self.sensor,
            &self.value,
            &self.result,
        ] {
            varint::put_bytes(&mut out, s.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Record, Corrupt> {
        let mut r = Reader::new(bytes);
        let state = State::from_code(r.u8()?)?;
        let (queued, delivered, done, expires) = (r.i64()?, r.i64()?, r.i64()?, r.i64()?);
        let mut s = || String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt);
        Ok(Record {
            state,
            queued,
            delivered,
            done,
            expires,
            device: s()?,
            from: s()?,
            sensor: s()?,
            value: s()?,
            result: s()?,
        })
    }

    /// Append one history line (see [`HEADER`]); empty times are blank.
    pub fn write_csv(&self, seq: u64, out: &mut String) {
        out.push_str(&seq.to_string());
        out.push(',');
        out.push_str(self.state.as_str());
        for t in [self.queued, self.delivered, self.done, self.expires] {
            out.push(',');
            if t != 0 {
                timefmt::write_time(t, out);
            }
        }
        for s in [&self.from, &self.sensor, &self.value, &self.result] {
            out.push(',');
            write_csv_text(s, out);
        }
        out.push('\n');
    }
}

/// The writer's view of expiry: the earliest time a command may expire,
/// so that a commit looks at the expiry table only when something is due.
#[derive(Debug)]
pub struct Expiry {
    next_due: AtomicI64,
}

impl Default for Expiry {
    fn default() -> Self {
        // Unknown at start: the first commit looks once.
        Expiry {
            next_due: AtomicI64::new(i64::MIN),
        }
    }
}

impl Expiry {
    /// Is an expiry step due at `now`?
    pub fn due(&self, now: Micros) -> bool {
        now >= self.next_due.load(Ordering::Acquire)
    }

    /// A command expiring at `at` was committed.
    pub fn added(&self, at: Micros) {
        self.next_due.fetch_min(at, Ordering::AcqRel);
    }

    /// Look again at the next commit (after a failed one).
    pub fn reset(&self) {
        self.next_due.store(i64::MIN, Ordering::Release);
    }
}

/// Record the command `row`, queued in `inbox_dev`'s inbox as `seq`, in
/// the transaction that queued it; keep at most `kept` finished records
/// of that inbox.
pub fn record<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    seq: u64,
    row: &Row,
    expires: Option<Micros>,
    kept: u64,
) -> Result<(), StoreError> {
    let txn = txn.into();
    debug_assert_eq!(row.kind, Kind::Command);
    let rec = Record {
        state: State::Queued,
        device: row.device.clone(),
        from: row.from.clone(),
        sensor: row.sensor.clone(),
        value: row.value.clone(),
        queued: row.time,
        delivered: 0,
        done: 0,
        expires: expires.unwrap_or(0),
        result: String::new(),
    };
    RECORDS.open(txn)?.insert((inbox_dev, seq), &rec)?;
    if let Some(at) = expires {
        txn.open_table(COMMAND_EXPIRY)?
            .insert((at, inbox_dev, seq), ())?;
    }
    let mut meta = txn.open_table(COMMAND_META)?;
    let (count, delivered) = meta.get(inbox_dev)?.map_or((0, 0), |g| g.value());
    let count = trim(txn, inbox_dev, count + 1, kept)?;
    meta.insert(inbox_dev, (count, delivered))?;
    Ok(())
}

/// Remove the oldest finished records of `inbox_dev` while more than
/// `kept` are there; returns how many remain. Reads at most every record
/// of one inbox (`kept` + `max_inbox`).
fn trim<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    count: u64,
    kept: u64,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    if count <= kept {
        return Ok(count);
    }
    let mut table = RECORDS.open(txn)?;
    let mut doomed = Vec::new();
    for r in table.range((inbox_dev, 0)..=(inbox_dev, u64::MAX))? {
        let (k, rec) = r?;
        if rec.state.finished() {
            doomed.push(k.value().1);
            if count - doomed.len() as u64 <= kept {
                break;
            }
        }
    }
    for seq in &doomed {
        table.remove((inbox_dev, *seq))?;
    }
    Ok(count - doomed.len() as u64)
}

/// Rewrite the records of `inbox_dev` with seqs in `range` through `f`
/// (which says whether it changed one).
fn update<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    range: std::ops::RangeInclusive<u64>,
    mut f: impl FnMut(u64, &mut Record) -> bool,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    let mut table = RECORDS.open(txn)?;
    let mut changed = Vec::new();
    for r in table.range((inbox_dev, *range.start())..=(inbox_dev, *range.end()))? {
        let (k, mut rec) = r?;
        let seq = k.value().1;
        if f(seq, &mut rec) {
            changed.push((seq, rec));
        }
    }
    for (seq, rec) in &changed {
        table.insert((inbox_dev, *seq), rec)?;
    }
    Ok(changed.len() as u64)
}

/// The highest seq of `inbox_dev` already recorded as delivered.
fn delivered_upto<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    let meta = txn.open_table(COMMAND_META)?;
    let upto = meta.get(inbox_dev)?.map_or(0, |g| g.value().1);
    Ok(upto)
}

/// Of the rows a device just read (oldest first, as served), the highest
/// seq of a command not yet recorded as delivered, if any (`upto`: what
/// [`delivered_upto`] says).
fn newly_read(rows: &[(u64, Row)], upto: u64) -> Option<u64> {
    rows.iter()
        .filter(|(seq, r)| r.kind == Kind::Command && *seq > upto)
        .map(|(seq, _)| *seq)
        .max()
}

/// What the device `inbox_dev` is served when it reads its own inbox
/// (`GET /v1/inbox`, a heartbeat's reply, its MQTT inbox subscription):
/// up to `limit` pending rows, oldest first, with each command among them
/// read for the first time recorded as delivered. Only then is a write
/// transaction taken, and the rows served are read in it, so a command
/// the writer expires meanwhile is either served and delivered or gone
/// and expired, never served and expired. Blocking.
pub fn read_delivering(
    store: &crate::store::Store,
    inbox_dev: u32,
    limit: usize,
) -> Result<inbox::Pending, StoreError> {
    let pending = store.read(|txn| {
        let pending = inbox::pending_in(txn, inbox_dev, limit)?;
        let fresh = newly_read(&pending.1, delivered_upto(txn, inbox_dev)?).is_some();
        Ok::<_, StoreError>((pending, fresh))
    })?;
    if !pending.1 {
        return Ok(pending.0);
    }
    store.write(|txn| deliver_in(txn, inbox_dev, limit, timefmt::now_micros()))
}

/// In `txn`: up to `limit` of `inbox_dev`'s pending rows, the commands
/// among them new to the device recorded as delivered at `at` (what
/// [`read_delivering`] and the writer, for a readings reply, serve).
pub fn deliver_in<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    limit: usize,
    at: Micros,
) -> Result<inbox::Pending, StoreError> {
    let txn = txn.into();
    let pending = inbox::pending_in(txn, inbox_dev, limit)?;
    let upto = txn
        .open_table(COMMAND_META)?
        .get(inbox_dev)?
        .map_or(0, |g| g.value().1);
    if let Some(seq) = newly_read(&pending.1, upto) {
        mark_delivered(txn, inbox_dev, seq, at)?;
    }
    Ok(pending)
}

/// The device reading `inbox_dev` was served every pending row up to
/// `seq` at `at`: each command among them not yet delivered is now.
fn mark_delivered<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    seq: u64,
    at: Micros,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut meta = txn.open_table(COMMAND_META)?;
    let (count, upto) = meta.get(inbox_dev)?.map_or((0, 0), |g| g.value());
    if seq <= upto {
        return Ok(());
    }
    update(txn, inbox_dev, upto + 1..=seq, |_, rec| {
        if rec.state != State::Queued {
            return false;
        }
        rec.state = State::Delivered;
        rec.delivered = at;
        true
    })?;
    meta.insert(inbox_dev, (count, seq))?;
    Ok(())
}

/// The device acknowledged every row of `inbox_dev` up to `upto` at
/// `at`: each unfinished command among them is acknowledged (and
/// delivered, if it was not yet), with `result(seq)`. Returns how many.
pub fn acknowledge<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    upto: u64,
    at: Micros,
    result: impl Fn(u64) -> Option<String>,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    update(txn, inbox_dev, 0..=upto, |seq, rec| {
        if rec.state.finished() {
            return false;
        }
        rec.state = State::Acknowledged;
        if rec.delivered == 0 {
            rec.delivered = at;
        }
        rec.done = at;
        rec.result = result(seq).unwrap_or_default();
        true
    })
}

/// One bounded expiry step of the writer: every command whose expiry is
/// at or before `now` (at most [`EXPIRE_BATCH`]) that is still queued
/// loses its inbox row and is recorded as expired; its index entry goes
/// either way. Tells `expiry` when the next one is due. Returns how many
/// expired.
pub fn expire_step<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    expiry: &Expiry,
    now: Micros,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    // Cleared first: a command committed after this transaction lowers
    // it again (`Expiry::added` runs after its commit).
    expiry.next_due.store(i64::MAX, Ordering::Release);
    let mut index = txn.open_table(COMMAND_EXPIRY)?;
    let due: Vec<(i64, u32, u64)> = index
        .range(..=(now, u32::MAX, u64::MAX))?
        .take(EXPIRE_BATCH)
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    let mut expired = 0;
    for &(at, dev, seq) in &due {
        index.remove((at, dev, seq))?;
        let n = update(txn, dev, seq..=seq, |_, rec| {
            if rec.state != State::Queued {
                return false;
            }
            rec.state = State::Expired;
            rec.done = now;
            true
        })?;
        if n > 0 {
            inbox::remove(txn, dev, seq)?;
            expired += 1;
        }
    }
    if let Some(first) = index.first()? {
        expiry.added(first.0.value().0);
    }
    Ok(expired)
}

/// Up to `limit` records of `inbox_dev` for the device `below` (empty:
/// the inbox's own device), newest first. Reads at most every record of
/// one inbox.
pub fn history<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    inbox_dev: u32,
    below: &str,
    limit: usize,
) -> Result<Vec<(u64, Record)>, StoreError> {
    let txn = txn.into();
    let table = RECORDS.read(txn)?;
    let mut out = Vec::new();
    for r in table.range((inbox_dev, 0)..=(inbox_dev, u64::MAX))?.rev() {
        if out.len() >= limit {
            break;
        }
        let (k, rec) = r?;
        if rec.device == below {
            out.push((k.value().1, rec));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_write_one_line() {
        let r = Record {
            state: State::Acknowledged,
            device: "t1".into(),
            from: "user:ann".into(),
            sensor: "L1".into(),
            value: "true".into(),
            queued: 1_795_428_000_000_000,
            delivered: 1_795_428_001_000_000,
            done: 1_795_428_002_000_000,
            expires: 0,
            result: "ok, done".into(),
        };
        assert_eq!(Record::decode(&r.encode()), Ok(r.clone()));
        let mut s = String::new();
        r.write_csv(7, &mut s);
        assert_eq!(
            s,
            "7,acknowledged,2026-11-23T10:00:00Z,2026-11-23T10:00:01Z,2026-11-23T10:00:02Z,,user:ann,L1,true,\"ok, done\"\n"
        );
    }
}
