//! What a PUBLISH does: readings go through the same ingest seam as
//! `POST /v1/readings` (parse, resolve and authorise, submit, wait for
//! the fsync); an inbox ack is the HTTP ack.

use std::sync::Arc;

use bytes::Bytes;

use crate::app::App;
use crate::auth::{Action, Principal, Resource};
use crate::codec::{form, names::clip, timefmt};
use crate::error::WireError;
use crate::intake::{self, Media};

/// The body format of a readings payload: MQTT 5's content type when
/// given (as an HTTP `Content-Type`), else JSON when it starts with `{`
/// or `[`, a form when its first line has a `=` (or it is empty: a
/// heartbeat), else CSV with a header.
pub fn media_of(payload: &[u8], content_type: Option<&str>) -> Result<Media, WireError> {
    if let Some(ct) = content_type {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        return Media::of(Some(&ct));
    }
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    Ok(match start.map(|i| payload[i]) {
        None => Media::Form,
        Some(b'{' | b'[') => Media::Json,
        _ => {
            let first = payload.split(|&b| b == b'\n').next().unwrap_or(&[]);
            if first.contains(&b'=') {
                Media::Form
            } else {
                Media::Csv
            }
        }
    })
}

/// `PUBLISH overlord/<device>/readings`: store the payload's readings for
/// `device` as the caller, through the ingest seam exactly as `POST
/// /v1/readings?device=<device>` with that body: parse (charged to the
/// request-data budget), resolve (visibility, authorisation, the
/// per-device limit), submit; `Ok` once they are fsynced. An empty
/// payload is a heartbeat.
pub async fn readings(
    app: Arc<App>,
    who: Principal,
    device: String,
    payload: Bytes,
    content_type: Option<String>,
) -> Result<(), WireError> {
    let media = media_of(&payload, content_type.as_deref())?;
    let now = timefmt::now_micros();
    let pairs = vec![("device".to_string(), device)];
    let (parsed, _charge) = intake::parse_charged(&app, media, payload, pairs, now).await?;
    let resolved = intake::resolve(&app, &who, parsed.batch)?;
    intake::submit(&app, &who, resolved, 0).await?;
    Ok(())
}

/// `PUBLISH overlord/<device>/inbox/ack` with `upto=SEQ` (or just the
/// number): remove the device's inbox rows up to SEQ, durably. Only the
/// device itself, as over HTTP.
pub async fn inbox_ack(
    app: Arc<App>,
    who: Principal,
    device: String,
    payload: Bytes,
) -> Result<(), WireError> {
    let d = match &who {
        Principal::Device(d) if d.id == device => d.clone(),
        Principal::Device(d) => {
            return Err(WireError::unauthorized(format!(
                "the topic names device {} but you are {}; ack your own inbox",
                clip(&device),
                d.id
            )))
        }
        _ => {
            return Err(WireError::bad_request(
                "missing_device",
                "this is the device's own inbox: connect as the device",
            ))
        }
    };
    app.directory
        .authorize(&who, Action::AckInbox, Resource::Device(&d))?;
    let upto = parse_upto(&payload, app.limits.max_fields)?;
    let (app2, num) = (app.clone(), d.num);
    crate::blocking::wire("ack failed", move || {
        crate::inbox::send::ack(&app2.store, num, upto, |_| None)
    })
    .await?;
    Ok(())
}

/// `upto=SEQ` (a form) or a bare `SEQ`.
fn parse_upto(payload: &[u8], max_fields: usize) -> Result<u64, WireError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| WireError::bad_request("bad_value", "upto: not UTF-8"))?
        .trim();
    let value = if text.contains('=') {
        form::parse_pairs_max(text.as_bytes(), max_fields)?
            .into_iter()
            .find(|(k, _)| k == "upto")
            .map(|(_, v)| v)
            .ok_or_else(|| WireError::bad_request("missing_field", "upto is required"))?
    } else {
        text.to_string()
    };
    value.parse().map_err(|_| {
        WireError::bad_request(
            "bad_value",
            format!("upto: '{}' is not a sequence number", clip(&value)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let m = |p: &[u8], ct: Option<&str>| media_of(p, ct).unwrap();
        assert_eq!(m(b"N1=21.5&L2=1", None), Media::Form);
        assert_eq!(m(b"", None), Media::Form);
        assert_eq!(m(b"time,N1\n2026-01-01T00:00:00Z,1\n", None), Media::Csv);
        assert_eq!(m(b" {\"N1\":1}", None), Media::Json);
        assert_eq!(m(b"[{\"N1\":1}]", None), Media::Json);
        assert_eq!(m(b"N1\n1\n", Some("Application/JSON; x=y")), Media::Json);
        // A CSV value holding '=' on a later line is still CSV.
        assert_eq!(m(b"S1\na=b\n", None), Media::Csv);
        assert_eq!(media_of(b"x", Some("text/xml")).unwrap_err().status, 415);
    }

    #[test]
    fn upto_is_a_form_or_a_number() {
        assert_eq!(parse_upto(b"upto=7", 16).unwrap(), 7);
        assert_eq!(parse_upto(b" 12\n", 16).unwrap(), 12);
        assert_eq!(parse_upto(b"x=1", 16).unwrap_err().code, "missing_field");
        assert_eq!(parse_upto(b"upto=-1", 16).unwrap_err().code, "bad_value");
    }
}
