//! Devices: `GET /v1/devices` (list), `POST /v1/devices` (create),
//! `POST /v1/devices/ID/token` (rotate the token).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use crate::app::App;
use crate::auth::{Action, Principal, Resource};
use crate::codec::form;
use crate::devices;
use crate::error::WireError;
use crate::http::{authenticate, media_type, peer_of, read_body, Reply};

/// Management requests are small; a larger body is refused.
const MAX_FORM: usize = 16 * 1024;

async fn caller(app: &App, req: &Request<Incoming>) -> Result<Principal, WireError> {
    let who = authenticate(app, req.headers(), peer_of(req.extensions()), None, None)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    Ok(who)
}

/// `GET /v1/devices`: `id,name,owner,created,last_seen` for every device
/// the caller may see.
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    let mut out = String::from(devices::LIST_HEADER);
    for d in app.directory.devices() {
        if app
            .directory
            .authorize(&who, Action::ViewDevice, Resource::Device(&d))
            .is_ok()
        {
            devices::write_row(&d, app.presence.last_seen(d.num), &mut out);
        }
    }
    Ok(Reply::csv(out))
}

/// `POST /v1/devices` with form fields `id` (optional) and `name`
/// (optional): `201` and `id,token` — the token is shown only here.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    app.directory
        .authorize(&who, Action::CreateDevice, Resource::None)?;
    let Principal::User(user) = &who else {
        return Err(WireError::forbidden("devices are created by users"));
    };
    let mut pairs = form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    let media = media_type(&req);
    let body = read_body(
        req.into_body(),
        MAX_FORM,
        Duration::from_secs(app.config.limits.body_timeout_secs),
    )
    .await?;
    if !body.is_empty() {
        if !matches!(
            media.as_deref(),
            None | Some("application/x-www-form-urlencoded")
        ) {
            return Err(WireError::new(
                415,
                "unsupported_media_type",
                "send a form: id=...&name=...",
            ));
        }
        pairs.extend(form::parse_pairs(&body)?);
    }
    let mut id = None;
    let mut name = None;
    for (k, v) in &pairs {
        let slot = match k.as_str() {
            "id" => &mut id,
            "name" => &mut name,
            other => {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!(
                        "unknown field '{}'; use id, name",
                        crate::codec::names::clip(other)
                    ),
                ))
            }
        };
        if slot.replace(v.clone()).is_some() {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{k}: given more than once"),
            ));
        }
    }
    let app2 = app.clone();
    let owner = user.name.clone();
    let (rec, token) = tokio::task::spawn_blocking(move || {
        devices::create(
            &app2.store,
            &app2.directory,
            &owner,
            id.as_deref(),
            name.as_deref(),
        )
    })
    .await
    .map_err(|_| WireError::new(500, "internal", "create failed"))??;
    tracing::info!(target: "overlord::audit", by = %who.label(), device = %rec.id, "device created");
    Ok(Reply::csv(format!("id,token\n{},{token}\n", rec.id)).with_status(201))
}

/// `POST /v1/devices/ID/token`: a new token (`id,token`); the previous one
/// keeps working until the next rotation.
pub async fn rotate(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, WireError> {
    let who = caller(app, &req).await?;
    let unknown = || {
        WireError::new(
            404,
            "unknown_device",
            format!("no device '{}'", crate::codec::names::clip(id)),
        )
    };
    let d = app.directory.device(id).ok_or_else(unknown)?;
    app.directory
        .authorize(&who, Action::RotateDevice, Resource::Device(&d))?;
    let app2 = app.clone();
    let token =
        tokio::task::spawn_blocking(move || devices::rotate(&app2.store, &app2.directory, &d))
            .await
            .map_err(|_| WireError::new(500, "internal", "rotate failed"))??;
    tracing::info!(target: "overlord::audit", by = %who.label(), device = %id, "device token rotated");
    Ok(Reply::csv(format!("id,token\n{id},{token}\n")))
}
