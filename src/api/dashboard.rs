//! The browser dashboard: `GET /` and `GET /ui/FILE`, static files built
//! into the binary (`assets/`, embedded with `include_bytes!`). No CDN and
//! no download at run time; the page talks to the same HTTP API as
//! scripts, authenticated by the session cookie that `POST /v1/login`
//! sets, through the same `Directory::authorize`.
//!
//! Every file has a strong `ETag` (SHA-256 of its bytes) and `Cache-Control:
//! no-cache`, so a browser revalidates (`304`) and never runs a stale
//! script after an upgrade. Pages get a `Content-Security-Policy` that
//! allows only this origin (plus the configured tile server for images).

use std::sync::OnceLock;

use hyper::body::Incoming;
use hyper::header;
use hyper::Request;
use sha2::{Digest as _, Sha256};

use crate::app::App;
use crate::error::WireError;
use crate::http::Reply;

/// `(name, content type, bytes)` of every file served under `/ui/`.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "targets.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/targets.js"),
    ),
    (
        "channels.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/channels.js"),
    ),
    (
        "map.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/map.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/chart.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/style.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/uplot.min.css"),
    ),
    (
        "world.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/world.js"),
    ),
];

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, b)| {
                let d = Sha256::digest(b);
                let hex: String = d[..16].iter().map(|x| format!("{x:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The origin (`scheme://host[:port]`) of a tile URL, for the page's CSP;
/// `None` when it is not an `http(s)` URL.
pub fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split('/').next()?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// Serve one embedded file, or `404 not_found`.
pub fn asset(app: &App, req: &Request<Incoming>, name: &str) -> Reply {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return Reply::from(WireError::new(
            404,
            "not_found",
            format!("no dashboard file '{}'", crate::codec::names::clip(name)),
        ));
    };
    let (_, ctype, bytes) = ASSETS[i];
    let tag = &etags()[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if fresh {
        // hyper sends a 304 without a body or Content-Length.
        Reply::csv(bytes::Bytes::new()).with_status(304)
    } else {
        Reply::csv(bytes::Bytes::from_static(bytes))
    };
    r.content_type = ctype;
    r = r
        .with_header(header::ETAG, tag.clone())
        .with_header(header::CACHE_CONTROL, "no-cache".into())
        .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    if name == "index.html" {
        let tiles = tile_origin(&app.config.dashboard.tile_url)
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        r = r
            .with_header(
                header::CONTENT_SECURITY_POLICY,
                format!(
                    "default-src 'self'; img-src 'self' data:{tiles}; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
                ),
            )
            .with_header(header::X_FRAME_OPTIONS, "DENY".into())
            .with_header(header::REFERRER_POLICY, "no-referrer".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_origins() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://tiles.lan/{z}/{x}/{y}.png", Some("http://tiles.lan")),
            (
                "https://t.example:8443/a/{z}/{x}/{y}",
                Some("https://t.example:8443"),
            ),
            ("", None),
            ("javascript:alert(1)", None),
            ("http://bad host/x", None),
            ("http://a;b/x", None),
        ];
        for (url, want) in cases {
            assert_eq!(tile_origin(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn every_asset_is_embedded_and_tagged() {
        assert_eq!(etags().len(), ASSETS.len());
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name}");
        }
    }
}
