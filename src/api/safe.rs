//! `safe=1` on any endpoint: the spreadsheet-safe form of a CSV reply
//! (`codec::spreadsheet`). The router takes the parameter out of the
//! query before routing, so every endpoint accepts it and none sees it.

use hyper::Request;

use crate::error::WireError;
use crate::http::Reply;

/// Take the `safe` parameter out of the query string, so that every
/// endpoint accepts it and none sees it: `safe=1` (or `true`) asks for the
/// spreadsheet-safe form of a CSV reply (`codec::spreadsheet`), `safe=0`
/// (or `false`, or empty) for the plain one.
pub fn take_safe<B>(req: &mut Request<B>) -> Result<bool, WireError> {
    let Some(query) = req.uri().query() else {
        return Ok(false);
    };
    let mut safe = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "safe" {
            kept.push(pair);
            continue;
        }
        if safe.is_some() {
            return Err(WireError::bad_request(
                "duplicate_field",
                "safe: given more than once",
            ));
        }
        safe = Some(match value {
            "1" | "true" => true,
            "0" | "false" | "" => false,
            _ => {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    "safe: 1 (spreadsheet-safe CSV) or 0",
                ))
            }
        });
    }
    let Some(safe) = safe else {
        return Ok(false);
    };
    let mut pq = req.uri().path().to_string();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    // `pq` is the request's own (valid) target minus one pair, so these
    // cannot fail; if they did, the request would go on unchanged and
    // its handler would refuse `safe` as an unknown parameter.
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = hyper::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    Ok(safe)
}

/// The spreadsheet-safe form of a successful CSV reply (see
/// `codec::spreadsheet`); anything else is returned as it is. Bodies over
/// 64 KiB are rewritten on a blocking thread, like large uploads are parsed.
pub async fn spreadsheet_safe(mut r: Reply) -> Reply {
    if r.status >= 300 || r.content_type != crate::http::CSV || r.stream.is_some() {
        return r;
    }
    let Ok(text) = std::str::from_utf8(&r.body) else {
        return r;
    };
    if r.body.len() <= 64 * 1024 {
        r.body = crate::codec::spreadsheet::make_safe(text).into();
        return r;
    }
    let body = r.body.clone();
    let safe = crate::blocking::value("safe CSV failed", move || {
        crate::codec::spreadsheet::make_safe(std::str::from_utf8(&body).unwrap_or(""))
    })
    .await;
    match safe {
        Ok(s) => r.body = s.into(),
        Err(e) => return Reply::from(WireError::from(e)),
    }
    r
}
