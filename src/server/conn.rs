//! One admitted connection: the TLS handshake on the HTTPS port or the
//! check for a TLS client on the plain one, HTTP/1 through hyper until
//! the client or a shutdown closes it, then the (lingering) close.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Shared, HSTS};
use crate::tls::TlsAcceptor;

/// One admitted connection: the TLS handshake on the HTTPS port, a check
/// for a TLS client on the plain one, then HTTP until it closes.
pub(super) async fn connection(
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
