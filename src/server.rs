//! The accept loop: connection cap, HTTP/1 settings, graceful shutdown.
//!
//! `run` is what `main` and the tests both start. It takes a bound
//! listener, an opened server and a shutdown future; when the future
//! completes it stops accepting, lets in-flight requests finish (bounded
//! by `shutdown_grace_secs`), then stops the writer, which commits every
//! queued request before it exits. Nothing acknowledged is lost: a reply
//! `200` is only sent after its readings are fsynced.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::Opened;
use crate::error::WireError;

/// Largest request head (request line and headers) in bytes; larger heads
/// get `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serve until `shutdown` completes, then shut down gracefully.
pub async fn run(
    listener: TcpListener,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Opened { app, writer, .. } = opened;
    let limits = app.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Graceful shutdown: `stop` tells every connection to finish its
    // request in flight and close; each holds a permit until it is gone, so
    // taking back every permit means every connection has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_secs.max(1)))
        .half_close(true)
        .title_case_headers(true)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            app.metrics.connections_refused.inc();
            tokio::spawn(refuse(stream));
            continue;
        };
        let app2 = app.clone();
        let stop = stop_rx.clone();
        let builder = builder.clone();
        let metrics = app.metrics.clone();
        metrics.connections.add(1);
        // Set once a request on this connection had a body: a reply may
        // have gone out before all of it was read (a `413`, say).
        let had_body = Arc::new(AtomicBool::new(false));
        let had_body2 = had_body.clone();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        tokio::spawn(async move {
            let mut stream = stream;
            let conn = builder.serve_connection(
                TokioIo::new(&mut stream),
                service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if !req.body().is_end_stream() {
                        had_body2.store(true, Ordering::Relaxed);
                    }
                    req.extensions_mut().insert(crate::http::Peer(peer.ip()));
                    req.extensions_mut().insert(crate::http::ClientSocket(fd));
                    crate::api::handle(app2.clone(), req)
                }),
            );
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(stop) => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            close(&mut stream, had_body.load(Ordering::Relaxed)).await;
            metrics.connections.add(-1);
            drop(permit);
        });
    }
    drop(listener);
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
    drop(app);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("shut down");
    Ok(())
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
/// have gone out before all of it was read) or input is waiting. A
/// connection of bodiless requests with nothing waiting — a board's or
/// a script's `GET` — just closes, without the wait for the client's FIN.
async fn close(stream: &mut TcpStream, had_body: bool) {
    let mut probe = [0u8; 1];
    let waiting = !matches!(
        stream.try_read(&mut probe),
        Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    if had_body || waiting {
        linger(stream).await;
    } else {
        let _ = stream.shutdown().await;
    }
}

/// Lingering close: close our side and read and discard what the client
/// is still sending before the socket is dropped. Bounded: stops at EOF,
/// after `LINGER_IDLE` without input, after `LINGER_MAX` in all, or after
/// `LINGER_BYTES`.
async fn linger(stream: &mut TcpStream) {
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

/// Answer a connection over the cap with `503` and close it.
async fn refuse(mut stream: TcpStream) {
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
