//! Operations endpoints: `/healthz` and `/metrics`.

use crate::app::App;
use crate::http::Reply;

/// `GET /healthz` → `ok`. Answers while the server accepts requests.
pub fn healthz() -> Reply {
    Reply::csv("ok\n")
}

/// `GET /metrics` in Prometheus text format. Public: it holds counts,
/// never ids or secrets.
pub fn metrics(app: &App) -> Reply {
    let mut r = Reply::csv(app.metrics.render());
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r
}
