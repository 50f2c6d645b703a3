//! What an MQTT connection runs over: plain TCP (`[mqtt] listen`) or TLS
//! (`[mqtt] tls_listen`, the HTTPS listener's [`TlsAcceptor`]: the same
//! certificate, reload and handshake bounds). The session code is the
//! same for both: it is generic over [`Stream`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{session, Hub};
use crate::app::App;
use crate::tls::{TlsAcceptor, TlsStream};

/// A connection's byte stream, split into a half for the reader and a
/// half for the writer task.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reading half.
    type Rd: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Wr: AsyncWrite + Unpin + Send + 'static;
    /// Split the stream.
    fn halves(self) -> (Self::Rd, Self::Wr);
}

impl Stream for TcpStream {
    type Rd = OwnedReadHalf;
    type Wr = OwnedWriteHalf;
    fn halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Stream for TlsStream {
    type Rd = ReadHalf<TlsStream>;
    type Wr = WriteHalf<TlsStream>;
    fn halves(self) -> (Self::Rd, Self::Wr) {
        tokio::io::split(self)
    }
}

/// Serve one accepted connection: straight away on the plain port, after
/// a bounded handshake on the TLS port (a failed one is counted and
/// logged like HTTPS's, and closed).
pub async fn serve(
    hub: Arc<Hub>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        return session::serve(hub, stream, peer, stop).await;
    };
    match acceptor.accept(stream, &hub.app.metrics).await {
        Ok(s) => session::serve(hub, s, peer, stop).await,
        Err(e) => e.log(peer, &hub.app.metrics),
    }
}

/// Answer a connection over the cap ("server busy"), through TLS on the
/// TLS port.
pub async fn refuse_busy(app: Arc<App>, stream: TcpStream, tls: Option<TlsAcceptor>) {
    let Some(acceptor) = tls else {
        return session::refuse_busy(app, stream).await;
    };
    if let Ok(s) = acceptor.accept(stream, &app.metrics).await {
        session::refuse_busy(app, s).await;
    }
}
