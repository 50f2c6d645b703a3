//! Users, login sessions, grants, and revoking credentials.
//!
//! - `POST /v1/users`, `GET /v1/users` (administrators)
//! - `POST /v1/users/NAME/token|password|revoke` (the user or an administrator)
//! - `POST /v1/login` (name and password → a session token, also set as
//!   the dashboard's `HttpOnly; SameSite=Strict` cookie), `POST
//!   /v1/logout`, `GET /v1/session` (the session's CSRF token)
//! - `POST|DELETE|GET /v1/grants` (the owner of the device or channel)
//! - `POST /v1/devices/ID/revoke` (the device's owner)

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{
    self, valid_id, visible, Action, Level, Principal, Resource, KIND_CHANNEL, KIND_DEVICE,
    KIND_FILE,
};
use crate::codec::names::log_safe;
use crate::codec::{names::clip, names::write_csv_text, timefmt};
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::store::{ChannelRecord, DeviceRecord, FileRecord, Role};
use crate::users;

fn timeout(app: &App) -> Duration {
    Duration::from_secs(app.config.limits.body_timeout_secs)
}

fn password_field(form: &Form) -> Result<Option<String>, WireError> {
    match form.get("password") {
        None | Some("") => Ok(None),
        Some(p) if p.len() < users::MIN_PASSWORD || p.len() > 1024 => Err(WireError::bad_request(
            "bad_password",
            format!("a password is {}..1024 bytes", users::MIN_PASSWORD),
        )),
        Some(p) => Ok(Some(p.to_string())),
    }
}

/// `POST /v1/users` with `name`, `role` (`user` or `admin`) and optional
/// `password`: `201 user,token`.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["name", "role", "password"], timeout(app)).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::ManageUsers, Resource::None)?;
    let name = form.require("name")?.to_string();
    if !valid_id(&name) || name == "anonymous" {
        return Err(WireError::bad_request(
            "bad_name",
            "a user name is 1-64 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let role = match form.get("role").unwrap_or("user") {
        "user" => Role::User,
        "admin" => Role::Administrator,
        other => {
            return Err(WireError::bad_request(
                "bad_role",
                format!("role '{}' is not user or admin", clip(other)),
            ))
        }
    };
    let password = password_field(&form)?;
    let app2 = app.clone();
    let (rec, token) = password_job(app, move || {
        users::create(&app2.store, &name, role, password.as_deref())
    })
    .await??;
    app.directory.put_user(rec.clone());
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), user = %log_safe(&rec.name), "user created");
    Ok(Reply::csv(format!("user,token\n{},{token}\n", rec.name)).with_status(201))
}

/// `GET /v1/users`: `name,role,created,password` (whether one is set).
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &[], timeout(app)).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::ManageUsers, Resource::None)?;
    let app2 = app.clone();
    let mut list = crate::blocking::wire("list failed", move || app2.store.load_users()).await?;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("name,role,created,password\n");
    for u in list {
        write_csv_text(&u.name, &mut out);
        out.push_str(if u.role == Role::Administrator {
            ",admin,"
        } else {
            ",user,"
        });
        timefmt::write_time(u.created, &mut out);
        out.push_str(if u.password.is_some() {
            ",yes\n"
        } else {
            ",no\n"
        });
    }
    Ok(Reply::csv(out))
}

/// `POST /v1/users/NAME/token`: a new API token (`user,token`); the
/// previous one keeps working until the next rotation.
/// `POST /v1/users/NAME/password` with `password` (empty removes it).
/// `POST /v1/users/NAME/revoke`: both tokens and the password stop
/// working.
///
/// Any of the three ends every login session of the user. A caller
/// authenticated by a login session (cookie or Bearer session token) must
/// also give `current`, its own current password, unless it is an
/// administrator acting on another user: a stolen session must not be
/// enough to take the account over (`403 password_required`; a wrong
/// one is `403 wrong_password` and counts towards throttling like a
/// failed login).
pub async fn credentials(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
    what: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &["password", "current"], timeout(app)).await?;
    let who = form.header_principal(app)?;
    app.directory
        .authorize(&who, Action::ManageCredentials, Resource::User(name))?;
    if app.directory.user(name).is_none() {
        return Err(WireError::new(
            404,
            "unknown_user",
            format!("no user '{}'", clip(name)),
        ));
    }
    let password = password_field(&form)?;
    if let Principal::User(me) = &who {
        let admin_on_other = me.role == Role::Administrator && me.name != name;
        if auth::came_by_session(&app.directory, &form.headers) && !admin_on_other {
            let current = form
                .get("current")
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    WireError::new(
                        403,
                        "password_required",
                        "from a login session, give current= (your current password)",
                    )
                })?;
            check_password(app, form.peer, &me.name, current)
                .await
                .map_err(|e| match e.status {
                    401 => WireError::new(403, "wrong_password", "current: wrong password"),
                    _ => e,
                })?;
        }
    }
    let app2 = app.clone();
    let name2 = name.to_string();
    let what2 = what.to_string();
    let job = move || -> Result<_, users::UserError> {
        Ok(match what2.as_str() {
            "token" => {
                let role = app2.directory.user(&name2).map_or(Role::User, |u| u.role);
                let (rec, token) = users::issue_token(&app2.store, &name2, role)?;
                (rec, format!("user,token\n{name2},{token}\n"))
            }
            "password" => (
                users::set_password(&app2.store, &name2, password.as_deref())?,
                "ok\n".into(),
            ),
            _ => (users::revoke(&app2.store, &name2)?, "ok\n".into()),
        })
    };
    // Setting a password hashes it with argon2: it takes a slot.
    let (rec, body) = if what == "password" {
        password_job(app, job).await??
    } else {
        crate::blocking::wire("update failed", job).await?
    };
    app.directory.put_user(rec);
    app.directory.end_sessions(name);
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), user = %log_safe(name), change = %log_safe(what), "user credentials changed");
    Ok(Reply::csv(body))
}

/// Run an argon2 job (a password check or hash) on the blocking pool in
/// one of the `[limits] password_checks` slots. The slot is taken with a
/// try-acquire: when all are busy the request gets `503 overloaded` with
/// `Retry-After: 1` at once, so a flood of logins neither queues without
/// bound nor takes every core and the memory argon2 needs per check.
pub(crate) async fn password_job<T: Send + 'static>(
    app: &App,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WireError> {
    let permit = app
        .password_checks
        .clone()
        .try_acquire_owned()
        .map_err(|_| WireError::overloaded("too many password checks at once; retry"))?;
    Ok(crate::blocking::value("password check failed", move || {
        let _slot = permit;
        job()
    })
    .await?)
}

/// Check user `name`'s password, throttled (see [`crate::throttle`]):
/// the attempt is counted as a failure before argon2 runs and un-counted
/// when it was right. The user as checked, or `401`/`429`/`503`.
async fn check_password(
    app: &App,
    peer: Option<std::net::IpAddr>,
    name: &str,
    password: &str,
) -> Result<Arc<crate::store::UserRecord>, WireError> {
    let keys = crate::throttle::Keys::password(peer, name);
    let attempt = app.throttle.begin(&keys).map_err(|secs| {
        WireError::rate_limited("too many failed attempts; wait and retry", secs)
    })?;
    let user = app.directory.user(name);
    let hash = user.as_ref().and_then(|u| u.password.clone());
    let password = password.to_string();
    let checked = password_job(app, move || match hash {
        Some(h) => users::verify_password(&h, &password),
        None => {
            // Same cost for an unknown user or one without a password.
            let _ = users::verify_password(dummy_hash(), &password);
            false
        }
    })
    .await;
    match (checked, user) {
        (Ok(true), Some(u)) => {
            attempt.succeeded();
            Ok(u)
        }
        (Ok(_), _) => {
            attempt.failed();
            Err(WireError::unauthorized("wrong name or password"))
        }
        (Err(e), _) => {
            // Not checked (no slot): not a failure.
            attempt.succeeded();
            Err(e)
        }
    }
}

/// `POST /v1/login` with `name` and `password`: `user,token` where the
/// token is a session token (Bearer) valid for `session_secs`. Wrong
/// passwords count towards throttling like wrong tokens; the session
/// ends when the user's credentials change.
pub async fn login(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["name", "password"], timeout(app)).await?;
    let name = form.require("name")?.to_string();
    let password = form.require("password")?.to_string();
    let user = check_password(app, form.peer, &name, &password).await?;
    let token = app
        .directory
        .new_session(&user, Duration::from_secs(app.config.limits.session_secs));
    tracing::info!(target: "overlord::audit", user = %log_safe(&name), "login");
    let reply = Reply::csv(format!("user,token\n{name},{token}\n"));
    // The cookie only for the dashboard's own request (it sends
    // `X-Overlord-CSRF`, which a cross-site HTML form cannot): another
    // site's form must not log a browser into an account of its choosing
    // (login CSRF). Scripts use the token in the body.
    if !form.headers.contains_key(auth::CSRF_HEADER) {
        return Ok(reply);
    }
    let csrf = auth::csrf_for(&token);
    let cookie = auth::session_set_cookie(
        &token,
        app.config.limits.session_secs,
        app.config.dashboard.secure_cookie || form.https,
    );
    Ok(reply
        .with_header(hyper::header::SET_COOKIE, cookie)
        .with_header(
            hyper::header::HeaderName::from_static("overlord-csrf"),
            csrf,
        ))
}

/// `POST /v1/logout`: ends the login session presented (the session cookie
/// or a Bearer session token) and clears the cookie: `ok,<sessions
/// ended>`. A user's API token is not ended by this (revoke it instead).
pub async fn logout(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let Principal::User(u) = who else {
        return Err(WireError::forbidden("a device has no login session"));
    };
    let mut ended = 0;
    if let Some(t) = auth::session_cookie(&form.headers) {
        ended += usize::from(app.directory.end_session(t));
    }
    if let Some(t) = form
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::request::bearer)
    {
        // The same reading of the header as authentication's, so a
        // session that logged in by `bearer` is ended by it too.
        if app.directory.authenticate_session(t).is_some() {
            ended += usize::from(app.directory.end_session(t));
        }
    }
    tracing::info!(target: "overlord::audit", user = %log_safe(&u.name), "logout");
    Ok(Reply::csv(format!("ok,{ended}\n")).with_header(
        hyper::header::SET_COOKIE,
        auth::session_set_cookie("", 0, app.config.dashboard.secure_cookie || form.https),
    ))
}

/// `GET /v1/session`: `user,role,csrf,tile_url` for the caller. `csrf` is the
/// session's CSRF token when the caller came with the session cookie
/// (the dashboard asks for it after a reload), else empty.
pub async fn session(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["device", "token"], timeout(app)).await?;
    let who = form.caller(app)?;
    let Principal::User(u) = who else {
        return Err(WireError::forbidden("a device has no login session"));
    };
    let csrf = match (
        auth::session_cookie(&form.headers),
        form.headers.contains_key(hyper::header::AUTHORIZATION),
    ) {
        (Some(t), false) => auth::csrf_for(t),
        _ => String::new(),
    };
    let mut out = String::from("user,role,csrf,tile_url\n");
    write_csv_text(&u.name, &mut out);
    out.push(',');
    out.push_str(if u.role == Role::Administrator {
        "admin"
    } else {
        "user"
    });
    out.push(',');
    out.push_str(&csrf);
    out.push(',');
    if crate::api::dashboard::tile_origin(&app.config.dashboard.tile_url).is_some() {
        write_csv_text(&app.config.dashboard.tile_url, &mut out);
    }
    out.push('\n');
    Ok(Reply::csv(out))
}

/// A real argon2id hash of a random password, verified against when the
/// user is unknown (or has no password) so that takes as long as a wrong
/// password. Made once, on first use.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| users::hash_password(&auth::generate_token()))
}

/// Which device, channel or file a grant is on: `device:ID`,
/// `channel:NAME` or `file:NAME`.
fn grant_target(app: &App, who: &Principal, res: &str) -> Result<(u8, u32), WireError> {
    let bad = || {
        WireError::bad_request(
            "bad_resource",
            "resource is device:ID, channel:NAME or file:NAME",
        )
    };
    let (kind, name) = res.split_once(':').ok_or_else(bad)?;
    match kind {
        "device" => {
            let d = visible::<DeviceRecord>(app, who, Action::Grant, name)?;
            Ok((KIND_DEVICE, d.num))
        }
        "channel" => {
            let c = visible::<ChannelRecord>(app, who, Action::Grant, name)?;
            Ok((KIND_CHANNEL, c.num))
        }
        "file" => {
            let f = visible::<FileRecord>(app, who, Action::Grant, name)?;
            Ok((KIND_FILE, f.num))
        }
        _ => Err(bad()),
    }
}

/// A grantee must exist: `user:NAME`, `device:ID` or `anonymous`.
fn grantee(app: &App, to: &str) -> Result<String, WireError> {
    let ok = match to.split_once(':') {
        _ if to == "anonymous" => true,
        Some(("user", n)) => app.directory.user(n).is_some(),
        Some(("device", id)) => app.directory.device(id).is_some(),
        _ => false,
    };
    if ok {
        Ok(to.to_string())
    } else {
        Err(WireError::bad_request(
            "bad_grantee",
            format!(
                "'{}' is not an existing user:NAME, device:ID or anonymous",
                clip(to)
            ),
        ))
    }
}

/// `POST /v1/grants` with `resource` (`device:ID`, `channel:NAME`), `to`
/// (`user:NAME`, `device:ID`, `anonymous`) and `level` (`read`,
/// `control`); `DELETE` with `resource` and `to` withdraws it. Only the
/// owner (or an administrator) grants.
pub async fn change(app: &Arc<App>, req: Request<Incoming>, add: bool) -> Result<Reply, WireError> {
    let form = Form::read(req, &["resource", "to", "level"], timeout(app)).await?;
    let who = form.header_principal(app)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    let res = form.require("resource")?.to_string();
    let (kind, num) = grant_target(app, &who, &res)?;
    let to = grantee(app, form.require("to")?)?;
    let level = if add {
        Level::parse(form.get("level").unwrap_or("read"))
            .ok_or_else(|| WireError::bad_request("bad_level", "level is read or control"))?
    } else {
        Level::Read
    };
    // `anonymous` means "everyone": a device, channel or file may be
    // made public for reading, never controlled by anyone at all.
    if add && to == auth::ANONYMOUS && level != Level::Read {
        return Err(WireError::bad_request(
            "bad_level",
            "anonymous (everyone) may only be granted read",
        ));
    }
    let app2 = app.clone();
    let to2 = to.clone();
    let change = if add { Some(level) } else { None };
    crate::blocking::wire("grant failed", move || {
        crate::grants::change(&app2.store, &app2.directory, (kind, num), &to2, change)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), resource = %log_safe(&res), to = %log_safe(&to), level = level.as_str(), add, "grant changed");
    Ok(Reply::csv(format!("ok,{res},{to}\n")).with_status(if add { 201 } else { 200 }))
}

/// `GET /v1/grants?resource=device:ID`: `resource,to,level`.
pub async fn list_grants(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let form = Form::read(req, &["resource"], timeout(app)).await?;
    let who = form.header_principal(app)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    let res = form.require("resource")?.to_string();
    let (kind, num) = grant_target(app, &who, &res)?;
    let mut out = String::from("resource,to,level\n");
    for (to, level) in app.directory.grants_on(kind, num) {
        write_csv_text(&res, &mut out);
        out.push(',');
        write_csv_text(&to, &mut out);
        out.push(',');
        out.push_str(level.as_str());
        out.push('\n');
    }
    Ok(Reply::csv(out))
}

/// `POST /v1/devices/ID/revoke`: both of the device's tokens stop working
/// at once (issue a new one with `POST /v1/devices/ID/token`).
pub async fn revoke_device(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let form = Form::read(req, &[], timeout(app)).await?;
    let who = form.header_principal(app)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    let d = visible::<DeviceRecord>(app, &who, Action::RevokeDevice, id)?;
    let app2 = app.clone();
    crate::blocking::wire("revoke failed", move || {
        crate::devices::revoke(&app2.store, &app2.directory, &d)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(id), "device tokens revoked");
    Ok(Reply::csv("ok\n"))
}
