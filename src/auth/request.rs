//! The credentials a request presents: `device=`/`token=` parameters,
//! `Authorization: Basic` or `Bearer`, the dashboard's session cookie.
//! [`authenticate`] turns them into a [`Principal`], counting failures
//! against the throttle.

use std::net::IpAddr;

use hyper::header;
use hyper::HeaderMap;

use super::credentials::{parse_basic, Principal};
use super::registry::Directory;
use crate::app::App;
use crate::error::WireError;

/// Name of the dashboard's session cookie (set by `POST /v1/login`).
pub const SESSION_COOKIE: &str = "overlord_session";

/// Header that carries the session's CSRF token on state-changing
/// requests authenticated by the session cookie.
pub const CSRF_HEADER: &str = "x-overlord-csrf";

/// The value of the [`SESSION_COOKIE`] in the request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for the session: `HttpOnly` (scripts cannot read it),
/// `SameSite=Strict` (no other site's page makes the browser send it),
/// `Path=/`, and `Secure` when `secure` (`[dashboard] secure_cookie`). An
/// empty token with `max_age` 0 clears it.
pub fn session_set_cookie(token: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
    )
}

/// The token of an `Authorization: Bearer TOKEN` header value (`Bearer`
/// or `bearer`), trimmed.
pub fn bearer(auth: &str) -> Option<&str> {
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
}

/// Did this request authenticate with a login session (the cookie, or a
/// Bearer token that is a session's) rather than an API token? Mirrors
/// the precedence of [`authenticate`].
pub fn came_by_session(dir: &Directory, headers: &HeaderMap) -> bool {
    match headers.get(header::AUTHORIZATION) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(bearer)
            .is_some_and(|t| dir.is_session(t)),
        None => session_cookie(headers).is_some(),
    }
}

/// Who is calling: `device=`/`token=` parameters win, then the
/// `Authorization` header (`Basic id:token` for a device or a user,
/// `Bearer token` for a user's API or session token), then the
/// dashboard's session cookie (a session token only). Presented but wrong
/// credentials are `401`; none at all is [`Principal::Anonymous`].
///
/// Failures count against the source address and the (source, id named)
/// pair (see [`crate::throttle`]): a throttled pair gets `429
/// rate_limited` with `Retry-After`, even with the right secret; a
/// throttled source is checked at a reduced rate. Failures from other
/// addresses never refuse a right secret.
pub fn authenticate(
    app: &App,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    device: Option<&str>,
    token: Option<&str>,
) -> Result<Principal, WireError> {
    let who = find_principal(app, headers, peer, device, token)?;
    // The request log names who called (`device:ID`, `user:NAME`).
    crate::api::note_caller(&who);
    Ok(who)
}

/// [`authenticate`] without noting the caller for the request log.
fn find_principal(
    app: &App,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    device: Option<&str>,
    token: Option<&str>,
) -> Result<Principal, WireError> {
    enum Presented {
        Device(String, String),
        Basic(String, String),
        Bearer(String),
        Cookie(String),
    }
    let presented = if let Some(token) = token {
        let id = device.ok_or_else(|| WireError::unauthorized("token given without device"))?;
        Presented::Device(id.to_string(), token.to_string())
    } else if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| WireError::unauthorized("unsupported Authorization header"))?;
        if let Some(t) = bearer(auth) {
            Presented::Bearer(t.to_string())
        } else {
            let (id, secret) = parse_basic(auth)
                .ok_or_else(|| WireError::unauthorized("unsupported Authorization header"))?;
            Presented::Basic(id, secret)
        }
    } else if let Some(t) = session_cookie(headers) {
        Presented::Cookie(t.to_string())
    } else {
        return Ok(Principal::Anonymous);
    };
    if let Presented::Cookie(t) = &presented {
        // A stale cookie is not a guess (the token is 128 random bits), so
        // it is not counted against the source: a browser left open on an
        // expired session must still be able to log in again.
        return app
            .directory
            .authenticate_session(t)
            .map(Principal::User)
            .ok_or_else(|| WireError::unauthorized("the session has ended; log in again"));
    }
    let keys = match &presented {
        Presented::Device(id, _) | Presented::Basic(id, _) => {
            crate::throttle::Keys::token(peer, "id", Some(id))
        }
        Presented::Bearer(_) | Presented::Cookie(_) => {
            crate::throttle::Keys::token(peer, "id", None)
        }
    };
    checked(app, &keys, |dir| match &presented {
        Presented::Device(id, t) => dir.authenticate_device(id, t).map(Principal::Device),
        Presented::Basic(id, t) => dir.authenticate_basic(id, t),
        Presented::Bearer(t) => dir.authenticate_bearer(t).map(Principal::User),
        Presented::Cookie(_) => None,
    })
}

/// Check a login that is not an HTTP request (an MQTT CONNECT's username
/// and password): a device id and its token, or a user name and API
/// token, counted and throttled exactly like `Authorization: Basic`.
pub fn authenticate_login(
    app: &App,
    peer: Option<IpAddr>,
    id: &str,
    secret: &str,
) -> Result<Principal, WireError> {
    let keys = crate::throttle::Keys::token(peer, "id", Some(id));
    checked(app, &keys, |dir| dir.authenticate_basic(id, secret))
}

/// Run `check` as one throttled attempt under `keys`; a device found is
/// contact (presence).
fn checked(
    app: &App,
    keys: &crate::throttle::Keys,
    check: impl FnOnce(&Directory) -> Option<Principal>,
) -> Result<Principal, WireError> {
    let attempt = app.throttle.begin(keys).map_err(|secs| {
        WireError::rate_limited("too many failed attempts; wait and retry", secs)
    })?;
    let Some(found) = check(&app.directory) else {
        attempt.failed();
        return Err(WireError::unauthorized("wrong or unknown id or token"));
    };
    attempt.succeeded();
    if let Principal::Device(d) = &found {
        // Any authenticated request is contact (presence).
        app.presence.saw(d.num, app.clock.now_micros());
    }
    Ok(found)
}

/// Who presents a secret through a door's own fields rather than the
/// usual ones: an `id` and secret (InfluxDB `u`/`p`, `Token id:secret`),
/// checked like Basic (a device id first, then a user name), or a bare
/// token (`id` `None`: InfluxDB `Token TOKEN`, ThingSpeak `api_key`),
/// checked by [`Directory::authenticate_token`]. Throttled and counted as
/// contact exactly like [`authenticate`]; wrong is `401`.
pub fn authenticate_secret(
    app: &App,
    peer: Option<IpAddr>,
    id: Option<&str>,
    secret: &str,
) -> Result<Principal, WireError> {
    let keys = crate::throttle::Keys::token(peer, "id", id);
    let attempt = app.throttle.begin(&keys).map_err(|secs| {
        WireError::rate_limited("too many failed attempts; wait and retry", secs)
    })?;
    let found = match id {
        Some(id) => app.directory.authenticate_basic(id, secret),
        None => app.directory.authenticate_token(secret),
    };
    let Some(found) = found else {
        attempt.failed();
        return Err(WireError::unauthorized("wrong or unknown id or token"));
    };
    attempt.succeeded();
    if let Principal::Device(d) = &found {
        app.presence.saw(d.num, crate::codec::timefmt::now_micros());
    }
    Ok(found)
}
