//! Deleting over HTTP: `DELETE /v1/devices/ID` (`crate::deletion`).
//! Audited (target `overlord::audit`).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{visible, Action};
use crate::codec::names::log_safe;
use crate::error::WireError;
use crate::http::{Form, Reply};
use crate::store::DeviceRecord;

/// `DELETE /v1/devices/ID`: the device is refused at once and its data
/// removed (readings in the background); `ok,<inbox rows>,<channel
/// memberships>,<alerts>` removed with it.
pub async fn device(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let timeout = Duration::from_secs(app.config.limits.body_timeout_secs);
    let form = Form::read(req, &["device", "token"], timeout).await?;
    let who = form.caller(app)?;
    let d = visible::<DeviceRecord>(app, &who, Action::DeleteDevice, id)?;
    let app2 = app.clone();
    let d2 = d.clone();
    let removed = tokio::task::spawn_blocking(move || crate::deletion::delete_device(&app2, &d2))
        .await
        .map_err(|_| WireError::new(500, "internal", "delete failed"))??;
    tracing::info!(
        target: "overlord::audit",
        by = %log_safe(&who.label()),
        device = %log_safe(&d.id),
        inbox_rows = removed.inbox_rows,
        memberships = removed.memberships,
        alerts = removed.alerts,
        "device deleted"
    );
    Ok(Reply::csv(format!(
        "ok,{},{},{}\n",
        removed.inbox_rows, removed.memberships, removed.alerts
    )))
}
