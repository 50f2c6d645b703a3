//! Deleting a device: refused at once, removed in bounded batches.
//!
//! [`delete_device`] (a management request on a blocking thread, or
//! `overlord device delete`) removes in one transaction the device record
//! and everything small that hangs on it — its inbox (and its rows in its
//! gateway's inbox), command records, grants, retention settings, sensor
//! labels, channel memberships and the alerts that watch it — and writes
//! a tombstone in `deleted_devices`; then the in-memory directory,
//! catalog, presence and retention forget it, so its token is refused
//! (`401`) and its id is unknown (`404`) from the reply on. Its readings,
//! which may be millions, are left to the writer: [`sweep_step`] removes
//! at most [`SWEEP_BATCH`] rows of `readings`, `aggregates` and `sensors`
//! per commit, then its `last_seen` and `presence` rows, like retention's
//! steps. Nothing of it can be read meanwhile (every read goes through
//! the directory), and a new device with the same id gets a new number.
//!
//! The tombstone stays: readings that a request authenticated just
//! before the deletion hands to the writer just after are removed by the
//! next pass (there is one at every start).
//!
//! [`delete_channel`] removes a channel whole in one transaction: its
//! record, members, grants and items (at most its `retention`).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::app::App;
use crate::auth::KIND_CHANNEL;
use crate::auth::KIND_DEVICE;
use crate::codec::timefmt;
use crate::error::WireError;
use crate::store::{
    ChannelRecord, DeviceRecord, StoreError, AGGREGATES, ALERTS, CHANNELS, CHANNEL_ITEMS,
    CHANNEL_LABELS, CHANNEL_MEMBERS, CHANNEL_META, COMMANDS, COMMAND_META, DELETED_DEVICES,
    DEVICES, GRANTS, LAST_SEEN, PRESENCE, PRESENCE_NOTIFY, READINGS, RETENTION, SEALED, SENSORS,
    SENSOR_LABELS, USERS,
};

/// Rows the writer removes per commit at most.
pub const SWEEP_BATCH: usize = 5_000;

/// Whether deleted devices may have rows left (the writer's cue).
#[derive(Debug)]
pub struct Sweep {
    pending: AtomicBool,
}

impl Default for Sweep {
    fn default() -> Self {
        // One pass at every start.
        Sweep {
            pending: AtomicBool::new(true),
        }
    }
}

impl Sweep {
    /// Does the writer have rows to remove?
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// A device was deleted (after the commit).
    pub fn kick(&self) {
        self.pending.store(true, Ordering::Release);
    }
}

/// What [`delete_device`] removed at once.
#[derive(Debug, Default)]
pub struct Removed {
    /// Inbox rows.
    pub inbox_rows: u64,
    /// Channel memberships.
    pub memberships: usize,
    /// Alerts that watched it.
    pub alerts: usize,
}

/// Remove every key of `def` from `from` to `to`, at most `*left`;
/// returns whether the range is empty now.
macro_rules! remove_range {
    ($txn:expr, $def:expr, $from:expr, $to:expr, $left:expr) => {{
        let mut t = $txn.open_table($def)?;
        let keys: Vec<_> = t
            .range($from..=$to)?
            .take($left.saturating_add(1))
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        let all = keys.len() <= *$left;
        for k in keys.into_iter().take(*$left) {
            t.remove(k)?;
            *$left -= 1;
        }
        all
    }};
}

/// Delete device `d` now (blocking): `409 device_has_children` for a
/// gateway with devices below it (move or delete those first).
pub fn delete_device(app: &App, d: &DeviceRecord) -> Result<Removed, WireError> {
    let dir = &app.directory;
    if let Some(child) = dir.devices().iter().find(|c| c.meta.parent == Some(d.num)) {
        return Err(WireError::new(
            409,
            "device_has_children",
            format!(
                "device '{}' is below it: move or delete the devices below a gateway first",
                child.id
            ),
        ));
    }
    let memberships = app.catalog.memberships_of_device(d.num);
    let alerts: Vec<_> = app
        .catalog
        .alerts()
        .into_iter()
        .filter(|a| a.rec.device == d.num)
        .collect();
    let inbox_rows = remove_rows(app, d, &memberships, &alerts)?;
    let num = d.num;
    // The store first, then memory (the catalog is never ahead of it).
    dir.remove_device(num);
    dir.remove_grants_to(&format!("device:{}", d.id));
    for (ch, sensor) in &memberships {
        app.catalog.remove_member(*ch, num, *sensor);
    }
    for a in &alerts {
        app.catalog.remove_alert(&a.rec.name);
    }
    for a in app.catalog.alerts() {
        if a.rec.channel.is_some() {
            for (_, sensor) in &memberships {
                a.set_member_fired(num, *sensor, false);
            }
        }
    }
    app.presence.forget(num);
    app.retention.forget_device(num);
    app.deletions.kick();
    Ok(Removed {
        inbox_rows,
        memberships: memberships.len(),
        alerts: alerts.len(),
    })
}

/// The transaction of [`delete_device`]: the record, a tombstone, and
/// every small row that hangs on the device. Returns the inbox rows gone.
fn remove_rows(
    app: &App,
    d: &DeviceRecord,
    memberships: &[(u32, u32)],
    alerts: &[std::sync::Arc<crate::catalog::AlertEntry>],
) -> Result<u64, StoreError> {
    let (inbox_of, below) = crate::inbox::route(&app.directory, d.num);
    let num = d.num;
    let inbox_rows = app.store.write(|txn| {
        DEVICES.open(txn)?.remove(d.id.as_str())?;
        txn.open_table(DELETED_DEVICES)?
            .insert(num, timefmt::now_micros())?;
        let inbox_rows = crate::inbox::remove_device(txn, num, inbox_of, &below)?;
        let mut all = usize::MAX;
        remove_range!(txn, COMMANDS, (num, 0), (num, u64::MAX), &mut all);
        txn.open_table(COMMAND_META)?.remove(num)?;
        remove_grants(txn, KIND_DEVICE, num)?;
        remove_grants_to(txn, &format!("device:{}", d.id))?;
        remove_range!(txn, RETENTION, (num, 0), (num, u32::MAX), &mut all);
        remove_range!(txn, SENSOR_LABELS, (num, 0), (num, u32::MAX), &mut all);
        for (ch, sensor) in memberships {
            txn.open_table(CHANNEL_MEMBERS)?
                .remove((*ch, num, *sensor))?;
            crate::channel_labels::remove(txn, (*ch, num, *sensor))?;
        }
        for a in alerts {
            ALERTS.open(txn)?.remove(a.rec.name.as_str())?;
            crate::alerts::remove_state(txn, a.rec.id)?;
        }
        crate::alerts::remove_device_states(txn, &channel_alert_ids(app), num)?;
        Ok::<_, StoreError>(inbox_rows)
    })?;
    Ok(inbox_rows)
}

/// The ids of every channel alert.
fn channel_alert_ids(app: &App) -> Vec<u32> {
    app.catalog
        .alerts()
        .iter()
        .filter(|a| a.rec.channel.is_some())
        .map(|a| a.rec.id)
        .collect()
}

/// One bounded step of the writer: remove up to [`SWEEP_BATCH`] rows of
/// deleted devices' readings, aggregates and sensors, then their
/// presence rows. Clears the cue when none are left.
pub fn sweep_step<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    sweep: &Sweep,
) -> Result<(), StoreError> {
    let txn = txn.into();
    if !sweep.pending() {
        return Ok(());
    }
    let doomed: Vec<u32> = txn
        .open_table(DELETED_DEVICES)?
        .iter()?
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    let mut left = SWEEP_BATCH;
    let m = u32::MAX;
    for num in doomed {
        let done = remove_range!(
            txn,
            READINGS,
            (num, 0, 0, 0),
            (num, m, m, u16::MAX),
            &mut left
        ) && remove_range!(
            txn,
            SEALED,
            (num, 0, 0, 0),
            (num, m, m, u16::MAX),
            &mut left
        ) && remove_range!(txn, AGGREGATES.def(), (num, 0, 0), (num, m, m), &mut left)
            && remove_range!(txn, SENSORS, (num, 0), (num, m), &mut left);
        if !done {
            return Ok(());
        }
        txn.open_table(LAST_SEEN)?.remove(num)?;
        txn.open_table(PRESENCE)?.remove(num)?;
    }
    sweep.pending.store(false, Ordering::Release);
    Ok(())
}

/// Remove every grant to `grantee` (a full scan of `grants`: deletions
/// are rare, grants few).
fn remove_grants_to<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    grantee: &str,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut grants = txn.open_table(GRANTS)?;
    let mut doomed = Vec::new();
    for r in grants.iter()? {
        let (k, _) = r?;
        let (kind, num, to) = k.value();
        if to == grantee {
            doomed.push((kind, num));
        }
    }
    for (kind, num) in doomed {
        grants.remove((kind, num, grantee))?;
    }
    Ok(())
}

/// Remove every grant on `(kind, num)`.
fn remove_grants<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    kind: u8,
    num: u32,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut grants = txn.open_table(GRANTS)?;
    let keys: Vec<String> = grants
        .range((kind, num, "")..)?
        .map_while(|r| match r {
            Ok((k, _)) if k.value().0 == kind && k.value().1 == num => {
                Some(Ok(k.value().2.to_string()))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for g in &keys {
        grants.remove((kind, num, g.as_str()))?;
    }
    Ok(())
}

/// Delete channel `ch` (blocking): record, members and their labels,
/// the alerts on the channel, grants, items and their counters in one
/// transaction, returning how many items went.
/// The catalog forgets it while the transaction still holds redb's write
/// lock, so no writer commit between the two can append an item to it
/// (`writer::effects` skips a channel the catalog does not know); a
/// failed commit puts it back.
pub fn delete_channel(app: &App, ch: &ChannelRecord) -> Result<u64, StoreError> {
    let members = app.catalog.members_of(ch.num);
    let num = ch.num;
    let watching = app.catalog.alerts_on_channel(num);
    let forgotten = std::cell::Cell::new(false);
    let res = app.store.write(|txn| {
        CHANNELS.open(txn)?.remove(ch.name.as_str())?;
        for a in &watching {
            ALERTS.open(txn)?.remove(a.rec.name.as_str())?;
            crate::alerts::remove_state(txn, a.rec.id)?;
        }
        // The members as stored, not as this node's catalog has them (a
        // member added on another node meanwhile goes too).
        let mut gone = usize::MAX;
        remove_range!(
            txn,
            CHANNEL_MEMBERS,
            (num, 0, 0),
            (num, u32::MAX, u32::MAX),
            &mut gone
        );
        let mut labels = usize::MAX;
        remove_range!(
            txn,
            CHANNEL_LABELS,
            (num, 0, 0),
            (num, u32::MAX, u32::MAX),
            &mut labels
        );
        remove_grants(txn, KIND_CHANNEL, num)?;
        let mut all = usize::MAX;
        remove_range!(txn, CHANNEL_ITEMS, (num, 0), (num, u64::MAX), &mut all);
        txn.open_table(CHANNEL_META)?.remove(num)?;
        let items = (usize::MAX - all) as u64;
        app.catalog.remove_channel(num);
        forgotten.set(true);
        Ok::<_, StoreError>(items)
    });
    let items = match res {
        Ok(items) => items,
        // Put back only what was taken out (a transaction refused at its
        // start never got that far).
        Err(e) if !forgotten.get() => return Err(e),
        Err(e) => {
            app.catalog.put_channel(ch.clone());
            for (dev, sensor) in &members {
                app.catalog.add_member(num, *dev, *sensor);
            }
            return Err(e);
        }
    };
    for a in &watching {
        app.catalog.remove_alert(&a.rec.name);
    }
    app.directory.remove_grants_on(KIND_CHANNEL, num);
    Ok(items)
}

/// What [`delete_user`] removed with the user.
#[derive(Debug, Default)]
pub struct UserRemoved {
    /// Devices (with all their data).
    pub devices: usize,
    /// Channels.
    pub channels: usize,
    /// Alerts (besides those on their devices).
    pub alerts: usize,
    /// Files.
    pub files: usize,
}

/// Delete user `name` (blocking). Without `cascade`, a user who owns
/// devices, channels, alerts or files is refused (`409 user_owns_things`);
/// with it, those go first (devices below a gateway before it; one
/// transaction each, so an interrupted cascade is finished by running it
/// again). Then the record, the grants to them and their presence-notice
/// setting, in one transaction; their tokens and sessions stop at once.
/// The last administrator is never deleted (`409 last_administrator`).
pub fn delete_user(app: &App, name: &str, cascade: bool) -> Result<UserRemoved, WireError> {
    let dir = &app.directory;
    let Some(u) = dir.user(name) else {
        return Err(WireError::new(
            404,
            "unknown_user",
            format!("no user '{}'", crate::codec::names::clip(name)),
        ));
    };
    if u.role == crate::store::Role::Administrator && dir.count_administrators() <= 1 {
        return Err(WireError::new(
            409,
            "last_administrator",
            "the last administrator cannot be deleted",
        ));
    }
    let Owned {
        devices,
        channels,
        alerts,
        files,
    } = owned(app, name, cascade)?;
    let removed = UserRemoved {
        devices: devices.len(),
        channels: channels.len(),
        alerts: alerts.len(),
        files: files.len(),
    };
    for a in &alerts {
        remove_alert(app, a)?;
    }
    for c in &channels {
        delete_channel(app, c)?;
    }
    for f in &files {
        app.files.delete(&app.store, &f.name)?;
    }
    for d in &devices {
        delete_device(app, d)?;
    }
    remove_user_rows(app, name)?;
    dir.remove_user(name);
    Ok(removed)
}

/// What a user owns, devices below a gateway before it.
struct Owned {
    devices: Vec<std::sync::Arc<DeviceRecord>>,
    channels: Vec<std::sync::Arc<ChannelRecord>>,
    alerts: Vec<std::sync::Arc<crate::catalog::AlertEntry>>,
    files: Vec<std::sync::Arc<crate::store::FileRecord>>,
}

/// What `name` owns (alerts: those not on their own devices, which go
/// with the device); refused unless `cascade` when there is anything, or
/// when another user's device is below one of their gateways.
fn owned(app: &App, name: &str, cascade: bool) -> Result<Owned, WireError> {
    let dir = &app.directory;
    let mut devices: Vec<_> = dir
        .devices()
        .into_iter()
        .filter(|d| d.owner == name)
        .collect();
    let channels: Vec<_> = app
        .catalog
        .channels()
        .into_iter()
        .filter(|c| c.owner == name)
        .collect();
    let alerts: Vec<_> = app
        .catalog
        .alerts()
        .into_iter()
        .filter(|a| a.rec.owner == name && !devices.iter().any(|d| d.num == a.rec.device))
        .collect();
    let files: Vec<_> = app
        .files
        .all()
        .into_iter()
        .filter(|f| f.owner == name)
        .collect();
    let nothing =
        devices.is_empty() && channels.is_empty() && alerts.is_empty() && files.is_empty();
    if !cascade && !nothing {
        return Err(WireError::new(
            409,
            "user_owns_things",
            format!(
                "'{name}' owns {} devices, {} channels, {} alerts and {} files: give them away (POST /v1/devices/ID/owner), delete them, or add cascade=true",
                devices.len(), channels.len(), alerts.len(), files.len()
            ),
        ));
    }
    // A gateway goes after the devices below it, which must all be
    // this user's (another user's device is not deleted with it).
    if let Some(d) = dir.devices().iter().find(|c| {
        c.owner != name
            && c.meta
                .parent
                .is_some_and(|p| devices.iter().any(|g| g.num == p))
    }) {
        return Err(WireError::new(
            409,
            "device_has_children",
            format!(
                "device '{}' of another user is below one of theirs: move it first",
                d.id
            ),
        ));
    }
    let depth = |d: &DeviceRecord| {
        let mut n = 0;
        let mut p = d.meta.parent;
        while let (Some(num), true) = (p, n < 16) {
            n += 1;
            p = dir.device_by_num(num).and_then(|g| g.meta.parent);
        }
        n
    };
    devices.sort_by_key(|d| std::cmp::Reverse(depth(d)));
    Ok(Owned {
        devices,
        channels,
        alerts,
        files,
    })
}

/// One alert (as `DELETE /v1/alerts/NAME` does): record and state.
fn remove_alert(app: &App, a: &crate::catalog::AlertEntry) -> Result<(), StoreError> {
    app.store.write(|txn| {
        ALERTS.open(txn)?.remove(a.rec.name.as_str())?;
        crate::alerts::remove_state(txn, a.rec.id)?;
        Ok::<_, StoreError>(())
    })?;
    app.catalog.remove_alert(&a.rec.name);
    Ok(())
}

/// The user's record, the grants to them, their presence notices.
fn remove_user_rows(app: &App, name: &str) -> Result<(), StoreError> {
    app.store.write(|txn| {
        USERS.open(txn)?.remove(name)?;
        txn.open_table(PRESENCE_NOTIFY)?.remove(name)?;
        remove_grants_to(txn, &format!("user:{name}"))?;
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}
