//! The ThingSpeak-compatible door, for firmware written against
//! ThingSpeak (the ThingSpeak Arduino library, the ESP8266/ESP32
//! examples): `GET|POST /update` (and `/update.json`) and `POST
//! /channels/ID/bulk_update.json`. Readings go through the ingest seam
//! ([`crate::intake`]) like any other body.
//!
//! - **Who**: the `api_key` (parameter, form field, `X-THINGSPEAKAPIKEY`
//!   header, or `write_api_key` of a bulk body) is a device's token. The
//!   device is found from the token alone through the directory's index
//!   of token digests ([`crate::auth::Directory::authenticate_token`]), as
//!   ThingSpeak libraries send nothing else. Basic credentials of a device
//!   work too. A user's token is refused (`403`): an update is a device's.
//! - **What**: `fieldN` (1..8) is stored as the Nth sensor of `[thingspeak]
//!   fields` (default `N1`..`N8`), or of the device's own map in
//!   `[thingspeak.devices]`; its value is read exactly as that sensor's
//!   CSV text. `created_at` sets the time (ISO 8601, `YYYY-MM-DD hh:mm:ss`
//!   with an optional `±hhmm` offset, UTC without one, or unix seconds).
//!   `headers` (sent by the Arduino library) is ignored; `lat`, `long`,
//!   `elevation`, `status`, `twitter`, `tweet`, `timezone` are refused.
//! - **Reply** (`/update`): after the fsync, `200` and the entry number
//!   as plain text (the receive time in unix seconds: positive and
//!   increasing, which is what ThingSpeak libraries test; Overlord keeps
//!   no per-channel counter). On failure the body is `0`, as ThingSpeak's,
//!   with the status of the failure (`400`, `401`, `403`, `404`, `413`,
//!   `429`, `503`...) and the usual `error,<code>,<detail>` line in the
//!   `Overlord-Error` header. `/update.json` answers the entry as JSON.
//!   Bulk: `202 {"success":true}` after the fsync, else the usual error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::{HeaderMap, Request};

use crate::app::App;
use crate::auth::{authenticate, authenticate_secret, Principal};
use crate::codec::{self, form, names::clip, timefmt, Micros, SensorId};
use crate::config::FieldMap;
use crate::error::WireError;
use crate::http::{media_type, peer_of, read_body, Reply};
use crate::intake::{self, Batch};

/// `Content-Type` of the plain-text entry number.
const TEXT: &str = "text/plain; charset=utf-8";

/// The header that carries the error line of a failed `/update`.
const ERROR_HEADER: &str = "overlord-error";

/// Parameters ThingSpeak has that Overlord does not store: refused, so
/// nothing sent is silently dropped.
const UNSUPPORTED: &[&str] = &[
    "lat",
    "long",
    "elevation",
    "status",
    "twitter",
    "tweet",
    "timezone",
    "talkback_key",
    "latitude",
    "longitude",
];

/// `GET|POST /update[.json]?api_key=TOKEN&field1=..&created_at=..`.
pub async fn update(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let json = req.uri().path().trim_end_matches('/').ends_with(".json");
    let now = timefmt::now_micros();
    match store_update(app, req, now).await {
        Ok((device, fields)) => Ok(entry_reply(json, &device, now, &fields)),
        Err(e) => Ok(zero_reply(e)),
    }
}

/// The reply of a failed update: `0`, the failure's status, the error
/// line in a header (and `Retry-After` where the error has one).
fn zero_reply(e: WireError) -> Reply {
    // A header value is visible ASCII: anything else in the detail (a
    // clipped UTF-8 value) becomes `?` rather than losing the header.
    let line: String = e
        .body()
        .trim_end()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let mut r = Reply::from(e);
    r.body = Bytes::from_static(b"0");
    r.content_type = TEXT;
    r.headers
        .retain(|(name, _)| name != hyper::header::WWW_AUTHENTICATE);
    r.with_header(HeaderName::from_static(ERROR_HEADER), line)
}

/// The reply of a stored update: the entry number, or (`.json`) the
/// entry as ThingSpeak's JSON shape.
fn entry_reply(json: bool, device: &str, now: Micros, fields: &[(String, String)]) -> Reply {
    let entry = now.div_euclid(1_000_000);
    if !json {
        let mut r = Reply::csv(entry.to_string());
        r.content_type = TEXT;
        return r;
    }
    let mut obj = serde_json::Map::new();
    obj.insert("channel_id".into(), device.into());
    obj.insert("created_at".into(), timefmt::format_time(now).into());
    obj.insert("entry_id".into(), entry.into());
    for (k, v) in fields {
        obj.insert(k.clone(), v.clone().into());
    }
    let mut r = Reply::csv(serde_json::Value::Object(obj).to_string());
    r.content_type = crate::http::JSON;
    r
}

/// Read, check and store one update; the device id and its fields.
async fn store_update(
    app: &Arc<App>,
    req: Request<Incoming>,
    now: Micros,
) -> Result<(String, Vec<(String, String)>), WireError> {
    let mut pairs = form::parse_pairs_max(
        req.uri().query().unwrap_or("").as_bytes(),
        app.limits.max_fields,
    )?;
    let media = media_type(&req);
    let (parts, body) = req.into_parts();
    // An update is a few fields; its key may be in the body, so the body
    // is bounded like an unauthenticated one.
    let max = app.config.limits.max_unauthenticated_body_bytes;
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let (body, _charge) = read_body(&parts.extensions, body, max, timeout)
        .await?
        .into_parts();
    if !body.is_empty() {
        if !matches!(
            media.as_deref(),
            None | Some("application/x-www-form-urlencoded")
        ) {
            return Err(WireError::new(
                415,
                "unsupported_media_type",
                "send the update as form fields (application/x-www-form-urlencoded)",
            ));
        }
        // The ESP8266 examples end the body with "\r\n\r\n".
        let end = body
            .iter()
            .rposition(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(0, |i| i + 1);
        pairs.extend(form::parse_pairs_max(&body[..end], app.limits.max_fields)?);
    }
    let in_header = header_key(&parts.headers);
    let mut key = None;
    let mut fields = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "api_key" | "key" if key.is_none() => key = Some(v),
            "api_key" | "key" => return Err(duplicate(&k)),
            "headers" => {}
            // The classic ESP8266 example sends the key in the header and
            // again, bare, as the body's first segment.
            _ if v.is_empty() && in_header.as_deref() == Some(k.as_str()) => {}
            _ => fields.push((k, v)),
        }
    }
    let who = device_caller(app, &parts.headers, peer_of(&parts.extensions), key)?;
    let Principal::Device(d) = &who else {
        return Err(WireError::internal("not a device"));
    };
    let map = field_map(app, &d.id);
    let readings = to_readings(&fields, map, now, &app.limits, "")?;
    if readings.is_empty() {
        return Err(WireError::bad_request(
            "missing_field",
            "no field1..field8 with a value: nothing to store",
        ));
    }
    let batch = Batch {
        readings: readings.into_iter().map(|r| (None, r)).collect(),
        needs_default: true,
        ..Batch::default()
    };
    let resolved = intake::resolve(app, &who, batch)?;
    intake::submit(app, &who, resolved, 0).await?;
    fields.retain(|(k, _)| k.starts_with("field"));
    Ok((d.id.clone(), fields))
}

fn duplicate(name: &str) -> WireError {
    WireError::bad_request("duplicate_field", format!("{name}: given more than once"))
}

/// The device behind a ThingSpeak key (the `api_key` given, else the
/// `X-THINGSPEAKAPIKEY` header), else the usual credentials; a user or
/// nobody is refused.
fn device_caller(
    app: &App,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    key: Option<String>,
) -> Result<Principal, WireError> {
    let who = match key.or_else(|| header_key(headers)) {
        Some(k) => authenticate_secret(app, peer, None, &k)?,
        None => authenticate(app, headers, peer, None, None)?,
    };
    match who {
        Principal::Device(_) => Ok(who),
        Principal::User(_) => Err(WireError::forbidden(
            "a ThingSpeak update is a device's: send the device's token as api_key",
        )),
        Principal::Anonymous => Err(WireError::unauthorized(
            "send the device's token as api_key (or X-THINGSPEAKAPIKEY)",
        )),
    }
}

/// The key of an `X-THINGSPEAKAPIKEY` (or `THINGSPEAKAPIKEY`) header.
fn header_key(headers: &HeaderMap) -> Option<String> {
    ["x-thingspeakapikey", "thingspeakapikey"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// The field map of device `id`: its own, else `[thingspeak] fields`.
fn field_map<'a>(app: &'a App, id: &str) -> &'a FieldMap {
    let ts = &app.config.thingspeak;
    ts.devices.get(id).unwrap_or(&ts.fields)
}

/// One update's fields (`fieldN`, `created_at`) as readings, checked by
/// `codec::parse_params`; errors name the ThingSpeak field (`at`: a
/// prefix such as `/updates/3/` for a bulk entry).
fn to_readings(
    fields: &[(String, String)],
    map: &FieldMap,
    now: Micros,
    limits: &codec::Limits,
    at: &str,
) -> Result<Vec<codec::Reading>, WireError> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(fields.len());
    let mut names: Vec<(String, &str)> = Vec::new();
    for (k, v) in fields {
        if k == "created_at" {
            let t = thingspeak_time(v).ok_or_else(|| {
                WireError::bad_request(
                    "bad_time",
                    format!("{at}created_at: '{}' is not ISO 8601, 'YYYY-MM-DD hh:mm:ss[ ±hhmm]' or unix seconds", clip(v)),
                )
            })?;
            pairs.push(("time".into(), t));
            continue;
        }
        if UNSUPPORTED.contains(&k.as_str()) {
            return Err(WireError::bad_request(
                "bad_parameter",
                format!("{at}{k}: not stored by Overlord; send it as a field mapped to a sensor"),
            ));
        }
        let sensor = field_sensor(k, map)
            .map_err(|d| WireError::bad_request("bad_parameter", format!("{at}{}", d)))?;
        names.push((sensor.to_string(), k.as_str()));
        pairs.push((sensor.to_string(), v.clone()));
    }
    let params = codec::parse_params(&pairs, now, limits).map_err(|mut e| {
        if let Some(name) = e.at.name.take() {
            let field = names
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(&name))
                .map_or(name.as_str(), |(_, f)| f);
            e.at.name = Some(format!("{at}{field}"));
        }
        WireError::from(e)
    })?;
    Ok(params.readings)
}

/// The sensor of `fieldN`, or why there is none.
fn field_sensor(name: &str, map: &FieldMap) -> Result<SensorId, String> {
    let n: usize = name
        .strip_prefix("field")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=8).contains(n))
        .ok_or_else(|| {
            format!(
                "unknown parameter '{}'; use api_key, field1..field8, created_at",
                clip(name)
            )
        })?;
    map.0.get(n - 1).copied().flatten().ok_or_else(|| {
        format!("{name} is not mapped to a sensor ([thingspeak] fields in the config)")
    })
}

/// A ThingSpeak `created_at` as RFC 3339 (or unix seconds) text:
/// `2026-11-23T10:00:00Z`, `2026-11-23 10:00:00 -0500`,
/// `2026-11-23 10:00:00` (UTC), `1795428000`.
pub fn thingspeak_time(text: &str) -> Option<String> {
    let t = text.trim();
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some(t.to_string());
    }
    if t.len() < 19 || !t.is_char_boundary(19) {
        return None;
    }
    let (date_time, rest) = t.split_at(19);
    let date_time = date_time.replacen(' ', "T", 1);
    let rest = rest.trim_start();
    let offset = match rest.as_bytes() {
        [] => "Z".to_string(),
        [s @ (b'+' | b'-'), h1, h2, m1, m2] => {
            format!(
                "{}{}{}:{}{}",
                *s as char, *h1 as char, *h2 as char, *m1 as char, *m2 as char
            )
        }
        _ if rest.starts_with('.') || rest.starts_with('Z') || rest.contains(':') => {
            rest.to_string()
        }
        _ => return None,
    };
    Some(format!("{date_time}{offset}"))
}

/// `POST /channels/ID/bulk_update.json` with
/// `{"write_api_key":KEY,"updates":[{"created_at"|"delta_t":..,"field1":..},..]}`.
/// The channel id in the path is not checked (firmware has ThingSpeak's
/// number in it): the key decides the device. Times: `created_at` as in
/// [`update`]; `delta_t` is seconds since the previous entry. When no
/// entry has `created_at`, the last one is at the receive time; else a
/// `delta_t` counts from the entry before it, which must have a time.
/// The whole body is one all-or-nothing request: `202
/// {"success":true}` after the fsync.
pub async fn bulk(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let now = timefmt::now_micros();
    if media_type(&req).as_deref() != Some("application/json") {
        return Err(WireError::new(
            415,
            "unsupported_media_type",
            "a bulk update is application/json",
        ));
    }
    let (parts, body) = req.into_parts();
    let peer = peer_of(&parts.extensions);
    let limits = &app.config.limits;
    // A key in a header is checked before the body is read, and allows a
    // full-size body; one in the body allows an unauthenticated one.
    let early = match ["x-thingspeakapikey", "thingspeakapikey", "authorization"]
        .iter()
        .any(|h| parts.headers.contains_key(*h))
    {
        true => Some(device_caller(app, &parts.headers, peer, None)?),
        false => None,
    };
    let max = match early {
        Some(_) => limits.max_body_bytes,
        None => limits
            .max_unauthenticated_body_bytes
            .min(limits.max_body_bytes),
    };
    let timeout = Duration::from_secs(limits.body_timeout_secs);
    let (body, _charge) = read_body(&parts.extensions, body, max, timeout)
        .await?
        .into_parts();
    let parsed: BulkBody = serde_json::from_slice(&body)
        .map_err(|e| WireError::bad_request("bad_json", e.to_string()))?;
    let who = match (early, parsed.write_api_key) {
        (_, Some(k)) => device_caller(app, &parts.headers, peer, Some(k))?,
        (Some(who), None) => who,
        (None, None) => return Err(WireError::unauthorized("write_api_key is missing")),
    };
    let Principal::Device(d) = &who else {
        return Err(WireError::internal("not a device"));
    };
    let map = field_map(app, &d.id);
    let entries = entry_fields(parsed.updates, now)?;
    let mut readings = Vec::new();
    for (i, fields) in entries.iter().enumerate() {
        let at = format!("/updates/{i}/");
        let r = to_readings(fields, map, now, &app.limits, &at)?;
        readings.extend(r.into_iter().map(|r| (None, r)));
    }
    if readings.is_empty() {
        return Err(WireError::bad_request(
            "missing_field",
            "no field1..field8 with a value: nothing to store",
        ));
    }
    let batch = Batch {
        readings,
        needs_default: true,
        ..Batch::default()
    };
    let resolved = intake::resolve(app, &who, batch)?;
    intake::submit(app, &who, resolved, 0).await?;
    let mut r = Reply::csv("{\"success\":true}").with_status(202);
    r.content_type = crate::http::JSON;
    Ok(r)
}

/// A bulk body; unknown members are refused.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    write_api_key: Option<String>,
    updates: Vec<Members>,
}

/// An update's members in order, a repeated name kept (so it is refused,
/// not silently chosen).
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an update object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, serde_json::Value>()? {
                    out.push(kv);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Each entry's fields as text, `delta_t` turned into a `created_at` of
/// unix seconds (see [`bulk`]).
fn entry_fields(
    updates: Vec<Members>,
    now: Micros,
) -> Result<Vec<Vec<(String, String)>>, WireError> {
    let bad = |i: usize, name: &str, why: &str| {
        WireError::bad_request("bad_value", format!("/updates/{i}/{}: {why}", clip(name)))
    };
    let absolute = updates
        .iter()
        .any(|u| u.0.iter().any(|(k, _)| k == "created_at"));
    let mut out = Vec::with_capacity(updates.len());
    // Relative times: offsets from the first entry, shifted at the end.
    let mut rel: Vec<Option<Micros>> = Vec::with_capacity(updates.len());
    let mut prev: Option<Micros> = None;
    for (i, u) in updates.into_iter().enumerate() {
        let mut fields = Vec::with_capacity(u.0.len());
        let mut delta = None;
        for (k, v) in u.0 {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => return Err(bad(i, &k, "must be a number, a string, true/false or null")),
            };
            if k == "delta_t" {
                let secs: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e10)
                    .ok_or_else(|| bad(i, &k, "must be seconds, 0 or more"))?;
                delta = Some((secs * 1e6).round() as Micros);
            } else {
                if k == "created_at" {
                    let t = thingspeak_time(&text).and_then(|t| timefmt::parse_instant(&t).ok());
                    prev = t;
                }
                fields.push((k, text));
            }
        }
        let has_time = fields.iter().any(|(k, _)| k == "created_at");
        match (has_time, delta) {
            (true, Some(_)) => {
                return Err(bad(i, "delta_t", "give created_at or delta_t, not both"))
            }
            (false, None) => {
                return Err(bad(
                    i,
                    "created_at",
                    "each update needs created_at or delta_t",
                ))
            }
            (true, None) => rel.push(None),
            (false, Some(d)) if absolute => {
                let base = prev.ok_or_else(|| {
                    bad(i, "delta_t", "no earlier entry has a time to count from")
                })?;
                let t = base
                    .checked_add(d)
                    .ok_or_else(|| bad(i, "delta_t", "out of range"))?;
                prev = Some(t);
                fields.push(("created_at".into(), unix_text(t)));
                rel.push(None);
            }
            (false, Some(d)) => {
                let last = rel.last().copied().flatten().unwrap_or(0);
                rel.push(Some(if i == 0 { 0 } else { last + d }));
            }
        }
        out.push(fields);
    }
    if !absolute {
        let end = rel.last().copied().flatten().unwrap_or(0);
        for (fields, r) in out.iter_mut().zip(&rel) {
            let t = now - (end - r.unwrap_or(0));
            fields.push(("created_at".into(), unix_text(t)));
        }
    }
    Ok(out)
}

/// Unix seconds with the microseconds as a fraction (what
/// `timefmt::parse_time` reads back exactly); before 1970 is written as
/// a negative, which it refuses as a time.
fn unix_text(t: Micros) -> String {
    if t < 0 {
        return "-1".into();
    }
    format!("{}.{:06}", t / 1_000_000, t % 1_000_000)
}
