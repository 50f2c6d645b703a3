//! The MQTT 3.1.1 and 5 listener: another door into the same ingest path
//! as `POST /v1/readings`, the same inbox and the same channels.
//!
//! - [`wire`]: packets in and out, through the rumqttc codecs;
//! - [`topics`]: the topic names (pure);
//! - `session`: one connection: CONNECT (timeout, credentials through
//!   `auth::authenticate_login`, throttled like HTTP), keep-alive,
//!   packets, subscriptions;
//! - `link`: the connection's bounded outgoing queue and its writer, and
//!   the in-order acknowledgement of publishes (a QoS 1 `PUBACK` is sent
//!   only once the readings are fsynced, like a `200`);
//! - `publish`: what a PUBLISH does (readings through the HTTP ingest
//!   seam, inbox acks through the HTTP ack);
//! - `feeds`: inbox and channel subscriptions, woken like long-polls;
//! - `stream`: plain TCP or TLS under the session (`[mqtt] tls_listen`
//!   uses the HTTPS listener's `TlsAcceptor`).
//!
//! Every wait is bounded: connections (`[mqtt] max_connections`, plain
//! and TLS together; a TLS handshake holds its connection's slot), the
//! CONNECT (`connect_timeout_secs`), silence (1.5 x keep-alive), publishes
//! in progress per client (`max_inflight`), packet size (`[limits]
//! max_body_bytes`; before authentication `max_unauthenticated_body_bytes`),
//! packets waiting for a slow reader (`outgoing_queue`, then the
//! connection is dropped after `write_timeout_secs`).

mod feeds;
mod link;
mod publish;
mod session;
mod stream;
pub mod topics;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::app::App;
use crate::config::MqttConfig;
use crate::tls::TlsAcceptor;

/// Connections over the cap being answered at once, at most.
const REFUSALS: usize = 64;

/// Bind `[mqtt] listen`; `Ok(None)` when it is empty (MQTT off). Done
/// before the data file is opened, like the HTTP port.
pub fn bind(config: &MqttConfig) -> std::io::Result<Option<std::net::TcpListener>> {
    let listen = config.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Bind `[mqtt] tls_listen` when `tls_on` (`[tls]` has a certificate);
/// `Ok(None)` when it is off or empty.
pub fn bind_tls(
    config: &MqttConfig,
    tls_on: bool,
) -> std::io::Result<Option<std::net::TcpListener>> {
    let listen = config.tls_listen.trim();
    if !tls_on || listen.is_empty() {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// The MQTT listeners to serve: plain, and TLS with its acceptor.
#[derive(Default)]
pub struct Listeners {
    /// `[mqtt] listen`.
    pub plain: Option<std::net::TcpListener>,
    /// `[mqtt] tls_listen` and the HTTPS listener's acceptor.
    pub tls: Option<(std::net::TcpListener, TlsAcceptor)>,
}

impl Listeners {
    /// Neither listener.
    pub fn is_empty(&self) -> bool {
        self.plain.is_none() && self.tls.is_none()
    }
}

/// A failed publish's `error,<code>,<detail>` line, for the connections
/// subscribed to its device's errors topic (other than its own, which
/// queues it itself, before its answer).
#[derive(Clone, Debug)]
pub struct ErrorRow {
    /// The connection that published.
    pub conn: u64,
    /// The device the topic named.
    pub device: String,
    /// The line.
    pub line: bytes::Bytes,
}

/// A session: (the caller's label, the client id).
pub type SessionKey = (String, String);

/// The connection holding a session: its number and its kill switch.
type Holder = (u64, Arc<watch::Sender<bool>>);

/// What every connection shares.
pub struct Hub {
    /// The server.
    pub app: Arc<App>,
    /// Failed publishes, to the errors topics (bounded; a subscriber that
    /// lags skips rows).
    pub errors: broadcast::Sender<ErrorRow>,
    /// Numbers connections.
    next_conn: std::sync::atomic::AtomicU64,
    /// The open connection of each (caller, client id), to end when the
    /// same caller connects again with the same id (MQTT's session
    /// takeover). One entry per open connection with a client id.
    sessions: parking_lot::Mutex<HashMap<SessionKey, Holder>>,
}

impl Hub {
    /// Connection `conn` (ended through `kill`) is now `who`'s session
    /// `client_id`: the connection that held it is ended.
    pub fn take_over(&self, key: SessionKey, conn: u64, kill: Arc<watch::Sender<bool>>) {
        if let Some((_, old)) = self.sessions.lock().insert(key, (conn, kill)) {
            old.send_replace(true);
        }
    }

    /// Connection `conn` has closed: forget its session, if still its.
    pub fn forget(&self, key: &SessionKey, conn: u64) {
        let mut sessions = self.sessions.lock();
        if sessions.get(key).is_some_and(|(c, _)| *c == conn) {
            sessions.remove(key);
        }
    }

    /// A new connection's number.
    pub fn conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The running listener, for a graceful shutdown.
pub struct Running {
    permits: Arc<Semaphore>,
    max: u32,
    accept: Vec<tokio::task::JoinHandle<()>>,
    adopt: Adopt,
}

/// Serves MQTT connections another node forwarded to this one
/// (`crate::server::forward`), under the same cap as its own.
#[derive(Clone)]
pub struct Adopt {
    hub: Arc<Hub>,
    permits: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
}

impl Adopt {
    /// Serve `stream` from `peer`, over TLS when it came to the other
    /// node's MQTTS door (closed if this node has none); closed when the
    /// connections are at their cap.
    pub fn serve(&self, stream: TcpStream, peer: std::net::SocketAddr, tls: bool) {
        let tls = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(a)) => Some(a.clone()),
            (true, None) => return,
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.hub.app.metrics.mqtt_refused.inc();
            return;
        };
        let (hub, stop) = (self.hub.clone(), self.stop.clone());
        tokio::spawn(async move {
            stream::serve(hub, stream, peer, tls, stop).await;
            drop(permit);
        });
    }
}

/// Open MQTT connections at most: `[mqtt] max_connections`, at least 1
/// (and at most 2^24, a semaphore's size).
pub fn connection_cap(config: &MqttConfig) -> usize {
    config.max_connections.clamp(1, 1 << 24)
}

/// Serve MQTT on `listeners` until `stop` holds `true`. Must be called on
/// a tokio runtime.
pub fn start(
    app: Arc<App>,
    listeners: Listeners,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Running> {
    let max = connection_cap(&app.config.mqtt);
    let permits = Arc::new(Semaphore::new(max));
    let hub = Arc::new(Hub {
        app,
        errors: broadcast::channel(256).0,
        next_conn: Default::default(),
        sessions: Default::default(),
    });
    let adopt = Adopt {
        hub: hub.clone(),
        permits: permits.clone(),
        tls: listeners.tls.as_ref().map(|(_, a)| a.clone()),
        stop: stop.clone(),
    };
    let tls = listeners.tls.map(|(l, a)| (l, Some(a)));
    let mut accept = Vec::new();
    for (listener, tls) in listeners.plain.map(|l| (l, None)).into_iter().chain(tls) {
        let listener = TcpListener::from_std(listener)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), "mqtt listening");
        }
        let (hub, permits, stop) = (hub.clone(), permits.clone(), stop.clone());
        accept.push(tokio::spawn(accept_loop(hub, listener, tls, permits, stop)));
    }
    Ok(Running {
        permits,
        max: max as u32,
        accept,
        adopt,
    })
}

impl Running {
    /// What serves forwarded MQTT connections.
    pub fn adopt(&self) -> Adopt {
        self.adopt.clone()
    }

    /// Wait (at most `grace`) for every connection to finish: each ends
    /// its publishes in progress, acknowledges them and closes.
    pub async fn finish(self, grace: Duration) {
        for a in &self.accept {
            a.abort();
        }
        if tokio::time::timeout(grace, self.permits.acquire_many(self.max))
            .await
            .is_err()
        {
            tracing::warn!("mqtt connections did not finish within the grace period");
        }
    }
}

async fn accept_loop(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    // Connections over the cap are told so (CONNACK "server busy"), a
    // few at a time; beyond that they are just closed.
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = wire::until(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let app = hub.app.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (stop, hub, tls) = (stop.clone(), hub.clone(), tls.clone());
                tokio::spawn(async move {
                    stream::serve(hub, stream, peer, tls, stop).await;
                    drop(permit);
                });
            }
            Err(_) => {
                app.metrics.mqtt_refused.inc();
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        stream::refuse_busy(app, stream, tls).await;
                        drop(slot);
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_TOML};

    #[test]
    fn on_by_default_and_off_when_empty() {
        let shipped = Config::from_toml(DEFAULT_TOML).unwrap().mqtt;
        let code = MqttConfig::default();
        assert_eq!(shipped.listen, "0.0.0.0:1883");
        assert_eq!(shipped.listen, code.listen);
        assert_eq!(shipped.tls_listen, "0.0.0.0:8883");
        assert_eq!(shipped.tls_listen, code.tls_listen);
        assert_eq!(shipped.max_connections, code.max_connections);
        assert_eq!(shipped.connect_timeout_secs, code.connect_timeout_secs);
        assert_eq!(shipped.max_inflight, code.max_inflight);
        assert_eq!(shipped.outgoing_queue, code.outgoing_queue);
        assert_eq!(shipped.write_timeout_secs, code.write_timeout_secs);
        assert_eq!(shipped.max_keep_alive_secs, code.max_keep_alive_secs);
        let off = Config::from_toml_and_env(DEFAULT_TOML, [("OVERLORD_MQTT__LISTEN", "")]).unwrap();
        assert!(bind(&off.mqtt).unwrap().is_none());
        let on =
            Config::from_toml_and_env(DEFAULT_TOML, [("OVERLORD_MQTT__LISTEN", "127.0.0.1:0")])
                .unwrap();
        assert!(bind(&on.mqtt).unwrap().is_some());
    }
}
