//! Readings: `GET/POST /v1/readings` (ingest),
//! `GET/POST /v1/devices/ID/readings` (query) and
//! `GET/POST /v1/devices/ID/aggregates` (what retention kept of removed
//! minutes); `GET/POST /v1/devices/ID/sensors` (latest values).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::http::request::Parts;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action, Principal};
use crate::budget::Charge;
use crate::codec::{self, form, timefmt, SensorId, SensorKind};
use crate::error::WireError;
use crate::http::{
    declared_too_large, json_view, media_type, peer_of, read_body, wants_json, Reply,
};
use crate::intake::{self, Media};
use crate::store::query::{read_buckets, read_series, BucketQuery, SeriesQuery, MAX_BUCKETS};
use crate::store::DeviceRecord;

/// `GET /v1/readings?device=ID&token=TOK&N1=23.5[&time=T]`, the same as a
/// form `POST`, a `text/csv` or an `application/json` `POST`. Replies
/// `ok,<stored>,<pending>` once the readings are fsynced, followed (for a
/// device) by up to `reply_inbox_rows` pending inbox rows
/// `seq,kind,time,from,sensor,value`.
///
/// The steps are the ingest seam's ([`crate::intake`]): authenticate,
/// parse, resolve, submit, reply.
pub async fn ingest(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let now = timefmt::now_micros();
    refuse_declared_too_large(app, &req)?;
    let pairs = form::parse_pairs_max(
        req.uri().query().unwrap_or("").as_bytes(),
        app.limits.max_fields,
    )?;
    let media = media_type(&req);
    let is_post = req.method() == hyper::Method::POST;
    let (parts, body) = req.into_parts();
    // Parse: credentials outside the body first, then the body, bounded.
    let early = Early::check(app, &parts, &pairs)?;
    // Held until the reply: the body's bytes count as in flight while it
    // (and what is parsed from it, which is never larger) is in memory.
    let (body, _body_charge) = read_ingest_body(app, &parts, body, &early).await?;
    let media = ingest_media(media.as_deref(), is_post, &body)?;
    // Held until the reply, like the body's charge: what the parsed
    // readings hold.
    let (parsed, _readings_charge) = intake::parse_charged(app, media, body, pairs, now).await?;
    // Resolve: the caller, then every device the batch names.
    let who = early.caller(app, &parts, &parsed.credentials)?;
    let resolved = intake::resolve(app, &who, parsed.batch)?;
    // Submit: queue and wait for the fsync.
    let rows = app.config.limits.reply_inbox_rows;
    let outcome = intake::submit(app, &who, resolved, rows).await?;
    // Reply.
    Ok(Reply::csv(outcome.write_csv(&who)))
}

/// `413` for a body declared (`Content-Length`) over `max_body_bytes`,
/// before any of it is read.
fn refuse_declared_too_large(app: &App, req: &Request<Incoming>) -> Result<(), WireError> {
    let max = app.config.limits.max_body_bytes;
    if declared_too_large(req, max) {
        return Err(WireError::new(
            413,
            "too_large",
            format!("the body is larger than {max} bytes; send it in parts"),
        ));
    }
    Ok(())
}

/// Credentials outside the body (`device` and `token` in the query, or
/// an `Authorization` header or session cookie), checked before the body
/// is read: a wrong token costs the server no body, and a body is only
/// read in full for a known caller. Without them (a form body may carry
/// them, as busybox wget sends it) only a small body is read.
struct Early {
    /// The caller, when the credentials came outside the body.
    who: Option<Principal>,
    /// The query's `token`, if any.
    token: Option<String>,
}

impl Early {
    fn check(app: &App, parts: &Parts, pairs: &[(String, String)]) -> Result<Early, WireError> {
        let query_cred = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (device, token) = (query_cred("device"), query_cred("token"));
        let outside = match &token {
            Some(_) => device.is_some(),
            None => {
                parts.headers.contains_key(hyper::header::AUTHORIZATION)
                    || crate::auth::session_cookie(&parts.headers).is_some()
            }
        };
        let who = match outside {
            true => Some(authenticate(
                app,
                &parts.headers,
                peer_of(&parts.extensions),
                device.as_deref(),
                token.as_deref(),
            )?),
            false => None,
        };
        Ok(Early { who, token })
    }

    /// The caller checked before the body stands, unless the body brought
    /// a token of its own (only possible when the query had none): then
    /// the parameters win, as everywhere (see `authenticate`).
    fn caller(
        self,
        app: &App,
        parts: &Parts,
        body: &codec::Credentials,
    ) -> Result<Principal, WireError> {
        match self.who {
            Some(who) if body.token == self.token => Ok(who),
            _ => authenticate(
                app,
                &parts.headers,
                peer_of(&parts.extensions),
                body.device.as_deref(),
                body.token.as_deref(),
            ),
        }
    }
}

/// The body, bounded by `max_body_bytes` for a caller checked early and
/// by `max_unauthenticated_body_bytes` otherwise (over it: `401`, send
/// credentials first).
async fn read_ingest_body(
    app: &App,
    parts: &Parts,
    body: Incoming,
    early: &Early,
) -> Result<(Bytes, Option<Charge>), WireError> {
    let limits = &app.config.limits;
    let max_body = match early.who {
        Some(_) => limits.max_body_bytes,
        None => limits
            .max_unauthenticated_body_bytes
            .min(limits.max_body_bytes),
    };
    let credentials_first = || {
        WireError::unauthorized(format!(
            "send credentials in the query or an Authorization header with a body over {max_body} bytes"
        ))
    };
    let body = read_body(
        &parts.extensions,
        body,
        max_body,
        Duration::from_secs(limits.body_timeout_secs),
    )
    .await
    .map_err(|e| match (&early.who, e.code) {
        (None, "too_large") => credentials_first(),
        _ => e,
    })?;
    Ok(body.into_parts())
}

/// The body's media type. A CSV or JSON `POST` with an empty body is an
/// error (the parser says so), never a heartbeat: an empty body from a
/// script whose file is missing must not look like success.
fn ingest_media(declared: Option<&str>, is_post: bool, body: &[u8]) -> Result<Media, WireError> {
    match Media::of(declared) {
        Ok(m @ (Media::Csv | Media::Json)) if is_post || !body.is_empty() => Ok(m),
        _ if body.is_empty() => Ok(Media::Form),
        other => other,
    }
}

/// `GET /v1/devices/ID/readings?sensors=N1,L2&from=T&to=T&limit=N`: a
/// header row `time,N1,L2` and one row per distinct time, oldest first,
/// with empty fields where a sensor has no value at that time. When the
/// limit cut the result, the `Overlord-Next-From` header gives the `from`
/// that continues it.
///
/// With `buckets=N` (and `from`, `to`, numeric sensors) the answer is at
/// most N rows of `time,S_min,S_max,...`, one per slice of the range, for
/// charts of ranges too long to draw point by point.
pub async fn query(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let (q, bq, json) = series_params(app, req, id).await?;
    let reply = query_reply(app, q, bq).await?;
    Ok(if json { json_view(reply).await } else { reply })
}

/// Run a readings query (plain or bucketed) on a blocking thread.
async fn query_reply(
    app: &Arc<App>,
    q: SeriesQuery,
    bq: Option<BucketQuery>,
) -> Result<Reply, WireError> {
    if let Some(bq) = bq {
        let db_app = app.clone();
        let text =
            crate::blocking::wire("query failed", move || read_buckets(&db_app.store, &bq)).await?;
        return Ok(Reply::csv(text));
    }
    let db_app = app.clone();
    let result =
        crate::blocking::wire("query failed", move || read_series(&db_app.store, &q)).await?;
    Ok(series_reply(result))
}

/// `GET /v1/devices/ID/aggregates?sensors=N1,I2&from=T&to=T&limit=N`:
/// the per-minute aggregates the retention sweep kept of removed `N` and
/// `I` readings (`[retention] aggregate_keep_days`), as a header row
/// `time,N1_count,N1_min,N1_max,N1_mean,...` and one row per minute
/// (its start), oldest first; empty fields where a sensor has no
/// aggregate for the minute. Parameters, credentials and paging
/// (`Overlord-Next-From`) are those of the readings query; no sensors
/// means every `N` and `I` sensor of the device.
pub async fn aggregates(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let (q, bq, json) = series_params(app, req, id).await?;
    if bq.is_some() {
        return Err(WireError::bad_request(
            "bad_parameter",
            "buckets is for readings; aggregates are per minute already",
        ));
    }
    if let Some(s) = q
        .sensors
        .iter()
        .find(|s| !crate::store::aggregates::aggregated(s.kind))
    {
        return Err(WireError::bad_request(
            "bad_sensor",
            format!("sensors: {s} has no aggregates; only N and I sensors are aggregated"),
        ));
    }
    let db_app = app.clone();
    let result = crate::blocking::wire("query failed", move || {
        crate::store::aggregates::read_aggregates(&db_app.store, &q)
    })
    .await?;
    let reply = series_reply(result);
    Ok(if json { json_view(reply).await } else { reply })
}

fn series_reply(result: crate::store::query::SeriesCsv) -> Reply {
    let mut reply = Reply::csv(result.text);
    if let Some(next) = result.next_from {
        reply = reply.with_header(
            HeaderName::from_static("overlord-next-from"),
            timefmt::format_time(next),
        );
    }
    reply
}

/// The parameters of a series query (`sensors`, `from`, `to`, `limit`,
/// optional `device`/`token` credentials) of device `id`, with the caller
/// authenticated and allowed [`Action::ReadReadings`] on it.
/// With `buckets=N` it also returns the bucketed form of the query; the
/// flag says whether the reply is wanted as JSON (`format=json` or
/// `Accept: application/json`).
///
/// The fields come from the query string and, for a form `POST`, from the
/// body too, so a device can keep its token out of the URL (contract §0).
async fn series_params(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<(SeriesQuery, Option<BucketQuery>, bool), WireError> {
    let (req, pairs) = crate::http::request_pairs(
        req,
        Duration::from_secs(app.config.limits.body_timeout_secs),
    )
    .await?;
    let p = SeriesParams::parse(app, &pairs)?;
    let json = wants_json(&req.headers, p.format)?;
    let who = authenticate(
        app,
        &req.headers,
        peer_of(&req.extensions),
        Some(p.device.unwrap_or(id)),
        p.token,
    )?;
    // No credentials: a public device (a `read` grant to `anonymous`),
    // else `401` (from `authorize`).
    let d = visible::<DeviceRecord>(app, &who, Action::ReadReadings, id)?;
    let mut q = p.q;
    q.device = d.num;
    let bq = match p.buckets {
        Some(n) => Some(bucket_query(q.clone(), &p.seen, n)?),
        None => None,
    };
    Ok((q, bq, json))
}

/// A readings query's parameters, checked, before the caller is known.
struct SeriesParams<'a> {
    /// The query (its `device` still 0).
    q: SeriesQuery,
    device: Option<&'a str>,
    token: Option<&'a str>,
    buckets: Option<usize>,
    format: Option<&'a str>,
    /// Every parameter name given.
    seen: std::collections::HashSet<&'a str>,
}

impl<'a> SeriesParams<'a> {
    fn parse(app: &App, pairs: &'a [(String, String)]) -> Result<Self, WireError> {
        let mut p = SeriesParams {
            q: SeriesQuery {
                device: 0,
                sensors: Vec::new(),
                from: 0,
                to: i64::MAX,
                limit: app.config.limits.query_default_rows,
            },
            device: None,
            token: None,
            buckets: None,
            format: None,
            seen: std::collections::HashSet::with_capacity(pairs.len()),
        };
        for (name, value) in pairs {
            if !p.seen.insert(name.as_str()) {
                return Err(WireError::bad_request(
                    "duplicate_field",
                    format!("{name}: given more than once"),
                ));
            }
            p.set(app, name, value)?;
        }
        Ok(p)
    }

    fn set(&mut self, app: &App, name: &str, value: &'a str) -> Result<(), WireError> {
        let time = |v: &str| {
            timefmt::parse_instant(v).map_err(|why| {
                WireError::bad_request(
                    "bad_time",
                    format!("{name}: '{}' is not a time ({why})", codec::names::clip(v)),
                )
            })
        };
        match name {
            "device" => self.device = Some(value),
            "token" => self.token = Some(value),
            "format" => self.format = Some(value),
            "from" => self.q.from = time(value)?,
            "to" => self.q.to = time(value)?,
            "limit" => {
                let max = app.config.limits.query_max_rows;
                self.q.limit = in_range(value, max).ok_or_else(|| {
                    WireError::bad_request("bad_limit", format!("limit must be 1..{max}"))
                })?;
            }
            "buckets" => {
                let n = in_range(value, MAX_BUCKETS).ok_or_else(|| {
                    WireError::bad_request(
                        "bad_buckets",
                        format!("buckets must be 1..{MAX_BUCKETS}"),
                    )
                })?;
                self.buckets = Some(n);
            }
            "sensors" => add_sensors(value, &mut self.q.sensors)?,
            other => {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!(
                        "unknown parameter '{}'; use sensors, from, to, limit, buckets, format",
                        codec::names::clip(other)
                    ),
                ))
            }
        }
        Ok(())
    }
}

/// `value` as a number in `1..=max`.
fn in_range(value: &str, max: usize) -> Option<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
}

/// The sensors of a `sensors=N1,L2` list, each once.
fn add_sensors(value: &str, sensors: &mut Vec<SensorId>) -> Result<(), WireError> {
    for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let sensor = SensorId::parse(s)?;
        if sensors.contains(&sensor) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("sensors: {sensor} given twice"),
            ));
        }
        sensors.push(sensor);
    }
    Ok(())
}

/// Check a `buckets=N` query: it needs `from`, `to` and numeric sensors
/// (`I`, `N`, `L`), and takes no `limit` (the answer has at most N rows).
fn bucket_query(
    q: SeriesQuery,
    seen: &std::collections::HashSet<&str>,
    n: usize,
) -> Result<BucketQuery, WireError> {
    for need in ["from", "to", "sensors"] {
        if !seen.contains(&need) {
            return Err(WireError::bad_request(
                "missing_field",
                format!("buckets needs {need}"),
            ));
        }
    }
    if seen.contains(&"limit") {
        return Err(WireError::bad_request(
            "bad_parameter",
            "limit and buckets exclude each other",
        ));
    }
    if q.sensors.is_empty() {
        return Err(WireError::bad_request(
            "missing_field",
            "buckets needs at least one sensor",
        ));
    }
    if let Some(s) = q
        .sensors
        .iter()
        .find(|s| !matches!(s.kind, SensorKind::Int | SensorKind::Num | SensorKind::Bool))
    {
        return Err(WireError::bad_request(
            "bad_sensor",
            format!("{s}: buckets take numeric sensors (I, N, L)"),
        ));
    }
    if q.from > q.to {
        return Err(WireError::bad_request("bad_time", "from is after to"));
    }
    Ok(BucketQuery {
        device: q.device,
        sensors: q.sensors,
        from: q.from,
        to: q.to,
        buckets: n,
    })
}
