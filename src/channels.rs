//! Channels: named, ordered streams of readings of chosen (device,
//! sensor) pairs.
//!
//! Each item has an index that increases by one per item and is never
//! reused; `channel_meta` keeps `(first kept, next)`. The writer thread
//! appends items (in digest-log order) and trims the oldest beyond the
//! channel's `retention`. A reader resumes with `after=<last index seen>`
//! and so misses nothing and sees nothing twice, as long as it keeps up
//! with retention; `since=TIME` starts at the first item *added* at or
//! after TIME (found by binary search: add times never decrease with the
//! index).
//!
//! Management (create, describe, members) is here too, as blocking
//! functions returning [`ChannelError`]; `api/channels.rs` parses,
//! authorises and calls them. Deleting a channel is `deletion.rs`'s.

use crate::catalog::Catalog;
use crate::channel_labels;
use crate::codec::names::log_safe;
use crate::codec::{Micros, Reading, SensorId, Value};
use crate::error::WireError;
use crate::quotas::QuotaExceeded;
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{
    chunk, ChannelRecord, Records, Store, StoreError, CHANNELS, CHANNEL_ITEMS, CHANNEL_MEMBERS,
    CHANNEL_META,
};

/// CSV header of channel items.
pub const HEADER: &str = "index,time,device,sensor,value\n";

/// One item of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// When the writer appended it (UTC µs).
    pub added: Micros,
    /// The reading's time.
    pub time: Micros,
    /// Device number.
    pub device: u32,
    /// Sensor.
    pub sensor: SensorId,
    /// Value.
    pub value: Value,
}

impl Item {
    /// Device `device`'s reading `r`, appended at `added`.
    pub fn of_reading(added: Micros, device: u32, r: &Reading) -> Item {
        Item {
            added,
            time: r.time,
            device,
            sensor: r.sensor,
            value: r.value.clone(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        varint::put_i64(&mut out, self.added);
        varint::put_i64(&mut out, self.time);
        varint::put_u64(&mut out, u64::from(self.device));
        varint::put_u64(&mut out, u64::from(self.sensor.code()));
        chunk::put_value(&mut out, &self.value, &mut chunk::Prev::default());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Item, Corrupt> {
        let mut r = Reader::new(bytes);
        let added = r.i64()?;
        let time = r.i64()?;
        let device = u32::try_from(r.u64()?).map_err(|_| Corrupt)?;
        let sensor =
            SensorId::from_code(u32::try_from(r.u64()?).map_err(|_| Corrupt)?).ok_or(Corrupt)?;
        let value = chunk::get_value(&mut r, sensor.kind, &mut chunk::Prev::default())?;
        Ok(Item {
            added,
            time,
            device,
            sensor,
            value,
        })
    }
}

/// `channel_items`, read and written as [`Item`]s.
pub const ITEMS: Records<Item> = Records::of(CHANNEL_ITEMS);
record!(Item, (u32, u64));

/// Append an item; trim to `retention`. Returns its index. Writer only.
pub fn append<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    channel: u32,
    item: &Item,
    retention: u64,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    let mut meta = txn.open_table(CHANNEL_META)?;
    let (mut first, next) = meta.get(channel)?.map_or((1, 1), |g| g.value());
    let mut items = ITEMS.open(txn)?;
    items.insert((channel, next), item)?;
    while next + 1 - first > retention.max(1) {
        items.remove((channel, first))?;
        first += 1;
    }
    meta.insert(channel, (first, next + 1))?;
    Ok(next)
}

/// A channel item's key: channel, index.
type ItemKey = (u32, u64);

/// [`append`] for several items of one channel, in order: the same rows,
/// indexes and bounds as one call each. On PostgreSQL the items (and the
/// ones retention drops) go in one statement, not three per item.
pub fn append_many<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    channel: u32,
    items: &[Item],
    retention: u64,
) -> Result<(), StoreError> {
    let txn = txn.into();
    if !matches!(txn, crate::store::Tx::Pg(_)) {
        for item in items {
            append(txn, channel, item, retention)?;
        }
        return Ok(());
    }
    let mut meta = txn.open_table(CHANNEL_META)?;
    let raw = txn.open_table(ITEMS.def())?;
    let Some(pg) = raw.postgres() else {
        return Err(StoreError::Io(
            "a PostgreSQL transaction without its table".into(),
        ));
    };
    let (mut first, mut next) = meta.get(channel)?.map_or((1, 1), |g| g.value());
    // (channel, index) and the item's bytes, or `None`: trimmed.
    let mut rows: Vec<(ItemKey, Option<Vec<u8>>)> = Vec::new();
    for item in items {
        rows.push(((channel, next), Some(crate::store::Record::to_row(item))));
        next += 1;
        while next - first > retention.max(1) {
            rows.push(((channel, first), None));
            first += 1;
        }
    }
    pg.set_many(rows.iter().map(|(k, v)| (*k, v.as_deref())))?;
    meta.insert(channel, (first, next))?;
    Ok(())
}

/// `(first kept, next)` indexes of a channel.
pub fn bounds(store: &crate::store::Store, channel: u32) -> Result<(u64, u64), StoreError> {
    store.read(|txn| {
        let meta = txn.open_table(CHANNEL_META)?;
        let bounds = meta.get(channel)?.map_or((1, 1), |g| g.value());
        Ok(bounds)
    })
}

/// Items with index > `after`, at most `limit`.
pub fn read_after(
    store: &crate::store::Store,
    channel: u32,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Item)>, StoreError> {
    store.read(|txn| {
        let items = ITEMS.read(txn)?;
        let mut out = Vec::new();
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        for r in items.range((channel, after + 1)..=(channel, u64::MAX))? {
            let (k, item) = r?;
            out.push((k.value().1, item));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    })
}

/// The `after` that starts at the first item added at or after `since`.
pub fn after_for_since(
    store: &crate::store::Store,
    channel: u32,
    since: Micros,
) -> Result<u64, StoreError> {
    store.read(|txn| {
        let meta = txn.open_table(CHANNEL_META)?;
        let (first, next) = meta.get(channel)?.map_or((1, 1), |g| g.value());
        let items = ITEMS.read(txn)?;
        // Smallest index in [first, next) with added >= since.
        let (mut lo, mut hi) = (first, next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let added = match items.get((channel, mid))? {
                Some(item) => item.added,
                None => Micros::MIN, // trimmed meanwhile: treat as old
            };
            if added >= since {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo.saturating_sub(1))
    })
}

/// Why a channel management operation did not happen (`error.rs` makes
/// each a wire error).
#[derive(Debug)]
pub enum ChannelError {
    /// A channel of that name exists: `409 channel_exists`.
    Exists(String),
    /// The channel was deleted meanwhile: `404 unknown_channel`.
    Unknown(String),
    /// Its owner is at `[quotas] channels_per_user`.
    Quota(QuotaExceeded),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for ChannelError {
    fn from(e: StoreError) -> Self {
        ChannelError::Store(e)
    }
}

impl From<QuotaExceeded> for ChannelError {
    fn from(e: QuotaExceeded) -> Self {
        ChannelError::Quota(e)
    }
}

/// Create channel `rec` (its `num` is assigned) for an owner whose
/// `[quotas] channels_per_user` is `quota` (0: none): counted and created
/// under the quota lock, held until the catalog holds the new channel.
/// Blocking.
pub fn create(
    store: &Store,
    catalog: &Catalog,
    rec: ChannelRecord,
    quota: u64,
) -> Result<ChannelRecord, ChannelError> {
    let _quota = crate::quotas::guard();
    let have = catalog
        .channels()
        .iter()
        .filter(|c| c.owner == rec.owner)
        .count() as u64;
    crate::quotas::check("channels", "channels_per_user", quota, have, 1)?;
    let name = rec.name.clone();
    let rec = insert_new(store, rec)?.ok_or(ChannelError::Exists(name))?;
    catalog.put_channel(rec.clone());
    Ok(rec)
}

/// Store `rec` under a new number; `None` when its name is taken.
fn insert_new(store: &Store, mut rec: ChannelRecord) -> Result<Option<ChannelRecord>, StoreError> {
    store.write_if(|txn| {
        let mut t = CHANNELS.open(txn)?;
        if t.contains(rec.name.as_str())? {
            return Ok(None);
        }
        rec.num = Store::next_number(txn, "next_channel")?;
        t.insert(rec.name.as_str(), &rec)?;
        Ok(Some(rec.clone()))
    })
}

/// Set channel `name`'s description (empty clears it). The record is
/// read in the transaction, so a concurrent change of another field is
/// not undone. Blocking.
pub fn describe(
    store: &Store,
    catalog: &Catalog,
    name: &str,
    description: String,
) -> Result<ChannelRecord, ChannelError> {
    let rec = rewrite(store, name, |rec| rec.description.clone_from(&description))?
        .ok_or_else(|| ChannelError::Unknown(name.to_string()))?;
    catalog.put_channel(rec.clone());
    Ok(rec)
}

/// Change stored channel `name` with `change`; `None` when there is none.
fn rewrite(
    store: &Store,
    name: &str,
    mut change: impl FnMut(&mut ChannelRecord),
) -> Result<Option<ChannelRecord>, StoreError> {
    store.write_if(|txn| {
        let mut t = CHANNELS.open(txn)?;
        let Some(mut rec) = t.get(name)? else {
            return Ok(None);
        };
        change(&mut rec);
        t.insert(rec.name.as_str(), &rec)?;
        Ok(Some(rec))
    })
}

/// A change of one channel member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Add the member (or keep it); `Some` label sets its label, `None`
    /// leaves the label as it is.
    Add(Option<String>),
    /// Remove the member and its label.
    Remove,
}

/// Add or remove member `(channel, device, sensor)` and its label in one
/// transaction, then tell the catalog. Blocking.
pub fn change_member(
    store: &Store,
    catalog: &Catalog,
    key: (u32, u32, u32),
    change: &Membership,
) -> Result<(), StoreError> {
    store.write(|txn| {
        {
            let mut t = txn.open_table(CHANNEL_MEMBERS)?;
            match change {
                Membership::Add(_) => t.insert(key, ())?,
                Membership::Remove => t.remove(key)?,
            };
        }
        match change {
            Membership::Add(Some(l)) => channel_labels::put(txn, key, l)?,
            Membership::Add(None) => {}
            Membership::Remove => {
                channel_labels::remove(txn, key)?;
                crate::alerts::forget_member(txn, catalog, key.0, key.1, key.2)?;
            }
        }
        Ok::<_, StoreError>(())
    })?;
    match change {
        Membership::Add(_) => catalog.add_member(key.0, key.1, key.2),
        Membership::Remove => catalog.remove_member(key.0, key.1, key.2),
    }
    Ok(())
}

impl From<ChannelError> for WireError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Exists(name) => {
                WireError::new(409, "channel_exists", format!("channel '{name}' exists"))
            }
            ChannelError::Unknown(name) => WireError::new(
                404,
                "unknown_channel",
                format!("no channel '{}'", log_safe(&name)),
            ),
            ChannelError::Quota(q) => q.into(),
            ChannelError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let i = Item {
            added: 5,
            time: 3,
            device: 9,
            sensor: SensorId::parse("S2").unwrap(),
            value: Value::Str("x".into()),
        };
        assert_eq!(Item::decode(&i.encode()), Ok(i));
    }
}
