//! A device's sensors over HTTP: their latest values, and their labels
//! (`crate::sensors`).
//!
//! - `GET|POST /v1/devices/ID/sensors[?labels=1]`: the latest value of
//!   each sensor; with `labels=1` also `label,unit,description`, and the
//!   sensors that have labels but no reading yet.
//! - `POST /v1/devices/ID/sensors/SENSOR` with `label`, `unit`,
//!   `description`: describe one sensor (the device itself, a gateway for
//!   a device below it, its owner or a `control` grant).
//! - `labels=1` in the query string of `GET|POST /v1/devices/ID/readings`:
//!   `# ` comment lines naming the columns' sensors before the header.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action, Principal};
use crate::codec::names::{clip, log_safe};
use crate::codec::{timefmt, SensorId};
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::sensors::{self, Labels};
use crate::store::DeviceRecord;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

/// The caller of a request about device `id`: `device=` defaults to `id`,
/// so a device may send only its `token`.
fn caller_for(app: &App, form: &Form, id: &str) -> Result<Principal, WireError> {
    authenticate(
        app,
        &form.headers,
        form.peer,
        Some(form.get("device").unwrap_or(id)),
        form.get("token"),
    )
}

/// `labels=` as a flag: `1`/`true` or `0`/`false`/absent.
fn labels_flag(v: Option<&str>) -> Result<bool, WireError> {
    match v {
        None | Some("0" | "false" | "") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(WireError::bad_request(
            "bad_parameter",
            "labels: 1 (add label, unit and description) or 0",
        )),
    }
}

/// `GET /v1/devices/ID/sensors`: `sensor,time,value`, the latest reading
/// of each of the device's sensors (the dashboard's tree shows them).
/// With `labels=1`: `sensor,time,value,label,unit,description`, labelled
/// sensors without a reading included (empty time and value).
pub async fn latest(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "labels", "format"], timeout(app)).await?;
    let json = crate::http::wants_json(&form.headers, form.get("format"))?;
    let who = caller_for(app, &form, id)?;
    // No credentials: a public device (a `read` grant to `anonymous`),
    // else `401` (from `authorize`).
    let d = visible::<DeviceRecord>(app, &who, Action::ReadReadings, id)?;
    let with_labels = labels_flag(form.get("labels"))?;
    let db_app = app.clone();
    let num = d.num;
    let (rows, labels) = crate::blocking::wire("query failed", move || {
        let rows = crate::store::query::latest(&db_app.store, num)?;
        let labels = if with_labels {
            db_app.store.read(|txn| sensors::of_device(txn, num))?
        } else {
            Vec::new()
        };
        Ok::<_, crate::store::StoreError>((rows, labels))
    })
    .await?;
    if !with_labels {
        let mut out = String::from("sensor,time,value\n");
        for (s, t, v) in rows {
            out.push_str(&s.to_string());
            out.push(',');
            timefmt::write_time(t, &mut out);
            out.push(',');
            v.write_csv(&mut out);
            out.push('\n');
        }
        return Ok(view(Reply::csv(out), json).await);
    }
    // Sensors in name order, as without labels.
    let mut all: BTreeMap<String, (String, Labels)> = BTreeMap::new();
    for (s, t, v) in rows {
        let mut cells = timefmt::format_time(t);
        cells.push(',');
        v.write_csv(&mut cells);
        all.insert(s.to_string(), (cells, Labels::default()));
    }
    for (s, l) in labels {
        all.entry(s.to_string())
            .or_insert_with(|| (",".to_string(), Labels::default()))
            .1 = l;
    }
    let mut out = String::from("sensor,time,value,label,unit,description\n");
    for (s, (cells, l)) in all {
        out.push_str(&s);
        out.push(',');
        out.push_str(&cells);
        l.write_csv(&mut out);
        out.push('\n');
    }
    Ok(view(Reply::csv(out), json).await)
}

/// The CSV `reply`, or its JSON view when the caller asked for JSON
/// (`format=json` or `Accept: application/json`).
async fn view(reply: Reply, json: bool) -> Reply {
    match json {
        true => crate::http::json_view(reply).await,
        false => reply,
    }
}

/// `POST /v1/devices/ID/sensors/SENSOR` with any of `label`, `unit`,
/// `description`: set those (an empty value clears one; the others stay).
/// Replies `sensor,label,unit,description` with what is stored now.
pub async fn describe(
    app: &Arc<App>,
    req: Request<Incoming>,
    param: &str,
) -> Result<Reply, WireError> {
    // The router joins the two path parameters with '/'.
    let (id, sensor) = param.split_once('/').unwrap_or((param, ""));
    let form = Form::read(
        req,
        &["device", "token", "label", "unit", "description"],
        timeout(app),
    )
    .await?;
    let who = caller_for(app, &form, id)?;
    let d = visible::<DeviceRecord>(app, &who, Action::DescribeSensors, id)?;
    let sensor = SensorId::parse(sensor)?;
    let given: Vec<(String, String)> = form
        .fields()
        .iter()
        .filter(|(k, _)| sensors::FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    if given.is_empty() {
        return Err(WireError::bad_request(
            "missing_field",
            "give label, unit or description (empty clears one)",
        ));
    }
    // Checked before the transaction: a bad field changes nothing.
    let mut check = Labels::default();
    for (k, v) in &given {
        check.set(k, v)?;
    }
    let (app2, num) = (app.clone(), d.num);
    let stored = crate::blocking::wire("labels failed", move || {
        sensors::describe(&app2.store, num, sensor, &given)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(&d.id), sensor = %sensor, "sensor described");
    let mut out = format!("sensor,label,unit,description\n{sensor}");
    stored.write_csv(&mut out);
    out.push('\n');
    Ok(Reply::csv(out))
}

/// Take `labels=` out of the query string (the readings query refuses
/// fields it does not know): its value, if given.
fn take_labels<B>(req: &mut Request<B>) -> Result<Option<String>, WireError> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    let mut found = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("labels", v) if found.is_some() => {
                return Err(WireError::bad_request(
                    "duplicate_field",
                    format!("labels: given more than once ({})", clip(v)),
                ))
            }
            ("labels", v) => found = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    if found.is_some() {
        let mut pq = req.uri().path().to_string();
        if !kept.is_empty() {
            pq.push('?');
            pq.push_str(&kept.join("&"));
        }
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|_| WireError::bad_request("bad_parameter", "bad query string"))?,
        );
        *req.uri_mut() = hyper::Uri::from_parts(parts)
            .map_err(|_| WireError::bad_request("bad_parameter", "bad query string"))?;
    }
    Ok(found)
}

/// `GET|POST /v1/devices/ID/readings`, with `labels=1` in the query
/// string: the reply of [`super::readings::query`], preceded by
///
/// ```text
/// # sensor,label,unit,description
/// # N1,Temperature,°C,Air by the door
/// ```
///
/// one comment line per column whose sensor has labels (bucket columns
/// `N1_min`, `N1_max` name `N1`). CSV readers skip them with a comment
/// option (`pandas.read_csv(..., comment="#")`).
pub async fn labelled_query(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let with_labels = labels_flag(take_labels(&mut req)?.as_deref())?;
    let mut reply = super::readings::query(app, req, id).await?;
    if !with_labels || reply.status != 200 || reply.stream.is_some() {
        return Ok(reply);
    }
    if reply.content_type != crate::http::CSV {
        // Comment lines would make the JSON unreadable.
        return Err(WireError::bad_request(
            "bad_parameter",
            "labels=1 is for CSV replies; with JSON, read the labels from /v1/devices/ID/sensors?labels=1&format=json",
        ));
    }
    // The query answered, so the caller may read this device.
    let Some(d) = app.directory.device(id) else {
        return Ok(reply);
    };
    let (app2, num) = (app.clone(), d.num);
    let labels = crate::blocking::wire("labels failed", move || {
        app2.store.read(|txn| sensors::of_device(txn, num))
    })
    .await?;
    let body = std::str::from_utf8(&reply.body).unwrap_or("");
    let header = body.lines().next().unwrap_or("");
    let mut out = String::from("# sensor,label,unit,description\n");
    let mut named = Vec::new();
    for col in header.split(',').skip(1) {
        let name = col
            .strip_suffix("_min")
            .or_else(|| col.strip_suffix("_max"))
            .unwrap_or(col);
        if named.contains(&name) {
            continue;
        }
        named.push(name);
        if let Some((s, l)) = labels.iter().find(|(s, _)| s.to_string() == name) {
            out.push_str("# ");
            out.push_str(&s.to_string());
            l.write_csv(&mut out);
            out.push('\n');
        }
    }
    out.push_str(body);
    reply.body = out.into();
    Ok(reply)
}
