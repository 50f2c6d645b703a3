//! Files for devices: `GET /v1/files` (manifest), `GET/HEAD/PUT/POST/DELETE
//! /v1/files/NAME`, `POST /v1/files/NAME/password` (rotate the download
//! password). Storage and ranges are in [`crate::files`].

use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request};

use crate::app::App;
use crate::auth::{self, authenticate, parse_basic, visible, Action, Principal, Resource};
use crate::codec::names::log_safe;
use crate::codec::names::{clip, write_csv_text};
use crate::codec::{form, timefmt};
use crate::error::WireError;
use crate::files::{self, Ranged};
use crate::http::{declared_too_large, peer_of, FileBody, Reply};
use crate::store::FileRecord;

use super::upload::{self, UploadLimits};

/// `Content-Type` of a download.
const OCTET: &str = "application/octet-stream";

/// Header of the manifest and of an upload's reply.
pub const MANIFEST_HEADER: &str = "name,size,sha256,updated\n";

fn unknown(name: &str) -> WireError {
    WireError::new(404, "unknown_file", format!("no file '{}'", clip(name)))
}

fn write_row(f: &FileRecord, out: &mut String) {
    write_csv_text(&f.name, out);
    out.push(',');
    out.push_str(&f.size.to_string());
    out.push(',');
    out.push_str(&files::hex(&f.sha256));
    out.push(',');
    timefmt::write_time(f.updated, out);
    out.push('\n');
}

/// Query parameters of a file request; unknown or repeated ones are `400`.
#[derive(Default)]
struct Params {
    device: Option<String>,
    token: Option<String>,
    password: Option<String>,
}

fn params(req: &Request<Incoming>, allowed: &[&str]) -> Result<Params, WireError> {
    let pairs = form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    let mut p = Params::default();
    for (k, v) in pairs {
        let slot = match k.as_str() {
            "device" if allowed.contains(&"device") => &mut p.device,
            "token" if allowed.contains(&"token") => &mut p.token,
            "password" if allowed.contains(&"password") => &mut p.password,
            other => {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!(
                        "unknown parameter '{}'; use {}",
                        clip(other),
                        allowed.join(", ")
                    ),
                ))
            }
        };
        if slot.replace(v).is_some() {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("{k}: given more than once"),
            ));
        }
    }
    Ok(p)
}

/// Who is calling, from the headers or `device=&token=` (anonymous when
/// nothing is presented).
fn principal(app: &App, req: &Request<Incoming>, p: &Params) -> Result<Principal, WireError> {
    authenticate(
        app,
        req.headers(),
        peer_of(req.extensions()),
        p.device.as_deref(),
        p.token.as_deref(),
    )
}

/// A user or device from the headers or `device=&token=`; `401` for nobody.
fn caller(app: &App, req: &Request<Incoming>, p: &Params) -> Result<Principal, WireError> {
    let who = principal(app, req, p)?;
    if matches!(who, Principal::Anonymous) {
        return Err(WireError::unauthorized("credentials required"));
    }
    Ok(who)
}

/// `GET /v1/files`: `name,size,sha256,updated` for every file the caller
/// may read, by name.
pub async fn list(app: &Arc<App>, req: Request<Incoming>) -> Result<Reply, WireError> {
    let p = params(&req, &["device", "token"])?;
    let who = caller(app, &req, &p)?;
    let mut out = String::from(MANIFEST_HEADER);
    for f in app.files.all() {
        if app
            .directory
            .authorize(&who, Action::ReadOwned, Resource::file(&f))
            .is_ok()
        {
            write_row(&f, &mut out);
        }
    }
    Ok(Reply::csv(out))
}

/// A file password presented as `?password=` or as Basic `NAME:PASSWORD`
/// (or `:PASSWORD`). A Basic id that is a device or user is their
/// credential, not a file password.
fn presented_password(app: &App, headers: &HeaderMap, name: &str, p: &Params) -> Option<String> {
    if let Some(pw) = &p.password {
        return Some(pw.clone());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (id, secret) = parse_basic(auth)?;
    let someone = app.directory.device(&id).is_some() || app.directory.user(&id).is_some();
    ((id.is_empty() || id == name) && !someone).then_some(secret)
}

/// Check a file password; failures count against the source and the
/// (source, file) pair like any other wrong token (see
/// [`crate::throttle`]): a wrong guess from one address never locks
/// the file's password out for the others. A file password is a random
/// token checked by its SHA-256 digest, not argon2, so it needs no slot
/// of the password-check limit.
fn check_password(
    app: &App,
    req: &Request<Incoming>,
    f: &FileRecord,
    password: &str,
) -> Result<(), WireError> {
    let keys = crate::throttle::Keys::token(peer_of(req.extensions()), "file", Some(&f.name));
    let attempt = app.throttle.begin(&keys).map_err(|secs| {
        WireError::rate_limited("too many failed attempts; wait and retry", secs)
    })?;
    let stored = f
        .password
        .as_ref()
        .map(|cur| (cur, f.prev_password.as_ref()));
    if auth::secret_matches(password, stored) {
        attempt.succeeded();
        return Ok(());
    }
    attempt.failed();
    Err(WireError::unauthorized("wrong file password"))
}

/// `GET` / `HEAD /v1/files/NAME`: the content, by a device of the file's
/// owner, a user who may read it, or the file's password. `Range` (one
/// range; several are answered in full), `If-Range`, `If-None-Match`.
pub async fn get(app: &Arc<App>, req: Request<Incoming>, name: &str) -> Result<Reply, WireError> {
    files::check_name(name)?;
    let p = params(&req, &["device", "token", "password"])?;
    let head = req.method() == Method::HEAD;
    let f = readable(app, &req, name, &p)?;
    let (f, opened) = match head {
        true => (f, None),
        false => {
            let (f, file) = open_current(app, name, f).await?;
            (f, Some(file))
        }
    };
    let (mut reply, start, count) = match ranged_reply(req.headers(), &f) {
        Served::Whole(r) => return Ok(r),
        Served::Bytes(r, start, count) => (r, start, count),
    };
    match opened {
        None => Ok(reply.with_header(header::CONTENT_LENGTH, count.to_string())),
        Some(file) => {
            let file = crate::blocking::value("seek failed", move || {
                let mut file = file;
                file.seek(SeekFrom::Start(start)).map(|_| file)
            })
            .await?
            .map_err(|_| unreadable())?;
            reply.stream = Some(FileBody::new(file, count));
            Ok(reply)
        }
    }
}

fn unreadable() -> WireError {
    WireError::new(500, "storage", "the file could not be read")
}

/// File `name` if the caller may read it: with the file's password
/// (anyone who has it), else by their credentials.
fn readable(
    app: &App,
    req: &Request<Incoming>,
    name: &str,
    p: &Params,
) -> Result<Arc<FileRecord>, WireError> {
    if let Some(pw) = presented_password(app, req.headers(), name, p) {
        let f = app.files.get(name).ok_or_else(|| unknown(name))?;
        check_password(app, req, &f, &pw)?;
        app.directory.authorize(
            &Principal::Anonymous,
            Action::ReadFileByPassword,
            Resource::file(&f),
        )?;
        return Ok(f);
    }
    let who = principal(app, req, p)?;
    visible::<FileRecord>(app, &who, Action::ReadOwned, name)
}

/// Open `f`'s content. A replace that committed since the lookup may
/// have removed the old blob: then the new record is served (a few
/// tries).
async fn open_current(
    app: &App,
    name: &str,
    mut f: Arc<FileRecord>,
) -> Result<(Arc<FileRecord>, std::fs::File), WireError> {
    for _ in 0..3 {
        let (files, sha256) = (app.files.clone(), f.sha256);
        match crate::blocking::value("open failed", move || files.open_blob(&sha256)).await? {
            Ok(file) => return Ok((f, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                f = app.files.get(name).ok_or_else(|| unknown(name))?;
            }
            Err(_) => return Err(unreadable()),
        }
    }
    Err(unreadable())
}

/// What a download sends, by `If-None-Match`, `Range` and `If-Range`.
enum Served {
    /// A `304` or a `416`: the whole reply.
    Whole(Reply),
    /// The reply's status and headers, and the bytes to send: `start`,
    /// `count`.
    Bytes(Reply, u64, u64),
}

fn ranged_reply(headers: &hyper::HeaderMap, f: &FileRecord) -> Served {
    let etag = files::etag(f);
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let base = |r: Reply| {
        r.with_header(header::ACCEPT_RANGES, "bytes".into())
            .with_header(header::ETAG, etag.clone())
    };
    if text(header::IF_NONE_MATCH).is_some_and(|v| files::none_match(v, &etag)) {
        return Served::Whole(base(octet(Bytes::new()).with_status(304)));
    }
    let len = f.size;
    let mut ranged = match text(header::RANGE) {
        Some(r) => files::parse_range(r, len),
        None => Ranged::Full,
    };
    // If-Range: the range only if the client's copy is this content.
    if text(header::IF_RANGE).is_some_and(|v| v.trim() != etag) {
        ranged = Ranged::Full;
    }
    let (status, start, count) = match ranged {
        Ranged::Full => (200, 0, len),
        Ranged::Part(a, b) => (206, a, b - a + 1),
        Ranged::Unsatisfiable => {
            let body = WireError::new(
                416,
                "bad_range",
                format!("the range is outside the file's {len} bytes"),
            )
            .body();
            let r = base(Reply::csv(body).with_status(416))
                .with_header(header::CONTENT_RANGE, format!("bytes */{len}"));
            return Served::Whole(r);
        }
    };
    let mut reply = base(octet(Bytes::new()).with_status(status));
    if status == 206 {
        reply = reply.with_header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    Served::Bytes(reply, start, count)
}

fn octet(body: Bytes) -> Reply {
    Reply {
        content_type: OCTET,
        ..Reply::csv(body)
    }
}

/// `PUT` or `POST /v1/files/NAME` with the raw content as the body: store
/// it (streamed to disk and hashed in batches on the blocking pool,
/// fsynced before the reply). `201` when new, `200` when replaced, with the manifest
/// row. Each chunk must arrive within `body_timeout_secs`; more than
/// `max_file_bytes` is `413`.
pub async fn put(app: &Arc<App>, req: Request<Incoming>, name: &str) -> Result<Reply, WireError> {
    files::check_name(name)?;
    let p = params(&req, &["device", "token"])?;
    let who = caller(app, &req, &p)?;
    let owner = upload_owner(app, &who, name)?;
    // `[quotas] file_bytes_per_user`: what the owner's other files leave.
    // Checked as the body streams in, and again at the commit.
    let limits = UploadLimits {
        max: app.config.limits.max_file_bytes,
        quota: crate::quotas::applies(
            &app.directory,
            &owner,
            app.config.quotas.file_bytes_per_user,
        ),
        others: owned_bytes(app, &owner, name),
    };
    if declared_too_large(&req, usize::try_from(limits.max).unwrap_or(usize::MAX)) {
        return Err(limits.too_large());
    }
    if let Some(n) = declared_len(&req) {
        crate::quotas::check(
            "file bytes",
            "file_bytes_per_user",
            limits.quota,
            limits.others,
            n,
        )?;
    }
    let idle = Duration::from_secs(app.config.limits.body_timeout_secs);
    let app2 = app.clone();
    let up = crate::blocking::wire("upload failed", move || app2.files.begin_upload()).await?;
    let up = match upload::receive(req.into_body(), up, &limits, idle).await {
        Ok(up) => up,
        Err((up, e)) => {
            // Removing the temp file is disk work too. Raw
            // `spawn_blocking`: detached, nobody waits for it (the
            // request already failed).
            tokio::task::spawn_blocking(move || drop(up));
            return Err(e);
        }
    };
    let done = crate::blocking::wire("upload failed", move || up.finish()).await?;
    let (rec, created) = commit(app, &who, name, owner, limits.quota, done).await?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), file = %log_safe(name), size = rec.size, created, "file stored");
    let mut out = String::from(MANIFEST_HEADER);
    write_row(&rec, &mut out);
    Ok(Reply::csv(out).with_status(if created { 201 } else { 200 }))
}

/// Who will own file `name` after an upload by `who`: its owner when it
/// exists (`who` must manage it), else `who` (a user allowed to create).
fn upload_owner(app: &App, who: &Principal, name: &str) -> Result<String, WireError> {
    let existing = app.files.get(name);
    match &existing {
        Some(f) => app
            .directory
            .authorize(who, Action::ManageOwned, Resource::file(f))?,
        None => app
            .directory
            .authorize(who, Action::CreateOwned, Resource::None)?,
    }
    match (who, &existing) {
        (Principal::User(u), None) => Ok(u.name.clone()),
        (_, Some(f)) => Ok(f.owner.clone()),
        _ => Err(WireError::forbidden("files are uploaded by users")),
    }
}

/// Commit a received upload as file `name`, authorised and counted again
/// under the files lock: no other upload commits between this count and
/// this commit. `(record, created)`.
async fn commit(
    app: &Arc<App>,
    who: &Principal,
    name: &str,
    owner: String,
    quota: u64,
    done: files::Uploaded,
) -> Result<(FileRecord, bool), WireError> {
    let app2 = app.clone();
    let name2 = name.to_string();
    let who2 = who.clone();
    let new_size = done.size;
    crate::blocking::wire("upload failed", move || {
        let dir = &app2.directory;
        let owner2 = owner.clone();
        app2.files
            .commit_upload(&app2.store, &name2, &owner, done, |now| {
                match now {
                    Some(f) => dir.authorize(&who2, Action::ManageOwned, Resource::file(f))?,
                    None => dir.authorize(&who2, Action::CreateOwned, Resource::None)?,
                }
                Ok(crate::quotas::check(
                    "file bytes",
                    "file_bytes_per_user",
                    quota,
                    owned_bytes(&app2, &owner2, &name2),
                    new_size,
                )?)
            })
    })
    .await
}

/// Bytes of the files `owner` owns, except the one named `except` (the
/// file an upload replaces).
fn owned_bytes(app: &App, owner: &str, except: &str) -> u64 {
    app.files
        .all()
        .iter()
        .filter(|f| f.owner == owner && f.name != except)
        .map(|f| f.size)
        .sum()
}

/// The declared `Content-Length` of a request, if any.
fn declared_len<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A management step on file `name` by its owner (or a `control`
/// grantee): authorise, then run `op` on a blocking thread.
async fn manage<T: Send + 'static>(
    app: &Arc<App>,
    req: &Request<Incoming>,
    name: &str,
    what: &'static str,
    op: impl FnOnce(&App, &str) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<(Principal, T), WireError> {
    let p = params(req, &["device", "token"])?;
    let who = caller(app, req, &p)?;
    visible::<FileRecord>(app, &who, Action::ManageOwned, name)?;
    let app2 = app.clone();
    let name2 = name.to_string();
    let out = crate::blocking::wire(what, move || op(&app2, &name2)).await?;
    Ok((who, out))
}

/// `DELETE /v1/files/NAME`: `ok,NAME`.
pub async fn delete(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let (who, gone) = manage(app, &req, name, "delete failed", |app, name| {
        app.files.delete(&app.store, name)
    })
    .await?;
    if !gone {
        return Err(unknown(name));
    }
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), file = %log_safe(name), "file deleted");
    let mut out = String::from("ok,");
    write_csv_text(name, &mut out);
    out.push('\n');
    Ok(Reply::csv(out))
}

/// `POST /v1/files/NAME/password`: a new download password
/// (`name,password`), shown only here; the previous one keeps working
/// until the next rotation.
pub async fn rotate_password(
    app: &Arc<App>,
    req: Request<Incoming>,
    name: &str,
) -> Result<Reply, WireError> {
    let (who, pw) = manage(app, &req, name, "rotate failed", |app, name| {
        app.files.rotate_password(&app.store, name)
    })
    .await?;
    let pw = pw.ok_or_else(|| unknown(name))?;
    tracing::info!(target: "overlord::audit", by = %log_safe(&who.label()), file = %log_safe(name), "file password rotated");
    let mut out = String::from("name,password\n");
    write_csv_text(name, &mut out);
    out.push(',');
    out.push_str(&pw);
    out.push('\n');
    Ok(Reply::csv(out))
}
