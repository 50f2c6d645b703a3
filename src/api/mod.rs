//! The HTTP API: one router, one module per noun.
//!
//! | route | module |
//! |---|---|
//! | `GET/POST /v1/readings` | [`readings::ingest`] |
//! | `GET /v1/devices/ID/readings` | [`readings::query`] |
//! | `GET/POST /v1/devices`, `POST /v1/devices/ID/token` | [`devices`] |
//! | `GET /healthz`, `GET /metrics` | [`ops`] |

pub mod devices;
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
    match segs.as_slice() {
        ["healthz"] if get => Ok(ops::healthz()),
        ["metrics"] if get => Ok(ops::metrics(app)),
        ["v1", "readings"] if get || m == Method::POST => readings::ingest(app, req).await,
        ["v1", "devices"] if get => devices::list(app, req).await,
        ["v1", "devices"] if m == Method::POST => devices::create(app, req).await,
        ["v1", "devices", id, "readings"] if get => {
            let id = id.to_string();
            readings::query(app, req, &id).await
        }
        ["v1", "devices", id, "token"] if m == Method::POST => {
            let id = id.to_string();
            devices::rotate(app, req, &id).await
        }
        ["healthz"] | ["metrics"] | ["v1", "devices", _, "readings"] => {
            Err(not_allowed("GET, HEAD"))
        }
        ["v1", "readings"] | ["v1", "devices"] => Err(not_allowed("GET, HEAD, POST")),
        ["v1", "devices", _, "token"] => Err(not_allowed("POST")),
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
