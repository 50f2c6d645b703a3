//! The HTTP API: one router, one module per noun.
//!
//! | route | module |
//! |---|---|
//! | `GET/POST /v1/readings` | [`readings::ingest`] |
//! | `GET /v1/devices/ID/readings` | [`readings::query`] |
//! | `GET/POST /v1/devices`, `POST /v1/devices/ID/token` | [`devices`] |
//! | `GET /v1/inbox`, `/v1/inbox/ack`, `GET/POST /v1/devices/ID/inbox` | [`inbox`] |
//! | `/v1/channels...` | [`channels`] |
//! | `/v1/alerts...`, `GET /v1/dead-letters` | [`alerts`] |
//! | `GET /healthz`, `GET /metrics` | [`ops`] |

pub mod alerts;
pub mod channels;
pub mod devices;
pub mod inbox;
pub mod ops;
pub mod readings;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::app::App;
use crate::error::WireError;
use crate::http::{into_response, Reply};

/// Serve one request: route it, turn any error into its one-line reply,
/// and log one line without secrets (the query string is never logged).
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let version = req.version();
    let path = req.uri().path().to_string();
    let reply = match route(&app, req).await {
        Ok(r) => r,
        Err(e) => Reply::from(e),
    };
    let status = reply.status;
    app.metrics.count_status(status);
    tracing::info!(
        target: "overlord::request",
        method = %method,
        path = %clip_path(&path),
        status,
        bytes = reply.body.len(),
        micros = started.elapsed().as_micros() as u64,
    );
    Ok(into_response(reply, version))
}

fn clip_path(p: &str) -> &str {
    let mut end = p.len().min(200);
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    &p[..end]
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let m = req.method().clone();
    let get = m == Method::GET || m == Method::HEAD;
    let post = m == Method::POST;
    let delete = m == Method::DELETE;
    let owned = |s: &&str| s.to_string();
    match segs.as_slice() {
        ["healthz"] if get => Ok(ops::healthz()),
        ["metrics"] if get => Ok(ops::metrics(app)),
        ["v1", "readings"] if get || post => readings::ingest(app, req).await,
        ["v1", "inbox"] if get => inbox::read(app, req).await,
        ["v1", "inbox", "ack"] if get || post => inbox::ack(app, req).await,
        ["v1", "devices"] if get => devices::list(app, req).await,
        ["v1", "devices"] if post => devices::create(app, req).await,
        ["v1", "devices", id, "readings"] if get => readings::query(app, req, &owned(id)).await,
        ["v1", "devices", id, "token"] if post => devices::rotate(app, req, &owned(id)).await,
        ["v1", "devices", id, "inbox"] if get => inbox::view(app, req, &owned(id)).await,
        ["v1", "devices", id, "inbox"] if post => inbox::send(app, req, &owned(id)).await,
        ["v1", "channels"] if get => channels::list(app, req).await,
        ["v1", "channels"] if post => channels::create(app, req).await,
        ["v1", "channels", ch, "members"] if get => channels::members(app, req, &owned(ch)).await,
        ["v1", "channels", ch, "members"] if post => {
            channels::change_member(app, req, &owned(ch), true).await
        }
        ["v1", "channels", ch, "members"] if delete => {
            channels::change_member(app, req, &owned(ch), false).await
        }
        ["v1", "channels", ch, "items"] if get => channels::items(app, req, &owned(ch)).await,
        ["v1", "channels", ch, "messages"] if post => channels::message(app, req, &owned(ch)).await,
        ["v1", "alerts"] if get => alerts::list(app, req).await,
        ["v1", "alerts"] if post => alerts::create(app, req).await,
        ["v1", "alerts", name] if delete => alerts::delete(app, req, &owned(name)).await,
        ["v1", "alerts", name, "events"] if get => alerts::events(app, req, &owned(name)).await,
        ["v1", "dead-letters"] if get => alerts::dead_letters(app, req).await,
        ["healthz"]
        | ["metrics"]
        | ["v1", "inbox"]
        | ["v1", "devices", _, "readings"]
        | ["v1", "channels", _, "items"]
        | ["v1", "alerts", _, "events"]
        | ["v1", "dead-letters"] => Err(not_allowed("GET, HEAD")),
        ["v1", "readings"]
        | ["v1", "inbox", "ack"]
        | ["v1", "devices"]
        | ["v1", "devices", _, "inbox"]
        | ["v1", "channels"]
        | ["v1", "alerts"] => Err(not_allowed("GET, HEAD, POST")),
        ["v1", "channels", _, "members"] => Err(not_allowed("GET, HEAD, POST, DELETE")),
        ["v1", "devices", _, "token"] | ["v1", "channels", _, "messages"] => {
            Err(not_allowed("POST"))
        }
        ["v1", "alerts", _] => Err(not_allowed("DELETE")),
        _ => Err(WireError::new(
            404,
            "not_found",
            format!("no such endpoint: {}", clip_path(&path)),
        )),
    }
}

fn not_allowed(allow: &'static str) -> WireError {
    let mut e = WireError::new(405, "method_not_allowed", format!("use {allow}"));
    e.allow = Some(allow);
    e
}
