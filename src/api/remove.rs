//! Deleting and giving away over HTTP: `DELETE /v1/devices/ID`,
//! `DELETE /v1/channels/NAME` and `DELETE /v1/users/NAME`
//! (`crate::deletion`), `POST /v1/devices/ID/owner` (a transfer),
//! `DELETE /v1/devices/ID/readings` (a time range, `crate::purge`).
//! Audited (target `overlord::audit`).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{visible, Action, Resource};
use crate::codec::names::log_safe;
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::store::{ChannelRecord, DeviceRecord};

/// `DELETE /v1/devices/ID`: the device is refused at once and its data
/// removed (readings in the background); `ok,<inbox rows>,<channel
/// memberships>,<alerts>` removed with it.
pub async fn device(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["device", "token"], timeout).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::DeleteDevice, id)?;
    let app2 = app.clone();
    let d2 = d.clone();
    let removed = crate::blocking::wire("delete failed", move || {
        crate::deletion::delete_device(&app2, &d2)
    })
    .await?;
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        device = %log_safe(&d.id),
        inbox_rows = removed.inbox_rows,
        memberships = removed.memberships,
        alerts = removed.alerts,
        "device deleted"
    );
    Ok(Reply::csv(format!(
        "ok,{},{},{}\n",
        removed.inbox_rows, removed.memberships, removed.alerts
    )))
}

/// `POST /v1/devices/ID/owner` with `to=NAME`: the device belongs to user
/// `NAME` from now on (their `[quotas] devices_per_user` applies);
/// replies `id,owner`. Grants on it stay; what the old owner built on it
/// (channel members, alerts) keeps working only while they still have
/// access (checked at use, see docs/permissions.md).
pub async fn transfer(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["device", "token", "to"], timeout).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::TransferDevice, id)?;
    let to = form.require("to")?.to_string();
    if app.directory.user(&to).is_none() {
        return Err(WireError::new(
            404,
            "unknown_user",
            format!("no user '{}'", crate::codec::names::clip(&to)),
        ));
    }
    let quota = crate::quotas::applies(&app.directory, &to, app.config.quotas.devices_per_user);
    let app2 = app.clone();
    let (d2, to2) = (d.clone(), to.clone());
    crate::blocking::wire("transfer failed", move || {
        crate::devices::transfer(&app2.store, &app2.directory, &d2, &to2, quota)
    })
    .await?;
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        device = %log_safe(&d.id),
        from = %log_safe(&d.owner),
        to = %log_safe(&to),
        "device transferred"
    );
    Ok(Reply::csv(format!("id,owner\n{},{to}\n", d.id)))
}

/// `DELETE /v1/channels/NAME`: the channel, its members, the grants on it
/// and its items, at once; `ok,<items removed>`. Alerts and presence
/// notices that name it stop telling it (checked when used).
pub async fn channel(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["device", "token"], timeout).await?;
    let who = form.caller(app)?;
    let ch = visible::<ChannelRecord>(app, &who, Action::DeleteChannel, name)?;
    let app2 = app.clone();
    let ch2 = ch.clone();
    let items = crate::blocking::wire("delete failed", move || {
        crate::deletion::delete_channel(&app2, &ch2)
    })
    .await?;
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        channel = %log_safe(&ch.name),
        items,
        "channel deleted"
    );
    Ok(Reply::csv(format!("ok,{items}\n")))
}

/// `DELETE /v1/users/NAME[?cascade=true]` (administrators): the user;
/// `409 user_owns_things` while they own anything, unless `cascade=true`
/// deletes that too. `ok,<devices>,<channels>,<alerts>,<files>` removed.
pub async fn user(app: &Arc<App>, req: Request<Incoming>, name: &str) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["cascade"], timeout).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::ManageUsers, Resource::User(name))?;
    let cascade = match form.get("cascade") {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(WireError::bad_request(
                "bad_parameter",
                "cascade: true (delete what they own too) or false",
            ))
        }
    };
    let (app2, name2) = (app.clone(), name.to_string());
    let r = crate::blocking::wire("delete failed", move || {
        crate::deletion::delete_user(&app2, &name2, cascade)
    })
    .await?;
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        user = %log_safe(name),
        cascade,
        devices = r.devices,
        channels = r.channels,
        alerts = r.alerts,
        files = r.files,
        "user deleted"
    );
    Ok(Reply::csv(format!(
        "ok,{},{},{},{}\n",
        r.devices, r.channels, r.alerts, r.files
    )))
}

/// `DELETE /v1/devices/ID/readings?from=T&to=T[&sensors=N1,L2]
/// [&aggregates=keep|remove]`: the device's readings in `[from, to)`,
/// removed by the writer in bounded steps before the reply
/// (`crate::purge`); `ok,<readings removed>`.
pub async fn readings(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(
        req,
        &["device", "token", "from", "to", "sensors", "aggregates"],
        timeout,
    )
    .await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::DeleteReadings, id)?;
    let range = crate::purge::parse(d.num, |k| form.get(k))?;
    let rx = app
        .ingest
        .try_purge(range.clone())
        .map_err(|_| WireError::overloaded("too many deletions waiting; retry shortly"))?;
    let removed = match rx.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(WireError::from(e.as_ref())),
        Err(_) => return Err(WireError::overloaded("the server is shutting down")),
    };
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        device = %log_safe(&d.id),
        from = %crate::codec::timefmt::format_time(range.from),
        to = %crate::codec::timefmt::format_time(range.to),
        sensors = %log_safe(form.get("sensors").unwrap_or("*")),
        aggregates = if range.aggregates { "remove" } else { "keep" },
        removed,
        "readings deleted"
    );
    Ok(Reply::csv(format!("ok,{removed}\n")))
}
