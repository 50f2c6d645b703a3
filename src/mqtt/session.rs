//! One MQTT connection, from CONNECT to close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::link::{self, ErrorTopics, InFlight, Outbox};
use super::stream::Stream;
use super::topics::{self, Subscription};
use super::wire::{self, reason, Accepted, Bad, In, Out, Refusal, Version};
use super::{feeds, publish};
use crate::app::App;
use crate::auth::{visible, Action, Principal, Resource};
use crate::budget::Charge;
use crate::codec::names::log_safe;
use crate::error::WireError;
use crate::store::{ChannelRecord, DeviceRecord};

/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 16;

/// Packets larger than this are charged to the request-data budget while
/// they are read and processed.
const CHARGE_OVER: usize = 64 * 1024;

/// Bytes a packet may add to the limit on its payload (topic, properties).
const PACKET_SLACK: usize = 64 * 1024;

/// Why a connection ended.
enum End {
    /// The client sent DISCONNECT, or closed.
    Client,
    /// The server is shutting down.
    Shutdown,
    /// A protocol violation or a timeout: a MQTT 5 reason code.
    Error(u8, String),
    /// Killed (slow reader, a refused QoS 1 on 3.1.1): nothing more.
    Killed,
}

/// Read the CONNECT within `connect_timeout_secs`: `None` if it did not
/// come, was malformed, or was another protocol (answered).
async fn read_connect(
    app: &App,
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut BytesMut,
) -> Option<(Version, wire::Connect)> {
    let limits = &app.config.limits;
    let max = limits
        .max_unauthenticated_body_bytes
        .min(limits.max_body_bytes);
    let wait = Duration::from_secs(app.config.mqtt.connect_timeout_secs.max(1));
    let read = async {
        loop {
            match wire::read_connect(buf, max) {
                Ok(Some(c)) => return Some(c),
                Ok(None) => {}
                Err(Bad::Version(_)) => {
                    // 3.1.1's "unacceptable protocol version" is the one
                    // answer every version of client understands.
                    let mut out = BytesMut::new();
                    let refusal = Out::ConnAck(Err(Refusal::ProtocolVersion));
                    wire::write(&refusal, Version::V4, &mut out);
                    let _ = stream.write_all(&out).await;
                    return None;
                }
                Err(_) => return None,
            }
            buf.reserve(512);
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

/// Answer a connection over the cap: CONNACK "server busy" (or "server
/// unavailable" to 3.1.1), then close. Bounded by the CONNECT timeout.
pub async fn refuse_busy(app: Arc<App>, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = BytesMut::new();
    if let Some((version, _)) = read_connect(&app, &mut stream, &mut buf).await {
        let mut out = BytesMut::new();
        wire::write(&Out::ConnAck(Err(Refusal::Busy)), version, &mut out);
        let write = stream.write_all(&out);
        let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
    }
}

/// The caller a CONNECT's username and password name, or the refusal.
fn login(
    app: &App,
    peer: SocketAddr,
    login: Option<(String, String)>,
) -> Result<Principal, Refusal> {
    let Some((user, pass)) = login.filter(|(u, _)| !u.is_empty()) else {
        return Err(Refusal::NotAuthorized);
    };
    match crate::auth::authenticate_login(app, Some(peer.ip()), &user, &pass) {
        Ok(who) => Ok(who),
        Err(e) if e.status == 429 => Err(Refusal::Unavailable),
        Err(_) => {
            tracing::info!(user = %log_safe(&user), peer = %peer.ip(), "mqtt login refused");
            Err(Refusal::BadCredentials)
        }
    }
}

/// Serve one connection (plain TCP or TLS) until it ends.
pub async fn serve<S: Stream>(
    hub: Arc<super::Hub>,
    mut stream: S,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let app = hub.app.clone();
    let mut buf = BytesMut::with_capacity(256);
    let Some((version, connect)) = read_connect(&app, &mut stream, &mut buf).await else {
        // A TLS record (`0x16 0x03`) is never a valid MQTT packet: a
        // client meant for `[mqtt] tls_listen`. Said, as on the HTTP port.
        if buf.starts_with(&[crate::tls::TLS_HANDSHAKE, 0x03]) {
            tracing::info!(peer = %peer, "TLS sent to the plain MQTT port; use [mqtt] tls_listen");
        }
        return;
    };
    let who = match login(&app, peer, connect.login) {
        Ok(who) => who,
        Err(refusal) => {
            let mut out = BytesMut::new();
            wire::write(&Out::ConnAck(Err(refusal)), version, &mut out);
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
            return;
        }
    };
    // Counted before the CONNACK, so a client that saw it sees the count.
    app.metrics.mqtt_connections.add(1);
    let max_ka = app.config.mqtt.max_keep_alive_secs.max(1);
    let keep_alive = match connect.keep_alive {
        0 => max_ka,
        k => k.min(max_ka),
    };
    let (rd, wr) = stream.halves();
    let kill = Arc::new(watch::channel(false).0);
    let id = hub.conn_id();
    // The same caller with the same client id again: the old connection
    // ends (a board back after a dropped link frees its slot at once).
    let session = (!connect.client_id.is_empty()).then(|| (who.label(), connect.client_id));
    if let Some(key) = &session {
        hub.take_over(key.clone(), id, kill.clone());
    }
    let granted = (keep_alive != connect.keep_alive).then_some(keep_alive);
    let (mut conn, acker, writer) = Conn::start(&hub, id, version, who, wr, &kill, granted).await;
    conn.touch();
    let silence = Duration::from_millis(u64::from(keep_alive) * 1500);
    let end = conn
        .read_loop(rd, buf, silence, stop, kill.subscribe())
        .await;
    conn.close(end, acker, writer).await;
    if let Some(key) = &session {
        hub.forget(key, id);
    }
    app.metrics.mqtt_connections.add(-1);
}

/// A connection after CONNECT.
struct Conn {
    hub: Arc<super::Hub>,
    /// This connection's number (`Hub::conn_id`).
    id: u64,
    app: Arc<App>,
    version: Version,
    who: Principal,
    outbox: Outbox,
    /// Publishes in progress, in arrival order (bounded: `max_inflight`).
    inflight: mpsc::Sender<InFlight>,
    errors: ErrorTopics,
    /// Inbox and channel deliveries, by topic.
    feeds: HashMap<String, JoinHandle<()>>,
    max_packet: usize,
    /// The budget charge of the large packet being read.
    charge: Option<Charge>,
    /// When presence was last told of this device.
    touched: Option<Instant>,
}

impl Conn {
    /// Start a connection whose CONNECT was accepted: its writer task
    /// (on `wr`), its PUBACK task and the CONNACK (with the keep-alive
    /// the server chose, `Some` when it is not the client's).
    async fn start(
        hub: &Arc<super::Hub>,
        id: u64,
        version: Version,
        who: Principal,
        wr: impl AsyncWrite + Unpin + Send + 'static,
        kill: &Arc<watch::Sender<bool>>,
        keep_alive: Option<u16>,
    ) -> (Conn, JoinHandle<()>, JoinHandle<()>) {
        let app = hub.app.clone();
        let cfg = &app.config.mqtt;
        let max_packet = app.config.limits.max_body_bytes + PACKET_SLACK;
        let wait = Duration::from_secs(cfg.write_timeout_secs.max(1));
        let (outbox, out_rx) = Outbox::new(cfg.outgoing_queue, wait, kill.clone());
        let writer = tokio::spawn(link::write_loop(out_rx, wr, version, wait, kill.clone()));
        let accepted = Accepted {
            receive_max: cfg.max_inflight.max(1),
            max_packet: u32::try_from(max_packet).unwrap_or(u32::MAX),
            keep_alive,
        };
        outbox.send(Out::ConnAck(Ok(accepted))).await;
        let (inflight, inflight_rx) = mpsc::channel(usize::from(cfg.max_inflight.max(1)));
        let errors = ErrorTopics::default();
        let acker = tokio::spawn(link::ack_loop(
            inflight_rx,
            outbox.clone(),
            version,
            errors.clone(),
            hub.clone(),
            id,
        ));
        let conn = Conn {
            hub: hub.clone(),
            id,
            app: app.clone(),
            version,
            who,
            outbox,
            inflight,
            errors,
            feeds: HashMap::new(),
            max_packet,
            charge: None,
            touched: None,
        };
        (conn, acker, writer)
    }

    /// Read and handle packets until the connection ends.
    async fn read_loop(
        &mut self,
        mut rd: impl AsyncRead + Unpin,
        mut buf: BytesMut,
        silence: Duration,
        mut stop: watch::Receiver<bool>,
        mut killed: watch::Receiver<bool>,
    ) -> End {
        let mut deadline = Instant::now() + silence;
        loop {
            loop {
                match wire::read(&mut buf, self.version, self.max_packet) {
                    Ok(Some(packet)) => {
                        deadline = Instant::now() + silence;
                        self.touch();
                        if let Some(end) = self.handle(packet, &mut killed).await {
                            return end;
                        }
                        self.charge = None;
                    }
                    Ok(None) => break,
                    Err(Bad::TooLarge(n)) => {
                        return End::Error(
                            reason::TOO_LARGE,
                            format!("a packet of {n} bytes is over the limit"),
                        )
                    }
                    Err(Bad::Malformed(why)) => return End::Error(reason::MALFORMED, why),
                    Err(Bad::Version(_)) => {
                        return End::Error(reason::PROTOCOL, "a second CONNECT".into())
                    }
                }
            }
            if let Err(end) = self.make_room(&mut buf) {
                return end;
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return End::Client,
                    Ok(_) => {}
                },
                () = tokio::time::sleep_until(deadline) => {
                    return End::Error(reason::KEEP_ALIVE, "keep-alive timeout".into())
                }
                () = super::wire::until(&mut stop) => return End::Shutdown,
                () = super::wire::until(&mut killed) => return End::Killed,
            }
        }
    }

    /// Room in `buf` for the packet being read: all of it when its header
    /// says how long it is (charged to the budget when large).
    fn make_room(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        let want = wire::frame_len(buf).unwrap_or(0);
        if want > CHARGE_OVER && self.charge.is_none() {
            let charge = self.app.body_budget.charge();
            if !charge.grow(want) {
                return Err(End::Error(
                    reason::QUOTA,
                    "too much request data in flight; retry shortly".into(),
                ));
            }
            self.charge = Some(charge);
        }
        buf.reserve(want.saturating_sub(buf.len()).max(1024));
        Ok(())
    }

    /// A packet counts as contact for a device (at most once a second).
    fn touch(&mut self) {
        let Principal::Device(d) = &self.who else {
            return;
        };
        let now = Instant::now();
        if self
            .touched
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.touched = Some(now);
        self.app
            .presence
            .saw(d.num, crate::codec::timefmt::now_micros());
    }

    async fn handle(&mut self, packet: In, killed: &mut watch::Receiver<bool>) -> Option<End> {
        match packet {
            In::Publish {
                topic,
                qos,
                pkid,
                payload,
                content_type,
            } => {
                if qos > 1 {
                    return Some(End::Error(reason::QOS, "QoS 2 is not supported".into()));
                }
                let job = self.publish_job(&topic, payload, content_type);
                let f = InFlight {
                    pkid: (qos == 1).then_some(pkid),
                    topic,
                    job,
                };
                tokio::select! {
                    r = self.inflight.send(f) => r.err().map(|_| End::Killed),
                    () = super::wire::until(killed) => Some(End::Killed),
                }
            }
            In::Subscribe(pkid, filters) => {
                self.subscribe(pkid, filters).await;
                None
            }
            In::Unsubscribe(pkid, filters) => {
                let n = filters.len();
                for f in filters {
                    if let Some(task) = self.feeds.remove(&f) {
                        task.abort();
                    }
                    if let Ok(Subscription::Errors(d)) = topics::subscription(&f) {
                        self.errors.lock().remove(&d);
                    }
                }
                self.outbox.send(Out::UnsubAck(pkid, n)).await;
                None
            }
            In::PingReq => {
                self.outbox.send(Out::PingResp).await;
                None
            }
            In::Disconnect => Some(End::Client),
            In::Ignored => None,
            In::Unsupported(what) => Some(End::Error(
                reason::PROTOCOL,
                format!("{what} is not supported"),
            )),
        }
    }

    /// Start the work of one PUBLISH on its own task (it runs to the end
    /// even if the connection goes: readings submitted are stored).
    fn publish_job(
        &mut self,
        topic: &str,
        payload: bytes::Bytes,
        content_type: Option<String>,
    ) -> JoinHandle<Result<(), WireError>> {
        let app = self.app.clone();
        let who = self.who.clone();
        let charge = self.charge.take();
        let limit = app.config.limits.max_body_bytes;
        let target = topics::publish(topic).map(|t| match t {
            topics::Publish::Readings(d) => (true, d.to_string()),
            topics::Publish::InboxAck(d) => (false, d.to_string()),
        });
        tokio::spawn(async move {
            let _charge = charge;
            if payload.len() > limit {
                return Err(WireError::new(
                    413,
                    "too_large",
                    format!("the payload is larger than {limit} bytes; send it in parts"),
                ));
            }
            match target {
                Some((true, dev)) => publish::readings(app, who, dev, payload, content_type).await,
                Some((false, dev)) => publish::inbox_ack(app, who, dev, payload).await,
                None => Err(WireError::new(
                    404,
                    "unknown_topic",
                    "publish to overlord/<device>/readings or overlord/<device>/inbox/ack",
                )),
            }
        })
    }

    /// SUBSCRIBE: answer each filter (granted QoS 0, or a reason), then
    /// start the deliveries, so the SUBACK goes out before their rows.
    async fn subscribe(&mut self, pkid: u16, filters: Vec<String>) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut start = Vec::new();
        for f in &filters {
            match self.check_subscription(f) {
                Ok(Some(feed)) => {
                    codes.push(None);
                    start.push((f.clone(), feed));
                }
                Ok(None) => codes.push(None),
                Err(code) => codes.push(Some(code)),
            }
        }
        self.outbox.send(Out::SubAck(pkid, codes)).await;
        for (topic, feed) in start {
            let app = self.app.clone();
            let outbox = self.outbox.clone();
            let task = match feed {
                Feed::Inbox(d) => tokio::spawn(feeds::inbox(app, outbox, d, topic.clone())),
                Feed::Channel(c) => {
                    let who = self.who.clone();
                    tokio::spawn(feeds::channel(app, outbox, who, c, topic.clone()))
                }
                Feed::Errors(dev) => {
                    let rows = self.hub.errors.subscribe();
                    tokio::spawn(feeds::errors(rows, outbox, self.id, dev, topic.clone()))
                }
            };
            if let Some(old) = self.feeds.insert(topic, task) {
                old.abort();
            }
        }
    }

    /// May this connection subscribe to `filter`? `Ok(Some)`: a delivery
    /// to start; `Ok(None)`: granted, nothing to start; `Err`: the reason.
    fn check_subscription(&mut self, filter: &str) -> Result<Option<Feed>, u8> {
        let sub = topics::subscription(filter)?;
        if self.feeds.contains_key(filter) {
            return Ok(None);
        }
        if self.feeds.len() >= MAX_SUBSCRIPTIONS {
            return Err(reason::QUOTA);
        }
        let denied = |_: WireError| reason::NOT_AUTHORIZED;
        match sub {
            Subscription::Inbox(dev) => match &self.who {
                Principal::Device(d) if d.id == dev => {
                    self.app
                        .directory
                        .authorize(&self.who, Action::ReadInbox, Resource::Device(d))
                        .map_err(denied)?;
                    Ok(Some(Feed::Inbox(d.clone())))
                }
                _ => Err(reason::NOT_AUTHORIZED),
            },
            Subscription::Errors(dev) => {
                visible::<DeviceRecord>(&self.app, &self.who, Action::WriteReadings, &dev)
                    .map_err(denied)?;
                self.errors.lock().insert(dev.clone());
                Ok(Some(Feed::Errors(dev)))
            }
            Subscription::Channel(name) => {
                let ch = visible::<ChannelRecord>(&self.app, &self.who, Action::ReadOwned, &name)
                    .map_err(denied)?;
                Ok(Some(Feed::Channel(ch)))
            }
        }
    }

    /// End the connection: let the publishes in progress finish and be
    /// acknowledged (bounded), stop the deliveries, say why (MQTT 5), and
    /// close after what is queued is written.
    async fn close(self, end: End, acker: JoinHandle<()>, writer: JoinHandle<()>) {
        let Conn {
            app,
            version,
            outbox,
            inflight,
            feeds,
            ..
        } = self;
        for task in feeds.into_values() {
            task.abort();
        }
        drop(inflight);
        let grace = Duration::from_secs(app.config.limits.shutdown_grace_secs.max(1));
        if !matches!(end, End::Killed) {
            let _ = tokio::time::timeout(grace, acker).await;
        }
        let why = match end {
            End::Shutdown => Some((reason::SHUTTING_DOWN, "the server is shutting down".into())),
            End::Error(code, text) => Some((code, text)),
            End::Client | End::Killed => None,
        };
        if let (Some((code, text)), Version::V5) = (why, version) {
            outbox.send(Out::Disconnect(code, text)).await;
        }
        drop(outbox);
        let _ = tokio::time::timeout(grace, writer).await;
    }
}

/// A delivery a subscription starts.
enum Feed {
    Inbox(Arc<DeviceRecord>),
    Channel(Arc<ChannelRecord>),
    /// Other connections' errors about this device.
    Errors(String),
}
