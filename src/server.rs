//! The accept loop: connection cap, HTTP/1 settings, graceful shutdown.
//!
//! `serve` is what `main` starts (`run`, plain HTTP only, is what most
//! tests start). It takes bound listeners (plain HTTP, HTTPS or both:
//! one accept loop, the same limits and service, only the handshake
//! differs), an opened server and a shutdown future; when the future
//! completes it stops accepting, lets in-flight requests finish (bounded
//! by `shutdown_grace_secs`), then stops the writer, which commits every
//! queued request before it exits. Nothing acknowledged is lost: a reply
//! `200` is only sent after its readings are fsynced.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::Opened;
use crate::error::WireError;
use crate::tls::TlsAcceptor;

/// Largest request head (request line and headers) in bytes; larger heads
/// get `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the server listens on: plain HTTP, HTTPS, or both (`listen` and
/// `[tls] listen`). Both go through the same accept loop, limits and
/// service; only the handshake differs.
#[derive(Default)]
pub struct Listeners {
    /// Plain HTTP.
    pub plain: Option<TcpListener>,
    /// HTTPS, with the acceptor that makes its handshakes.
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Serve plain HTTP on `listener` until `shutdown` completes, then shut
/// down gracefully.
pub async fn run(
    listener: TcpListener,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listeners = Listeners {
        plain: Some(listener),
        tls: None,
    };
    serve(listeners, opened, shutdown).await
}

/// What every connection task shares: the app, the hyper settings, the
/// shutdown signal, and whether HTTPS replies carry HSTS.
struct Shared {
    app: Arc<crate::app::App>,
    builder: http1::Builder,
    stop: tokio::sync::watch::Receiver<bool>,
    hsts: bool,
}

/// Serve on `listeners` until `shutdown` completes, then shut down
/// gracefully.
pub async fn serve(
    listeners: Listeners,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Opened {
        app, writer, mqtt, ..
    } = opened;
    let limits = app.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // `max_connections_per_source = 0` turns both off (behind a proxy
    // every client has the proxy's address).
    let sources = Sources::new(
        limits.max_connections_per_source,
        match limits.max_connections_per_source {
            0 => 0,
            _ => reserved_slots(limits.max_connections.max(1)),
        },
    );
    // Graceful shutdown: `stop` tells every connection to finish its
    // request in flight and close; each holds a permit until it is gone, so
    // taking back every permit means every connection has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mqtt = match mqtt.is_empty() {
        false => Some(crate::mqtt::start(app.clone(), mqtt, stop_rx.clone())?),
        true => None,
    };
    let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true)
        .title_case_headers(true)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    let shared = Arc::new(Shared {
        app: app.clone(),
        builder,
        stop: stop_rx,
        hsts: app.config.tls.hsts,
    });
    let Listeners { plain, tls } = listeners;
    let (tls_listener, acceptor) = tls.unzip();
    tokio::pin!(shutdown);
    loop {
        // One accept path for both ports; `tls` says which one it was.
        let (accepted, tls) = tokio::select! {
            r = accept(plain.as_ref()) => (r, None),
            r = accept(tls_listener.as_ref()) => (r, acceptor.clone()),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Only this loop takes permits, so what it sees free stays free
        // until it takes one.
        let Some(source) = sources.admit(peer.ip(), permits.available_permits()) else {
            app.metrics.connections_refused.inc();
            tokio::spawn(refuse(stream, tls.is_some()));
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            app.metrics.connections_refused.inc();
            tokio::spawn(refuse(stream, tls.is_some()));
            continue;
        };
        let shared = shared.clone();
        app.metrics.connections.add(1);
        tokio::spawn(async move {
            connection(&shared, stream, peer, tls).await;
            shared.app.metrics.connections.add(-1);
            drop(source);
            drop(permit);
        });
    }
    drop((plain, tls_listener));
    tracing::info!("shutting down: finishing in-flight requests");
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    if let Some(mqtt) = mqtt {
        mqtt.finish(grace).await;
    }
    drop(shared);
    drop(app);
    crate::blocking::value("writer shutdown", move || writer.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("shut down");
    Ok(())
}

/// The next connection on `listener`; never, when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// One admitted connection: the TLS handshake on the HTTPS port, a check
/// for a TLS client on the plain one, then HTTP until it closes.
async fn connection(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    match tls {
        Some(acceptor) => {
            // A shutdown closes a connection still in its handshake at
            // once, as hyper does one that has not sent a request yet.
            let handshake = tokio::select! {
                r = acceptor.accept(stream, &shared.app.metrics) => r,
                () = stopped(shared.stop.clone()) => return,
            };
            match handshake {
                Ok(stream) => http(shared, stream, peer, fd, true).await,
                Err(e) => e.log(peer, &shared.app.metrics),
            }
        }
        None => http(shared, NotTls::new(stream, peer), peer, fd, false).await,
    }
}

/// The plain port's stream. A TLS handshake as the first byte (an
/// `https://` URL with this port) is refused with a read error, so hyper
/// closes without its `400` in plain text the client cannot read, and is
/// logged; anything else passes through untouched. Checking as hyper
/// reads costs no extra system call and leaves the header timeout as it
/// was.
struct NotTls {
    inner: TcpStream,
    peer: SocketAddr,
    checked: bool,
}

impl NotTls {
    fn new(inner: TcpStream, peer: SocketAddr) -> NotTls {
        NotTls {
            inner,
            peer,
            checked: false,
        }
    }
}

impl AsyncRead for NotTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.checked || !matches!(polled, std::task::Poll::Ready(Ok(()))) {
            return polled;
        }
        let Some(&first) = buf.filled().get(before) else {
            return polled;
        };
        self.checked = true;
        if first != crate::tls::TLS_HANDSHAKE {
            return polled;
        }
        buf.set_filled(before);
        tracing::info!(peer = %self.peer, "TLS sent to the plain HTTP port; closed");
        std::task::Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "TLS sent to the plain HTTP port",
        )))
    }
}

impl AsyncWrite for NotTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve HTTP/1 on `stream` (plain TCP or TLS over it; `fd` is the TCP
/// socket) until the client or a shutdown closes it.
async fn http<S>(shared: &Shared, mut stream: S, peer: SocketAddr, fd: RawFd, https: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Set once a request on this connection had a body: a reply may
    // have gone out before all of it was read (a `413`, say).
    let had_body = Arc::new(AtomicBool::new(false));
    let had_body2 = had_body.clone();
    let app = shared.app.clone();
    let hsts = https && shared.hsts;
    let conn = shared.builder.serve_connection(
        TokioIo::new(&mut stream),
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if !req.body().is_end_stream() {
                had_body2.store(true, Ordering::Relaxed);
            }
            req.extensions_mut().insert(crate::http::Peer(peer.ip()));
            req.extensions_mut()
                .insert(crate::http::BodyBudget(app.body_budget.clone()));
            req.extensions_mut().insert(crate::http::ClientSocket(fd));
            if https {
                req.extensions_mut().insert(crate::http::Https);
            }
            let reply = crate::api::handle(app.clone(), req);
            async move {
                let mut reply = reply.await?;
                if hsts {
                    reply.headers_mut().insert(
                        hyper::header::STRICT_TRANSPORT_SECURITY,
                        hyper::header::HeaderValue::from_static(HSTS),
                    );
                }
                Ok::<_, std::convert::Infallible>(reply)
            }
        }),
    );
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(shared.stop.clone()) => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    close(&mut stream, fd, had_body.load(Ordering::Relaxed)).await;
}

/// `Strict-Transport-Security` on HTTPS replies when `[tls] hsts`: one
/// year, this host only (a LAN name's siblings may not have HTTPS).
pub const HSTS: &str = "max-age=31536000";

/// Connection slots kept for sources that hold no connection yet: 1 in
/// 32 of `max_connections`, at least 1. While any are free, a client that
/// opens its first connection (a monitor's `GET /healthz`) still gets in,
/// however many slots a few busy sources took.
pub fn reserved_slots(max_connections: usize) -> usize {
    (max_connections / 32).max(1)
}

/// Open connections per source, so one source cannot take every slot
/// (`[limits] max_connections_per_source`). A source is an IPv4 address,
/// or the /64 prefix of an IPv6 address (one host's share of a network
/// that hands each host a /64). Entries exist only while the source has a
/// connection open, so the map holds at most `max_connections` of them.
#[derive(Clone)]
struct Sources {
    open: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    /// Most connections per source (0: no limit).
    per_source: usize,
    /// See [`reserved_slots`].
    reserved: usize,
}

/// A source's claim on one of its connections, given back on drop.
struct SourceSlot {
    sources: Sources,
    key: IpAddr,
}

impl Sources {
    fn new(per_source: usize, reserved: usize) -> Sources {
        Sources {
            open: Arc::default(),
            per_source,
            reserved,
        }
    }

    /// The key `ip` is counted under.
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }

    /// Admit a connection from `ip` when `free` global slots are left, or
    /// `None` when its source holds `per_source` connections already, or
    /// holds any and only the reserved slots are left.
    fn admit(&self, ip: IpAddr, free: usize) -> Option<SourceSlot> {
        let key = Self::key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.get(&key).copied().unwrap_or(0);
        if (self.per_source > 0 && held >= self.per_source) || (held > 0 && free <= self.reserved) {
            return None;
        }
        *open.entry(key).or_insert(0) += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Completes once `rx` holds `true` (never if the sender is gone first).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Close a connection after its last reply. Closing a socket with unread
/// input makes the kernel send a reset, which can destroy the reply before
/// the client reads it; so, as nginx does, linger (see [`linger`]) when
/// the client may still be sending: a request had a body (the reply may
/// have gone out before all of it was read) or input is waiting on the
/// socket `fd`. A connection of bodiless requests with nothing waiting —
/// a board's or a script's `GET` — just closes, without the wait for the
/// client's FIN. Over TLS, shutting down sends the `close_notify` first.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, fd: RawFd, had_body: bool) {
    if had_body || input_waiting(fd) {
        linger(stream).await;
    } else {
        let _ = stream.shutdown().await;
    }
}

/// Is input waiting on (or has the client closed) the TCP socket `fd`?
/// A peek, so nothing is consumed.
fn input_waiting(fd: RawFd) -> bool {
    let mut probe = [0u8; 1];
    // SAFETY: `fd` is the socket of the connection being closed, which
    // the caller still owns; `MSG_PEEK | MSG_DONTWAIT` neither consumes
    // input nor blocks.
    let n = unsafe {
        libc::recv(
            fd,
            probe.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}

/// Lingering close: close our side and read and discard what the client
/// is still sending before the socket is dropped. Bounded: stops at EOF,
/// after `LINGER_IDLE` without input, after `LINGER_MAX` in all, or after
/// `LINGER_BYTES`.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    const LINGER_IDLE: Duration = Duration::from_millis(500);
    const LINGER_MAX: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 16 << 20;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match tokio::time::timeout(LINGER_IDLE, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_MAX, drain).await;
}

/// Answer a connection over the cap with `503` and close it. On the
/// HTTPS port a plain-text reply would be noise to a TLS client: it is
/// closed at once.
async fn refuse(mut stream: TcpStream, tls: bool) {
    if tls {
        return;
    }
    let body = WireError::overloaded("too many connections; retry shortly").body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_capped_and_the_reserve_is_for_new_ones() {
        let s = Sources::new(2, 1);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let a1 = s.admit(ip("10.0.0.1"), 10).expect("first");
        let a2 = s.admit(ip("10.0.0.1"), 9).expect("second");
        assert!(s.admit(ip("10.0.0.1"), 8).is_none(), "over the cap");
        // The same host as IPv4-mapped IPv6 is the same source.
        assert!(s.admit(ip("::ffff:10.0.0.1"), 8).is_none());
        // One /64 is one source.
        let _b = s.admit(ip("2001:db8:1:2::1"), 8).expect("v6");
        let _b2 = s.admit(ip("2001:db8:1:2:ffff::9"), 7).expect("same /64");
        assert!(s.admit(ip("2001:db8:1:2::77"), 6).is_none());
        assert!(s.admit(ip("2001:db8:1:3::1"), 6).is_some(), "another /64");
        // Only the reserve left: a source with a connection open waits, a
        // new one gets in.
        assert!(s.admit(ip("10.0.0.2"), 1).is_some());
        drop(a1);
        assert!(s.admit(ip("10.0.0.1"), 1).is_none(), "holds one");
        assert!(s.admit(ip("10.0.0.1"), 2).is_some(), "freed and room");
        // Entries go when their connections do.
        drop(a2);
        assert!(s.open.lock().unwrap().get(&ip("10.0.0.1")).is_none());
    }
}
