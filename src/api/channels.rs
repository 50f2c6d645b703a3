//! Channels over HTTP: create and list, members, items (with long-poll),
//! and messages to every member device.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::Request;

use crate::api::inbox::{deliver_with, row_from};
use crate::app::App;
use crate::auth::{valid_id, visible, Action, Principal, Resource};
use crate::channel_labels;
use crate::channels::{self, Item, Membership};
use crate::codec::names::log_safe;
use crate::codec::{names::clip, timefmt, SensorId};
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::store::{ChannelRecord, DeviceRecord, StoreError};
use crate::targets::TargetRecord;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

/// `POST /v1/channels` with `name`, optional `retention` (items kept)
/// and `description`: `201 name,retention`.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(
        req,
        &["device", "token", "name", "retention", "description"],
        timeout(app),
    )
    .await?;
    let who = form.caller(app)?;
    app.directory
        .authorize(&who, Action::CreateOwned, Resource::None)?;
    let Principal::User(user) = &who else {
        return Err(WireError::forbidden("channels are created by users"));
    };
    let name = form.require("name")?.to_string();
    if !valid_id(&name) {
        return Err(WireError::bad_request(
            "bad_name",
            "a channel name is 1-64 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let retention = form
        .number::<u64>("retention")?
        .unwrap_or(app.config.limits.channel_retention);
    if retention == 0 {
        return Err(WireError::bad_request(
            "bad_value",
            "retention must be at least 1",
        ));
    }
    let description = channel_labels::description(form.get("description").unwrap_or(""))?;
    let rec = ChannelRecord {
        num: 0,
        name,
        owner: user.name.clone(),
        retention,
        created: timefmt::now_micros(),
        description,
    };
    let quota = crate::quotas::applies(
        &app.directory,
        &user.name,
        app.config.quotas.channels_per_user,
    );
    let app2 = app.clone();
    let rec = crate::blocking::wire("create failed", move || {
        channels::create(&app2.store, &app2.catalog, rec, quota)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), channel = %log_safe(&rec.name), "channel created");
    Ok(Reply::csv(format!("name,retention\n{},{}\n", rec.name, rec.retention)).with_status(201))
}

/// `GET /v1/channels`: `name,owner,retention,first,next,members,description`
/// for every channel the caller may read.
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let visible: Vec<_> = app
        .catalog
        .channels()
        .into_iter()
        .filter(|c| {
            app.directory
                .authorize(&who, Action::ReadOwned, Resource::channel(c))
                .is_ok()
        })
        .collect();
    let app2 = app.clone();
    let out = crate::blocking::wire("list failed", move || {
        let mut out = String::from(LIST_HEADER);
        for c in &visible {
            let (first, next) = channels::bounds(&app2.store, c.num)?;
            let members = app2.catalog.members_of(c.num).len();
            out.push_str(&format!(
                "{},{},{},{first},{next},{members},",
                c.name, c.owner, c.retention
            ));
            crate::codec::names::write_csv_text(&c.description, &mut out);
            out.push('\n');
        }
        Ok::<_, StoreError>(out)
    })
    .await?;
    Ok(Reply::csv(out))
}

/// CSV header of `GET /v1/channels`.
pub const LIST_HEADER: &str = "name,owner,retention,first,next,members,description\n";

/// `GET /v1/channels/CH/members`: `device,sensor,label`.
pub async fn members(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.principal(app)?;
    let ch = visible::<ChannelRecord>(app, &who, Action::ReadOwned, name)?;
    let app2 = app.clone();
    let num = ch.num;
    let labels = crate::blocking::wire("read failed", move || {
        app2.store.read(|txn| channel_labels::of_channel(txn, num))
    })
    .await?;
    let mut out = String::from("device,sensor,label\n");
    for (dev, code) in app.catalog.members_of(ch.num) {
        if let (Some(d), Some(s)) = (app.directory.device_by_num(dev), SensorId::from_code(code)) {
            crate::codec::names::write_csv_text(&d.id, &mut out);
            out.push_str(&format!(",{s},"));
            let label = labels.get(&(dev, code)).map_or("", String::as_str);
            crate::codec::names::write_csv_text(label, &mut out);
            out.push('\n');
        }
    }
    Ok(Reply::csv(out))
}

/// `POST /v1/channels/CH` with `description`: changes the description
/// (an empty one clears it); `ok,<name>`. Needs manage rights on the
/// channel.
pub async fn update(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "description"], timeout(app)).await?;
    let who = form.caller(app)?;
    let ch = visible::<ChannelRecord>(app, &who, Action::ManageOwned, name)?;
    // Present but empty clears it: not `require`, which refuses empty.
    let description = form
        .get("description")
        .ok_or_else(|| WireError::bad_request("missing_field", "description is required"))?;
    let description = channel_labels::description(description)?;
    let app2 = app.clone();
    let ch_name = ch.name.clone();
    crate::blocking::wire("update failed", move || {
        channels::describe(&app2.store, &app2.catalog, &ch_name, description)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), channel = %log_safe(&ch.name), "channel described");
    Ok(Reply::csv(format!("ok,{}\n", ch.name)))
}

/// `POST /v1/channels/CH/members` (`device`, `sensor`, optional `label`)
/// adds a member (or, when it is one, changes its label: without `label`
/// the label stays, `label=` clears it); `DELETE` with `device` and
/// `sensor` removes it and its label. The caller must own the channel and
/// be allowed to read the device.
pub async fn change_member(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
    add: bool,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "sensor", "label"], timeout(app)).await?;
    // `device` here names the member, so the caller is found from headers.
    let who = form.header_principal(app)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    let ch = visible::<ChannelRecord>(app, &who, Action::ManageOwned, name)?;
    let d = visible::<DeviceRecord>(app, &who, Action::ReadReadings, form.require("device")?)?;
    let sensor = SensorId::parse(form.require("sensor")?)?;
    let change = match (add, form.get("label")) {
        (false, Some(_)) => {
            return Err(WireError::bad_request(
                "bad_parameter",
                "label is given when adding a member",
            ))
        }
        (false, None) => Membership::Remove,
        (true, l) => Membership::Add(l.map(channel_labels::label).transpose()?),
    };
    let key = (ch.num, d.num, sensor.code());
    let app2 = app.clone();
    crate::blocking::wire("member change failed", move || {
        channels::change_member(&app2.store, &app2.catalog, key, &change)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), channel = %log_safe(&ch.name), device = %log_safe(&d.id), %sensor, add, "channel member changed");
    Ok(Reply::csv(format!("ok,{},{sensor}\n", d.id)).with_status(if add { 201 } else { 200 }))
}

/// Anyone with read access may follow a channel, including anonymous
/// callers when it was made public (a `read` grant to `anonymous`).
///
/// `GET /v1/channels/CH/items?after=IDX[&limit=N][&wait=S]` or
/// `?since=TIME[&limit=N]`: rows `index,time,device,sensor,value`
/// (`format=json`: as JSON objects).
///
/// With `wait`, the reply comes as soon as at least one item exists after
/// `after`, or header-only when the wait ends. `wait` is capped at
/// `max_wait_secs`; at most `max_long_polls` wait at once (more: `503`),
/// `max_long_polls_per_caller` of them one caller's (more: `429`). A
/// client that goes away ends its wait (see [`client_gone`]).
pub async fn items(app: &Arc<App>, req: Request<Incoming>, name: &str) -> Result<Reply, WireError> {
    let client = crate::http::client_socket(req.extensions());
    let form = Form::read(
        req,
        &[
            "device", "token", "after", "since", "limit", "wait", "format",
        ],
        timeout(app),
    )
    .await?;
    let json = crate::http::wants_json(&form.headers, form.get("format"))?;
    let who = form.principal(app)?;
    let ch = visible::<ChannelRecord>(app, &who, Action::ReadOwned, name)?;
    let (limit, wait) = limit_and_wait(app, &form)?;
    let after = first_after(app, &form, ch.num).await?;
    let _slot = if wait.is_zero() {
        None
    } else {
        // Anonymous callers share their source address's share.
        let key = match (&who, form.peer) {
            (Principal::Anonymous, Some(ip)) => format!("src:{ip}"),
            _ => who.label(),
        };
        Some(app.long_polls.take(key)?)
    };
    let reply = wait_for_items(app, ch.num, after, limit, wait, client).await?;
    Ok(if json {
        crate::http::json_view(reply).await
    } else {
        reply
    })
}

/// `limit` (default 1000, at most `query_max_rows`) and `wait` (capped
/// at `max_wait_secs`) of an items request.
fn limit_and_wait(app: &App, form: &Form) -> Result<(usize, Duration), WireError> {
    let limit = match form.number::<usize>("limit")? {
        None => 1000,
        Some(n) if (1..=app.config.limits.query_max_rows).contains(&n) => n,
        Some(_) => {
            return Err(WireError::bad_request(
                "bad_limit",
                format!("limit must be 1..{}", app.config.limits.query_max_rows),
            ))
        }
    };
    let wait = form.number::<f64>("wait")?.unwrap_or(0.0);
    if !(0.0..=1e9).contains(&wait) {
        return Err(WireError::bad_request(
            "bad_value",
            "wait is seconds, 0 or more",
        ));
    }
    let wait = Duration::from_secs_f64(wait.min(app.config.limits.max_wait_secs as f64));
    Ok((limit, wait))
}

/// The index an items request reads after: `after`, or the one before
/// the first item added at or after `since`, or 0.
async fn first_after(app: &Arc<App>, form: &Form, num: u32) -> Result<u64, WireError> {
    match (form.number::<u64>("after")?, form.get("since")) {
        (Some(_), Some(_)) => Err(WireError::bad_request(
            "bad_parameter",
            "give after or since, not both",
        )),
        (Some(a), None) => Ok(a),
        (None, Some(s)) => {
            let since = timefmt::parse_instant(s).map_err(|why| {
                WireError::bad_request(
                    "bad_time",
                    format!("since: '{}' is not a time ({why})", clip(s)),
                )
            })?;
            let app2 = app.clone();
            crate::blocking::wire("read failed", move || {
                channels::after_for_since(&app2.store, num, since)
            })
            .await
        }
        (None, None) => Ok(0),
    }
}

/// The items after `after` (at most `limit`), waiting up to `wait` for
/// the first one; header-only when the wait ends or the client goes.
async fn wait_for_items(
    app: &Arc<App>,
    num: u32,
    after: u64,
    limit: usize,
    wait: Duration,
    client: Option<crate::http::ClientSocket>,
) -> Result<Reply, WireError> {
    let deadline = Instant::now() + wait;
    let mut events = app.channel_events.clone();
    Ok(loop {
        // Mark the current state seen before reading, so an append that
        // lands after the read wakes us.
        events.borrow_and_update();
        let app2 = app.clone();
        let got = crate::blocking::wire("read failed", move || {
            channels::read_after(&app2.store, num, after, limit)
        })
        .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !got.is_empty() || left.is_zero() {
            break Reply::csv(render(app, &got));
        }
        tokio::select! {
            changed = events.changed() => {
                if changed.is_err() {
                    break Reply::csv(channels::HEADER);
                }
            }
            () = tokio::time::sleep(left) => break Reply::csv(channels::HEADER),
            // The client closed (or half-closed): the wait ends now and
            // the slot is free; a half-closed client reads this reply.
            () = client_gone(client) => break Reply::csv(channels::HEADER),
        }
    })
}

/// Completes once the client has gone away: checked every
/// [`GONE_CHECK`], one non-blocking peek each (never, without a socket).
async fn client_gone(client: Option<crate::http::ClientSocket>) {
    let Some(client) = client else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(GONE_CHECK).await;
        if client.gone() {
            return;
        }
    }
}

/// How often a waiting long-poll looks whether its client is still there.
const GONE_CHECK: Duration = Duration::from_millis(250);

fn render(app: &App, items: &[(u64, Item)]) -> String {
    let mut out = String::with_capacity(channels::HEADER.len() + items.len() * 48);
    out.push_str(channels::HEADER);
    for (idx, it) in items {
        write_item(app, *idx, it, &mut out);
    }
    out
}

/// Append one item as the row `index,time,device,sensor,value\n` (HTTP
/// replies and MQTT channel subscriptions).
pub fn write_item(app: &App, idx: u64, it: &Item, out: &mut String) {
    out.push_str(&idx.to_string());
    out.push(',');
    timefmt::write_time(it.time, out);
    out.push(',');
    match app.directory.device_by_num(it.device) {
        Some(d) => crate::codec::names::write_csv_text(&d.id, out),
        None => out.push_str(&format!("#{}", it.device)),
    }
    out.push(',');
    out.push_str(&it.sensor.to_string());
    out.push(',');
    it.value.write_csv(out);
    out.push('\n');
}

/// `POST /v1/channels/CH/messages` with `kind`, `sensor`, `value`: the
/// same row to every device on the channel, all or none
/// (`inbox_full` names the first full one); `ok,<devices>`. With
/// `to_target`, a notification for that target (the caller's) is queued
/// in the same transaction.
pub async fn message(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(
        req,
        &[
            "device",
            "token",
            "kind",
            "sensor",
            "value",
            "to_target",
            "expires",
        ],
        timeout(app),
    )
    .await?;
    let who = form.caller(app)?;
    let ch = visible::<ChannelRecord>(app, &who, Action::ManageOwned, name)?;
    let row = row_from(app, &form, format!("channel:{}", ch.name))?;
    let hook = match form.get("to_target").filter(|t| !t.is_empty()) {
        Some(t) => {
            let t = visible::<TargetRecord>(app, &who, Action::ManageOwned, t)?;
            let note = crate::outbox::Notification {
                kind: row.kind.as_str(),
                time: row.time,
                source: ch.name.clone(),
                device: String::new(),
                sensor: row.sensor.clone(),
                value: row.value.clone(),
                text: row.value.clone(),
            };
            Some((t, note))
        }
        None => None,
    };
    let expires = crate::api::commands::expires_from(&form, &row)?;
    let mut targets: Vec<(u32, String)> = Vec::new();
    for (dev, _) in app.catalog.members_of(ch.num) {
        if targets.iter().any(|(d, _)| *d == dev) {
            continue;
        }
        if let Some(d) = app.directory.device_by_num(dev) {
            app.directory
                .authorize(&who, Action::SendToDevice, Resource::Device(&d))?;
            targets.push((dev, d.id.clone()));
        }
    }
    let n = deliver_with(app, targets, row, hook, expires).await?.len();
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), channel = %log_safe(&ch.name), devices = n, "channel message queued");
    Ok(Reply::csv(format!("ok,{n}\n")).with_status(201))
}
