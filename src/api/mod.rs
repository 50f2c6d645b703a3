//! The HTTP API: one router, one module per noun.
//!
//! | route | module |
//! |---|---|
//! | `GET/POST /v1/readings` | [`readings::ingest`] |
//! | `GET/POST /v1/devices/ID/readings` | [`readings::query`] |
//! | `GET/POST /v1/devices/ID/aggregates` | [`readings::aggregates`] |
//! | `GET/POST /v1/devices`, `GET /v1/devices/tree`, `GET/POST /v1/devices/ID`, `POST /v1/devices/ID/token` | [`devices`] |
//! | `GET /v1/presence/events`, `GET/POST /v1/presence/notify` | [`devices`] |
//! | `GET/POST /v1/inbox`, `GET/POST /v1/inbox/ack`, `GET/POST /v1/devices/ID/inbox` | [`inbox`] |
//! | `GET /v1/devices/ID/commands`, `POST /v1/inbox/ack` with CSV results | [`commands`] |
//! | `DELETE /v1/devices/ID`, `POST /v1/devices/ID/owner`, `DELETE /v1/channels/NAME`, `DELETE /v1/users/NAME` | [`remove`] |
//! | `/v1/channels...` | [`channels`] |
//! | `/v1/alerts...`, `GET /v1/dead-letters` | [`alerts`] |
//! | `/v1/targets...` (webhooks) | [`targets`] |
//! | `/v1/files`, `/v1/files/NAME`, `/v1/files/NAME/password` | [`files`] |
//! | `GET /healthz`, `GET /metrics`, `GET /v1/admin/backup`, `GET/POST /v1/devices/ID/retention` | [`ops`] |
//! | `GET /`, `GET /ui/FILE` (the browser dashboard) | [`dashboard`] |
//! | `GET/POST /v1/devices/ID/sensors`, `POST /v1/devices/ID/sensors/SENSOR`, `labels=1` on readings queries | [`sensors`] |
//! | `POST /v1/login`, `POST /v1/logout`, `GET /v1/session` | [`users`] |
//! | `POST /write`, `POST /api/v2/write` (InfluxDB line protocol) | [`influx`] |
//! | `GET/POST /update`, `/update.json`, `POST /channels/ID/bulk_update.json` (ThingSpeak) | [`thingspeak`] |
//!
//! `safe=1` in any query string asks for the spreadsheet-safe form of a CSV
//! reply ([`safe`], `codec::spreadsheet`).
//!
//! Requests authenticated by the dashboard's session cookie must carry the
//! session's CSRF token in `X-Overlord-CSRF` when they change anything
//! ([`changes_state`]); the router checks that before any handler runs.

pub mod alerts;
pub mod channels;
pub mod commands;
pub mod dashboard;
pub mod devices;
pub mod files;
pub mod inbox;
pub mod influx;
pub mod ops;
pub mod readings;
pub mod remove;
pub mod safe;
pub mod sensors;
pub mod targets;
pub mod thingspeak;
pub mod upload;
pub mod users;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::app::App;
use crate::error::WireError;
use crate::http::{into_response, Reply, ResponseBody};

tokio::task_local! {
    /// Who the request being served was authenticated as, for its log line.
    static CALLER: std::cell::RefCell<Option<String>>;
}

/// The `limit` of a history listing (alert events, a target's deliveries
/// and dead letters): 1000 by default, at most `query_max_rows`.
pub fn history_limit(app: &App, form: &crate::http::Form) -> Result<usize, WireError> {
    Ok(form
        .number::<usize>("limit")?
        .unwrap_or(1000)
        .clamp(1, app.config.limits.query_max_rows))
}

/// Note who the request being served comes from (`auth::authenticate`
/// calls this); its log line names them. Outside a request (the CLI): a
/// no-op.
pub fn note_caller(who: &crate::auth::Principal) {
    let _ = CALLER.try_with(|c| *c.borrow_mut() = Some(who.label()));
}

/// Serve one request: route it, turn any error into its one-line reply,
/// and log one line without secrets (the query string is never logged):
/// method, path, status, the caller (`device:ID`, `user:NAME`,
/// `anonymous`, or `-` when the request named none that was accepted),
/// the remote address, bytes and microseconds.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    CALLER
        .scope(std::cell::RefCell::new(None), handle_logged(app, req))
        .await
}

async fn handle_logged(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let remote = crate::http::peer_of(req.extensions());
    let method = req.method().clone();
    let version = req.version();
    let path = req.uri().path().to_string();
    // The dashboard sends `X-Overlord-CSRF` on every request (empty before
    // it has a session). Its 401s come without `WWW-Authenticate: Basic`,
    // or the browser would pop up its own password dialog (and a headless
    // one would wait for it forever) instead of the page's login form.
    let from_dashboard = req.headers().contains_key(crate::auth::CSRF_HEADER);
    let mut endpoint = None;
    let mut req = req;
    let mut reply = match safe::take_safe(&mut req) {
        Err(e) => Reply::from(e),
        Ok(safe) => match route(&app, req, &mut endpoint).await {
            Ok(r) if safe => safe::spreadsheet_safe(r).await,
            Ok(r) => r,
            Err(e) => Reply::from(e),
        },
    };
    if from_dashboard && reply.status == 401 {
        reply
            .headers
            .retain(|(name, _)| name != hyper::header::WWW_AUTHENTICATE);
    }
    let status = reply.status;
    app.metrics.count_status(status);
    app.metrics
        .count_route(endpoint.map(|e| e as usize), status);
    let caller = CALLER
        .try_with(|c| c.borrow().clone())
        .ok()
        .flatten()
        .unwrap_or_else(|| "-".into());
    tracing::info!(
        target: "overlord::request",
        method = %method,
        path = %crate::codec::names::log_safe(&path),
        status,
        caller = %crate::codec::names::log_safe(&caller),
        remote = %remote.map_or_else(|| "-".to_string(), |a| a.to_string()),
        bytes = reply.body_len(),
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

/// Every endpoint the server has. The router serves exactly the rows of
/// [`ENDPOINTS`], and the permission-matrix test (`tests/matrix.rs`) fails
/// when an endpoint has no expectations there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Endpoint {
    Healthz,
    Metrics,
    ReadingsGet,
    ReadingsPost,
    InboxRead,
    InboxAck,
    DeviceList,
    DeviceCreate,
    DeviceTree,
    DeviceShow,
    DeviceUpdate,
    DeviceDelete,
    DeviceTransfer,
    PresenceEvents,
    PresenceNotify,
    PresenceNotifySet,
    DeviceReadings,
    DeviceReadingsDelete,
    DeviceAggregates,
    DeviceToken,
    DeviceRevoke,
    DeviceInboxView,
    DeviceInboxSend,
    DeviceCommands,
    ChannelList,
    ChannelCreate,
    ChannelDelete,
    ChannelUpdate,
    ChannelMembers,
    ChannelMemberAdd,
    ChannelMemberRemove,
    ChannelItems,
    ChannelMessage,
    AlertList,
    AlertCreate,
    AlertDelete,
    AlertEvents,
    DeadLetters,
    UserList,
    UserCreate,
    UserToken,
    UserPassword,
    UserRevoke,
    UserDelete,
    Login,
    GrantList,
    GrantAdd,
    GrantRemove,
    FileList,
    FileGet,
    FilePut,
    FileDelete,
    FilePassword,
    RetentionShow,
    RetentionSet,
    AdminBackup,
    Logout,
    Session,
    DeviceSensors,
    DeviceSensorDescribe,
    Dashboard,
    DashboardAsset,
    TargetList,
    TargetCreate,
    TargetDelete,
    TargetTest,
    TargetDeliveries,
    TargetDeadLetters,
    InfluxWriteV1,
    InfluxWriteV2,
    ThingSpeakUpdate,
    ThingSpeakBulk,
}

/// `(method, path pattern, endpoint)`; `:name` segments are parameters,
/// `GET` also answers `HEAD`.
pub const ENDPOINTS: &[(&str, &str, Endpoint)] = &[
    ("GET", "/healthz", Endpoint::Healthz),
    ("GET", "/metrics", Endpoint::Metrics),
    ("GET", "/v1/readings", Endpoint::ReadingsGet),
    ("POST", "/v1/readings", Endpoint::ReadingsPost),
    ("GET", "/v1/inbox", Endpoint::InboxRead),
    // Every device operation also takes a form POST (contract §0), so a
    // token can travel in the body instead of the URL.
    ("POST", "/v1/inbox", Endpoint::InboxRead),
    ("GET", "/v1/inbox/ack", Endpoint::InboxAck),
    ("POST", "/v1/inbox/ack", Endpoint::InboxAck),
    ("GET", "/v1/devices", Endpoint::DeviceList),
    ("POST", "/v1/devices", Endpoint::DeviceCreate),
    ("GET", "/v1/devices/tree", Endpoint::DeviceTree),
    ("GET", "/v1/devices/:id", Endpoint::DeviceShow),
    ("POST", "/v1/devices/:id", Endpoint::DeviceUpdate),
    ("DELETE", "/v1/devices/:id", Endpoint::DeviceDelete),
    ("POST", "/v1/devices/:id/owner", Endpoint::DeviceTransfer),
    ("GET", "/v1/presence/events", Endpoint::PresenceEvents),
    ("GET", "/v1/presence/notify", Endpoint::PresenceNotify),
    ("POST", "/v1/presence/notify", Endpoint::PresenceNotifySet),
    ("GET", "/v1/devices/:id/readings", Endpoint::DeviceReadings),
    ("POST", "/v1/devices/:id/readings", Endpoint::DeviceReadings),
    (
        "DELETE",
        "/v1/devices/:id/readings",
        Endpoint::DeviceReadingsDelete,
    ),
    (
        "GET",
        "/v1/devices/:id/aggregates",
        Endpoint::DeviceAggregates,
    ),
    (
        "POST",
        "/v1/devices/:id/aggregates",
        Endpoint::DeviceAggregates,
    ),
    ("POST", "/v1/devices/:id/token", Endpoint::DeviceToken),
    ("POST", "/v1/devices/:id/revoke", Endpoint::DeviceRevoke),
    ("GET", "/v1/devices/:id/inbox", Endpoint::DeviceInboxView),
    ("POST", "/v1/devices/:id/inbox", Endpoint::DeviceInboxSend),
    ("GET", "/v1/devices/:id/commands", Endpoint::DeviceCommands),
    ("GET", "/v1/channels", Endpoint::ChannelList),
    ("POST", "/v1/channels", Endpoint::ChannelCreate),
    ("DELETE", "/v1/channels/:ch", Endpoint::ChannelDelete),
    ("POST", "/v1/channels/:ch", Endpoint::ChannelUpdate),
    ("GET", "/v1/channels/:ch/members", Endpoint::ChannelMembers),
    (
        "POST",
        "/v1/channels/:ch/members",
        Endpoint::ChannelMemberAdd,
    ),
    (
        "DELETE",
        "/v1/channels/:ch/members",
        Endpoint::ChannelMemberRemove,
    ),
    ("GET", "/v1/channels/:ch/items", Endpoint::ChannelItems),
    (
        "POST",
        "/v1/channels/:ch/messages",
        Endpoint::ChannelMessage,
    ),
    ("GET", "/v1/alerts", Endpoint::AlertList),
    ("POST", "/v1/alerts", Endpoint::AlertCreate),
    ("DELETE", "/v1/alerts/:name", Endpoint::AlertDelete),
    ("GET", "/v1/alerts/:name/events", Endpoint::AlertEvents),
    ("GET", "/v1/dead-letters", Endpoint::DeadLetters),
    ("GET", "/v1/users", Endpoint::UserList),
    ("POST", "/v1/users", Endpoint::UserCreate),
    ("POST", "/v1/users/:name/token", Endpoint::UserToken),
    ("POST", "/v1/users/:name/password", Endpoint::UserPassword),
    ("POST", "/v1/users/:name/revoke", Endpoint::UserRevoke),
    ("DELETE", "/v1/users/:name", Endpoint::UserDelete),
    ("POST", "/v1/login", Endpoint::Login),
    ("GET", "/v1/grants", Endpoint::GrantList),
    ("POST", "/v1/grants", Endpoint::GrantAdd),
    ("DELETE", "/v1/grants", Endpoint::GrantRemove),
    ("GET", "/v1/files", Endpoint::FileList),
    ("GET", "/v1/files/:name", Endpoint::FileGet),
    ("PUT", "/v1/files/:name", Endpoint::FilePut),
    ("POST", "/v1/files/:name", Endpoint::FilePut),
    ("DELETE", "/v1/files/:name", Endpoint::FileDelete),
    ("POST", "/v1/files/:name/password", Endpoint::FilePassword),
    ("GET", "/v1/devices/:id/retention", Endpoint::RetentionShow),
    ("POST", "/v1/devices/:id/retention", Endpoint::RetentionSet),
    ("GET", "/v1/admin/backup", Endpoint::AdminBackup),
    ("POST", "/v1/logout", Endpoint::Logout),
    ("GET", "/v1/session", Endpoint::Session),
    ("GET", "/v1/devices/:id/sensors", Endpoint::DeviceSensors),
    ("POST", "/v1/devices/:id/sensors", Endpoint::DeviceSensors),
    (
        "POST",
        "/v1/devices/:id/sensors/:sensor",
        Endpoint::DeviceSensorDescribe,
    ),
    ("GET", "/", Endpoint::Dashboard),
    ("GET", "/ui/:file", Endpoint::DashboardAsset),
    ("GET", "/v1/targets", Endpoint::TargetList),
    ("POST", "/v1/targets", Endpoint::TargetCreate),
    ("DELETE", "/v1/targets/:name", Endpoint::TargetDelete),
    ("POST", "/v1/targets/:name/test", Endpoint::TargetTest),
    (
        "GET",
        "/v1/targets/:name/deliveries",
        Endpoint::TargetDeliveries,
    ),
    (
        "GET",
        "/v1/targets/:name/dead-letters",
        Endpoint::TargetDeadLetters,
    ),
    // Doors for what devices already speak (docs/api.md, "Other doors").
    ("POST", "/write", Endpoint::InfluxWriteV1),
    ("POST", "/api/v2/write", Endpoint::InfluxWriteV2),
    ("GET", "/update", Endpoint::ThingSpeakUpdate),
    ("POST", "/update", Endpoint::ThingSpeakUpdate),
    ("GET", "/update.json", Endpoint::ThingSpeakUpdate),
    ("POST", "/update.json", Endpoint::ThingSpeakUpdate),
    (
        "POST",
        "/channels/:id/bulk_update.json",
        Endpoint::ThingSpeakBulk,
    ),
];

/// Does this request change anything? Every method but `GET`/`HEAD`, and
/// the device `GET`s that write (readings by query string, inbox
/// acknowledgement, a ThingSpeak update). `POST /v1/login` is not guarded: it needs no session.
pub fn changes_state(method: &Method, ep: Endpoint) -> bool {
    if ep == Endpoint::Login {
        return false;
    }
    !matches!(*method, Method::GET | Method::HEAD)
        || matches!(
            ep,
            Endpoint::ReadingsGet | Endpoint::InboxAck | Endpoint::ThingSpeakUpdate
        )
}

/// The CSRF defence: a state-changing request that would be authenticated
/// by the session cookie (it has the cookie and no `Authorization`
/// header) must carry the session's CSRF token in
/// `X-Overlord-CSRF` (`403 csrf`). A cross-site page can make a browser
/// send the cookie (were it not `SameSite=Strict`) but cannot read the
/// token or set the header.
fn check_csrf<B>(req: &Request<B>, ep: Endpoint) -> Result<(), WireError> {
    if !changes_state(req.method(), ep) || req.headers().contains_key(hyper::header::AUTHORIZATION)
    {
        return Ok(());
    }
    let Some(session) = crate::auth::session_cookie(req.headers()) else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(crate::auth::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() {
        return Err(WireError::new(
            403,
            "csrf",
            "a request with the session cookie that changes something needs the X-Overlord-CSRF header (GET /v1/session gives it)",
        ));
    }
    if !crate::auth::csrf_matches(session, given) {
        return Err(WireError::new(
            403,
            "csrf",
            "X-Overlord-CSRF does not match the session",
        ));
    }
    Ok(())
}

/// Match a path against a pattern; `Some(value of the :name segment)`.
/// A pattern with two `:name` segments gives both joined by `/` (which no
/// segment holds), e.g. `gh3/N1` for `/v1/devices/:id/sensors/:sensor`.
fn matches(pattern: &str, segs: &[&str]) -> Option<Option<String>> {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    if pat.len() != segs.len() {
        return None;
    }
    let mut param: Option<String> = None;
    for (p, s) in pat.iter().zip(segs) {
        if p.starts_with(':') {
            if s.is_empty() {
                return None;
            }
            param = Some(match param {
                Some(first) => format!("{first}/{s}"),
                None => s.to_string(),
            });
        } else if p != s {
            return None;
        }
    }
    Some(param)
}

/// Every endpoint once, with its name, for the `route` label of
/// `/metrics` (slot = the variant's discriminant).
pub fn endpoint_names() -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (_, _, ep) in ENDPOINTS {
        let slot = *ep as usize;
        if !out.iter().any(|(s, _)| *s == slot) {
            out.push((slot, format!("{ep:?}")));
        }
    }
    out
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    endpoint: &mut Option<Endpoint>,
) -> Result<Reply, WireError> {
    let (ep, p) = find(req.method(), req.uri().path())?;
    *endpoint = Some(ep);
    check_csrf(&req, ep)?;
    dispatch(app, req, ep, p).await
}

/// The endpoint `method` and `path` name, with its path parameter: the
/// first row of [`ENDPOINTS`] that matches wins (`/v1/devices/tree`
/// before `/v1/devices/:id`). None: `404 not_found`; the path with other
/// methods only: `405` with `Allow`.
fn find(m: &Method, path: &str) -> Result<(Endpoint, String), WireError> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let method = if m == Method::HEAD { "GET" } else { m.as_str() };
    let mut allow: Vec<&str> = Vec::new();
    let mut found = None;
    for (meth, pattern, ep) in ENDPOINTS {
        if let Some(param) = matches(pattern, &segs) {
            allow.push(meth);
            if *meth == method && found.is_none() {
                found = Some((*ep, param.unwrap_or_default()));
            }
        }
    }
    if let Some(found) = found {
        return Ok(found);
    }
    if allow.is_empty() {
        return Err(WireError::new(
            404,
            "not_found",
            format!("no such endpoint: {}", clip_path(path)),
        ));
    }
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    allow.sort_unstable();
    allow.dedup();
    let mut e = WireError::new(
        405,
        "method_not_allowed",
        format!("use {}", allow.join(", ")),
    );
    e.allow = Some(allow.join(", "));
    Err(e)
}

// Long because it is the dispatch table: one line per endpoint.
async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    ep: Endpoint,
    p: String,
) -> Result<Reply, WireError> {
    use Endpoint::*;
    match ep {
        Healthz => Ok(ops::healthz(&app.store)),
        Metrics => ops::metrics(app).await,
        ReadingsGet | ReadingsPost => readings::ingest(app, req).await,
        InboxRead => inbox::read(app, req).await,
        InboxAck => inbox::ack(app, req).await,
        DeviceList => devices::list(app, req).await,
        DeviceCreate => devices::create(app, req).await,
        DeviceTree => devices::tree(app, req).await,
        DeviceShow => devices::show(app, req, &p).await,
        DeviceUpdate => devices::update(app, req, &p).await,
        DeviceDelete => remove::device(app, req, &p).await,
        DeviceTransfer => remove::transfer(app, req, &p).await,
        PresenceEvents => devices::presence_events(app, req).await,
        PresenceNotify | PresenceNotifySet => devices::notify(app, req).await,
        DeviceReadings => sensors::labelled_query(app, req, &p).await,
        DeviceReadingsDelete => remove::readings(app, req, &p).await,
        DeviceAggregates => readings::aggregates(app, req, &p).await,
        DeviceToken => devices::rotate(app, req, &p).await,
        DeviceRevoke => users::revoke_device(app, req, &p).await,
        DeviceInboxView => inbox::view(app, req, &p).await,
        DeviceInboxSend => inbox::send(app, req, &p).await,
        DeviceCommands => commands::history(app, req, &p).await,
        ChannelList => channels::list(app, req).await,
        ChannelCreate => channels::create(app, req).await,
        ChannelDelete => remove::channel(app, req, &p).await,
        ChannelUpdate => channels::update(app, req, &p).await,
        ChannelMembers => channels::members(app, req, &p).await,
        ChannelMemberAdd => channels::change_member(app, req, &p, true).await,
        ChannelMemberRemove => channels::change_member(app, req, &p, false).await,
        ChannelItems => channels::items(app, req, &p).await,
        ChannelMessage => channels::message(app, req, &p).await,
        AlertList => alerts::list(app, req).await,
        AlertCreate => alerts::create(app, req).await,
        AlertDelete => alerts::delete(app, req, &p).await,
        AlertEvents => alerts::events(app, req, &p).await,
        DeadLetters => alerts::dead_letters(app, req).await,
        UserList => users::list(app, req).await,
        UserCreate => users::create(app, req).await,
        UserToken => users::credentials(app, req, &p, "token").await,
        UserPassword => users::credentials(app, req, &p, "password").await,
        UserRevoke => users::credentials(app, req, &p, "revoke").await,
        UserDelete => remove::user(app, req, &p).await,
        Login => users::login(app, req).await,
        GrantList => users::list_grants(app, req).await,
        GrantAdd => users::change(app, req, true).await,
        GrantRemove => users::change(app, req, false).await,
        FileList => files::list(app, req).await,
        FileGet => files::get(app, req, &p).await,
        FilePut => files::put(app, req, &p).await,
        FileDelete => files::delete(app, req, &p).await,
        FilePassword => files::rotate_password(app, req, &p).await,
        RetentionShow => ops::retention_show(app, req, &p).await,
        RetentionSet => ops::retention_set(app, req, &p).await,
        AdminBackup => ops::backup(app, req).await,
        Logout => users::logout(app, req).await,
        Session => users::session(app, req).await,
        DeviceSensors => sensors::latest(app, req, &p).await,
        DeviceSensorDescribe => sensors::describe(app, req, &p).await,
        Dashboard => Ok(dashboard::asset(app, &req, "index.html")),
        DashboardAsset => Ok(dashboard::asset(app, &req, &p)),
        TargetList => targets::list(app, req).await,
        TargetCreate => targets::create(app, req).await,
        TargetDelete => targets::delete(app, req, &p).await,
        TargetTest => targets::test(app, req, &p).await,
        TargetDeliveries => targets::deliveries(app, req, &p).await,
        TargetDeadLetters => targets::dead_letters(app, req, &p).await,
        InfluxWriteV1 => influx::write(app, req, influx::Version::V1).await,
        InfluxWriteV2 => influx::write(app, req, influx::Version::V2).await,
        ThingSpeakUpdate => thingspeak::update(app, req).await,
        ThingSpeakBulk => thingspeak::bulk(app, req).await,
    }
}
