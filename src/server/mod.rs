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
//!
//! Files: this one has the loop and the shutdown; `admission.rs` who
//! gets a connection slot (the global cap, the per-source cap and its
//! reserve, the `503` to the rest); `conn.rs` one connection (the TLS
//! handshake or the check for TLS on the plain port, hyper, the
//! lingering close).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};

use crate::app::Opened;
use crate::tls::TlsAcceptor;

mod admission;
mod conn;
pub mod forward;

pub use admission::reserved_slots;
use admission::{refuse, Gate};
use conn::connection;

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
    /// `[store] node_listen`: connections other nodes forward to this one
    /// while it serves the database, and the key they must open with
    /// ([`forward`]).
    pub forwarded: Option<(TcpListener, forward::Key)>,
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
        ..Listeners::default()
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
    let gate = Arc::new(Gate::new(&limits));
    // Graceful shutdown: `stop` tells every connection to finish its
    // request in flight and close; each holds a permit until it is gone, so
    // taking back every permit means every connection has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mqtt = match mqtt.is_empty() {
        false => Some(crate::mqtt::start(app.clone(), mqtt, stop_rx.clone())?),
        true => None,
    };
    let shared = Arc::new(Shared {
        app: app.clone(),
        builder: hyper_builder(&limits),
        stop: stop_rx,
        hsts: app.config.tls.hsts,
    });
    let adopt = mqtt.as_ref().map(|m| m.adopt());
    accept_loop(listeners, &shared, &gate, adopt, shutdown).await;
    tracing::info!("shutting down: finishing in-flight requests");
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    let _ = stop_tx.send(true);
    if !gate.drain(grace).await {
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

/// hyper's HTTP/1 settings: the header timeout, half-close, title-case
/// headers (for old clients), keep-alive and the head size limit.
fn hyper_builder(limits: &crate::config::Limits) -> http1::Builder {
    let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true)
        .title_case_headers(true)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    builder
}

/// Accept on both ports until `shutdown` completes; each admitted
/// connection runs in its own task. The listeners close on return.
async fn accept_loop(
    listeners: Listeners,
    shared: &Arc<Shared>,
    gate: &Arc<Gate>,
    mqtt: Option<crate::mqtt::Adopt>,
    shutdown: impl Future<Output = ()>,
) {
    let Listeners {
        plain,
        tls,
        forwarded,
    } = listeners;
    let (tls_listener, acceptor) = tls.unzip();
    let (node_listener, key) = forwarded.unzip();
    let pending = forward::pending_preambles();
    tokio::pin!(shutdown);
    loop {
        // One accept path for both ports; `tls` says which one it was.
        let (accepted, tls) = tokio::select! {
            r = accept(plain.as_ref()) => (r, None),
            r = accept(tls_listener.as_ref()) => (r, acceptor.clone()),
            r = accept(node_listener.as_ref()) => {
                // Another node's: its preamble says which door, and
                // whose. Read by a task holding one of the `pending`
                // slots; beyond them, closed.
                let Some((stream, from)) = admission::accepted(r).await else {
                    continue;
                };
                let (Some(key), Ok(slot)) = (key.clone(), pending.clone().try_acquire_owned()) else {
                    if forward::seldom() {
                        tracing::warn!(%from, "too many forwarded connections opening at once; closed");
                    }
                    continue;
                };
                let to = Forwarded {
                    shared: shared.clone(),
                    gate: gate.clone(),
                    tls: acceptor.clone(),
                    mqtt: mqtt.clone(),
                };
                tokio::spawn(async move {
                    to.take(stream, from, &key, slot).await;
                });
                continue;
            }
            () = &mut shutdown => break,
        };
        let Some((stream, peer)) = admission::accepted(accepted).await else {
            continue;
        };
        if let Some(serve) = admit(shared, gate, stream, peer, tls) {
            tokio::spawn(serve);
        }
    }
}

/// Give the connection from `peer` a slot in `gate`: the future that
/// serves it (counted open meanwhile, the slot given back at its end), or
/// `None` when there is no slot, the refusal sent on a task of its own.
fn admit(
    shared: &Arc<Shared>,
    gate: &Gate,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let Some(admitted) = gate.admit(peer.ip()) else {
        shared.app.metrics.connections_refused.inc();
        tokio::spawn(refuse(stream, tls.is_some()));
        return None;
    };
    let shared = shared.clone();
    shared.app.metrics.connections.add(1);
    Some(async move {
        connection(&shared, stream, peer, tls).await;
        shared.app.metrics.connections.add(-1);
        drop(admitted);
    })
}

/// What serves a connection another node forwarded: the same service,
/// slots and TLS as this node's own doors.
struct Forwarded {
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
    mqtt: Option<crate::mqtt::Adopt>,
}

impl Forwarded {
    /// Read the preamble (holding `slot` meanwhile), then serve the
    /// connection as if it had come to the door it names from the client
    /// it names; a probe is answered that this node serves.
    async fn take(
        self,
        mut stream: TcpStream,
        from: SocketAddr,
        key: &forward::Key,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Some((door, peer)) = forward::opened(&mut stream, from, key).await else {
            return;
        };
        drop(slot);
        if door != forward::Door::Probe {
            self.shared.app.metrics.connections_forwarded.inc();
        }
        use forward::Door;
        let tls = match door {
            Door::Probe => {
                use tokio::io::AsyncWriteExt;
                let answer = async {
                    let _ = stream.write_all(forward::ALIVE).await;
                    let _ = stream.shutdown().await;
                };
                let _ = tokio::time::timeout(forward::PREAMBLE_WAIT, answer).await;
                return;
            }
            Door::Http => None,
            Door::Https => match self.tls {
                Some(a) => Some(a),
                None => return,
            },
            Door::Mqtt | Door::Mqtts => {
                if let Some(m) = &self.mqtt {
                    m.serve(stream, peer, door == Door::Mqtts);
                }
                return;
            }
        };
        if let Some(serve) = admit(&self.shared, &self.gate, stream, peer, tls) {
            serve.await;
        }
    }
}

/// The next connection on `listener`; never, when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// `Strict-Transport-Security` on HTTPS replies when `[tls] hsts`: one
/// year, this host only (a LAN name's siblings may not have HTTPS).
pub const HSTS: &str = "max-age=31536000";

/// The next signal on `s`; never, without one.
#[cfg(unix)]
async fn recv_or_never(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// when this is called, not when the future is first polled: call it
/// before telling anyone the server is up, or a SIGTERM sent right after
/// "listening on" (a supervisor stopping a service it just started) would
/// find the default disposition and kill the process uncleanly. Must be
/// called inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            tokio::select! {
                () = recv_or_never(term.as_mut()) => {},
                () = recv_or_never(int.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
