//! Notification targets: where a notice leaves the server for a person.
//!
//! A target is a durable object owned by a user: a webhook (an `http` or
//! `https` URL, an optional signing secret and a body format, JSON or
//! CSV), or an e-mail address (sent through the `[smtp]` relay). Alerts and presence notices name a target beside a device inbox
//! and a channel; the writer then commits an outbox row for it in the
//! event's own transaction ([`crate::outbox`]) and the sender
//! ([`crate::sender`]) delivers it at least once.
//!
//! Records live in the `targets` table (management writes, like channels
//! and alerts) and in memory in [`Targets`], changed only after the
//! store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::Micros;
use crate::error::WireError;
use crate::quotas::QuotaExceeded;
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{Records, Store, StoreError, PRESENCE_TARGETS};

const VERSION: u8 = 1;

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one object.
    Json,
    /// `text/csv`: a header line and one row.
    Csv,
}

impl Format {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// Parse the word on the wire.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// The body's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// What kind of target it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP POST to a URL.
    Webhook,
    /// An e-mail through the `[smtp]` relay.
    Email,
}

impl Kind {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Email => "email",
        }
    }
}

/// A notification target, as stored in `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// Internal number used in keys (`meta` `next_target`; never reused).
    pub id: u32,
    /// Unique, URL-safe name.
    pub name: String,
    /// Owning user.
    pub owner: String,
    /// Webhook or e-mail.
    pub kind: Kind,
    /// Where to: the webhook URL (`http://` or `https://`), or the e-mail
    /// address.
    pub to: String,
    /// The HMAC-SHA256 signing secret; empty: bodies are not signed.
    pub secret: String,
    /// The body format.
    pub format: Format,
    /// When it was created.
    pub created: Micros,
}

/// The `targets` table, read and written as records.
pub const RECORDS: Records<TargetRecord> = Records::of(crate::store::TARGETS);
record!(TargetRecord, &'static str);

impl TargetRecord {
    /// Encode for the `targets` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_u64(&mut out, u64::from(self.id));
        varint::put_bytes(&mut out, self.name.as_bytes());
        varint::put_bytes(&mut out, self.owner.as_bytes());
        out.push(match self.kind {
            Kind::Webhook => 1,
            Kind::Email => 2,
        });
        varint::put_bytes(&mut out, self.to.as_bytes());
        varint::put_bytes(&mut out, self.secret.as_bytes());
        out.push(match self.format {
            Format::Json => 0,
            Format::Csv => 1,
        });
        varint::put_i64(&mut out, self.created);
        out
    }

    /// Decode from the `targets` table.
    pub fn decode(bytes: &[u8]) -> Result<TargetRecord, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        let s = |r: &mut Reader<'_>| String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt);
        let id = u32::try_from(r.u64()?).map_err(|_| Corrupt)?;
        let name = s(&mut r)?;
        let owner = s(&mut r)?;
        let kind = match r.u8()? {
            1 => Kind::Webhook,
            2 => Kind::Email,
            _ => return Err(Corrupt),
        };
        Ok(TargetRecord {
            id,
            name,
            owner,
            kind,
            to: s(&mut r)?,
            secret: s(&mut r)?,
            format: match r.u8()? {
                0 => Format::Json,
                1 => Format::Csv,
                _ => return Err(Corrupt),
            },
            created: r.i64()?,
        })
    }
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, Arc<TargetRecord>>,
    by_id: HashMap<u32, Arc<TargetRecord>>,
}

/// Every target, in memory (loaded on start, changed after each commit).
#[derive(Default)]
pub struct Targets {
    inner: RwLock<Inner>,
    max_waiting: std::sync::atomic::AtomicU64,
}

impl Targets {
    /// Notifications one target's outbox may hold (`[notify]
    /// max_waiting`); set once on start.
    pub fn set_max_waiting(&self, n: u64) {
        self.max_waiting
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`Targets::set_max_waiting`].
    pub fn max_waiting(&self) -> u64 {
        self.max_waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From the stored records.
    pub fn new(records: Vec<TargetRecord>) -> Targets {
        let t = Targets::default();
        for r in records {
            t.put(r);
        }
        t
    }

    /// Add or replace one.
    pub fn put(&self, rec: TargetRecord) {
        let rec = Arc::new(rec);
        let mut g = self.inner.write();
        g.by_id.insert(rec.id, rec.clone());
        g.by_name.insert(rec.name.clone(), rec);
    }

    /// Remove one by name.
    pub fn remove(&self, name: &str) {
        let mut g = self.inner.write();
        if let Some(r) = g.by_name.remove(name) {
            g.by_id.remove(&r.id);
        }
    }

    /// By name.
    pub fn get(&self, name: &str) -> Option<Arc<TargetRecord>> {
        self.inner.read().by_name.get(name).cloned()
    }

    /// By id.
    pub fn by_id(&self, id: u32) -> Option<Arc<TargetRecord>> {
        self.inner.read().by_id.get(&id).cloned()
    }

    /// Every target, by name.
    pub fn all(&self) -> Vec<Arc<TargetRecord>> {
        let mut v: Vec<_> = self.inner.read().by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// How many `owner` has (the quota).
    pub fn count_owned(&self, owner: &str) -> u64 {
        self.inner
            .read()
            .by_name
            .values()
            .filter(|t| t.owner == owner)
            .count() as u64
    }
}

/// Why a target management operation did not happen (`error.rs` makes
/// each a wire error).
#[derive(Debug)]
pub enum TargetError {
    /// A target of that name exists: `409 target_exists`.
    Exists(String),
    /// The target's outbox holds `[notify] max_waiting` notifications:
    /// `409 target_full`.
    Full(String),
    /// Its owner is at `[quotas] targets_per_user`.
    Quota(QuotaExceeded),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for TargetError {
    fn from(e: StoreError) -> Self {
        TargetError::Store(e)
    }
}

impl From<QuotaExceeded> for TargetError {
    fn from(e: QuotaExceeded) -> Self {
        TargetError::Quota(e)
    }
}

/// Create target `rec` (its `id` is assigned), and with `presence` make
/// it where its owner's presence notices go: counted and created under
/// the quota lock (`quota`: the owner's `[quotas] targets_per_user`, 0
/// none), held until `targets` holds the new one. Blocking.
pub fn create(
    store: &Store,
    targets: &Targets,
    rec: TargetRecord,
    presence: bool,
    quota: u64,
) -> Result<TargetRecord, TargetError> {
    let _quota = crate::quotas::guard();
    crate::quotas::check(
        "targets",
        "targets_per_user",
        quota,
        targets.count_owned(&rec.owner),
        1,
    )?;
    let name = rec.name.clone();
    let rec = insert_new(store, rec, presence)?.ok_or(TargetError::Exists(name))?;
    targets.put(rec.clone());
    Ok(rec)
}

/// Store `rec` under a new id; `None` when its name is taken.
fn insert_new(
    store: &Store,
    mut rec: TargetRecord,
    presence: bool,
) -> Result<Option<TargetRecord>, StoreError> {
    store.write_if(|txn| {
        {
            let mut t = RECORDS.open(txn)?;
            if t.contains(rec.name.as_str())? {
                return Ok(None);
            }
            rec.id = Store::next_number(txn, "next_target")?;
            t.insert(rec.name.as_str(), &rec)?;
        }
        if presence {
            txn.open_table(PRESENCE_TARGETS)?
                .insert(rec.owner.as_str(), rec.id)?;
        }
        Ok(Some(rec.clone()))
    })
}

/// Delete target `t`: the record, its owner's presence choice when it is
/// this one, its waiting notifications (they are not sent), history and
/// dead letters, in one transaction; then forget it. Blocking.
pub fn delete(store: &Store, targets: &Targets, t: &TargetRecord) -> Result<(), StoreError> {
    store.write(|txn| {
        RECORDS.open(txn)?.remove(t.name.as_str())?;
        {
            let mut p = txn.open_table(PRESENCE_TARGETS)?;
            if p.get(t.owner.as_str())?.is_some_and(|g| g.value() == t.id) {
                p.remove(t.owner.as_str())?;
            }
        }
        crate::outbox::remove_target(txn, t.id)?;
        Ok::<_, StoreError>(())
    })?;
    targets.remove(&t.name);
    Ok(())
}

/// Queue a `test` notification for `t` through its outbox like any
/// other, from `source` (who asked); its event number. Blocking.
pub fn queue_test(
    store: &Store,
    targets: &Targets,
    t: &TargetRecord,
    source: String,
) -> Result<String, TargetError> {
    let now = crate::codec::timefmt::now_micros();
    let note = crate::outbox::Notification {
        kind: "test",
        time: now,
        source,
        device: String::new(),
        sensor: String::new(),
        value: String::new(),
        text: format!("test notification for {}", t.name),
    };
    // A full outbox: nothing queued, nothing committed.
    let queued =
        store.write_if(|txn| crate::outbox::push(txn, t, &note, now, targets.max_waiting()))?;
    queued.ok_or_else(|| TargetError::Full(t.name.clone()))
}

impl From<TargetError> for WireError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Exists(name) => {
                WireError::new(409, "target_exists", format!("target '{name}' exists"))
            }
            TargetError::Full(name) => WireError::new(
                409,
                "target_full",
                format!("target '{name}' has [notify] max_waiting notifications waiting"),
            ),
            TargetError::Quota(q) => q.into(),
            TargetError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = TargetRecord {
            id: 9,
            name: "ops".into(),
            owner: "ann".into(),
            kind: Kind::Email,
            to: "ann@example.com".into(),
            secret: "s3cret".into(),
            format: Format::Csv,
            created: 42,
        };
        assert_eq!(TargetRecord::decode(&r.encode()), Ok(r.clone()));
        let mut bad = r.encode();
        bad[0] = 7;
        assert!(TargetRecord::decode(&bad).is_err());
    }
}
