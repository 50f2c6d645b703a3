//! The outbox: notifications for targets, durable until delivered.
//!
//! The writer adds a row ([`push`]) in the transaction that records the
//! event it tells of (an alert firing, a presence change), so an event is
//! stored if and only if its notifications are. The sender
//! ([`crate::sender`]) removes a row only when it was delivered
//! ([`finish`] with [`Outcome::Delivered`]) or given up on (moved to
//! `notify_dead` with the last error, [`Outcome::Dead`]), in one
//! transaction with the attempt's history row. So a crash at any point
//! delivers the row again, with the same event id: at least once.
//!
//! Event ids are `evt-<n>`, `n` from the `meta` counter
//! [`NEXT_EVENT`], never reused; rows of one target are delivered in `n`
//! order.

use crate::codec::names::write_csv_text;
use crate::codec::{timefmt, Micros};
use crate::store::typed::{record, Record};
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{
    Records, StoreError, META, NOTIFY_DEAD, OUTBOX, OUTBOX_WAITING, TARGET_HISTORY,
};
use crate::targets::{Format, Kind, TargetRecord};

/// `meta` key: the number of the next notification event.
pub const NEXT_EVENT: &str = "next_notification";

/// CSV header of a CSV webhook body.
pub const CSV_HEADER: &str = "id,type,time,source,device,sensor,value,text\n";

/// What a notification says (rendered as JSON or CSV per target).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `alert` or `presence`.
    pub kind: &'static str,
    /// When it happened (the reading's time, the presence change's time).
    pub time: Micros,
    /// Who sent it: the alert's name, or the device for presence.
    pub source: String,
    /// The device it is about.
    pub device: String,
    /// The sensor (alerts), empty otherwise.
    pub sensor: String,
    /// The value (alerts), or `online`/`offline` (presence).
    pub value: String,
    /// The text (the alert's message, or the presence word).
    pub text: String,
}

impl Notification {
    /// The body for `format`, carrying the event `id`.
    pub fn render(&self, id: &str, format: Format) -> Vec<u8> {
        let mut time = String::new();
        timefmt::write_time(self.time, &mut time);
        match format {
            Format::Json => serde_json::json!({
                "id": id,
                "type": self.kind,
                "time": time,
                "source": self.source,
                "device": self.device,
                "sensor": self.sensor,
                "value": self.value,
                "text": self.text,
            })
            .to_string()
            .into_bytes(),
            Format::Csv => {
                let mut out = String::from(CSV_HEADER);
                for (i, f) in [
                    id,
                    self.kind,
                    &time,
                    &self.source,
                    &self.device,
                    &self.sensor,
                    &self.value,
                    &self.text,
                ]
                .iter()
                .enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    write_csv_text(f, &mut out);
                }
                out.push('\n');
                out.into_bytes()
            }
        }
    }
}

impl Notification {
    /// The text of an e-mail: the subject line, a blank line, the body.
    pub fn render_mail(&self, id: &str) -> Vec<u8> {
        let mut time = String::new();
        timefmt::write_time(self.time, &mut time);
        let one_line = |s: &str| s.replace(|c: char| c.is_control(), " ");
        let mut out = format!(
            "[Overlord] {} {}: {}\n\n",
            self.kind,
            one_line(&self.source),
            one_line(&self.text)
        );
        out.push_str(&self.text);
        out.push_str("\n\n");
        for (k, v) in [
            ("Event", id),
            ("Type", self.kind),
            ("Time", &time),
            ("Source", &self.source),
            ("Device", &self.device),
            ("Sensor", &self.sensor),
            ("Value", &self.value),
        ] {
            if !v.is_empty() {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out.into_bytes()
    }
}

/// An outbox row: the event's id and time, and the body as rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Event number (`evt-<n>`).
    pub n: u64,
    /// When it was committed (retries end `retry_for_secs` after it).
    pub created: Micros,
    /// The body, in the target's format.
    pub body: Vec<u8>,
}

impl Pending {
    /// The event id sent in `Overlord-Event-Id`.
    pub fn id(&self) -> String {
        event_id(self.n)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        varint::put_i64(&mut out, self.created);
        varint::put_bytes(&mut out, &self.body);
        out
    }

    fn decode(n: u64, bytes: &[u8]) -> Result<Pending, Corrupt> {
        let mut r = Reader::new(bytes);
        Ok(Pending {
            n,
            created: r.i64()?,
            body: r.bytes()?.to_vec(),
        })
    }
}

/// `outbox`, read and written as [`Pending`] notifications (the key's
/// event number is the row's `n`).
pub const PENDING: Records<Pending> = Records::of(OUTBOX);

impl Record for Pending {
    type Key = (u32, u64);
    fn to_row(&self) -> Vec<u8> {
        self.encode()
    }
    fn from_row((_, n): (u32, u64), bytes: &[u8]) -> Result<Self, Corrupt> {
        Pending::decode(n, bytes)
    }
}

/// `target_history`, read and written as [`Attempt`]s.
pub const HISTORY: Records<Attempt> = Records::of(TARGET_HISTORY);
record!(Attempt, (u32, u64));

/// `notify_dead`, read and written as [`DeadNote`]s.
pub const DEAD: Records<DeadNote> = Records::of(NOTIFY_DEAD);
record!(DeadNote, (u32, u64));

/// A notification given up on, as kept in `notify_dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadNote {
    /// When it was given up on.
    pub time: Micros,
    /// The last error.
    pub error: String,
    /// The body it had.
    pub body: Vec<u8>,
}

impl DeadNote {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        varint::put_i64(&mut v, self.time);
        varint::put_bytes(&mut v, self.error.as_bytes());
        varint::put_bytes(&mut v, &self.body);
        v
    }

    fn decode(bytes: &[u8]) -> Result<DeadNote, Corrupt> {
        let mut r = Reader::new(bytes);
        Ok(DeadNote {
            time: r.i64()?,
            error: String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt)?,
            body: r.bytes()?.to_vec(),
        })
    }
}

/// `evt-<n>`.
pub fn event_id(n: u64) -> String {
    format!("evt-{n}")
}

/// Queue `note` for `target` in the transaction of the event it tells of
/// (the writer's, in digest-log order, so a notification derived again
/// after a crash gets the same id; or a management request's). Returns
/// the event id, or `None` when `max_waiting` notifications are waiting
/// already (nothing is queued; nothing older is dropped).
pub fn push<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: &TargetRecord,
    note: &Notification,
    now: Micros,
    max_waiting: u64,
) -> Result<Option<String>, StoreError> {
    let txn = txn.into();
    {
        let mut w = txn.open_table(OUTBOX_WAITING)?;
        let have = w.get(target.id)?.map_or(0, |g| g.value());
        if have >= max_waiting.max(1) {
            return Ok(None);
        }
        w.insert(target.id, have + 1)?;
    }
    let n = {
        let mut meta = txn.open_table(META)?;
        let n = meta.get(NEXT_EVENT)?.map_or(1, |v| v.value());
        meta.insert(NEXT_EVENT, n + 1)?;
        n
    };
    let id = event_id(n);
    let row = Pending {
        n,
        created: now,
        body: match target.kind {
            Kind::Webhook => note.render(&id, target.format),
            Kind::Email => note.render_mail(&id),
        },
    };
    PENDING.open(txn)?.insert((target.id, n), &row)?;
    Ok(Some(id))
}

/// The targets with rows waiting, in id order.
pub fn waiting_targets<'t>(txn: impl Into<crate::store::Tx<'t>>) -> Result<Vec<u32>, StoreError> {
    let txn = txn.into();
    let t = PENDING.read(txn)?;
    let mut out = Vec::new();
    let mut from = 0u32;
    loop {
        let Some(key) = t.keys((from, 0)..)?.next() else {
            break;
        };
        let target = key?.value().0;
        out.push(target);
        match target.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(out)
}

/// The oldest row waiting for `target` (the next to deliver).
pub fn head<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: u32,
) -> Result<Option<Pending>, StoreError> {
    let txn = txn.into();
    let t = PENDING.read(txn)?;
    let first = t
        .range((target, 0)..=(target, u64::MAX))?
        .next()
        .transpose()?
        .map(|(_, p)| p);
    Ok(first)
}

/// Rows waiting for `target`.
pub fn waiting<'t>(txn: impl Into<crate::store::Tx<'t>>, target: u32) -> Result<u64, StoreError> {
    let txn = txn.into();
    let t = txn.open_table(OUTBOX_WAITING)?;
    let n = t.get(target)?.map_or(0, |g| g.value());
    Ok(n)
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered `2xx`: the row is removed.
    Delivered,
    /// It failed; it will be tried again.
    Failed,
    /// It failed and the retries ran out: the row moves to `notify_dead`.
    Dead,
}

impl Outcome {
    /// The word in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
        }
    }

    fn from_u8(v: u8) -> Result<Outcome, Corrupt> {
        Ok(match v {
            0 => Outcome::Delivered,
            1 => Outcome::Failed,
            2 => Outcome::Dead,
            _ => return Err(Corrupt),
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Outcome::Delivered => 0,
            Outcome::Failed => 1,
            Outcome::Dead => 2,
        }
    }
}

/// One delivery attempt, as kept in `target_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it ended.
    pub time: Micros,
    /// The event (`evt-<n>`).
    pub event: u64,
    /// 1 for the first try of this event in this run of the server.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The receiver's HTTP status, 0 when there was none.
    pub status: u16,
    /// The error (empty when delivered).
    pub detail: String,
}

/// CSV header of a target's delivery history.
pub const HISTORY_HEADER: &str = "n,time,event,attempt,outcome,status,detail\n";

impl Attempt {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        varint::put_i64(&mut out, self.time);
        varint::put_u64(&mut out, self.event);
        varint::put_u64(&mut out, u64::from(self.attempt));
        out.push(self.outcome.to_u8());
        varint::put_u64(&mut out, u64::from(self.status));
        varint::put_bytes(&mut out, self.detail.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Attempt, Corrupt> {
        let mut r = Reader::new(bytes);
        Ok(Attempt {
            time: r.i64()?,
            event: r.u64()?,
            attempt: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            outcome: Outcome::from_u8(r.u8()?)?,
            status: u16::try_from(r.u64()?).map_err(|_| Corrupt)?,
            detail: String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt)?,
        })
    }

    /// Append one CSV row numbered `n`.
    pub fn write_csv(&self, n: u64, out: &mut String) {
        out.push_str(&n.to_string());
        out.push(',');
        timefmt::write_time(self.time, out);
        out.push(',');
        out.push_str(&event_id(self.event));
        out.push_str(&format!(
            ",{},{},{},",
            self.attempt,
            self.outcome.as_str(),
            self.status
        ));
        write_csv_text(&self.detail, out);
        out.push('\n');
    }
}

/// Record `attempt` for `target` (trimming its history to `kept` rows);
/// when it was delivered or is dead, remove the outbox row in the same
/// transaction (a dead one is kept in `notify_dead` with its body).
/// Sender only, from a blocking thread.
pub fn finish<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: u32,
    attempt: &Attempt,
    kept: u64,
) -> Result<(), StoreError> {
    let txn = txn.into();
    if attempt.outcome != Outcome::Failed {
        let key = (target, attempt.event);
        let mut outbox = PENDING.open(txn)?;
        // Only a dead one's body is read (it is kept in `notify_dead`).
        let dead = match attempt.outcome {
            Outcome::Dead => outbox.get(key)?,
            _ => None,
        };
        if outbox.remove(key)? {
            let mut w = txn.open_table(OUTBOX_WAITING)?;
            let have = w.get(target)?.map_or(0, |g| g.value());
            if have <= 1 {
                w.remove(target)?;
            } else {
                w.insert(target, have - 1)?;
            }
        }
        if let Some(p) = dead {
            let note = DeadNote {
                time: attempt.time,
                error: attempt.detail.clone(),
                body: p.body,
            };
            let mut dead = DEAD.open(txn)?;
            dead.insert(key, &note)?;
            trim_oldest(&mut dead, target, kept)?;
        }
    }
    let mut h = HISTORY.open(txn)?;
    let next = h
        .keys((target, 0)..=(target, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(1, |k| k.value().1 + 1);
    h.insert((target, next), attempt)?;
    trim_oldest(&mut h, target, kept)
}

/// Keep the newest `kept` (at least 1) of `target`'s rows in a table keyed
/// `(target, n)`: the delivery history and the dead notifications are both
/// bounded by `[notify] history_kept`, so a target that fails for months
/// cannot grow the file without end.
fn trim_oldest<R: crate::store::Record<Key = (u32, u64)>>(
    t: &mut crate::store::typed::WriteRecords<'_, R>,
    target: u32,
    kept: u64,
) -> Result<(), StoreError> {
    let keys: Vec<u64> = t
        .keys((target, 0)..=(target, u64::MAX))?
        .rev()
        .skip(usize::try_from(kept.max(1)).unwrap_or(usize::MAX))
        .map(|r| r.map(|k| k.value().1))
        .collect::<Result<_, _>>()?;
    for n in keys {
        t.remove((target, n))?;
    }
    Ok(())
}

/// A target's history after `after`, at most `limit` rows.
pub fn history<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: u32,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Attempt)>, StoreError> {
    let txn = txn.into();
    let t = HISTORY.read(txn)?;
    let mut out = Vec::new();
    if after == u64::MAX {
        return Ok(out);
    }
    for row in t
        .range((target, after + 1)..=(target, u64::MAX))?
        .take(limit)
    {
        let (k, a) = row?;
        out.push((k.value().1, a));
    }
    Ok(out)
}

/// A dead notification: when it was given up on, the last error, the body.
pub type Dead = (u64, Micros, String, Vec<u8>);

/// A target's dead notifications, oldest first, at most `limit`.
pub fn dead<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: u32,
    limit: usize,
) -> Result<Vec<Dead>, StoreError> {
    let txn = txn.into();
    let t = DEAD.read(txn)?;
    let mut out = Vec::new();
    for row in t.range((target, 0)..=(target, u64::MAX))?.take(limit) {
        let (k, d) = row?;
        out.push((k.value().1, d.time, d.error, d.body));
    }
    Ok(out)
}

/// Remove everything of a deleted target: waiting rows, history, dead
/// letters. Management, in the transaction that deletes the target.
pub fn remove_target<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    target: u32,
) -> Result<(), StoreError> {
    let txn = txn.into();
    // Keys only: a damaged row is removed with the rest.
    for def in [OUTBOX, TARGET_HISTORY, NOTIFY_DEAD] {
        let mut t = txn.open_table(def)?;
        let keys: Vec<(u32, u64)> = t
            .range((target, 0)..=(target, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for k in keys {
            t.remove(k)?;
        }
    }
    txn.open_table(OUTBOX_WAITING)?.remove(target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_render_as_json_and_csv() {
        let n = Notification {
            kind: "alert",
            time: 0,
            source: "hot".into(),
            device: "d1".into(),
            sensor: "N1".into(),
            value: "31.5".into(),
            text: "too \"hot\", open".into(),
        };
        let j: serde_json::Value =
            serde_json::from_slice(&n.render("evt-3", Format::Json)).unwrap();
        assert_eq!(j["id"], "evt-3");
        assert_eq!(j["text"], "too \"hot\", open");
        assert_eq!(j["time"], "1970-01-01T00:00:00Z");
        let c = String::from_utf8(n.render("evt-3", Format::Csv)).unwrap();
        assert_eq!(
            c,
            format!("{CSV_HEADER}evt-3,alert,1970-01-01T00:00:00Z,hot,d1,N1,31.5,\"too \"\"hot\"\", open\"\n")
        );
    }

    #[test]
    fn attempts_round_trip() {
        let a = Attempt {
            time: 5,
            event: 7,
            attempt: 2,
            outcome: Outcome::Dead,
            status: 503,
            detail: "HTTP 503".into(),
        };
        assert_eq!(Attempt::decode(&a.encode()), Ok(a));
    }
}
