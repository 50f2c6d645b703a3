//! HTTP plumbing shared by the handlers: the reply type, reading a bounded
//! body, and management forms. (A request's credentials are found by
//! [`crate::auth::authenticate`].)

use std::time::Duration;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Request, Response, StatusCode, Version};

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::App;
use crate::auth::{authenticate, Principal};
use crate::budget::{Budget, Charge};
use crate::error::WireError;

/// `Content-Type` of every CSV reply.
pub const CSV: &str = "text/csv; charset=utf-8";

/// `Content-Type` of a JSON reply (`format=json`, `Accept: application/json`).
pub const JSON: &str = "application/json";

/// Does a query ask for JSON? `format=json` (or `csv`, the default), else
/// an `Accept` header naming `application/json`.
pub fn wants_json(headers: &hyper::HeaderMap, format: Option<&str>) -> Result<bool, WireError> {
    match format {
        Some("json") => Ok(true),
        Some("csv") => Ok(false),
        Some(_) => Err(WireError::bad_request(
            "bad_parameter",
            "format: csv (the default) or json",
        )),
        None => Ok(headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("application/json"))),
    }
}

/// A successful CSV table reply as JSON (`codec::json_out`), headers
/// kept; anything else unchanged. Bodies over 64 KiB are converted on a
/// blocking thread.
pub async fn json_view(mut r: Reply) -> Reply {
    if r.status >= 300 || r.content_type != CSV || r.stream.is_some() {
        return r;
    }
    let body = r.body.clone();
    let convert =
        move || crate::codec::json_out::table_to_json(std::str::from_utf8(&body).unwrap_or(""));
    let json = if r.body.len() > 64 * 1024 {
        match crate::blocking::value("JSON view failed", convert).await {
            Ok(j) => j,
            Err(e) => return Reply::from(WireError::from(e)),
        }
    } else {
        convert()
    };
    r.body = json.into();
    r.content_type = JSON;
    r
}

/// A handler's answer before it becomes a hyper response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body; `Content-Length` is always its length.
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(header::HeaderName, String)>,
    /// A body streamed from disk instead of `body` (file downloads);
    /// `Content-Length` is then its length.
    pub stream: Option<FileBody>,
}

/// The response body type of every reply: a whole buffer or a file
/// streamed from disk in chunks.
pub type ResponseBody = BoxBody<Bytes, io::Error>;

/// Chunk read from disk per frame of a streamed body.
pub const FILE_CHUNK: usize = 64 * 1024;

/// `len` bytes of an open file, read in [`FILE_CHUNK`]s as hyper asks for
/// them. `tokio::fs::File` runs each read on the blocking pool, so the
/// async workers never wait for the disk, and at most one chunk per
/// response is in memory.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl FileBody {
    /// Stream `len` bytes of `file` from its current position.
    pub fn new(file: std::fs::File, len: u64) -> FileBody {
        FileBody {
            file: tokio::fs::File::from_std(file),
            remaining: len,
            buf: Vec::new(),
        }
    }

    /// Bytes still to send.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Nothing left to send?
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        use tokio::io::{AsyncRead, ReadBuf};
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this.remaining.min(FILE_CHUNK as u64) as usize;
        if this.buf.len() < want {
            this.buf.resize(want, 0);
        }
        let mut rb = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank under us: end the response short
                    // rather than send bytes that are not there.
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ended early",
                    ))));
                }
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(rb.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Reply {
    /// `200` with a CSV body.
    pub fn csv(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type: CSV,
            body: body.into(),
            headers: Vec::new(),
            stream: None,
        }
    }

    /// Bytes of the body (streamed or not).
    pub fn body_len(&self) -> u64 {
        match &self.stream {
            Some(s) => s.len(),
            None => self.body.len() as u64,
        }
    }

    /// Change the status.
    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Add a header.
    pub fn with_header(mut self, name: header::HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

impl From<WireError> for Reply {
    fn from(e: WireError) -> Reply {
        let mut r = Reply::csv(e.body()).with_status(e.status);
        if let Some(s) = e.retry_after {
            r = r.with_header(header::RETRY_AFTER, s.to_string());
        }
        if let Some(a) = &e.allow {
            r = r.with_header(header::ALLOW, a.clone());
        }
        if e.status == 401 {
            r = r.with_header(header::WWW_AUTHENTICATE, "Basic realm=\"overlord\"".into());
        }
        r
    }
}

/// Build the hyper response. HTTP/1.0 requests get an HTTP/1.0 status
/// line; hyper then closes the connection after the reply.
pub fn into_response(r: Reply, version: Version) -> Response<ResponseBody> {
    let len = r.body_len();
    let body = match r.stream {
        Some(s) => s.boxed(),
        None => Full::new(r.body).map_err(|never| match never {}).boxed(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if version == Version::HTTP_10 {
        *resp.version_mut() = Version::HTTP_10;
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    // Always explicit, so a streamed body is never sent chunked (and a
    // `HEAD` reply announces the length of what a `GET` would send).
    if !h.contains_key(header::CONTENT_LENGTH) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// The server's [`Budget`] of request bytes in flight, put into each
/// request's extensions by the accept loop so that [`read_body`] charges
/// every endpoint's body to it.
#[derive(Debug, Clone)]
pub struct BodyBudget(pub Arc<Budget>);

/// A request body read whole, with its charge on the [`Budget`]: the
/// bytes count as in flight for as long as this (or the [`Charge`] taken
/// from it with [`BodyBytes::into_parts`]) lives.
#[derive(Debug)]
pub struct BodyBytes {
    bytes: Bytes,
    charge: Option<Charge>,
}

impl BodyBytes {
    /// The bytes and the charge that must outlive their use.
    pub fn into_parts(self) -> (Bytes, Option<Charge>) {
        (self.bytes, self.charge)
    }
}

impl std::ops::Deref for BodyBytes {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

/// Read the whole body, at most `max` bytes, within `timeout`, charging
/// it to the server's [`BodyBudget`] (from `ext`) as it arrives: a body
/// that would take the bytes in flight over `body_budget_bytes` is `503
/// overloaded` with `Retry-After`, at once. With a `Content-Length` the
/// buffer is allocated once and charged as it fills; without one it is
/// charged by what it has allocated.
pub async fn read_body(
    ext: &hyper::http::Extensions,
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<BodyBytes, WireError> {
    let too_large = || {
        WireError::new(
            413,
            "too_large",
            format!("the body is larger than {max} bytes; send it in parts"),
        )
    };
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let charge = ext.get::<BodyBudget>().map(|b| b.0.charge());
    let read = async {
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        if let Some(n) = declared {
            buf.reserve_exact(n as usize);
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                WireError::bad_request("bad_body", "the request body could not be read")
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            if buf.capacity() - buf.len() < data.len() {
                buf.reserve(data.len());
            }
            let held = if declared.is_some() {
                buf.len() + data.len()
            } else {
                buf.capacity()
            };
            if let Some(c) = &charge {
                if held > c.bytes() && !c.resize(held) {
                    return Err(WireError::overloaded(
                        "too much request data in flight; retry shortly",
                    ));
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf)
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(WireError::new(
            408,
            "timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(buf)) => Ok(BodyBytes {
            bytes: Bytes::from(buf),
            charge,
        }),
    }
}

/// Is the declared body larger than `max`? (Refuse before reading it.)
pub fn declared_too_large<B>(req: &Request<B>, max: usize) -> bool {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
}

/// The media type of the request, lower case, without parameters.
pub fn media_type<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let t = v.split(';').next()?.trim().to_ascii_lowercase();
    (!t.is_empty()).then_some(t)
}

/// The client's address, put into each request's extensions by the
/// router so authentication can throttle per source.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Put into a request's extensions by the accept loop when it came over
/// HTTPS (`[tls]`): the session cookie is then `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Did the request come over HTTPS?
pub fn is_https(ext: &hyper::http::Extensions) -> bool {
    ext.get::<Https>().is_some()
}

/// The client's socket, put into each request's extensions by the accept
/// loop, so a long-poll can notice that its client went away.
///
/// hyper serves connections with half-close allowed (a board may shut
/// its sending side and still read the reply), so it does not read past a
/// complete request and never sees a client that closed while its
/// request waits. [`ClientSocket::gone`] looks without consuming: it
/// peeks at the socket. End of input (the client closed, or half-closed)
/// or a reset means the client will send nothing more; a long-poll then
/// answers at once with what it has, which frees its slot (a half-closed
/// client still gets that reply). The descriptor stays valid while the
/// request is handled: the connection owns the socket and outlives its
/// requests.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket(pub std::os::fd::RawFd);

impl ClientSocket {
    /// Has the client closed its side (end of input) or reset?
    pub fn gone(&self) -> bool {
        use std::mem::ManuallyDrop;
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor belongs to the live connection this
        // request came on (see above); `ManuallyDrop` keeps us from
        // closing it, and `peek` neither reads it empty nor changes its
        // flags (tokio made it non-blocking already).
        let sock = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(self.0) });
        let mut probe = [0u8; 1];
        match sock.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        }
    }
}

/// The client socket of a request, if known.
pub fn client_socket(ext: &hyper::http::Extensions) -> Option<ClientSocket> {
    ext.get::<ClientSocket>().copied()
}

/// The peer address of a request, if known.
pub fn peer_of(ext: &hyper::http::Extensions) -> Option<IpAddr> {
    ext.get::<Peer>().map(|p| p.0)
}

/// Largest management form body.
pub const MAX_FORM: usize = 16 * 1024;

/// The `name=value` pairs of a request — its query string, then the
/// fields of a form body (at most [`MAX_FORM`] bytes; a body of another
/// type is `415`) — at most `codec::DEFAULT_MAX_FIELDS` of them
/// (`too_many_fields`), with the request's parts.
pub async fn request_pairs(
    req: Request<hyper::body::Incoming>,
    timeout: Duration,
) -> Result<(hyper::http::request::Parts, Vec<(String, String)>), WireError> {
    let mut pairs = crate::codec::form::parse_pairs(req.uri().query().unwrap_or("").as_bytes())?;
    let media = media_type(&req);
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.extensions, body, MAX_FORM, timeout).await?;
    if !body.is_empty() {
        if !matches!(
            media.as_deref(),
            None | Some("application/x-www-form-urlencoded")
        ) {
            return Err(WireError::new(
                415,
                "unsupported_media_type",
                "send form fields (application/x-www-form-urlencoded)",
            ));
        }
        pairs.extend(crate::codec::form::parse_pairs(&body)?);
    }
    if pairs.len() > crate::codec::DEFAULT_MAX_FIELDS {
        return Err(crate::codec::too_many_fields(crate::codec::DEFAULT_MAX_FIELDS).into());
    }
    Ok((parts, pairs))
}

/// The fields of a management request: query parameters and, for a form
/// body, its fields. Unknown names are `bad_parameter`, repeated ones
/// `duplicate_field`.
#[derive(Debug)]
pub struct Form {
    /// The request's headers (for credentials).
    pub headers: HeaderMap,
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// Whether it came over HTTPS.
    pub https: bool,
    fields: Vec<(String, String)>,
}

impl Form {
    /// Read and check the fields of `req` against `allowed`.
    pub async fn read(
        req: Request<hyper::body::Incoming>,
        allowed: &[&str],
        timeout: Duration,
    ) -> Result<Form, WireError> {
        let (parts, fields) = request_pairs(req, timeout).await?;
        // Every name is one of `allowed`, so a set of them finds a repeat
        // in O(1), not by a scan of every earlier field.
        let mut seen = std::collections::HashSet::with_capacity(allowed.len());
        for (k, _) in fields.iter() {
            if !allowed.contains(&k.as_str()) {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!(
                        "unknown field '{}'; use {}",
                        crate::codec::names::clip(k),
                        allowed.join(", ")
                    ),
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(WireError::bad_request(
                    "duplicate_field",
                    format!("{k}: given more than once"),
                ));
            }
        }
        Ok(Form {
            peer: peer_of(&parts.extensions),
            https: is_https(&parts.extensions),
            headers: parts.headers,
            fields,
        })
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field that must be there.
    pub fn require(&self, name: &str) -> Result<&str, WireError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| WireError::bad_request("missing_field", format!("{name} is required")))
    }

    /// An optional number field.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, WireError> {
        match self.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                WireError::bad_request(
                    "bad_value",
                    format!("{name}: '{}' is not a number", crate::codec::names::clip(v)),
                )
            }),
        }
    }

    /// Who is calling (device parameters, Basic or Bearer), possibly
    /// [`Principal::Anonymous`].
    pub fn principal(&self, app: &App) -> Result<Principal, WireError> {
        authenticate(
            app,
            &self.headers,
            self.peer,
            self.get("device"),
            self.get("token"),
        )
    }

    /// Who is calling from the headers alone (when `device` is a field
    /// naming something else), possibly anonymous.
    pub fn header_principal(&self, app: &App) -> Result<Principal, WireError> {
        authenticate(app, &self.headers, self.peer, None, None)
    }

    /// [`Form::principal`], but `401` for nobody.
    pub fn caller(&self, app: &App) -> Result<Principal, WireError> {
        let who = self.principal(app)?;
        if matches!(who, Principal::Anonymous) {
            return Err(WireError::unauthorized("credentials required"));
        }
        Ok(who)
    }
}
