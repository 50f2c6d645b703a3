//! Readings: `GET/POST /v1/readings` (ingest),
//! `GET/POST /v1/devices/ID/readings` (query) and
//! `GET/POST /v1/devices/ID/aggregates` (what retention kept of removed
//! minutes); `GET/POST /v1/devices/ID/sensors` (latest values).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action, Principal, Resource};
use crate::codec::{self, csvbody, form, timefmt, Reading, SensorId, SensorKind};
use crate::error::WireError;
use crate::http::{declared_too_large, media_type, peer_of, read_body, Reply};
use crate::inbox;
use crate::store::query::{read_buckets, read_series, BucketQuery, SeriesQuery, MAX_BUCKETS};
use crate::writer::Prepared;

/// Requests with more readings than this are sorted on a blocking thread.
const INLINE_PREPARE: usize = 4096;
use crate::store::DeviceRecord;

/// Bodies larger than this are parsed on a blocking thread, so a 30 MB
/// CSV does not stall the runtime's workers.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Second threads parsing halves of large CSV bodies
/// ([`csvbody::parse_csv_split`]) right now: at most one per core, so
/// many large uploads at once never mean many extra threads.
static SPLIT_HELPERS: AtomicUsize = AtomicUsize::new(0);

/// A claim on one of [`SPLIT_HELPERS`], given back on drop.
struct SplitHelper;

impl SplitHelper {
    fn try_take() -> Option<SplitHelper> {
        static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let max = *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        SPLIT_HELPERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SplitHelper)
    }
}

impl Drop for SplitHelper {
    fn drop(&mut self) {
        SPLIT_HELPERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Append the parsed readings to `out` with their device numbers. When
/// `out` is empty (a CSV body without query readings, the usual case) the
/// parsed vector is turned into it in place (same element size, so
/// `collect` reuses its allocation) instead of copied: a 100,000-row body
/// has 400,000 readings, and two copies of them at once were the largest
/// part of a large upload's memory.
fn append_mapped(
    out: &mut Vec<(u32, Reading)>,
    parsed: Vec<(Option<u32>, Reading)>,
    device: impl Fn(Option<u32>) -> u32,
) {
    let mapped = parsed.into_iter().map(|(i, r)| (device(i), r));
    if out.is_empty() {
        *out = mapped.collect();
    } else {
        out.extend(mapped);
    }
}

/// `GET /v1/readings?device=ID&token=TOK&N1=23.5[&time=T]`, the same as a
/// form `POST`, or a `text/csv` `POST`. Replies `ok,<stored>,<pending>`
/// once the readings are fsynced, followed (for a device) by up to
/// `reply_inbox_rows` pending inbox rows `seq,kind,time,from,sensor,value`.
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
    let mut csv = None;
    let mut form_body = None;
    match media.as_deref() {
        // A CSV `POST` with an empty body is `bad_csv` (the CSV parser
        // says so), never a heartbeat: an empty body from a script whose
        // file is missing must not look like success.
        Some("text/csv" | "application/csv") if is_post || !body.is_empty() => csv = Some(body),
        _ if body.is_empty() => {}
        Some("application/x-www-form-urlencoded") | None => form_body = Some(body),
        Some(other) => {
            return Err(WireError::new(
                415,
                "unsupported_media_type",
                format!(
                    "'{}' bodies are not accepted; send text/csv or a form",
                    codec::names::clip(other)
                ),
            ))
        }
    }
    let lim = app.limits;
    let parse_form = move |mut pairs: Vec<(String, String)>, body: Option<Bytes>| {
        if let Some(body) = body {
            pairs.extend(form::parse_pairs_max(&body, lim.max_fields)?);
        }
        codec::parse_params(&pairs, now, &lim)
    };
    // Like a large CSV body, a large form is parsed on a blocking thread.
    let params = if form_body
        .as_ref()
        .is_some_and(|b| b.len() > INLINE_PARSE_BYTES)
    {
        tokio::task::spawn_blocking(move || parse_form(pairs, form_body))
            .await
            .map_err(|_| WireError::new(500, "internal", "parser failed"))??
    } else {
        parse_form(pairs, form_body)?
    };
    // The caller checked before the body stands, unless the body brought
    // a token of its own (only possible when the query had none): then the
    // parameters win, as everywhere (see `authenticate`).
    let who = match early {
        Some(who) if params.credentials.token == q_token => who,
        _ => authenticate(
            app,
            &parts.headers,
            peer,
            params.credentials.device.as_deref(),
            params.credentials.token.as_deref(),
        )?,
    };
    let default_device: Option<Arc<DeviceRecord>> = match &who {
        Principal::Anonymous => return Err(WireError::unauthorized("credentials required")),
        // A device writes for itself; naming another device is checked
        // like any other access to it.
        Principal::Device(d) => match params.credentials.device.as_deref() {
            Some(id) if id != d.id => Some(visible(app, &who, Action::WriteReadings, id)?),
            _ => Some(d.clone()),
        },
        Principal::User(_) => match params.credentials.device.as_deref() {
            Some(id) => Some(visible(app, &who, Action::WriteReadings, id)?),
            None => None,
        },
    };
    if let Some(d) = &default_device {
        app.directory
            .authorize(&who, Action::WriteReadings, Resource::Device(d))?;
    }
    let need_default = || {
        default_device.as_ref().map(|d| d.num).ok_or_else(|| {
            WireError::bad_request(
                "missing_device",
                "say which device: device=ID or a device column",
            )
        })
    };

    let mut readings: Vec<(u32, Reading)> = Vec::new();
    // Every device this request writes (for the per-device limit).
    let mut written: Vec<u32> = Vec::new();
    if !params.readings.is_empty() {
        let num = need_default()?;
        written.push(num);
        readings.extend(params.readings.into_iter().map(|r| (num, r)));
    }
    // What the parsed readings hold, charged to the budget as they grow
    // (a CSV of tiny values has ~28 bytes of readings per byte of body).
    let readings_charge = Arc::new(app.body_budget.charge());
    if let Some(body) = csv {
        let body_len = body.len();
        let charge = readings_charge.clone();
        // The largest growth the budget refused, to tell "never fits"
        // (413) from "not now" (503).
        let refused = Arc::new(AtomicUsize::new(0));
        let refused2 = refused.clone();
        let parse = move |parallel: bool| {
            let grow = |n: usize| {
                charge.grow(n) || {
                    refused2.fetch_max(n, Ordering::Relaxed);
                    false
                }
            };
            csvbody::parse_csv_charged(&body, now, &lim, parallel, &grow)
        };
        let parsed = if body_len > INLINE_PARSE_BYTES {
            tokio::task::spawn_blocking(move || {
                let helper = SplitHelper::try_take();
                parse(helper.is_some())
            })
            .await
            .map_err(|_| WireError::new(500, "internal", "parser failed"))?
        } else {
            parse(false)
        };
        let parsed = match parsed {
            Err(e) if e.code == csvbody::OVER_BUDGET => {
                let mine = body_len + readings_charge.bytes() + refused.load(Ordering::Relaxed);
                return Err(over_budget(app, mine));
            }
            other => other?,
        };
        // Now exactly what the readings hold, and what sorting their keys
        // will add (`Prepared`).
        let held = parsed.readings.capacity() * csvbody::READING_BYTES
            + parsed.readings.len() * PREPARE_BYTES;
        if !readings_charge.resize(held) {
            return Err(over_budget(app, body_len + held));
        }
        if parsed.devices.is_empty() {
            let num = need_default()?;
            written.push(num);
            append_mapped(&mut readings, parsed.readings, |_| num);
        } else {
            let mut nums = Vec::with_capacity(parsed.devices.len());
            for id in &parsed.devices {
                let d = visible::<DeviceRecord>(app, &who, Action::WriteReadings, id)?;
                app.directory
                    .authorize(&who, Action::WriteReadings, Resource::Device(&d))?;
                nums.push(d.num);
            }
            written.extend_from_slice(&nums);
            append_mapped(&mut readings, parsed.readings, |i| {
                nums[i.unwrap_or(0) as usize]
            });
        }
    }

    // The per-device request limit, for every device this request writes
    // (each once: the device column's distinct ids, not its rows).
    written.sort_unstable();
    written.dedup();
    for dev in written {
        if let Err(secs) = app.device_rate.take(dev) {
            return Err(WireError::rate_limited(
                "too many requests for this device; send batches as CSV, or wait",
                secs,
            ));
        }
    }
    let accepted = readings.len();
    // A device gets its pending inbox rows with every reply.
    let rows = app.config.limits.reply_inbox_rows;
    let inbox_for = match &who {
        Principal::Device(d) => Some((d.num, rows)),
        _ => None,
    };
    let (pending, pending_rows) = if readings.is_empty() {
        // A request with no values is a heartbeat: nothing to store.
        match inbox_for {
            Some((dev, n)) => {
                let app2 = app.clone();
                tokio::task::spawn_blocking(move || inbox::pending(&*app2.store.db()?, dev, n))
                    .await
                    .map_err(|_| WireError::new(500, "internal", "inbox read failed"))??
            }
            None => (0, Vec::new()),
        }
    } else {
        // Sorting a large request's keys is blocking work: do it off the
        // runtime, before the writer sees it.
        let prepared = if readings.len() > INLINE_PREPARE {
            tokio::task::spawn_blocking(move || Prepared::new(readings))
                .await
                .map_err(|_| WireError::new(500, "internal", "prepare failed"))?
        } else {
            Prepared::new(readings)
        };
        let rx = app
            .ingest
            .try_submit_prepared(prepared, inbox_for)
            .map_err(|_| WireError::overloaded("the server is busy; retry shortly"))?;
        match rx.await {
            Ok(Ok(o)) => o.inbox,
            Ok(Err(e)) => return Err(WireError::from(e.as_ref())),
            Err(_) => return Err(WireError::overloaded("the server is shutting down")),
        }
    };
    let mut out = format!("ok,{accepted},{pending}\n");
    let gateway = matches!(&who, Principal::Device(d) if d.meta.gateway);
    for (seq, row) in &pending_rows {
        row.write_csv(*seq, gateway, &mut out);
    }
    Ok(Reply::csv(out))
}

/// Bytes per reading that [`Prepared::new`] adds while it sorts keys.
const PREPARE_BYTES: usize = std::mem::size_of::<crate::writer::SortKey>() + 4;

/// The reply when a request's readings do not fit the memory budget:
/// `413` when they would not fit even alone (`mine`: what this request
/// needs, at least), else `503` with `Retry-After`.
fn over_budget(app: &App, mine: usize) -> WireError {
    let limit = app.body_budget.limit();
    if mine > limit {
        WireError::new(
            413,
            "too_large",
            format!(
                "the readings of this body need more than body_budget_bytes ({limit} bytes) of memory; send it in parts"
            ),
        )
    } else {
        WireError::overloaded("too much request data in flight; retry shortly")
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
    let (q, bq) = series_params(app, req, id).await?;
    if let Some(bq) = bq {
        let db_app = app.clone();
        let text = tokio::task::spawn_blocking(move || read_buckets(&*db_app.store.db()?, &bq))
            .await
            .map_err(|_| WireError::new(500, "internal", "query failed"))??;
        return Ok(Reply::csv(text));
    }
    let db_app = app.clone();
    let result = tokio::task::spawn_blocking(move || read_series(&*db_app.store.db()?, &q))
        .await
        .map_err(|_| WireError::new(500, "internal", "query failed"))??;
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
    let (q, bq) = series_params(app, req, id).await?;
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
    let result = tokio::task::spawn_blocking(move || {
        crate::store::aggregates::read_aggregates(&*db_app.store.db()?, &q)
    })
    .await
    .map_err(|_| WireError::new(500, "internal", "query failed"))??;
    Ok(series_reply(result))
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
/// With `buckets=N` it also returns the bucketed form of the query.
///
/// The fields come from the query string and, for a form `POST`, from the
/// body too, so a device can keep its token out of the URL (contract §0).
async fn series_params(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<(SeriesQuery, Option<BucketQuery>), WireError> {
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
                        "unknown parameter '{}'; use sensors, from, to, limit, buckets",
                        codec::names::clip(other)
                    ),
                ))
            }
        }
    }
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
    Ok((q, bq))
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
