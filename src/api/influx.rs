//! The InfluxDB door: `POST /write` (v1) and `POST /api/v2/write` (v2)
//! take line protocol (`codec::lineproto`) so Telegraf, Node-RED and the
//! official InfluxDB client libraries can write to Overlord. The readings
//! go through the ingest seam ([`crate::intake`]) like any other body;
//! `204` only after the fsync, as InfluxDB answers.
//!
//! Credentials: v1 `u`/`p` parameters or Basic; v2 `Authorization: Token
//! TOKEN` (a device's or a user's API token, or `id:token`); Bearer and
//! Basic work on both. `db`, `rp`, `consistency` (v1) and `org`, `orgID`,
//! `bucket` (v2) are accepted and ignored: Overlord has one database.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{header, HeaderMap, Request};

use crate::app::App;
use crate::auth::{authenticate, authenticate_secret, Principal};
use crate::codec::lineproto::Precision;
use crate::codec::{form, names::clip, timefmt};
use crate::error::WireError;
use crate::http::{declared_too_large, peer_of, read_body, Reply};
use crate::intake::{self, Media};

/// Which InfluxDB API a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `POST /write`.
    V1,
    /// `POST /api/v2/write`.
    V2,
}

/// The query parameters of a write.
struct Params {
    user: Option<String>,
    password: Option<String>,
    precision: Precision,
}

fn params(query: &str, version: Version, max: usize) -> Result<Params, WireError> {
    let pairs = form::parse_pairs_max(query.as_bytes(), max)?;
    let mut p = Params {
        user: None,
        password: None,
        precision: Precision::Nanos,
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{}: given more than once", clip(&k)),
            ));
        }
        match (version, k.as_str()) {
            (Version::V1, "u") => p.user = Some(v),
            (Version::V1, "p") => p.password = Some(v),
            (_, "precision") => {
                p.precision = Precision::parse(&v).ok_or_else(|| {
                    WireError::bad_request("bad_parameter", "precision: ns, us, ms or s")
                })?
            }
            (Version::V1, "db" | "rp" | "consistency")
            | (Version::V2, "org" | "orgID" | "bucket") => {}
            _ => {
                let known = match version {
                    Version::V1 => "u, p, db, rp, precision, consistency",
                    Version::V2 => "org, orgID, bucket, precision",
                };
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!("unknown parameter '{}'; use {known}", clip(&k)),
                ));
            }
        }
    }
    Ok(p)
}

/// The caller: `u`/`p`, else `Authorization: Token ...`, else the usual
/// headers (Basic, Bearer, the session cookie).
fn caller(
    app: &App,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    p: &Params,
) -> Result<Principal, WireError> {
    match (&p.user, &p.password) {
        (Some(u), Some(pw)) => return authenticate_secret(app, peer, Some(u), pw),
        (None, None) => {}
        _ => return Err(WireError::unauthorized("give both u and p")),
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Token ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::trim);
    let who = match token {
        Some(t) => match t.split_once(':') {
            Some((id, secret)) => authenticate_secret(app, peer, Some(id), secret)?,
            None => authenticate_secret(app, peer, None, t)?,
        },
        None => authenticate(app, headers, peer, None, None)?,
    };
    match who {
        Principal::Anonymous => Err(WireError::unauthorized(
            "credentials required: Authorization: Token TOKEN, u and p, or Basic",
        )),
        who => Ok(who),
    }
}

/// `POST /write?precision=s` or `POST /api/v2/write?precision=s`: store
/// the body's lines, `204` once fsynced.
pub async fn write(
    app: &Arc<App>,
    req: Request<Incoming>,
    version: Version,
) -> Result<Reply, WireError> {
    let now = timefmt::now_micros();
    let limits = &app.config.limits;
    if declared_too_large(&req, limits.max_body_bytes) {
        return Err(WireError::new(
            413,
            "too_large",
            format!(
                "the body is larger than {} bytes; send it in parts",
                limits.max_body_bytes
            ),
        ));
    }
    let p = params(
        req.uri().query().unwrap_or(""),
        version,
        app.limits.max_fields,
    )?;
    let (parts, body) = req.into_parts();
    if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(WireError::new(
                415,
                "unsupported_media_type",
                "compressed bodies are not accepted; send line protocol uncompressed (Telegraf: content_encoding = \"identity\")",
            ));
        }
    }
    // Credentials are never in the body: the caller is known (or refused)
    // before a byte of it is read.
    let who = caller(app, &parts.headers, peer_of(&parts.extensions), &p)?;
    let body = read_body(
        &parts.extensions,
        body,
        limits.max_body_bytes,
        Duration::from_secs(limits.body_timeout_secs),
    )
    .await?;
    let (body, _body_charge) = body.into_parts();
    let media = Media::Line(p.precision);
    let (parsed, _readings_charge) =
        intake::parse_charged(app, media, body, Vec::new(), now).await?;
    let resolved = intake::resolve(app, &who, parsed.batch).map_err(|mut e| {
        if e.code == "missing_device" {
            e.detail = "say which device: a device=ID tag on each line".into();
        }
        e
    })?;
    intake::submit(app, &who, resolved, 0).await?;
    Ok(Reply::csv(bytes::Bytes::new()).with_status(204))
}
