//! The per-device inbox: messages, alerts and commands, kept until the
//! device confirms them.
//!
//! Each device has an ordered inbox. `seq` increases per device and is
//! never reused (the next seq is kept in `inbox_meta` even when the inbox
//! is empty). `ack upto` removes every row with `seq <= upto`. An inbox
//! holds at most [`crate::config::Limits::max_inbox`] rows; a sender that
//! would overflow it gets `inbox_full` and nothing older is ever dropped.
//!
//! These functions take a transaction; callers are the writer thread
//! (alert and presence notices, through [`crate::notify::deliver`]) and
//! management requests on blocking threads (messages, commands, acks:
//! [`send`], the transactions they run). redb runs one write transaction
//! at a time, so `inbox_meta` is always read and written under that lock.

pub mod send;

use crate::codec::names::write_csv_text;
use crate::codec::{timefmt, Micros};
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{Records, StoreError, INBOX, INBOX_META};

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text from a user or a channel.
    Message,
    /// An alert that fired.
    Alert,
    /// `sensor,value` the device should apply.
    Command,
}

impl Kind {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Alert => "alert",
            Kind::Command => "command",
        }
    }

    /// Parse the word on the wire.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "message" => Kind::Message,
            "alert" => Kind::Alert,
            "command" => Kind::Command,
            _ => return None,
        })
    }
}

/// `inbox`, read and written as [`Row`]s.
pub const ROWS: Records<Row> = Records::of(INBOX);
record!(Row, (u32, u64));

/// One inbox row (without its seq).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Kind.
    pub kind: Kind,
    /// When it was created (for alerts: the reading's time).
    pub time: Micros,
    /// Who sent it: `user:ann`, `alert:too-hot`, `channel:greenhouse`.
    pub from: String,
    /// The sensor it concerns (may be empty for a message).
    pub sensor: String,
    /// The text or the value.
    pub value: String,
    /// In a gateway's inbox: the id of the device below it that the row
    /// is for (empty: the gateway itself).
    pub device: String,
}

/// Is `c` something a board's line reader could take for the end of a
/// line, or another control character? CR, LF, every C0/C1 control
/// (NEL U+0085 included), DEL, and the Unicode line and paragraph
/// separators U+2028/U+2029.
pub fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Refuse text bound for a device's inbox that could add a line to what
/// the device reads: `400 bad_value` naming `field`. Boards read replies
/// line by line and do not parse RFC 4180 quotes (contract §0), so
/// quoting a value with a line break is not enough; such values are
/// refused where they enter (messages, commands, alert messages).
pub fn check_text(field: &str, text: &str) -> Result<(), crate::error::WireError> {
    match text.chars().find(|c| breaks_lines(*c)) {
        None => Ok(()),
        Some(c) => Err(crate::error::WireError::bad_request(
            "bad_value",
            format!(
                "{field}: contains the control character U+{:04X}; text sent to a device is one line without control characters",
                u32::from(c)
            ),
        )),
    }
}

/// Append one field of an inbox row: RFC 4180 text with every character
/// of [`breaks_lines`] replaced by a space. Input is checked
/// ([`check_text`]), so this only matters for rows stored before that
/// check; it makes "one row is one line" hold for every row served.
fn write_field(text: &str, out: &mut String) {
    if text.chars().any(breaks_lines) {
        let clean: String = text
            .chars()
            .map(|c| if breaks_lines(c) { ' ' } else { c })
            .collect();
        write_csv_text(&clean, out);
    } else {
        write_csv_text(text, out);
    }
}

/// The CSV header of inbox listings.
pub const HEADER: &str = "seq,kind,time,from,sensor,value\n";

/// The CSV header of a gateway's inbox: one more column, the device below
/// the gateway a row is for.
pub const GATEWAY_HEADER: &str = "seq,kind,time,from,sensor,value,device\n";

/// Where rows for `dev` go: a device behind a gateway gets its rows
/// through the gateway's inbox, marked with its id; any other device
/// has its own. Returns `(inbox device number, device column)`.
pub fn route(directory: &crate::auth::Directory, dev: u32) -> (u32, String) {
    let Some(d) = directory.device_by_num(dev) else {
        return (dev, String::new());
    };
    match d.meta.parent.and_then(|p| directory.device_by_num(p)) {
        Some(gw) if gw.meta.gateway => (gw.num, d.id.clone()),
        _ => (dev, String::new()),
    }
}

impl Row {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.kind {
            Kind::Message => 0,
            Kind::Alert => 1,
            Kind::Command => 2,
        }];
        varint::put_i64(&mut out, self.time);
        varint::put_bytes(&mut out, self.from.as_bytes());
        varint::put_bytes(&mut out, self.sensor.as_bytes());
        varint::put_bytes(&mut out, self.value.as_bytes());
        varint::put_bytes(&mut out, self.device.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Row, Corrupt> {
        let mut r = Reader::new(bytes);
        let kind = match r.u8()? {
            0 => Kind::Message,
            1 => Kind::Alert,
            2 => Kind::Command,
            _ => return Err(Corrupt),
        };
        let time = r.i64()?;
        let s = |r: &mut Reader<'_>| String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt);
        Ok(Row {
            kind,
            time,
            from: s(&mut r)?,
            sensor: s(&mut r)?,
            value: s(&mut r)?,
            // Appended: absent in rows written before gateways.
            device: if r.is_empty() {
                String::new()
            } else {
                s(&mut r)?
            },
        })
    }

    /// Append `seq,kind,time,from,sensor,value\n`, with `,device` before
    /// the newline when `gateway` (see [`GATEWAY_HEADER`]). Always exactly
    /// one line (see [`write_field`]).
    pub fn write_csv(&self, seq: u64, gateway: bool, out: &mut String) {
        out.push_str(&seq.to_string());
        out.push(',');
        out.push_str(self.kind.as_str());
        out.push(',');
        timefmt::write_time(self.time, out);
        out.push(',');
        write_field(&self.from, out);
        out.push(',');
        write_field(&self.sensor, out);
        out.push(',');
        write_field(&self.value, out);
        if gateway {
            out.push(',');
            write_field(&self.device, out);
        }
        out.push('\n');
    }
}

/// The inbox would overflow: `(pending now, bound)`.
#[derive(Debug)]
pub struct Full(pub u64, pub u64);

/// Wake-ups for an inbox's subscribers (MQTT): [`push`] notes the
/// inbox it added rows to on its thread, and whoever commits that
/// transaction calls [`Bells::ring_pending`] after the commit, so a
/// subscriber woken reads the rows. A ring after a failed commit is only
/// a spurious wake-up. One entry per inbox with subscribers.
#[derive(Default)]
pub struct Bells {
    bells: parking_lot::Mutex<std::collections::HashMap<u32, tokio::sync::watch::Sender<u64>>>,
}

thread_local! {
    /// Inboxes this thread added rows to since its last ring.
    static PENDING: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Bells {
    /// Changes after each commit that added rows to `device`'s inbox.
    pub fn subscribe(&self, device: u32) -> tokio::sync::watch::Receiver<u64> {
        let mut bells = self.bells.lock();
        if bells.len() > 1024 && bells.len().is_power_of_two() {
            bells.retain(|_, tx| tx.receiver_count() > 0);
        }
        bells
            .entry(device)
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Ring the inboxes this thread added rows to (call after the commit).
    pub fn ring_pending(&self) {
        let devices = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if devices.is_empty() {
            return;
        }
        let mut bells = self.bells.lock();
        for d in devices {
            match bells.get(&d) {
                Some(tx) if tx.receiver_count() == 0 => {
                    bells.remove(&d);
                }
                Some(tx) => tx.send_modify(|n| *n += 1),
                None => {}
            }
        }
    }
}

/// Add rows to one device's inbox, all or none. Returns their seqs.
pub fn push<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
    rows: &[Row],
    max: u64,
) -> Result<Result<Vec<u64>, Full>, StoreError> {
    let txn = txn.into();
    let mut meta = txn.open_table(INBOX_META)?;
    let (next, len) = meta.get(device)?.map_or((1, 0), |g| g.value());
    if len + rows.len() as u64 > max {
        return Ok(Err(Full(len, max)));
    }
    let mut inbox = ROWS.open(txn)?;
    let mut seqs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let seq = next + i as u64;
        inbox.insert((device, seq), row)?;
        seqs.push(seq);
    }
    meta.insert(device, (next + rows.len() as u64, len + rows.len() as u64))?;
    PENDING.with(|p| p.borrow_mut().push(device));
    Ok(Ok(seqs))
}

/// What [`push_routed`] did.
#[derive(Debug)]
pub enum Pushed {
    /// Queued, with these seqs.
    Queued(Vec<u64>),
    /// The inbox was full; nothing queued.
    Full(Full),
}

/// Queue `row` for device `dev`, through its gateway if it has one
/// ([`route`] fills in the row's `device` column). All or nothing, bounded
/// by `max`.
pub fn push_routed<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    directory: &crate::auth::Directory,
    dev: u32,
    row: &Row,
    max: u64,
) -> Result<Pushed, StoreError> {
    let txn = txn.into();
    let (inbox_of, below) = route(directory, dev);
    let row = Row {
        device: below,
        ..row.clone()
    };
    Ok(
        match push(txn, inbox_of, std::slice::from_ref(&row), max)? {
            Ok(seqs) => Pushed::Queued(seqs),
            Err(full) => Pushed::Full(full),
        },
    )
}

/// Remove every row with `seq <= upto`. Returns `(removed, remaining)`.
pub fn ack<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
    upto: u64,
) -> Result<(u64, u64), StoreError> {
    let txn = txn.into();
    let mut meta = txn.open_table(INBOX_META)?;
    let Some((next, len)) = meta.get(device)?.map(|g| g.value()) else {
        return Ok((0, 0));
    };
    let mut inbox = ROWS.open(txn)?;
    let mut removed = 0u64;
    {
        let doomed: Vec<u64> = inbox
            .keys((device, 0)..=(device, upto))?
            .map(|r| r.map(|k| k.value().1))
            .collect::<Result<_, _>>()?;
        for seq in doomed {
            inbox.remove((device, seq))?;
            removed += 1;
        }
    }
    let remaining = len.saturating_sub(removed);
    meta.insert(device, (next, remaining))?;
    Ok((removed, remaining))
}

/// Remove a device's whole inbox, and the rows waiting for it in
/// `inbox_of` (its gateway's inbox, `device` column `below`) when that
/// is another one: a deleted device (`crate::deletion`). At most two
/// inboxes of `max_inbox` rows. Returns how many rows went.
pub fn remove_device<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
    inbox_of: u32,
    below: &str,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    let mut inbox = ROWS.open(txn)?;
    let mut meta = txn.open_table(INBOX_META)?;
    let mut removed = 0;
    let own: Vec<u64> = inbox
        .keys((device, 0)..=(device, u64::MAX))?
        .map(|r| r.map(|k| k.value().1))
        .collect::<Result<_, _>>()?;
    for seq in own {
        inbox.remove((device, seq))?;
        removed += 1;
    }
    meta.remove(device)?;
    if inbox_of != device {
        let mut theirs = Vec::new();
        for r in inbox.range((inbox_of, 0)..=(inbox_of, u64::MAX))? {
            let (k, row) = r?;
            if row.device == below {
                theirs.push(k.value().1);
            }
        }
        for seq in &theirs {
            inbox.remove((inbox_of, *seq))?;
        }
        let was = meta.get(inbox_of)?.map(|g| g.value());
        if let Some((next, len)) = was {
            meta.insert(inbox_of, (next, len.saturating_sub(theirs.len() as u64)))?;
        }
        removed += theirs.len() as u64;
    }
    Ok(removed)
}

/// Remove the one row `seq` (an expired command, `crate::commands`).
/// Returns whether it was there.
pub fn remove<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
    seq: u64,
) -> Result<bool, StoreError> {
    let txn = txn.into();
    let mut inbox = ROWS.open(txn)?;
    if !inbox.remove((device, seq))? {
        return Ok(false);
    }
    let mut meta = txn.open_table(INBOX_META)?;
    let was = meta.get(device)?.map(|g| g.value());
    if let Some((next, len)) = was {
        meta.insert(device, (next, len.saturating_sub(1)))?;
    }
    Ok(true)
}

/// Pending count and the first `limit` rows, oldest first.
pub fn pending(
    store: &crate::store::Store,
    device: u32,
    limit: usize,
) -> Result<Pending, StoreError> {
    store.read(|txn| pending_in(txn, device, limit))
}

/// Over every inbox: `(rows pending, inboxes with rows, inboxes holding
/// at least `full` rows)`. One scan of `inbox_meta`; blocking.
pub fn totals(store: &crate::store::Store, full: u64) -> Result<(u64, u64, u64), StoreError> {
    store.read(|txn| {
        let meta = txn.open_table(INBOX_META)?;
        let (mut rows, mut pending, mut at_max) = (0, 0, 0);
        for r in meta.iter()? {
            let n = r?.1.value().1;
            rows += n;
            pending += u64::from(n > 0);
            at_max += u64::from(n >= full && full > 0);
        }
        Ok((rows, pending, at_max))
    })
}

/// Pending count and rows (oldest first) of one inbox.
pub type Pending = (u64, Vec<(u64, Row)>);

/// [`pending`] within an open transaction: a read, or a write (what a
/// reader that records deliveries serves: `crate::commands::read_delivering`).
pub fn pending_in<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    device: u32,
    limit: usize,
) -> Result<Pending, StoreError> {
    let txn = txn.into();
    let meta = txn.open_table(INBOX_META)?;
    let inbox = ROWS.read(txn)?;
    let len = meta.get(device)?.map_or(0, |g| g.value().1);
    let mut rows = Vec::new();
    if limit > 0 && len > 0 {
        for r in inbox.range((device, 0)..=(device, u64::MAX))? {
            let (k, row) = r?;
            rows.push((k.value().1, row));
            if rows.len() >= limit {
                break;
            }
        }
    }
    Ok((len, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_csv() {
        let r = Row {
            kind: Kind::Alert,
            time: 1_795_428_000_000_000,
            from: "alert:too-hot".into(),
            sensor: "N1".into(),
            value: "It's too hot! (101.2 > 100)".into(),
            device: String::new(),
        };
        let mut s = String::new();
        r.write_csv(41, false, &mut s);
        assert_eq!(
            s,
            "41,alert,2026-11-23T10:00:00Z,alert:too-hot,N1,It's too hot! (101.2 > 100)\n"
        );
        assert_eq!(Row::decode(&r.encode()), Ok(r));
    }

    /// A row stored before input was checked still goes out as one line.
    #[test]
    fn a_stored_line_break_never_reaches_the_wire() {
        let r = Row {
            kind: Kind::Message,
            time: 1_795_428_000_000_000,
            from: "user:ann".into(),
            sensor: String::new(),
            value: "hi\n9999,command,2026-11-23T10:00:00Z,user:x,L1,true\r\u{2028}".into(),
            device: String::new(),
        };
        let mut s = String::new();
        r.write_csv(7, false, &mut s);
        assert_eq!(s.lines().count(), 1, "{s:?}");
        assert_eq!(
            s,
            "7,message,2026-11-23T10:00:00Z,user:ann,,\"hi 9999,command,2026-11-23T10:00:00Z,user:x,L1,true  \"\n"
        );
        assert!(check_text("value", &r.value).is_err());
        assert!(check_text("value", "Water the tomatoes, please").is_ok());
    }
}
