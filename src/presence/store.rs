//! Presence storage: everything the writer stores for presence, and the
//! encodings it uses, in one place.
//!
//! - `last_seen`: a device's last contact ([`record_contacts`]), written
//!   with the readings that made it and with the digest's results.
//! - `presence`: each device's state, `(flags, since)` with the flags
//!   encoded by [`Flags`] (and decoded only there).
//! - `presence_events`: the feed, numbered from 1 (`meta`
//!   [`NEXT_EVENT`]), trimmed to `events_kept` ([`trim_events`]).
//! - the owner's notices (`presence_notify`: a device and a channel to
//!   tell), sent through [`crate::notify::deliver`].
//!
//! [`record_changes`] stores a sweep's changes in the writer's
//! transaction: state, event and notices together, so a change is told
//! exactly as often as it is recorded.

use super::Change;
use crate::auth::{Action, Directory};
use crate::catalog::Catalog;
use crate::codec::names::write_csv_text;
use crate::codec::{timefmt, Micros, SensorId, SensorKind, Value};
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::Records;
use crate::store::{
    StoreError, LAST_SEEN, META, PRESENCE, PRESENCE_EVENTS, PRESENCE_NOTIFY, PRESENCE_TARGETS,
};
use crate::{channels, inbox, notify};

/// `meta` key: index of the next presence event (events start at 1).
pub const NEXT_EVENT: &str = "next_presence_event";
/// `meta` key: index of the oldest presence event kept.
pub const FIRST_EVENT: &str = "first_presence_event";

/// On a channel, a presence change is an item of this sensor (`S0`) whose
/// value is `online` or `offline`.
pub const CHANNEL_SENSOR: SensorId = SensorId {
    kind: SensorKind::Str,
    number: 0,
};

/// `presence_events`, read and written as [`Event`]s.
pub const EVENTS: Records<Event> = Records::of(PRESENCE_EVENTS);
record!(Event, u64);

/// A recorded presence change, listed at `GET /v1/presence/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it changed.
    pub time: Micros,
    /// Device number.
    pub device: u32,
    /// Came online (`true`) or went offline.
    pub online: bool,
    /// Last contact when it changed.
    pub last_seen: Micros,
    /// Where the owner was told: `inbox:<seq>`, `inbox_full`,
    /// `channel:<name>`, space-separated; empty when nowhere.
    pub delivery: String,
}

/// CSV header of event listings.
pub const EVENTS_HEADER: &str = "index,time,device,state,last_seen,delivery\n";

impl Event {
    /// Encode for `presence_events`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        varint::put_i64(&mut out, self.time);
        varint::put_u64(&mut out, u64::from(self.device));
        out.push(u8::from(self.online));
        varint::put_i64(&mut out, self.last_seen);
        varint::put_bytes(&mut out, self.delivery.as_bytes());
        out
    }

    /// Decode from `presence_events`.
    pub fn decode(bytes: &[u8]) -> Result<Event, Corrupt> {
        let mut r = Reader::new(bytes);
        Ok(Event {
            time: r.i64()?,
            device: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            online: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Corrupt),
            },
            last_seen: r.i64()?,
            delivery: String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt)?,
        })
    }

    /// Append `index,time,device,state,last_seen,delivery\n`.
    pub fn write_csv(&self, index: u64, device_id: &str, out: &mut String) {
        out.push_str(&index.to_string());
        out.push(',');
        timefmt::write_time(self.time, out);
        out.push(',');
        write_csv_text(device_id, out);
        out.push(',');
        out.push_str(if self.online { "online" } else { "offline" });
        out.push(',');
        timefmt::write_time(self.last_seen, out);
        out.push(',');
        write_csv_text(&self.delivery, out);
        out.push('\n');
    }
}

/// Events with index > `after` (or, with `since`, from the first event at
/// or after that time), at most `limit`, oldest first. Blocking.
pub fn read_events(
    store: &crate::store::Store,
    after: u64,
    since: Option<Micros>,
    limit: usize,
) -> Result<Vec<(u64, Event)>, StoreError> {
    store.read(|txn| {
        let t = EVENTS.read(txn)?;
        let mut out = Vec::new();
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        for row in t.range(after + 1..)? {
            let (k, ev) = row?;
            if since.is_some_and(|s| ev.time < s) {
                continue;
            }
            out.push((k.value(), ev));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    })
}

/// Drop the oldest events so at most `keep` remain. Called by the writer
/// in the transaction that added events.
pub fn trim_events<'t>(txn: impl Into<crate::store::Tx<'t>>, keep: u64) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut meta = txn.open_table(META)?;
    let next = meta.get(NEXT_EVENT)?.map_or(1, |g| g.value());
    let first = meta.get(FIRST_EVENT)?.map_or(1, |g| g.value());
    let keep_from = next.saturating_sub(keep.max(1)).max(first);
    if keep_from > first {
        let mut t = EVENTS.open(txn)?;
        for i in first..keep_from {
            t.remove(i)?;
        }
        meta.insert(FIRST_EVENT, keep_from)?;
    }
    Ok(())
}

/// A device's stored presence flags (the `u8` of the `presence` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Online (bit 0).
    pub online: bool,
    /// Damped: needs twice the silence to go offline (bit 1).
    pub damped: bool,
}

impl Flags {
    /// The stored byte.
    pub fn bits(self) -> u8 {
        u8::from(self.online) | (u8::from(self.damped) << 1)
    }

    /// From the stored byte.
    pub fn from_bits(bits: u8) -> Flags {
        Flags {
            online: bits & 1 != 0,
            damped: bits & 2 != 0,
        }
    }
}

/// Record contacts: each device's `last_seen` becomes the later of the
/// stored one and the given time. Writer only.
pub fn record_contacts<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    contacts: impl IntoIterator<Item = (u32, Micros)>,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut last_seen = txn.open_table(LAST_SEEN)?;
    if let Some(pg) = last_seen.postgres() {
        // The same rule in two round trips, however many devices: look
        // them all up, write the later ones.
        let mut latest: std::collections::BTreeMap<u32, Micros> = Default::default();
        for (dev, t) in contacts {
            let e = latest.entry(dev).or_insert(t);
            *e = (*e).max(t);
        }
        let had = pg.get_many(latest.keys().copied())?;
        return pg.set_many(
            latest
                .iter()
                .zip(had)
                .filter(|((_, t), h)| h.as_ref().is_none_or(|g| g.value() < **t))
                .map(|((dev, t), _)| (*dev, Some(*t))),
        );
    }
    for (dev, t) in contacts {
        if last_seen.get(dev)?.is_none_or(|g| g.value() < t) {
            last_seen.insert(dev, t)?;
        }
    }
    Ok(())
}

/// What [`record_changes`] needs to tell owners.
pub struct Notices<'a> {
    /// Owners, devices and gateways, and the grants checked.
    pub directory: &'a Directory,
    /// Channels by name.
    pub catalog: &'a Catalog,
    /// Rows an inbox may hold.
    pub max_inbox: u64,
    /// Presence events kept; older ones are removed.
    pub events_kept: u64,
    /// Set when a notice queued an outbox row (the sender is woken after
    /// the commit).
    pub outbox_added: &'a std::cell::Cell<bool>,
}

/// Store presence changes in the writer's transaction: for each, the
/// state, the owner's notices and an event saying where they went; then
/// trim the feed. `now` is the channel items' add time. Returns whether
/// a channel got an item.
pub fn record_changes<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    changes: &[Change],
    now: Micros,
    to: &Notices<'_>,
) -> Result<bool, StoreError> {
    let txn = txn.into();
    if changes.is_empty() {
        return Ok(false);
    }
    let mut appended = false;
    let mut next = txn
        .open_table(META)?
        .get(NEXT_EVENT)?
        .map_or(1, |g| g.value());
    for c in changes {
        let flags = Flags {
            online: c.online,
            damped: c.damped,
        };
        txn.open_table(PRESENCE)?
            .insert(c.device, (flags.bits(), c.at))?;
        let delivery = tell_owner(txn, c, now, to)?;
        appended |= delivery.appended();
        let ev = Event {
            time: c.at,
            device: c.device,
            online: c.online,
            last_seen: c.last_seen,
            delivery: delivery.describe(),
        };
        EVENTS.open(txn)?.insert(next, &ev)?;
        next += 1;
    }
    txn.open_table(META)?.insert(NEXT_EVENT, next)?;
    trim_events(txn, to.events_kept)?;
    Ok(appended)
}

/// Send the owner's notices of one change (an inbox row for their chosen
/// device, an item on their chosen channel), each only while the owner
/// still has the access it needs (a withdrawn grant stops the notices at
/// once).
fn tell_owner<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    c: &Change,
    now: Micros,
    to: &Notices<'_>,
) -> Result<notify::Delivery, StoreError> {
    let txn = txn.into();
    let dir = to.directory;
    let Some(d) = dir.device_by_num(c.device) else {
        return Ok(notify::Delivery::default());
    };
    let (to_device, to_channel) = txn
        .open_table(PRESENCE_NOTIFY)?
        .get(d.owner.as_str())?
        .map(|g| (g.value().0.to_string(), g.value().1.to_string()))
        .unwrap_or_default();
    let hook = txn
        .open_table(PRESENCE_TARGETS)?
        .get(d.owner.as_str())?
        .and_then(|g| to.catalog.targets().by_id(g.value()))
        .filter(|t| dir.user_may_target(&d.owner, t));
    if to_device.is_empty() && to_channel.is_empty() && hook.is_none() {
        return Ok(notify::Delivery::default());
    }
    let word = if c.online { "online" } else { "offline" };
    let target = dir
        .device(&to_device)
        .filter(|t| dir.user_may_device(&d.owner, Action::SendToDevice, t.num));
    let row = inbox::Row {
        kind: inbox::Kind::Message,
        time: c.at,
        from: format!("presence:{}", d.id),
        sensor: String::new(),
        value: word.to_string(),
        device: String::new(),
    };
    let ch = to
        .catalog
        .channel(&to_channel)
        .filter(|ch| dir.user_may_channel(&d.owner, Action::ManageOwned, ch));
    let notice = notify::Notice {
        inbox: target.map(|t| (t.num, &row)),
        channel: ch.as_deref().map(|ch| {
            let item = channels::Item {
                added: now,
                time: c.at,
                device: c.device,
                sensor: CHANNEL_SENSOR,
                value: Value::Str(word.into()),
            };
            (ch, item)
        }),
        target: hook.as_deref().map(|t| {
            let note = crate::outbox::Notification {
                kind: "presence",
                time: c.at,
                source: d.id.clone(),
                device: d.id.clone(),
                sensor: String::new(),
                value: word.to_string(),
                text: format!("{} is {word}", d.id),
            };
            (t, note)
        }),
        max_waiting: to.catalog.targets().max_waiting(),
    };
    let delivery = notify::deliver(txn, dir, to.max_inbox, notice)?;
    if delivery.target.is_some() {
        to.outbox_added.set(true);
    }
    Ok(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_as_stored_before() {
        for bits in 0..4u8 {
            assert_eq!(Flags::from_bits(bits).bits(), bits);
        }
        let f = Flags {
            online: true,
            damped: false,
        };
        assert_eq!(f.bits(), 1);
        assert_eq!(
            Flags::from_bits(2),
            Flags {
                online: false,
                damped: true
            }
        );
    }
}
