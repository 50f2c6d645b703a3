//! Commands as records over HTTP (`crate::commands`): a device's command
//! history, a command's `expires`, and the results a device reports when
//! it acknowledges.
//!
//! `GET /v1/devices/ID/commands[?limit=N]` (who may send to the device);
//! `POST /v1/inbox/ack` with a `text/csv` body of `seq,result` rows (the
//! device, one result per command). `expires=` on
//! `POST /v1/devices/ID/inbox` and channel messages, `result=` on the
//! plain ack, are read by `api::inbox` and `api::channels` with the
//! helpers here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{authenticate, visible, Action, Principal, Resource};
use crate::codec::names::clip;
use crate::codec::{timefmt, Micros};
use crate::commands;
use crate::error::WireError;
use crate::http::{read_body, Form, Reply, MAX_FORM};
use crate::inbox::{self, Kind, Row};
use crate::store::DeviceRecord;

/// Records `GET /v1/devices/ID/commands` returns without `limit`.
const DEFAULT_HISTORY: usize = 100;

/// The `expires` field of a send: `None` when absent; a time (RFC 3339
/// or unix seconds) after now, and only for a command.
pub fn expires_from(form: &Form, row: &Row) -> Result<Option<Micros>, WireError> {
    let Some(text) = form.get("expires").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if row.kind != Kind::Command {
        return Err(WireError::bad_request(
            "bad_parameter",
            "expires: only a command expires (kind=command)",
        ));
    }
    let at = timefmt::parse_instant(text).map_err(|why| {
        WireError::bad_request(
            "bad_time",
            format!("expires: '{}' is not a time ({why})", clip(text)),
        )
    })?;
    if at <= row.time {
        return Err(WireError::bad_request(
            "bad_time",
            format!("expires: '{}' is not in the future", clip(text)),
        ));
    }
    Ok(Some(at))
}

/// A `result` a device reports: at most [`commands::MAX_RESULT_BYTES`]
/// bytes of one-line text (`bad_value`).
pub fn check_result(text: &str) -> Result<&str, WireError> {
    if text.len() > commands::MAX_RESULT_BYTES {
        return Err(WireError::bad_request(
            "bad_value",
            format!(
                "result: at most {} bytes of text",
                commands::MAX_RESULT_BYTES
            ),
        ));
    }
    inbox::check_text("result", text)?;
    Ok(text)
}

/// `GET /v1/devices/ID/commands[?limit=N]`: the device's commands, newest
/// first, `seq,state,queued,delivered,done,expires,from,sensor,value,result`.
/// For a device behind a gateway the seqs are the gateway's inbox's.
pub async fn history(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["device", "token", "limit"], timeout).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::SendToDevice, id)?;
    let max = (app.config.limits.commands_kept + app.config.limits.max_inbox) as usize;
    let limit = match form.number::<usize>("limit")? {
        None => DEFAULT_HISTORY.min(max),
        Some(n) if (1..=max).contains(&n) => n,
        Some(_) => {
            return Err(WireError::bad_request(
                "bad_limit",
                format!("limit must be 1..{max} (commands_kept + max_inbox)"),
            ))
        }
    };
    let (inbox_of, below) = inbox::route(&app.directory, d.num);
    let app2 = app.clone();
    let rows = crate::blocking::wire("history read failed", move || {
        app2.store
            .read(|txn| commands::history(txn, inbox_of, &below, limit))
    })
    .await?;
    let mut out = String::from(commands::HEADER);
    for (seq, rec) in &rows {
        rec.write_csv(*seq, &mut out);
    }
    Ok(Reply::csv(out))
}

/// `POST /v1/inbox/ack?device=ID&token=TOK` with a `text/csv` body:
///
/// ```text
/// seq,result
/// 41,ok
/// 42,"error: out of range"
/// ```
///
/// acknowledges every row up to the highest seq and records each listed
/// command's result; `ok,<removed>,<remaining>`.
pub async fn ack_csv(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let query = crate::codec::form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    let mut seen = Vec::new();
    for (k, _) in &query {
        if k != "device" && k != "token" {
            return Err(WireError::bad_request(
                "bad_parameter",
                format!(
                    "unknown field '{}'; with a CSV body use device, token",
                    clip(k)
                ),
            ));
        }
        if seen.contains(k) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{k}: given more than once"),
            ));
        }
        seen.push(k.clone());
    }
    let get = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let (parts, body) = req.into_parts();
    let peer = crate::http::peer_of(&parts.extensions);
    let who = authenticate(app, &parts.headers, peer, get("device"), get("token"))?;
    let d = match &who {
        Principal::Device(d) => d.clone(),
        Principal::Anonymous => return Err(WireError::unauthorized("credentials required")),
        _ => {
            return Err(WireError::bad_request(
                "missing_device",
                "this is the device's own inbox: authenticate as the device",
            ))
        }
    };
    app.directory
        .authorize(&who, Action::AckInbox, Resource::Device(&d))?;
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let body = read_body(&parts.extensions, body, MAX_FORM, timeout).await?;
    let results = parse_results(&body)?;
    let upto = results.keys().copied().max().unwrap_or(0);
    super::inbox::acknowledge(app, d.num, upto, move |seq| results.get(&seq).cloned()).await
}

fn bad_csv(line: usize, why: impl std::fmt::Display) -> WireError {
    WireError::bad_request("bad_csv", format!("line {line}: {why}"))
}

/// `seq,result` rows (a result may be RFC 4180 quoted) → result by seq.
fn parse_results(body: &[u8]) -> Result<HashMap<u64, String>, WireError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_csv(1, "not UTF-8"))?;
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    if lines.next() != Some("seq,result") {
        return Err(bad_csv(1, "the header is seq,result"));
    }
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if line.is_empty() {
            continue;
        }
        let (seq, result) = line
            .split_once(',')
            .ok_or_else(|| bad_csv(n, "expected seq,result"))?;
        let seq: u64 = seq
            .parse()
            .map_err(|_| bad_csv(n, format!("'{}' is not a seq", clip(seq))))?;
        let result = unquote(result).ok_or_else(|| bad_csv(n, "a quoted result ends badly"))?;
        check_result(&result)?;
        if out.insert(seq, result).is_some() {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("line {n}: seq {seq} given more than once"),
            ));
        }
    }
    if out.is_empty() {
        return Err(bad_csv(1, "header without rows"));
    }
    Ok(out)
}

/// A CSV field: as is, or RFC 4180 quoted (`""` inside is one `"`).
fn unquote(field: &str) -> Option<String> {
    let Some(inner) = field.strip_prefix('"') else {
        return (!field.contains('"')).then(|| field.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '"' && chars.next() != Some('"') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_rows_parse() {
        let r = parse_results(b"seq,result\r\n41,ok\n42,\"error: 3 > 2, \"\"max\"\"\"\n").unwrap();
        assert_eq!(r[&41], "ok");
        assert_eq!(r[&42], "error: 3 > 2, \"max\"");
        for bad in [
            &b"seq,value\n1,ok\n"[..],
            b"seq,result\n",
            b"seq,result\nx,ok\n",
            b"seq,result\n1\n",
            b"seq,result\n1,\"ok\n",
            b"seq,result\n1,a\"b\n",
            b"seq,result\n1,ok\n1,ok\n",
            b"seq,result\n1,a\x01b\n",
        ] {
            assert!(
                parse_results(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
