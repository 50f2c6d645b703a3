//! Devices over HTTP.
//!
//! - `GET /v1/devices[?state=&parent=&tag=&q=]`: the devices the caller may
//!   see, with metadata and presence ([`devices::LIST_HEADER`]).
//! - `GET /v1/devices/tree`: the same devices as a gateway tree.
//! - `POST /v1/devices`: create one (form) or many (`text/csv` body with
//!   an `id` column); a gateway device registers devices below itself.
//! - `GET /v1/devices/ID`, `POST /v1/devices/ID`: show, edit metadata.
//! - `POST /v1/devices/ID/token`: rotate the token.
//! - `GET /v1/presence/events`, `GET|POST /v1/presence/notify`.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action, Principal, Resource};
use crate::codec::names::log_safe;
use crate::codec::{form, names::clip, timefmt};
use crate::devices;
use crate::error::WireError;
use crate::http::{media_type, peer_of, read_body, Form, Reply};
use crate::presence::{self, State};
use crate::store::{ChannelRecord, DeviceRecord};

/// Management requests are small; a larger body is refused.
const MAX_FORM: usize = 16 * 1024;
/// Most devices one bulk registration may carry.
pub const MAX_IMPORT_ROWS: usize = 10_000;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

async fn caller(app: &App, req: &Request<Incoming>) -> Result<Principal, WireError> {
    let who = caller_or_anonymous(app, req).await?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    Ok(who)
}

/// The caller, possibly [`Principal::Anonymous`] (for what a public
/// device shows to anyone).
async fn caller_or_anonymous(app: &App, req: &Request<Incoming>) -> Result<Principal, WireError> {
    let q = form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    authenticate(
        app,
        req.headers(),
        peer_of(req.extensions()),
        get("device"),
        get("token"),
    )
}

/// Every device `who` may see, by id (the listings).
fn visible_devices(app: &App, who: &Principal) -> Vec<Arc<DeviceRecord>> {
    app.directory
        .devices()
        .into_iter()
        .filter(|d| {
            app.directory
                .authorize(who, Action::ViewDevice, Resource::Device(d))
                .is_ok()
        })
        .collect()
}

/// `GET /v1/devices`: every device the caller may see, filtered by
/// `state` (online, offline, unreachable, unknown), `parent` (a gateway
/// id), `tag` and `q` (text in id, name, location or tags).
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(
        req,
        &["device", "token", "state", "parent", "tag", "q"],
        timeout(app),
    )
    .await?;
    let who = form.caller(app)?;
    let mut filter = devices::Filter::default();
    if let Some(s) = form.get("state") {
        filter.state = Some(State::parse(s).ok_or_else(|| {
            WireError::bad_request(
                "bad_value",
                "state: online, offline, unreachable or unknown",
            )
        })?);
    }
    if let Some(p) = form.get("parent") {
        filter.parent = Some(visible::<DeviceRecord>(app, &who, Action::ViewDevice, p)?.num);
    }
    filter.tag = form.get("tag").map(str::to_string);
    filter.search = form.get("q").filter(|q| !q.is_empty()).map(str::to_string);
    let mut out = String::from(devices::LIST_HEADER);
    for d in visible_devices(app, &who) {
        if filter.matches(&d, &app.presence) {
            devices::write_row(&d, &app.directory, &app.presence, &mut out);
        }
    }
    Ok(Reply::csv(out))
}

/// `GET /v1/devices/tree`: `depth,id,parent,state,name`, every gateway
/// followed by the devices below it.
pub async fn tree(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    let mut out = String::from("depth,id,parent,state,name\n");
    for (depth, d) in devices::tree(&visible_devices(app, &who)) {
        out.push_str(&depth.to_string());
        out.push(',');
        crate::codec::names::write_csv_text(&d.id, &mut out);
        out.push(',');
        if let Some(p) = d.meta.parent.and_then(|p| app.directory.device_by_num(p)) {
            crate::codec::names::write_csv_text(&p.id, &mut out);
        }
        out.push(',');
        out.push_str(app.presence.state(d.num).as_str());
        out.push(',');
        crate::codec::names::write_csv_text(&d.name, &mut out);
        out.push('\n');
    }
    Ok(Reply::csv(out))
}

/// `GET /v1/devices/ID`: the device's row of the listing (to anyone, for
/// a public device).
pub async fn show(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let who = caller_or_anonymous(app, &req).await?;
    let d = visible::<DeviceRecord>(app, &who, Action::ViewDevice, id)?;
    let mut out = String::from(devices::LIST_HEADER);
    devices::write_row(&d, &app.directory, &app.presence, &mut out);
    Ok(Reply::csv(out))
}

/// `POST /v1/devices/ID` with any of the metadata fields
/// ([`devices::FIELDS`]); an empty value clears a field. Replies with the
/// updated row.
pub async fn update(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let mut allowed = vec!["device", "token"];
    allowed.extend_from_slice(devices::FIELDS);
    let form = Form::read(req, &allowed, timeout(app)).await?;
    let who = form.header_principal(app)?;
    let who = match who {
        Principal::Anonymous => form.caller(app)?,
        w => w,
    };
    let d = visible::<DeviceRecord>(app, &who, Action::EditDevice, id)?;
    let fields: Vec<(String, String)> = form
        .fields()
        .iter()
        .filter(|(k, _)| k != "device" && k != "token")
        .cloned()
        .collect();
    if fields.is_empty() {
        return Err(WireError::bad_request(
            "missing_field",
            format!("give at least one of {}", devices::FIELDS.join(", ")),
        ));
    }
    check_parent(app, &who, &fields)?;
    let app2 = app.clone();
    let new = crate::blocking::wire("update failed", move || {
        devices::update(&app2.store, &app2.directory, &d, &fields)
    })
    .await?;
    // A new offline_after or parent changes when it is due.
    app.presence.reschedule(new.num);
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(&new.id), "device edited");
    let mut out = String::from(devices::LIST_HEADER);
    devices::write_row(&new, &app.directory, &app.presence, &mut out);
    Ok(Reply::csv(out))
}

/// Placing a device below a gateway needs the right to edit the gateway.
fn check_parent(app: &App, who: &Principal, fields: &[(String, String)]) -> Result<(), WireError> {
    for (k, v) in fields {
        if k == "parent" && !v.is_empty() {
            visible::<DeviceRecord>(app, who, Action::EditDevice, v)?;
        }
    }
    Ok(())
}

/// `POST /v1/devices`: create devices.
///
/// - A form (`id`, optional, and metadata fields): one device; `201` and
///   `id,token`.
/// - A `text/csv` body whose header has `id` and any metadata fields: up to
///   [`MAX_IMPORT_ROWS`] devices, all or none; `201` and an `id,token` row
///   each.
///
/// A gateway device may do the same with its own credentials: the devices
/// are placed below it and owned by its owner, and devices already below
/// it are listed with an empty token instead of failing.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    app.directory
        .authorize(&who, Action::CreateDevice, Resource::None)?;
    let (owner, gateway) = match &who {
        Principal::User(u) => (u.name.clone(), None),
        Principal::Device(d) => (d.owner.clone(), Some(d.clone())),
        Principal::Anonymous => return Err(WireError::unauthorized("credentials required")),
    };
    let media = media_type(&req);
    let is_csv = media.as_deref() == Some(CSV);
    let mut query = form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    query.retain(|(k, _)| k != "device" && k != "token");
    let max = if is_csv {
        app.config.limits.max_body_bytes
    } else {
        MAX_FORM
    };
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.extensions, body, max, timeout(app)).await?;
    let rows = new_devices(media.as_deref(), query, &body)?;
    if gateway.is_none() {
        for (_, fields) in &rows {
            check_parent(app, &who, fields)?;
        }
    }
    // Devices a gateway registers are its owner's, and count against
    // the owner's quota.
    let quota = crate::quotas::applies(&app.directory, &owner, app.config.quotas.devices_per_user);
    let app2 = app.clone();
    let made = crate::blocking::wire("create failed", move || {
        devices::create_many(
            &app2.store,
            &app2.directory,
            &owner,
            rows,
            gateway.as_deref(),
            quota,
        )
    })
    .await?;
    let mut out = String::from("id,token\n");
    for (rec, token) in &made {
        if token.is_some() {
            tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(&rec.id), "device created");
        }
        out.push_str(&rec.id);
        out.push(',');
        out.push_str(token.as_deref().unwrap_or(""));
        out.push('\n');
    }
    let status = if made.iter().any(|(_, t)| t.is_some()) {
        201
    } else {
        200
    };
    Ok(Reply::csv(out).with_status(status))
}

const CSV: &str = "text/csv";

/// The devices a `POST /v1/devices` asks for: every row of a CSV body,
/// or the one the form (query and body) describes.
fn new_devices(
    media: Option<&str>,
    query: Vec<(String, String)>,
    body: &[u8],
) -> Result<Vec<devices::NewDevice>, WireError> {
    if media == Some(CSV) {
        if !query.is_empty() {
            return Err(WireError::bad_request(
                "bad_parameter",
                "with a CSV body, give every field as a column",
            ));
        }
        return parse_import(body);
    }
    if !body.is_empty() && !matches!(media, None | Some("application/x-www-form-urlencoded")) {
        return Err(WireError::new(
            415,
            "unsupported_media_type",
            "send a form (id=...&name=...) or text/csv with an id column",
        ));
    }
    let mut pairs = query;
    pairs.extend(form::parse_pairs(body)?);
    pairs.retain(|(k, _)| k != "device" && k != "token");
    check_fields(&pairs)?;
    let id = pairs
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(crate::auth::generate_id);
    pairs.retain(|(k, _)| k != "id");
    Ok(vec![(id, pairs)])
}

/// Each field of a device form once, and a known one.
fn check_fields(pairs: &[(String, String)]) -> Result<(), WireError> {
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    for (k, _) in pairs {
        if !seen.insert(k.as_str()) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{k}: given more than once"),
            ));
        }
        if k != "id" && !devices::FIELDS.contains(&k.as_str()) {
            return Err(WireError::bad_request(
                "bad_parameter",
                format!(
                    "unknown field '{}'; use id, {}",
                    clip(k),
                    devices::FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Rows of a CSV device import: a header with `id` and metadata fields.
pub fn parse_import(body: &[u8]) -> Result<Vec<devices::NewDevice>, WireError> {
    let bad =
        |line: u64, why: String| WireError::bad_request("bad_csv", format!("line {line}: {why}"));
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(body);
    let mut rec = csv::StringRecord::new();
    let header: Vec<String> = match rdr.read_record(&mut rec) {
        Ok(true) => rec.iter().map(|h| h.trim().to_string()).collect(),
        Ok(false) => return Err(bad(1, "empty body".into())),
        Err(e) => return Err(bad(1, e.to_string())),
    };
    if !header.iter().any(|h| h == "id") {
        return Err(bad(1, "the header needs an id column".into()));
    }
    // Sensor columns (`N1.label`) in their canonical spelling, so that
    // `n1.label` and `N1.label` are one column given twice.
    let header: Vec<String> = header
        .into_iter()
        .map(|h| match crate::sensors::column(&h) {
            Some(col) => col.map(|(canonical, _, _)| canonical),
            None => Ok(h),
        })
        .collect::<Result<_, _>>()?;
    for (i, h) in header.iter().enumerate() {
        if h != "id" && !h.contains('.') && !devices::FIELDS.contains(&h.as_str()) {
            return Err(bad(
                1,
                format!(
                    "unknown column '{}'; use id, {}",
                    clip(h),
                    devices::FIELDS.join(", ")
                ),
            ));
        }
        if header[..i].contains(h) {
            return Err(bad(1, format!("column '{}' given twice", clip(h))));
        }
    }
    let mut rows = Vec::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(bad(line, e.to_string()));
            }
        }
        if rows.len() == MAX_IMPORT_ROWS {
            return Err(WireError::new(
                413,
                "too_large",
                format!("at most {MAX_IMPORT_ROWS} devices per request"),
            ));
        }
        let mut id = String::new();
        let mut fields = Vec::new();
        for (h, v) in header.iter().zip(rec.iter()) {
            if h == "id" {
                id = v.trim().to_string();
            } else {
                fields.push((h.clone(), v.to_string()));
            }
        }
        if id.is_empty() {
            let line = rec.position().map_or(0, |p| p.line());
            return Err(bad(line, "empty id".into()));
        }
        rows.push((id, fields));
    }
    if rows.is_empty() {
        return Err(bad(2, "no devices".into()));
    }
    Ok(rows)
}

/// `GET /v1/presence/events?after=IDX|since=TIME[&limit=N]`:
/// `index,time,device,state,last_seen,delivery` for the devices the caller
/// may see, oldest first. A reader resumes from the last index it saw.
pub async fn presence_events(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(
        req,
        &["device", "token", "after", "since", "limit"],
        timeout(app),
    )
    .await?;
    let who = form.caller(app)?;
    let after = form.number::<u64>("after")?.unwrap_or(0);
    let since = match form.get("since").filter(|s| !s.is_empty()) {
        Some(t) => Some(
            timefmt::parse_time(t, timefmt::now_micros(), &app.limits)
                .map_err(|e| WireError::from(e.named("since")))?,
        ),
        None => None,
    };
    let max = app.config.limits.query_max_rows;
    let limit = match form.number::<usize>("limit")? {
        None => 1000.min(max),
        Some(n) if (1..=max).contains(&n) => n,
        Some(_) => {
            return Err(WireError::bad_request(
                "bad_limit",
                format!("limit must be 1..{max}"),
            ))
        }
    };
    let app2 = app.clone();
    let events = crate::blocking::wire("read failed", move || {
        presence::read_events(&app2.store, after, since, limit.saturating_mul(4))
    })
    .await?;
    let mut out = String::from(presence::EVENTS_HEADER);
    let mut n = 0;
    for (i, ev) in &events {
        if n == limit {
            break;
        }
        let Some(d) = app.directory.device_by_num(ev.device) else {
            continue;
        };
        if app
            .directory
            .authorize(&who, Action::ViewDevice, Resource::Device(&d))
            .is_err()
        {
            continue;
        }
        ev.write_csv(*i, &d.id, &mut out);
        n += 1;
    }
    Ok(Reply::csv(out))
}

/// `GET /v1/presence/notify`: where the caller is told about their
/// devices going offline and online: `device,channel`.
/// `POST /v1/presence/notify` with `device` (an inbox) and/or `channel`
/// (empty clears) sets it.
pub async fn notify(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let post = req.method() == hyper::Method::POST;
    let form = Form::read(req, &["notify_device", "channel"], timeout(app)).await?;
    let who = form.header_principal(app)?;
    let Principal::User(user) = &who else {
        return Err(match who {
            Principal::Anonymous => WireError::unauthorized("credentials required"),
            _ => WireError::forbidden("presence notices are set by users"),
        });
    };
    let name = user.name.clone();
    let app2 = app.clone();
    if !post {
        let (d, c) = crate::blocking::wire("read failed", move || {
            crate::notify::presence_choice(&app2.store, &name)
        })
        .await?;
        return Ok(Reply::csv(notify_csv(&d, &c)));
    }
    let dev = form.get("notify_device").unwrap_or("").to_string();
    let ch = form.get("channel").unwrap_or("").to_string();
    if !dev.is_empty() {
        visible::<DeviceRecord>(app, &who, Action::SendToDevice, &dev)?;
    }
    if !ch.is_empty() {
        visible::<ChannelRecord>(app, &who, Action::ManageOwned, &ch)?;
    }
    let (d2, c2) = (dev.clone(), ch.clone());
    crate::blocking::wire("write failed", move || {
        crate::notify::set_presence_choice(&app2.store, &name, &d2, &c2)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), "presence notices set");
    Ok(Reply::csv(notify_csv(&dev, &ch)))
}

fn notify_csv(device: &str, channel: &str) -> String {
    let mut out = String::from("notify_device,channel\n");
    crate::codec::names::write_csv_text(device, &mut out);
    out.push(',');
    crate::codec::names::write_csv_text(channel, &mut out);
    out.push('\n');
    out
}

/// `POST /v1/devices/ID/token`: a new token (`id,token`); the previous one
/// keeps working until the next rotation.
pub async fn rotate(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    let d = visible::<DeviceRecord>(app, &who, Action::RotateDevice, id)?;
    let app2 = app.clone();
    let token = crate::blocking::wire("rotate failed", move || {
        devices::rotate(&app2.store, &app2.directory, &d)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(id), "device token rotated");
    Ok(Reply::csv(format!("id,token\n{id},{token}\n")))
}
