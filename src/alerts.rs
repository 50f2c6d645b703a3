//! Alerts: a min/max threshold on one numeric sensor of one device.
//!
//! The normal range is `min <= value <= max` (either bound optional,
//! both inclusive). An alert **fires on the transition** from armed into
//! the alarm range (below `min` or above `max`) and then stays quiet while
//! the value stays in alarm. It **re-arms** when the value is back inside
//! the normal range by at least `hysteresis` (`min + h <= v <= max - h`),
//! so a value stuck at 101 fires once, and a value wobbling around a
//! bound does not flood the inbox. A new alert starts armed.
//!
//! Management ([`create`], [`delete`]) is here too, as blocking functions
//! returning [`AlertError`]; `api/alerts.rs` parses, authorises and calls
//! them.

use crate::catalog::Catalog;
use crate::codec::{timefmt, Micros, SensorId, Value};
use crate::error::WireError;
use crate::quotas::QuotaExceeded;
use crate::store::chunk;
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{
    AlertRecord, Records, Store, StoreError, ALERTS, ALERT_EVENTS, ALERT_MEMBER_STATE, ALERT_STATE,
    CHANNEL_MEMBERS,
};

/// A recorded firing, listed at `GET /v1/alerts/NAME/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The reading's time.
    pub time: Micros,
    /// Device number.
    pub device: u32,
    /// Sensor.
    pub sensor: SensorId,
    /// The value that fired it.
    pub value: Value,
    /// The text sent.
    pub text: String,
    /// `inbox:<seq>` when delivered to an inbox, `inbox_full` when that
    /// inbox was full (the event is kept either way), empty otherwise.
    pub delivery: String,
}

/// `alert_events`, read and written as [`Event`]s.
pub const EVENTS: Records<Event> = Records::of(ALERT_EVENTS);
record!(Event, (u32, u64));

/// CSV header of event listings.
pub const EVENTS_HEADER: &str = "n,time,device,sensor,value,text,delivery\n";

impl Event {
    /// Encode for `alert_events`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        varint::put_i64(&mut out, self.time);
        varint::put_u64(&mut out, u64::from(self.device));
        varint::put_u64(&mut out, u64::from(self.sensor.code()));
        chunk::put_value(&mut out, &self.value, &mut chunk::Prev::default());
        varint::put_bytes(&mut out, self.text.as_bytes());
        varint::put_bytes(&mut out, self.delivery.as_bytes());
        out
    }

    /// Decode from `alert_events`.
    pub fn decode(bytes: &[u8]) -> Result<Event, Corrupt> {
        let mut r = Reader::new(bytes);
        let time = r.i64()?;
        let device = u32::try_from(r.u64()?).map_err(|_| Corrupt)?;
        let sensor =
            SensorId::from_code(u32::try_from(r.u64()?).map_err(|_| Corrupt)?).ok_or(Corrupt)?;
        let value = chunk::get_value(&mut r, sensor.kind, &mut chunk::Prev::default())?;
        let s = |r: &mut Reader<'_>| String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt);
        Ok(Event {
            time,
            device,
            sensor,
            value,
            text: s(&mut r)?,
            delivery: s(&mut r)?,
        })
    }

    /// Append one CSV row (`device_id` resolved by the caller).
    pub fn write_csv(&self, n: u64, device_id: &str, out: &mut String) {
        use crate::codec::names::write_csv_text;
        out.push_str(&n.to_string());
        out.push(',');
        timefmt::write_time(self.time, out);
        out.push(',');
        write_csv_text(device_id, out);
        out.push(',');
        out.push_str(&self.sensor.to_string());
        out.push(',');
        self.value.write_csv(out);
        out.push(',');
        write_csv_text(&self.text, out);
        out.push(',');
        write_csv_text(&self.delivery, out);
        out.push('\n');
    }
}

/// Store whether alert `id` is fired (`alert_state`: 1 fired, 0 armed).
/// Writer only, with the digest's results.
pub fn store_state<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    id: u32,
    fired: bool,
) -> Result<(), StoreError> {
    let txn = txn.into();
    txn.open_table(ALERT_STATE)?.insert(id, u8::from(fired))?;
    Ok(())
}

/// Store whether member `(device, sensor)` of channel alert `id` on
/// `channel` is fired (`alert_member_state`: a row while fired). Writer
/// only, with a digest result that may be older than the membership: a
/// member is stored fired only while it is still in the channel (in this
/// transaction: `forget_member` ran in a removal's) and the catalog still
/// holds it fired (a member removed, perhaps added again and starting
/// armed, was reset there), so its alarm cannot come back after it left.
pub fn store_member_state<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    catalog: &crate::catalog::Catalog,
    key: (u32, u32, u32),
    channel: u32,
    fired: bool,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let (id, dev, sensor) = key;
    let fired = fired
        && txn
            .open_table(CHANNEL_MEMBERS)?
            .get((channel, dev, sensor))?
            .is_some()
        && catalog
            .alerts_on_channel(channel)
            .iter()
            .any(|a| a.rec.id == id && a.member_fired(dev, sensor));
    let mut t = txn.open_table(ALERT_MEMBER_STATE)?;
    if fired {
        t.insert(key, ())?;
    } else {
        t.remove(key)?;
    }
    Ok(())
}

/// The fired members `(alert, device, sensor)` of channel alerts, read
/// at start and after a reopen.
pub fn fired_members<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
) -> Result<Vec<(u32, u32, u32)>, StoreError> {
    let txn = txn.into();
    let mut out = Vec::new();
    for row in txn.open_table(ALERT_MEMBER_STATE)?.iter()? {
        out.push(row?.0.value());
    }
    Ok(out)
}

/// Remove alert `id`'s state (whole and per member), in the transaction
/// that removes the alert.
pub fn remove_state<'t>(txn: impl Into<crate::store::Tx<'t>>, id: u32) -> Result<(), StoreError> {
    let txn = txn.into();
    txn.open_table(ALERT_STATE)?.remove(id)?;
    let mut t = txn.open_table(ALERT_MEMBER_STATE)?;
    let keys: Vec<_> = t
        .range((id, 0, 0)..=(id, u32::MAX, u32::MAX))?
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for k in keys {
        t.remove(k)?;
    }
    Ok(())
}

/// Remove device `dev`'s member states from the channel alerts `ids`,
/// in the transaction that deletes the device.
pub fn remove_device_states<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    ids: &[u32],
    dev: u32,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut t = txn.open_table(ALERT_MEMBER_STATE)?;
    for &id in ids {
        let keys: Vec<_> = t
            .range((id, dev, 0)..=(id, dev, u32::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for k in keys {
            t.remove(k)?;
        }
    }
    Ok(())
}

/// Forget member `(dev, sensor)`'s state in the alerts on `channel`, in
/// the transaction that removes it from the channel: a member that left
/// is not in alarm, and one added again starts armed.
pub fn forget_member<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    catalog: &crate::catalog::Catalog,
    channel: u32,
    dev: u32,
    sensor: u32,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut t = txn.open_table(ALERT_MEMBER_STATE)?;
    for a in catalog.alerts() {
        if a.rec.channel == Some(channel) {
            t.remove((a.rec.id, dev, sensor))?;
        }
    }
    Ok(())
}

/// The alerts stored as fired, read at start and after a reopen.
pub fn fired_ids<'t>(txn: impl Into<crate::store::Tx<'t>>) -> Result<Vec<u32>, StoreError> {
    let txn = txn.into();
    let mut fired = Vec::new();
    for row in txn.open_table(ALERT_STATE)?.iter()? {
        let (k, v) = row?;
        if v.value() == 1 {
            fired.push(k.value());
        }
    }
    Ok(fired)
}

/// Append a firing to alert `alert`'s events, numbered one past its last
/// (from 1). Returns its number. Writer only, in digest-log order, so a
/// firing re-derived after a crash gets the same number.
pub fn record_event<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    alert: u32,
    ev: &Event,
) -> Result<u64, StoreError> {
    let txn = txn.into();
    let mut events = EVENTS.open(txn)?;
    let n = events
        .keys((alert, 0)..=(alert, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(1, |k| k.value().1 + 1);
    events.insert((alert, n), ev)?;
    Ok(n)
}

/// What a value does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changes.
    Stay,
    /// Armed → fired: tell the targets.
    Fire,
    /// Fired → armed.
    Rearm,
}

/// The numeric value of a reading an alert can watch (`I`, `N`).
pub fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Num(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// Is `v` in the alarm range?
pub fn in_alarm(a: &AlertRecord, v: f64) -> bool {
    a.min.is_some_and(|m| v < m) || a.max.is_some_and(|m| v > m)
}

/// The transition `v` causes for an alert that is `fired` (or armed).
pub fn evaluate(a: &AlertRecord, fired: bool, v: f64) -> Transition {
    if !fired {
        return if in_alarm(a, v) {
            Transition::Fire
        } else {
            Transition::Stay
        };
    }
    let h = a.hysteresis;
    let back = a.min.is_none_or(|m| v >= m + h) && a.max.is_none_or(|m| v <= m - h);
    if back {
        Transition::Rearm
    } else {
        Transition::Stay
    }
}

/// The text a firing of a channel alert sends: the message and which
/// member why, e.g. `It's too hot! (gh3 N1: 101.2 > 100)`.
pub fn describe_member(a: &AlertRecord, device: &str, sensor: SensorId, v: f64) -> String {
    match (a.min, a.max) {
        (Some(m), _) if v < m => format!("{} ({device} {sensor}: {v} < {m})", a.message),
        (_, Some(m)) if v > m => format!("{} ({device} {sensor}: {v} > {m})", a.message),
        _ => format!("{} ({device} {sensor})", a.message),
    }
}

/// The text a firing sends: the message and why, e.g.
/// `It's too hot! (101.2 > 100)`.
pub fn describe(a: &AlertRecord, v: f64) -> String {
    match (a.min, a.max) {
        (Some(m), _) if v < m => format!("{} ({v} < {m})", a.message),
        (_, Some(m)) if v > m => format!("{} ({v} > {m})", a.message),
        _ => a.message.clone(),
    }
}

/// Why an alert management operation did not happen (`error.rs` makes
/// each a wire error).
#[derive(Debug)]
pub enum AlertError {
    /// An alert of that name exists: `409 alert_exists`.
    Exists(String),
    /// Its owner is at `[quotas] alerts_per_user`.
    Quota(QuotaExceeded),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for AlertError {
    fn from(e: StoreError) -> Self {
        AlertError::Store(e)
    }
}

impl From<QuotaExceeded> for AlertError {
    fn from(e: QuotaExceeded) -> Self {
        AlertError::Quota(e)
    }
}

/// Create alert `rec` (its `id` is assigned) for an owner whose
/// `[quotas] alerts_per_user` is `quota` (0: none): counted and created
/// under the quota lock, held until the catalog holds the new alert,
/// which starts armed. Blocking.
pub fn create(
    store: &Store,
    catalog: &Catalog,
    rec: AlertRecord,
    quota: u64,
) -> Result<AlertRecord, AlertError> {
    let _quota = crate::quotas::guard();
    let have = catalog
        .alerts()
        .iter()
        .filter(|a| a.rec.owner == rec.owner)
        .count() as u64;
    crate::quotas::check("alerts", "alerts_per_user", quota, have, 1)?;
    let name = rec.name.clone();
    let rec = insert_new(store, rec)?.ok_or(AlertError::Exists(name))?;
    catalog.put_alert(rec.clone(), false);
    Ok(rec)
}

/// Store `rec` under a new id; `None` when its name is taken.
fn insert_new(store: &Store, mut rec: AlertRecord) -> Result<Option<AlertRecord>, StoreError> {
    store.write_if(|txn| {
        let mut t = ALERTS.open(txn)?;
        if t.contains(rec.name.as_str())? {
            return Ok(None);
        }
        rec.id = Store::next_number(txn, "next_alert")?;
        t.insert(rec.name.as_str(), &rec)?;
        Ok(Some(rec.clone()))
    })
}

/// Delete alert `name` (id `id`) and its state (whole and per member) in
/// one transaction, then forget it in the catalog. Blocking.
pub fn delete(store: &Store, catalog: &Catalog, id: u32, name: &str) -> Result<(), StoreError> {
    store.write(|txn| {
        ALERTS.open(txn)?.remove(name)?;
        remove_state(txn, id)?;
        Ok::<_, StoreError>(())
    })?;
    catalog.remove_alert(name);
    Ok(())
}

impl From<AlertError> for WireError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Exists(name) => {
                WireError::new(409, "alert_exists", format!("alert '{name}' exists"))
            }
            AlertError::Quota(q) => q.into(),
            AlertError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(min: Option<f64>, max: Option<f64>, h: f64) -> AlertRecord {
        AlertRecord {
            id: 1,
            name: "a".into(),
            owner: "o".into(),
            device: 1,
            sensor: 1,
            min,
            max,
            hysteresis: h,
            message: "It's too hot!".into(),
            to_device: None,
            to_channel: None,
            to_target: None,
            created: 0,
            channel: None,
        }
    }

    fn fires(a: &AlertRecord, series: &[f64]) -> usize {
        let mut fired = false;
        let mut n = 0;
        for &v in series {
            match evaluate(a, fired, v) {
                Transition::Fire => {
                    fired = true;
                    n += 1;
                }
                Transition::Rearm => fired = false,
                Transition::Stay => {}
            }
        }
        n
    }

    #[test]
    fn edge_and_rearm_table() {
        let band = alert(Some(40.0), Some(100.0), 0.0);
        let cases: &[(&[f64], usize)] = &[
            (&[50.0, 101.0, 102.0, 99.0, 50.0, 105.0], 2),
            (&[101.0; 360], 1),
            (&[100.0, 40.0, 70.0], 0),
            (&[39.9, 100.1], 1),
            (&[39.0, 50.0, 101.0], 2),
            (&[], 0),
        ];
        for (series, want) in cases {
            assert_eq!(fires(&band, series), *want, "{series:?}");
        }
        // With hysteresis 2, 99.5 does not re-arm; 97 does.
        let h = alert(None, Some(100.0), 2.0);
        assert_eq!(fires(&h, &[101.0, 99.5, 101.0, 97.0, 101.0]), 2);
    }

    #[test]
    fn text_says_why() {
        let a = alert(Some(40.0), Some(100.0), 0.0);
        assert_eq!(describe(&a, 101.2), "It's too hot! (101.2 > 100)");
        assert_eq!(describe(&a, 3.0), "It's too hot! (3 < 40)");
    }
}
