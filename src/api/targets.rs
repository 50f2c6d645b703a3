//! Notification targets over HTTP: create, list, delete, a test
//! notification, and each target's delivery history and dead letters.
//! Permissions are those of alerts: users create them; the owner and
//! administrators see and manage them; they are not granted.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{valid_id, visible, Action, Principal, Resource};
use crate::codec::names::{log_safe, write_csv_text};
use crate::codec::timefmt;
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::outbox::{self, HISTORY_HEADER};
use crate::sender::{mail, webhook};
use crate::store::{StoreError, PRESENCE_TARGETS};
use crate::targets::{Format, Kind, TargetRecord};

/// Longest webhook URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest signing secret.
pub const MAX_SECRET_BYTES: usize = 256;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

/// The kind and destination a `POST /v1/targets` form names, checked:
/// `url` for a webhook, `address` for an e-mail (which needs `[smtp]`).
fn destination(app: &App, form: &Form) -> Result<(Kind, String), WireError> {
    let bad = |e: String| WireError::bad_request("bad_value", e);
    let only = |other: &str| {
        form.get(other).is_some().then(|| {
            WireError::bad_request(
                "bad_parameter",
                format!("{other} does not go with this kind"),
            )
        })
    };
    match form.get("kind").unwrap_or("webhook") {
        "webhook" | "" => {
            if let Some(e) = only("address") {
                return Err(e);
            }
            let url = form.require("url")?.to_string();
            if url.len() > MAX_URL_BYTES {
                return Err(bad("url is too long".into()));
            }
            webhook::check_url(&url).map_err(bad)?;
            Ok((Kind::Webhook, url))
        }
        "email" => {
            if let Some(e) = only("url")
                .or_else(|| only("secret"))
                .or_else(|| only("format"))
            {
                return Err(e);
            }
            if app.config.smtp.host.is_empty() {
                return Err(WireError::bad_request(
                    "bad_value",
                    "e-mail targets need the server's [smtp] host set",
                ));
            }
            let address = form.require("address")?.to_string();
            if address.len() > 254 {
                return Err(bad("address is too long".into()));
            }
            mail::check_address(&address).map_err(bad)?;
            Ok((Kind::Email, address))
        }
        other => Err(bad(format!(
            "kind: '{}' is not webhook or email",
            crate::codec::names::clip(other)
        ))),
    }
}

/// What a `POST /v1/targets` form says, checked.
fn record_from(app: &App, form: &Form, owner: &str) -> Result<TargetRecord, WireError> {
    let name = form.require("name")?.to_string();
    if !valid_id(&name) {
        return Err(WireError::bad_request(
            "bad_name",
            "a target name is 1-64 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let (kind, to) = destination(app, form)?;
    let secret = form.get("secret").unwrap_or("").to_string();
    if secret.len() > MAX_SECRET_BYTES || secret.chars().any(char::is_control) {
        return Err(WireError::bad_request(
            "bad_value",
            "secret: at most 256 bytes, no control characters",
        ));
    }
    let format = match form.get("format").filter(|f| !f.is_empty()) {
        None => Format::Json,
        Some(f) => Format::parse(f)
            .ok_or_else(|| WireError::bad_request("bad_value", "format: json or csv"))?,
    };
    Ok(TargetRecord {
        id: 0,
        name,
        owner: owner.to_string(),
        kind,
        to,
        secret,
        format,
        created: timefmt::now_micros(),
    })
}

fn flag(form: &Form, name: &str) -> Result<bool, WireError> {
    match form.get(name) {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(_) => Err(WireError::bad_request(
            "bad_value",
            format!("{name}: 1 or 0"),
        )),
    }
}

/// `POST /v1/targets` with `name` and either `url` (`kind=webhook`, the
/// default; optional `secret` and `format`, `json` or `csv`) or `address`
/// (`kind=email`); optional `presence` (`1`: also tell it when the
/// caller's devices go offline or online). `201 name`.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let allowed = [
        "name", "kind", "url", "address", "secret", "format", "presence",
    ];
    let form = Form::read(req, &allowed, timeout(app)).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::CreateOwned, Resource::None)?;
    let Principal::User(user) = &who else {
        return Err(WireError::forbidden("targets are created by users"));
    };
    let rec = record_from(app, &form, &user.name)?;
    let presence = flag(&form, "presence")?;
    let quota = crate::quotas::applies(
        &app.directory,
        &user.name,
        app.config.quotas.targets_per_user,
    );
    let app2 = app.clone();
    let rec = crate::blocking::wire("target operation failed", move || {
        crate::targets::create(&app2.store, app2.catalog.targets(), rec, presence, quota)
    })
    .await?;
    // The URL and the secret are never logged (a URL may carry a token).
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), target_name = %log_safe(&rec.name), "target created");
    Ok(Reply::csv(format!("name\n{}\n", rec.name)).with_status(201))
}

/// CSV header of target listings.
pub const LIST_HEADER: &str = "name,owner,kind,to,format,signed,presence,waiting,created\n";

/// `GET /v1/targets`: every target the caller may read (their own; all
/// for administrators), with the notifications `waiting` in its outbox.
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let mine: Vec<Arc<TargetRecord>> = app
        .catalog
        .targets()
        .all()
        .into_iter()
        .filter(|t| visible::<TargetRecord>(app, &who, Action::ReadOwned, &t.name).is_ok())
        .collect();
    let app2 = app.clone();
    crate::blocking::wire("target operation failed", move || {
        app2.store.read(|txn| {
            let presence = txn.open_table(PRESENCE_TARGETS)?;
            let mut out = String::from(LIST_HEADER);
            for t in &mine {
                let waiting = outbox::waiting(txn, t.id)?;
                let told = presence
                    .get(t.owner.as_str())?
                    .is_some_and(|g| g.value() == t.id);
                for (i, f) in [&t.name, &t.owner, t.kind.as_str(), &t.to, t.format.as_str()]
                    .iter()
                    .enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    write_csv_text(f, &mut out);
                }
                let yes = |b: bool| if b { "yes" } else { "no" };
                out.push_str(&format!(
                    ",{},{},{waiting},",
                    yes(!t.secret.is_empty()),
                    yes(told)
                ));
                timefmt::write_time(t.created, &mut out);
                out.push('\n');
            }
            Ok::<_, StoreError>(Reply::csv(out))
        })
    })
    .await
}

/// `DELETE /v1/targets/NAME`: the target, its waiting notifications
/// (they are not sent), its history and dead letters.
pub async fn delete(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let t = visible::<TargetRecord>(app, &who, Action::ManageOwned, name)?;
    let app2 = app.clone();
    let t2 = t.clone();
    crate::blocking::wire("target operation failed", move || {
        crate::targets::delete(&app2.store, app2.catalog.targets(), &t2)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), target_name = %log_safe(&t.name), "target deleted");
    Ok(Reply::csv("ok\n"))
}

/// `POST /v1/targets/NAME/test`: queue a `test` notification for it
/// through the outbox like any other. `201 event`.
pub async fn test(app: &Arc<App>, req: Request<Incoming>, name: &str) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let t = visible::<TargetRecord>(app, &who, Action::ManageOwned, name)?;
    let app2 = app.clone();
    let label = who.label();
    let id = crate::blocking::wire("target operation failed", move || {
        crate::targets::queue_test(&app2.store, app2.catalog.targets(), &t, label)
    })
    .await?;
    app.sender.wake();
    Ok(Reply::csv(format!("event\n{id}\n")).with_status(201))
}

/// `GET /v1/targets/NAME/deliveries[?after=N][&limit=N]`: the attempts
/// kept, oldest first: `n,time,event,attempt,outcome,status,detail`.
pub async fn deliveries(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "after", "limit"], timeout(app)).await?;
    let who = form.caller(app)?;
    let t = visible::<TargetRecord>(app, &who, Action::ReadOwned, name)?;
    let after = form.number::<u64>("after")?.unwrap_or(0);
    let limit = super::history_limit(app, &form)?;
    let app2 = app.clone();
    crate::blocking::wire("target operation failed", move || {
        app2.store.read(|txn| {
            let mut out = String::from(HISTORY_HEADER);
            for (n, a) in outbox::history(txn, t.id, after, limit)? {
                a.write_csv(n, &mut out);
            }
            Ok::<_, StoreError>(Reply::csv(out))
        })
    })
    .await
}

/// `GET /v1/targets/NAME/dead-letters[?limit=N]`: notifications whose
/// retries ran out: `event,time,error,body`.
pub async fn dead_letters(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token", "limit"], timeout(app)).await?;
    let who = form.caller(app)?;
    let t = visible::<TargetRecord>(app, &who, Action::ReadOwned, name)?;
    let limit = super::history_limit(app, &form)?;
    let app2 = app.clone();
    crate::blocking::wire("target operation failed", move || {
        app2.store.read(|txn| {
            let mut out = String::from("event,time,error,body\n");
            for (n, time, error, body) in outbox::dead(txn, t.id, limit)? {
                out.push_str(&outbox::event_id(n));
                out.push(',');
                timefmt::write_time(time, &mut out);
                out.push(',');
                write_csv_text(&error, &mut out);
                out.push(',');
                write_csv_text(&String::from_utf8_lossy(&body), &mut out);
                out.push('\n');
            }
            Ok::<_, StoreError>(Reply::csv(out))
        })
    })
    .await
}
