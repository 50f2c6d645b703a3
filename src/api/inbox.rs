//! The device inbox over HTTP.
//!
//! Device side: `GET|POST /v1/inbox`, `GET|POST /v1/inbox/ack?upto=SEQ`.
//! User side: `GET /v1/devices/ID/inbox` (watch a device's queue) and
//! `POST /v1/devices/ID/inbox` (send a message or a command).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{visible, Action, Principal, Resource};
use crate::codec::names::log_safe;
use crate::codec::{names::clip, timefmt, Micros, SensorId, Value};
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::inbox::send::Message;
use crate::inbox::{self, Kind, Row};
use crate::store::DeviceRecord;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

/// The device a device-side request is about: the calling device.
///
/// On these endpoints `device=` only ever names the caller. A `device=A`
/// without `token=` next to `Authorization` for device B would otherwise
/// be answered for B (the header wins when no token is given), so a board
/// that mixes up its credentials would read or acknowledge another
/// device's rows. Credentials that disagree are `401`, never mixed.
fn me(who: &Principal, form: &Form) -> Result<Arc<DeviceRecord>, WireError> {
    match who {
        Principal::Device(d) => match form.get("device") {
            Some(named) if named != d.id => Err(WireError::unauthorized(format!(
                "device={} disagrees with the credentials given (device {}); send one set",
                clip(named),
                d.id
            ))),
            _ => Ok(d.clone()),
        },
        _ => Err(WireError::bad_request(
            "missing_device",
            "this is the device's own inbox: authenticate as the device",
        )),
    }
}

/// The pending rows of `device`'s inbox, at most `limit`; with `below`,
/// only the rows for that device behind the gateway `device`.
async fn list_rows(
    app: &Arc<App>,
    device: u32,
    limit: usize,
    below: Option<String>,
) -> Result<Reply, WireError> {
    let app2 = app.clone();
    // An inbox holds at most `max_inbox` rows: reading them all to filter
    // is bounded.
    let read = if below.is_some() {
        app.config.limits.max_inbox as usize
    } else {
        limit
    };
    let (_, mut rows) = crate::blocking::wire("inbox read failed", move || {
        inbox::pending(&app2.store, device, read)
    })
    .await?;
    if let Some(b) = &below {
        rows.retain(|(_, r)| &r.device == b);
        rows.truncate(limit);
    }
    let gateway = app
        .directory
        .device_by_num(device)
        .is_some_and(|d| d.meta.gateway);
    let mut out = String::from(if gateway {
        inbox::GATEWAY_HEADER
    } else {
        inbox::HEADER
    });
    for (seq, row) in &rows {
        row.write_csv(*seq, gateway, &mut out);
    }
    Ok(Reply::csv(out))
}

fn limit(app: &App, form: &Form) -> Result<usize, WireError> {
    let max = app.config.limits.max_inbox as usize;
    match form.number::<usize>("limit")? {
        None => Ok(max),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(WireError::bad_request(
            "bad_limit",
            format!("limit must be 1..{max}"),
        )),
    }
}

/// `GET /v1/inbox?device=ID&token=TOK[&limit=N]`, or the same fields as
/// a form `POST`: the device's pending rows, oldest first. Commands among
/// them that it reads for the first time are recorded as delivered.
pub async fn read(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "limit"], timeout(app)).await?;
    let who = form.caller(app)?;
    let d = me(&who, &form)?;
    app.directory
        .authorize(&who, Action::ReadInbox, Resource::Device(&d))?;
    let (app2, num, n) = (app.clone(), d.num, limit(app, &form)?);
    // Written only when the device reads a command for the first time,
    // not on every poll.
    let (_, rows) = crate::blocking::wire("inbox read failed", move || {
        inbox::send::read(&app2.store, num, n)
    })
    .await?;
    let mut out = String::from(if d.meta.gateway {
        inbox::GATEWAY_HEADER
    } else {
        inbox::HEADER
    });
    for (seq, row) in &rows {
        row.write_csv(*seq, d.meta.gateway, &mut out);
    }
    Ok(Reply::csv(out))
}

/// `GET|POST /v1/inbox/ack?device=ID&token=TOK&upto=SEQ[&result=TEXT]`:
/// remove every row with `seq <= upto`; `ok,<removed>,<remaining>`. The
/// commands among them are recorded as acknowledged, with `result`. A
/// `text/csv` body of `seq,result` rows reports one result per command
/// (`api::commands::ack_csv`).
pub async fn ack(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    if crate::http::media_type(&req).as_deref() == Some("text/csv") {
        return super::commands::ack_csv(app, req).await;
    }
    let form = Form::read(req, &["device", "token", "upto", "result"], timeout(app)).await?;
    let who = form.caller(app)?;
    let d = me(&who, &form)?;
    app.directory
        .authorize(&who, Action::AckInbox, Resource::Device(&d))?;
    let upto: u64 = form
        .number("upto")?
        .ok_or_else(|| WireError::bad_request("missing_field", "upto is required"))?;
    let result = match form.get("result") {
        Some(r) => Some(super::commands::check_result(r)?.to_string()),
        None => None,
    };
    acknowledge(app, d.num, upto, move |_| result.clone()).await
}

/// Remove `num`'s rows up to `upto` and record the commands among them as
/// acknowledged with `result(seq)`, in one transaction;
/// `ok,<removed>,<remaining>`.
pub async fn acknowledge(
    app: &Arc<App>,
    num: u32,
    upto: u64,
    result: impl Fn(u64) -> Option<String> + Send + 'static,
) -> Result<Reply, WireError> {
    let (removed, remaining) = ack_rows_with(app, num, upto, result).await?;
    Ok(Reply::csv(format!("ok,{removed},{remaining}\n")))
}

/// Remove every row of inbox `num` with `seq <= upto` (on a blocking
/// thread), each command among them acknowledged with `result`;
/// `(removed, remaining)`.
async fn ack_rows_with(
    app: &Arc<App>,
    num: u32,
    upto: u64,
    result: impl Fn(u64) -> Option<String> + Send + 'static,
) -> Result<(u64, u64), WireError> {
    let app2 = app.clone();
    crate::blocking::wire("ack failed", move || {
        inbox::send::ack(&app2.store, num, upto, result)
    })
    .await
}

/// `GET /v1/devices/ID/inbox`: a device's pending rows, for its owner.
pub async fn view(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "limit"], timeout(app)).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::SendToDevice, id)?;
    // A device behind a gateway has its rows in the gateway's inbox
    // (seq numbers are the gateway's, as the gateway acknowledges them).
    let (inbox_of, below) = inbox::route(&app.directory, d.num);
    let below = (inbox_of != d.num).then_some(below);
    list_rows(app, inbox_of, limit(app, &form)?, below).await
}

/// Build a message or command row from `kind`, `sensor`, `value`.
pub fn row_from(app: &App, form: &Form, from: String) -> Result<Row, WireError> {
    let kind = match form.get("kind").unwrap_or("message") {
        "message" => Kind::Message,
        "command" => Kind::Command,
        other => {
            return Err(WireError::bad_request(
                "bad_kind",
                format!("kind '{}' is not message or command", clip(other)),
            ))
        }
    };
    let value = form.get("value").unwrap_or("");
    let (sensor, value) = match (kind, form.get("sensor").filter(|s| !s.is_empty())) {
        (Kind::Command, None) => {
            return Err(WireError::bad_request(
                "missing_field",
                "a command needs sensor and value",
            ))
        }
        (_, Some(s)) => {
            let id = SensorId::parse(s)?;
            let v = Value::parse(id.kind, value, &app.limits).map_err(|e| e.named(s))?;
            let mut text = String::new();
            v.write_csv(&mut text);
            if let Value::Str(s) = &v {
                text = s.to_string();
            }
            (id.to_string(), text)
        }
        (_, None) => {
            if value.is_empty() || value.len() > app.limits.max_value_bytes || value.contains('\0')
            {
                return Err(WireError::bad_request(
                    "bad_value",
                    format!(
                        "a message is 1..{} bytes of text",
                        app.limits.max_value_bytes
                    ),
                ));
            }
            (String::new(), value.to_string())
        }
    };
    // What reaches a device is one line: no CR/LF or other controls, in
    // a message or in an `S` command value (other types are canonical).
    inbox::check_text("value", &value)?;
    Ok(Row {
        kind,
        time: timefmt::now_micros(),
        from,
        sensor,
        value,
        device: String::new(),
    })
}

/// Put rows into inboxes, all or none: `Ok(seqs)` or `inbox_full`. A
/// command also gets its record (`crate::commands`), in the same
/// transaction, expiring at `expires` unless delivered by then.
pub async fn deliver(
    app: &Arc<App>,
    targets: Vec<(u32, String)>,
    row: Row,
    expires: Option<Micros>,
) -> Result<Vec<u64>, WireError> {
    deliver_with(app, targets, row, None, expires).await
}

/// [`deliver`], and with `hook` a notification for a target (a webhook
/// or e-mail) queued in the same transaction as the rows.
pub async fn deliver_with(
    app: &Arc<App>,
    targets: Vec<(u32, String)>,
    row: Row,
    hook: Option<(
        Arc<crate::targets::TargetRecord>,
        crate::outbox::Notification,
    )>,
    expires: Option<Micros>,
) -> Result<Vec<u64>, WireError> {
    let app2 = app.clone();
    let queued = hook.is_some();
    let msg = Message { row, expires, hook };
    let seqs = crate::blocking::wire("delivery failed", move || {
        inbox::send::deliver(&app2.inboxes(), &targets, &msg)
    })
    .await?;
    if queued {
        app.sender.wake();
    }
    if let Some(at) = expires {
        // After the commit: the writer's next expiry step sees the row.
        app.command_expiry.added(at);
    }
    Ok(seqs)
}

/// `POST /v1/devices/ID/inbox` with `kind=message|command`, `sensor`,
/// `value` (a command: optionally `expires`): queue it for the device;
/// `ok,<seq>`.
pub async fn send(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let form = Form::read(
        req,
        &["device", "token", "kind", "sensor", "value", "expires"],
        timeout(app),
    )
    .await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::SendToDevice, id)?;
    let row = row_from(app, &form, who.label())?;
    let expires = super::commands::expires_from(&form, &row)?;
    let seqs = deliver(app, vec![(d.num, d.id.clone())], row, expires).await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(&d.id), seq = seqs[0], "inbox row queued");
    Ok(Reply::csv(format!("ok,{}\n", seqs[0])).with_status(201))
}
