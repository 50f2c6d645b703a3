//! The ingest seam: the transport-free steps every door into the store
//! shares (`POST /v1/readings` in any body format, the InfluxDB and
//! ThingSpeak doors, MQTT). A door authenticates its caller once, then:
//!
//! 1. **parse** its payload into a [`Batch`] ([`parse_body`] by media type
//!    for CSV, form and JSON; the line protocol in `codec::lineproto`);
//! 2. [`resolve`] the batch's devices for the caller: visibility,
//!    `authorize`, device numbers, the per-device request limit;
//! 3. [`submit`] the readings to the writer and wait for the fsync (or,
//!    with no readings, read a device's inbox: a heartbeat);
//! 4. reply in its own terms ([`Outcome::write_csv`] is the HTTP one).
//!
//! Validation is the codec's, authorisation `Directory::authorize`'s: no
//! door has a copy of either.

pub mod parse;

use std::sync::Arc;

pub use parse::{parse_body, parse_charged, Media, Parsed};

use crate::app::App;
use crate::auth::{visible, Action, Principal, Resource};
use crate::codec::Reading;
use crate::error::WireError;
use crate::inbox;
use crate::store::DeviceRecord;
use crate::writer::Prepared;

/// Requests with more readings than this are sorted on a blocking thread.
const INLINE_PREPARE: usize = 4096;

/// Bytes per reading that [`Prepared::new`] adds while it sorts keys.
pub const PREPARE_BYTES: usize = std::mem::size_of::<crate::writer::SortKey>() + 4;

/// Parsed readings, before their devices are known to exist or to be
/// writable by the caller.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// The device of readings that name none (`device=ID`); `None`: the
    /// calling device itself (a user must then name one).
    pub device: Option<String>,
    /// Devices named per row (a CSV `device` column, a JSON object's
    /// `device`, a line protocol `device` tag), distinct, in order of
    /// first use.
    pub devices: Vec<String>,
    /// Each reading with the index into [`Batch::devices`] of its device,
    /// or `None` for the default device.
    pub readings: Vec<(Option<u32>, Reading)>,
    /// Part of the payload had no per-row device (a CSV without a
    /// `device` column, even with no rows), so the default device must
    /// exist even if no reading uses it.
    pub needs_default: bool,
}

/// A batch whose devices are resolved: ready for [`submit`].
#[derive(Debug)]
pub struct Resolved {
    /// (device number, reading).
    pub readings: Vec<(u32, Reading)>,
}

/// What a submitted batch came to.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Readings acknowledged: stored now or before (a retry).
    pub accepted: usize,
    /// The calling device's pending inbox rows (0 for a user).
    pub pending: u64,
    /// The first of those rows, `(seq, row)`.
    pub rows: Vec<(u64, inbox::Row)>,
}

impl Outcome {
    /// The HTTP reply body: `ok,<accepted>,<pending>` and the inbox rows
    /// (`seq,kind,time,from,sensor,value[,device]`; the `device` column
    /// for a gateway).
    pub fn write_csv(&self, who: &Principal) -> String {
        let mut out = format!("ok,{},{}\n", self.accepted, self.pending);
        let gateway = matches!(who, Principal::Device(d) if d.meta.gateway);
        for (seq, row) in &self.rows {
            row.write_csv(*seq, gateway, &mut out);
        }
        out
    }
}

/// The `400 missing_device` of readings with no device to go to.
fn missing_device() -> WireError {
    WireError::bad_request(
        "missing_device",
        "say which device: device=ID or a device column",
    )
}

/// Resolve `batch` for `who`: every device it names must be visible to
/// the caller and writable (`Action::WriteReadings`), else the request is
/// refused whole (`404` for one it may not see, as for one that does not
/// exist; `403`); then each device's request limit is taken once (`429`).
/// A device writes for itself unless it names another; a user must name
/// the device (`400 missing_device`).
pub fn resolve(app: &App, who: &Principal, batch: Batch) -> Result<Resolved, WireError> {
    let default_device: Option<Arc<DeviceRecord>> = match who {
        Principal::Anonymous => return Err(WireError::unauthorized("credentials required")),
        // A device writes for itself; naming another device is checked
        // like any other access to it.
        Principal::Device(d) => match batch.device.as_deref() {
            Some(id) if id != d.id => Some(visible(app, who, Action::WriteReadings, id)?),
            _ => Some(d.clone()),
        },
        Principal::User(_) => match batch.device.as_deref() {
            Some(id) => Some(visible(app, who, Action::WriteReadings, id)?),
            None => None,
        },
    };
    if let Some(d) = &default_device {
        app.directory
            .authorize(who, Action::WriteReadings, Resource::Device(d))?;
    }
    let default_num = default_device.as_ref().map(|d| d.num);
    // Every device this request writes (for the per-device limit).
    let mut written: Vec<u32> = Vec::new();
    let defaulted = batch.needs_default || batch.readings.iter().any(|(i, _)| i.is_none());
    if defaulted {
        written.push(default_num.ok_or_else(missing_device)?);
    }
    let mut nums = Vec::with_capacity(batch.devices.len());
    for id in &batch.devices {
        let d = visible::<DeviceRecord>(app, who, Action::WriteReadings, id)?;
        app.directory
            .authorize(who, Action::WriteReadings, Resource::Device(&d))?;
        nums.push(d.num);
    }
    written.extend_from_slice(&nums);
    // The per-device request limit, for every device this request writes
    // (each once: the device column's distinct ids, not its rows).
    written.sort_unstable();
    written.dedup();
    for dev in written {
        if let Err(secs) = app.device_rate.take(dev) {
            return Err(WireError::rate_limited(
                "too many requests for this device; send batches as CSV, or wait",
                secs,
            ));
        }
    }
    // Same element size, so `collect` turns the vector into the new one
    // in place: a 100,000-row body has 400,000 readings, and two copies
    // of them at once were the largest part of a large upload's memory.
    let fallback = default_num.unwrap_or(0);
    let readings = batch
        .readings
        .into_iter()
        .map(|(i, r)| (i.map_or(fallback, |i| nums[i as usize]), r))
        .collect();
    Ok(Resolved { readings })
}

/// Store `resolved` and wait until it is fsynced: the writer's queue is
/// bounded, so a full one is `503 overloaded` with nothing written. With
/// no readings it is a heartbeat: nothing is stored. A calling device
/// gets up to `inbox_rows` of its pending inbox rows back, read after the
/// commit (or now, for a heartbeat).
pub async fn submit(
    app: &Arc<App>,
    who: &Principal,
    resolved: Resolved,
    inbox_rows: usize,
) -> Result<Outcome, WireError> {
    let readings = resolved.readings;
    let accepted = readings.len();
    let inbox_for = match who {
        Principal::Device(d) => Some((d.num, inbox_rows)),
        _ => None,
    };
    let (pending, rows) = if readings.is_empty() {
        match inbox_for {
            Some((dev, n)) => {
                let app2 = app.clone();
                // The device reads its inbox: commands among the rows
                // are delivered, as by `GET /v1/inbox`.
                crate::blocking::wire("inbox read failed", move || {
                    crate::inbox::send::read(&app2.store, dev, n)
                })
                .await?
            }
            None => (0, Vec::new()),
        }
    } else {
        // Sorting a large request's keys is blocking work: do it off the
        // runtime, before the writer sees it.
        let prepared = if readings.len() > INLINE_PREPARE {
            crate::blocking::value("prepare failed", move || Prepared::new(readings)).await?
        } else {
            Prepared::new(readings)
        };
        let rx = app
            .ingest
            .try_submit_prepared(prepared, inbox_for)
            .map_err(|_| WireError::overloaded("the server is busy; retry shortly"))?;
        match rx.await {
            Ok(Ok(o)) => o.inbox,
            Ok(Err(e)) => return Err(WireError::from(e.as_ref())),
            Err(_) => return Err(WireError::overloaded("the server is shutting down")),
        }
    };
    Ok(Outcome {
        accepted,
        pending,
        rows,
    })
}
