//! Readings: `GET/POST /v1/readings` (ingest),
//! `GET/POST /v1/devices/ID/readings` (query) and
//! `GET/POST /v1/devices/ID/aggregates` (what retention kept of removed
//! minutes); `GET/POST /v1/devices/ID/sensors` (latest values).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action};
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
    let pairs = form::parse_pairs_max(
        req.uri().query().unwrap_or("").as_bytes(),
        app.limits.max_fields,
    )?;
    let media = media_type(&req);
    let is_post = req.method() == hyper::Method::POST;
    let (parts, body) = req.into_parts();
    let peer = peer_of(&parts.extensions);
    // Credentials outside the body (`device` and `token` in the query, or
    // an `Authorization` header or session cookie) are checked before the
    // body is read: a wrong token costs the server no body, and a body is
    // only read in full for a known caller. Without them (a form body may
    // carry them, as busybox wget sends it) only a small body is read.
    let query_cred = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (q_device, q_token) = (query_cred("device"), query_cred("token"));
    let outside = match &q_token {
        Some(_) => q_device.is_some(),
        None => {
            parts.headers.contains_key(hyper::header::AUTHORIZATION)
                || crate::auth::session_cookie(&parts.headers).is_some()
        }
    };
    let early = match outside {
        true => Some(authenticate(
            app,
            &parts.headers,
            peer,
            q_device.as_deref(),
            q_token.as_deref(),
        )?),
        false => None,
    };
    let max_body = match early {
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
    .map_err(|e| match (&early, e.code) {
        (None, "too_large") => credentials_first(),
        _ => e,
    })?;
    // Held until the reply: the body's bytes count as in flight while it
    // (and what is parsed from it, which is never larger) is in memory.
    let (body, _body_charge) = body.into_parts();
    // A CSV or JSON `POST` with an empty body is an error (the parser
    // says so), never a heartbeat: an empty body from a script whose file
    // is missing must not look like success.
    let media = match Media::of(media.as_deref()) {
        Ok(m @ (Media::Csv | Media::Json)) if is_post || !body.is_empty() => m,
        _ if body.is_empty() => Media::Form,
        other => other?,
    };
    // Held until the reply, like the body's charge: what the parsed
    // readings hold.
    let (parsed, _readings_charge) = intake::parse_charged(app, media, body, pairs, now).await?;
    // The caller checked before the body stands, unless the body brought
    // a token of its own (only possible when the query had none): then the
    // parameters win, as everywhere (see `authenticate`).
    let who = match early {
        Some(who) if parsed.credentials.token == q_token => who,
        _ => authenticate(
            app,
            &parts.headers,
            peer,
            parsed.credentials.device.as_deref(),
            parsed.credentials.token.as_deref(),
        )?,
    };
    let resolved = intake::resolve(app, &who, parsed.batch)?;
    let rows = app.config.limits.reply_inbox_rows;
    let outcome = intake::submit(app, &who, resolved, rows).await?;
    Ok(Reply::csv(outcome.write_csv(&who)))
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
        let text = crate::blocking::wire("query failed", move || {
            read_buckets(&*db_app.store.db()?, &bq)
        })
        .await?;
        return Ok(Reply::csv(text));
    }
    let db_app = app.clone();
    let result = crate::blocking::wire("query failed", move || {
        read_series(&*db_app.store.db()?, &q)
    })
    .await?;
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
        crate::store::aggregates::read_aggregates(&*db_app.store.db()?, &q)
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
    let mut q = SeriesQuery {
        device: 0,
        sensors: Vec::new(),
        from: 0,
        to: i64::MAX,
        limit: app.config.limits.query_default_rows,
    };
    let (mut device, mut token) = (None, None);
    let mut buckets: Option<usize> = None;
    let mut format = None;
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    for (name, value) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{name}: given more than once"),
            ));
        }
        let time = |v: &str| {
            timefmt::parse_instant(v).map_err(|why| {
                WireError::bad_request(
                    "bad_time",
                    format!("{name}: '{}' is not a time ({why})", codec::names::clip(v)),
                )
            })
        };
        match name.as_str() {
            "device" => device = Some(value.as_str()),
            "token" => token = Some(value.as_str()),
            "format" => format = Some(value.as_str()),
            "from" => q.from = time(value)?,
            "to" => q.to = time(value)?,
            "limit" => {
                let max = app.config.limits.query_max_rows;
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        WireError::bad_request("bad_limit", format!("limit must be 1..{max}"))
                    })?;
            }
            "buckets" => {
                buckets = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_BUCKETS).contains(n))
                        .ok_or_else(|| {
                            WireError::bad_request(
                                "bad_buckets",
                                format!("buckets must be 1..{MAX_BUCKETS}"),
                            )
                        })?,
                );
            }
            "sensors" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let sensor = SensorId::parse(s)?;
                    if q.sensors.contains(&sensor) {
                        return Err(WireError::bad_request(
                            "duplicate_field",
                            format!("sensors: {sensor} given twice"),
                        ));
                    }
                    q.sensors.push(sensor);
                }
            }
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
    }
    let json = wants_json(&req.headers, format)?;
    let who = authenticate(
        app,
        &req.headers,
        peer_of(&req.extensions),
        Some(device.unwrap_or(id)),
        token,
    )?;
    // No credentials: a public device (a `read` grant to `anonymous`),
    // else `401` (from `authorize`).
    let d = visible::<DeviceRecord>(app, &who, Action::ReadReadings, id)?;
    q.device = d.num;
    let bq = match buckets {
        Some(n) => Some(bucket_query(q.clone(), &seen, n)?),
        None => None,
    };
    Ok((q, bq, json))
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
