//! Operations endpoints: `/healthz`, `/metrics` and the administrator's
//! `GET /v1/admin/backup`.

use std::sync::Arc;

use redb::ReadableDatabase;

use crate::app::App;
use crate::auth::{visible, Action};
use crate::codec::names::log_safe;
use crate::error::WireError;
use crate::http::Reply;
use crate::metrics::Snapshot;
use crate::store::{DeviceRecord, StoreError};

/// `GET /healthz` → `ok`. Answers while the server accepts requests.
/// A data file known to be damaged is reported (`500 storage_damaged`):
/// the server still answers, but refuses writes.
pub fn healthz(store: &crate::store::Store) -> Reply {
    match store.damaged() {
        None => Reply::csv("ok\n"),
        Some(why) => crate::error::WireError::from(crate::store::StoreError::Damaged(why)).into(),
    }
}

/// `GET /metrics` in Prometheus text format. Public: it holds counts,
/// never ids or secrets. The scrape-time values (presence counts, inbox
/// totals: one scan of `inbox_meta`) are read on a blocking thread.
pub async fn metrics(app: &Arc<App>) -> Result<Reply, WireError> {
    let app2 = app.clone();
    let text = crate::blocking::wire("metrics failed", move || {
        let devices = app2.presence.state_counts();
        let (inbox_rows, inboxes_pending, inboxes_full) =
            crate::inbox::totals(&app2.store, app2.config.limits.max_inbox)?;
        let snap = Snapshot {
            routes: super::endpoint_names(),
            devices,
            inbox_rows,
            inboxes_pending,
            inboxes_full,
            now: crate::codec::timefmt::now_micros(),
        };
        Ok::<_, StoreError>(app2.metrics.render(&snap))
    })
    .await?;
    let mut r = Reply::csv(text);
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(r)
}

/// `GET /v1/admin/backup` (administrators): a consistent copy of the data
/// file (on PostgreSQL: of the database, as a data file), taken while the
/// server keeps serving. A read transaction pins the last commit; a blocking thread copies it into a fresh redb file
/// beside the data file, which is then unlinked and streamed from the open
/// handle (`Content-Length` known, never buffered whole).
pub async fn backup(
    app: &Arc<App>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Reply, WireError> {
    let timeout = std::time::Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = crate::http::Form::read(req, &[], timeout).await?;
    let who = form.caller(app)?;
    app.directory
        .authorize(&who, Action::Administer, crate::auth::Resource::None)?;
    let app2 = app.clone();
    let (file, len, rows) = crate::blocking::wire("backup failed", move || {
        let tmp = crate::ops::temp_beside(&app2.config.data_file, "backup");
        let copied = match app2.store.postgres() {
            Some(kv) => backup_postgres(&kv, &tmp, app2.config.cache_bytes()),
            None => {
                let txn = app2.store.db()?.begin_read()?;
                crate::ops::backup_copy(&txn, &tmp, &|_| {})
            }
        };
        let opened = copied.and_then(|rows| {
            let f = std::fs::File::open(&tmp).map_err(|e| StoreError::Io(e.to_string()))?;
            let len = f
                .metadata()
                .map_err(|e| StoreError::Io(e.to_string()))?
                .len();
            Ok((f, len, rows))
        });
        // Unlinked at once: the open handle keeps the bytes until the
        // response is sent, and nothing is left behind.
        let _ = std::fs::remove_file(&tmp);
        opened
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), bytes = len, rows, "backup taken");
    let mut r = Reply::csv(bytes::Bytes::new());
    r.content_type = "application/octet-stream";
    r.stream = Some(crate::http::FileBody::new(file, len));
    Ok(r.with_header(
        hyper::header::CONTENT_DISPOSITION,
        "attachment; filename=\"overlord-backup.redb\"".into(),
    ))
}

/// The backup of a store on PostgreSQL: the same redb file, written
/// from one `REPEATABLE READ` snapshot of the database by
/// `overlord export-store --to redb`'s copy (so it is also the way back
/// to a single data file). Its uploaded files' contents, which that copy
/// also fetches, are dropped: a backup never holds them (see the doc).
fn backup_postgres(
    kv: &crate::pg::kv::PgKv,
    tmp: &std::path::Path,
    cache_bytes: usize,
) -> Result<u64, StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Io(e.to_string()))?;
    // The data file alone, as a backup on redb is: the files' contents
    // stay where they are (in the database).
    let copied = rt.block_on(crate::pg::transfer::to_redb(
        kv.target(),
        tmp,
        None,
        cache_bytes,
        &|_| {},
    ));
    copied.map(|c| c.rows).map_err(StoreError::Io)
}

/// `GET /v1/devices/ID/retention`: how long the device's readings are
/// kept (see [`crate::retention::Retention::settings_csv`]).
pub async fn retention_show(
    app: &Arc<App>,
    req: hyper::Request<hyper::body::Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let timeout = std::time::Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = crate::http::Form::read(req, &["device", "token"], timeout).await?;
    let who = form.header_principal(app)?;
    let who = match who {
        crate::auth::Principal::Anonymous => form.caller(app)?,
        w => w,
    };
    let d = visible::<DeviceRecord>(app, &who, Action::ViewDevice, id)?;
    Ok(Reply::csv(app.retention.settings_csv(d.num)))
}

/// `POST /v1/devices/ID/retention` with `keep_days=N` (0: forever; empty:
/// back to the default) and optionally `sensor=N1` (else the whole
/// device). Replies with the device's settings.
pub async fn retention_set(
    app: &Arc<App>,
    req: hyper::Request<hyper::body::Incoming>,
    id: &str,
) -> Result<Reply, WireError> {
    let timeout = std::time::Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = crate::http::Form::read(req, &["sensor", "keep_days"], timeout).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::EditDevice, id)?;
    let sensor = match form.get("sensor").map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(crate::codec::SensorId::parse(s)?),
        None => None,
    };
    let Some(raw) = form.get("keep_days") else {
        return Err(WireError::bad_request(
            "missing_field",
            "keep_days is required (days; 0 keeps forever; empty goes back to the default)",
        ));
    };
    let days = crate::retention::parse_days(raw)?;
    let app2 = app.clone();
    let num = d.num;
    crate::blocking::wire("retention change failed", move || {
        app2.retention.set(&app2.store, num, sensor, days)
    })
    .await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), device = %log_safe(&d.id), ?days, "retention set");
    Ok(Reply::csv(app.retention.settings_csv(d.num)))
}
