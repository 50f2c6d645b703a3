//! Alerts over HTTP: create, list, delete, and the firing history; and
//! the digest's dead letters for administrators.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::alerts::EVENTS_HEADER;
use crate::app::App;
use crate::auth::{valid_id, visible, Action, Principal, Resource};
use crate::catalog::AlertEntry;
use crate::codec::names::log_safe;
use crate::codec::{names::write_csv_text, timefmt, SensorId, SensorKind};
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::store::{AlertRecord, ChannelRecord, DeviceRecord, StoreError};
use crate::targets::TargetRecord;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

fn finite(form: &Form, name: &str) -> Result<Option<f64>, WireError> {
    match form.number::<f64>(name)? {
        Some(v) if !v.is_finite() => Err(WireError::bad_request(
            "bad_value",
            format!("{name} must be a finite number"),
        )),
        v => Ok(v),
    }
}

/// What an alert watches: `device` and `sensor` (`I` or `N`; the caller
/// may read the device), or `channel` (every member sensor; the caller
/// manages the channel). Returns `(device, sensor code, channel)`, the
/// first two 0 for a channel.
fn watched(app: &App, who: &Principal, form: &Form) -> Result<(u32, u32, Option<u32>), WireError> {
    if let Some(ch) = form.get("channel") {
        if form.get("device").is_some() || form.get("sensor").is_some() {
            return Err(WireError::bad_request(
                "bad_parameter",
                "give channel, or device and sensor, not both",
            ));
        }
        let ch = visible::<ChannelRecord>(app, who, Action::ManageOwned, ch)?;
        return Ok((0, 0, Some(ch.num)));
    }
    let d = visible::<DeviceRecord>(app, who, Action::ReadReadings, form.require("device")?)?;
    let sensor = SensorId::parse(form.require("sensor")?)?;
    if !matches!(sensor.kind, SensorKind::Int | SensorKind::Num) {
        return Err(WireError::bad_request(
            "bad_sensor_name",
            format!("{sensor}: alerts watch I or N sensors"),
        ));
    }
    Ok((d.num, sensor.code(), None))
}

/// `POST /v1/alerts` with `name`, `device`, `sensor` (`I` or `N`) or
/// `channel` (every member's `I`/`N` readings, each member with its own
/// state), `min`
/// and/or `max` (inclusive normal range), optional `hysteresis`,
/// `message`, `to_device` (inbox told; default the watched device, `none`
/// for no inbox), `to_channel` and `to_target` (a notification target).
/// `201 name`.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let allowed = [
        "name",
        "device",
        "sensor",
        "channel",
        "min",
        "max",
        "hysteresis",
        "message",
        "to_device",
        "to_channel",
        "to_target",
    ];
    let form = Form::read(req, &allowed, timeout(app)).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::CreateOwned, Resource::None)?;
    let Principal::User(user) = &who else {
        return Err(WireError::forbidden("alerts are created by users"));
    };
    let rec = record_from(app, &who, &user.name, &form)?;
    let quota = crate::quotas::applies(
        &app.directory,
        &user.name,
        app.config.quotas.alerts_per_user,
    );
    let app2 = app.clone();
    let rec = crate::blocking::wire("create failed", move || {
        crate::alerts::create(&app2.store, &app2.catalog, rec, quota)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), alert = %log_safe(&rec.name), "alert created");
    Ok(Reply::csv(format!("name\n{}\n", rec.name)).with_status(201))
}

/// The alert a `POST /v1/alerts` form describes, checked, for `owner`.
fn record_from(
    app: &App,
    who: &Principal,
    owner: &str,
    form: &Form,
) -> Result<AlertRecord, WireError> {
    let name = form.require("name")?.to_string();
    if !valid_id(&name) {
        return Err(WireError::bad_request(
            "bad_name",
            "an alert name is 1-64 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let (device, sensor, channel) = watched(app, who, form)?;
    let (min, max) = (finite(form, "min")?, finite(form, "max")?);
    if min.is_none() && max.is_none() {
        return Err(WireError::bad_request(
            "missing_field",
            "give min, max or both",
        ));
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(WireError::bad_request("bad_value", "min is above max"));
        }
    }
    let hysteresis = finite(form, "hysteresis")?.unwrap_or(0.0);
    if hysteresis < 0.0 {
        return Err(WireError::bad_request(
            "bad_value",
            "hysteresis must be 0 or more",
        ));
    }
    let message = form.get("message").unwrap_or(&name).to_string();
    if message.len() > app.limits.max_value_bytes || message.contains('\0') {
        return Err(WireError::bad_request("bad_value", "message is too long"));
    }
    // The message goes into the target device's inbox as one line.
    crate::inbox::check_text("message", &message)?;
    let Told {
        to_device,
        to_channel,
        to_target,
    } = told(app, who, form, device)?;
    Ok(AlertRecord {
        id: 0,
        name,
        owner: owner.to_string(),
        device,
        sensor,
        min,
        max,
        hysteresis,
        message,
        to_device,
        to_channel,
        created: timefmt::now_micros(),
        to_target,
        channel,
    })
}

/// Who an alert tells: `to_device` (default the watched `device`; for a
/// channel alert 0, the member that fired; `none`: no inbox),
/// `to_channel`, `to_target`, each one the caller may send to.
fn told(app: &App, who: &Principal, form: &Form, device: u32) -> Result<Told, WireError> {
    let to_device = match form.get("to_device") {
        Some("none") => None,
        Some(id) if !id.is_empty() => {
            Some(visible::<DeviceRecord>(app, who, Action::SendToDevice, id)?.num)
        }
        _ => Some(device),
    };
    let to_channel = match form.get("to_channel").filter(|s| !s.is_empty()) {
        Some(ch) => Some(visible::<ChannelRecord>(app, who, Action::ManageOwned, ch)?.num),
        None => None,
    };
    let to_target = match form.get("to_target").filter(|s| !s.is_empty()) {
        Some(t) => Some(visible::<TargetRecord>(app, who, Action::ManageOwned, t)?.id),
        None => None,
    };
    Ok(Told {
        to_device,
        to_channel,
        to_target,
    })
}

/// The numbers of what an alert tells (see [`told`]).
struct Told {
    to_device: Option<u32>,
    to_channel: Option<u32>,
    to_target: Option<u32>,
}

/// CSV header of alert listings.
pub const LIST_HEADER: &str =
    "name,owner,device,sensor,min,max,hysteresis,message,to_device,to_channel,state\n";

/// The `to_device` of a channel alert that tells the member that fired.
pub const MEMBER: &str = "(member)";

/// `GET /v1/alerts`: every alert the caller may read, with `state`
/// `armed` or `fired` (a channel alert: `fired` while any member is);
/// a channel alert's `device` is `channel:NAME`, its `sensor` empty.
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let mut out = String::from(LIST_HEADER);
    let dev = |n: u32| {
        app.directory
            .device_by_num(n)
            .map(|d| d.id.clone())
            .unwrap_or_default()
    };
    for a in app.catalog.alerts() {
        let r = &a.rec;
        if app
            .directory
            .authorize(&who, Action::ReadOwned, Resource::alert(r))
            .is_err()
        {
            continue;
        }
        let num = |v: Option<f64>| v.map(|f| f.to_string()).unwrap_or_default();
        let ch = |c: Option<u32>| {
            c.and_then(|c| app.catalog.channel_by_num(c))
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        write_csv_text(&r.name, &mut out);
        out.push(',');
        write_csv_text(&r.owner, &mut out);
        out.push(',');
        match r.channel {
            // Device ids have no ':', so this names the channel unmistakably.
            Some(c) => write_csv_text(&format!("channel:{}", ch(Some(c))), &mut out),
            None => write_csv_text(&dev(r.device), &mut out),
        }
        out.push(',');
        out.push_str(
            &SensorId::from_code(r.sensor)
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
        out.push_str(&format!(",{},{},{},", num(r.min), num(r.max), r.hysteresis));
        write_csv_text(&r.message, &mut out);
        out.push(',');
        let to_device = match r.to_device {
            Some(0) => MEMBER.to_string(),
            d => d.map(dev).unwrap_or_default(),
        };
        write_csv_text(&to_device, &mut out);
        out.push(',');
        write_csv_text(&ch(r.to_channel), &mut out);
        out.push_str(if a.fired() { ",fired" } else { ",armed" });
        out.push('\n');
    }
    Ok(Reply::csv(out))
}

/// `DELETE /v1/alerts/NAME`.
pub async fn delete(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let a = visible::<AlertEntry>(app, &who, Action::ManageOwned, name)?;
    let app2 = app.clone();
    let (id, name) = (a.rec.id, a.rec.name.clone());
    crate::blocking::wire("delete failed", move || {
        crate::alerts::delete(&app2.store, &app2.catalog, id, &name)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), alert = %log_safe(&a.rec.name), "alert deleted");
    Ok(Reply::csv("ok\n"))
}

/// `GET /v1/alerts/NAME/events[?after=N][&limit=N]`: the firings,
/// `n,time,device,sensor,value,text,delivery`.
pub async fn events(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "after", "limit"], timeout(app)).await?;
    let who = form.caller(app)?;
    let a = visible::<AlertEntry>(app, &who, Action::ReadOwned, name)?;
    let after = form.number::<u64>("after")?.unwrap_or(0);
    let limit = super::history_limit(app, &form)?;
    let app2 = app.clone();
    let id = a.rec.id;
    let rows = crate::blocking::wire("read failed", move || {
        app2.store.read(|txn| {
            let t = crate::alerts::EVENTS.read(txn)?;
            let mut rows = Vec::new();
            if after < u64::MAX {
                for r in t.range((id, after + 1)..=(id, u64::MAX))?.take(limit) {
                    let (k, ev) = r?;
                    rows.push((k.value().1, ev));
                }
            }
            Ok::<_, StoreError>(rows)
        })
    })
    .await?;
    let mut out = String::from(EVENTS_HEADER);
    for (n, e) in &rows {
        let dev = app
            .directory
            .device_by_num(e.device)
            .map(|d| d.id.clone())
            .unwrap_or_default();
        e.write_csv(*n, &dev, &mut out);
    }
    Ok(Reply::csv(out))
}

/// `GET /v1/dead-letters` (administrators): `seq,reason` for every batch
/// the digest could not process.
pub async fn dead_letters(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    app.directory
        .authorize(&who, Action::ViewDeadLetters, Resource::None)?;
    let app2 = app.clone();
    let out = crate::blocking::wire("read failed", move || {
        app2.store.read(|txn| {
            let t = crate::dead_letters::LETTERS.read(txn)?;
            let mut out = String::from("seq,reason\n");
            for r in t.iter()? {
                let (k, reasons) = r?;
                out.push_str(&format!("{},", k.value()));
                write_csv_text(&reasons.0, &mut out);
                out.push('\n');
            }
            Ok::<_, StoreError>(out)
        })
    })
    .await?;
    Ok(Reply::csv(out))
}
