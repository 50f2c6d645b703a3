//! Many nodes on one database: the node that holds the claim serves; the
//! others forward every connection to it (docs/scale-out.md, "Many nodes
//! (as built)").
//!
//! A node on PostgreSQL with `[store] node_listen` set binds that address
//! beside its public ports, and listens on it only while it serves (a
//! follower's refuses connections). When it serves the database it
//! publishes, in
//! `node_hold` under its claim, the address the others reach it at and a
//! random key ([`crate::pg::kv::PgKv::advertise`]). A node that finds the
//! database served ([`crate::store::StoreError::InUse`]) becomes a
//! *follower*: it binds its public ports as usual, and hands each
//! connection whole to the serving node's `node_listen`, after a
//! fixed-size preamble ([`Preamble`]) that names the door it came in by
//! (HTTP, HTTPS, MQTT, MQTTS), the client's address, and the key. The
//! serving node checks the key and serves the connection as if it had come
//! to that door from that address: the same limits per source, the same
//! TLS handshake (TLS passes through the follower untouched), the same
//! replies. So every promise of the contract is kept by one node, whichever
//! node a client reaches: `200` means committed, the digest runs once,
//! presence is decided once, a revoked token is refused everywhere at once.
//!
//! Meanwhile the follower asks the serving node every second whether it
//! serves (a keyed probe on `node_listen`, [`alive`]), and tries to take
//! the claim only when it gets no answer; when the serving node dies or
//! freezes (and PostgreSQL frees its lock) one follower takes it, opens the store as a node does on start, publishes
//! its own address, and serves on the ports it already holds; the other
//! followers forward to it from then on. While no node serves, a follower
//! answers plain HTTP with `503` + `Retry-After` and closes the other
//! doors' connections.
//!
//! The key keeps anyone who can reach `node_listen` but cannot read the
//! database from passing a made-up client address (which the limits per
//! source trust); `node_listen` should still be on the nodes' own network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::admission::Gate;

/// The preamble's length in bytes: fixed, so the serving node reads
/// exactly it and not a byte of the client's own.
pub const PREAMBLE: usize = 160;

/// What a forwarded connection starts with.
const MAGIC: &str = "OVERLORD-FORWARD/1";

/// How long a forwarded connection may take to send its preamble.
pub const PREAMBLE_WAIT: Duration = Duration::from_secs(5);

/// How long a follower waits for the serving node to accept.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// How often a follower reads where the serving node is, and tries to
/// take the claim itself.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Preambles being read at once, at most; a connection beyond them is
/// closed at once (a follower sends its preamble with its first bytes,
/// so each is read in moments).
const PENDING_PREAMBLES: usize = 256;

/// The door a connection came in by on the node that took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// Plain HTTP (`listen`).
    Http,
    /// HTTPS (`[tls] listen`); the TLS handshake passes through.
    Https,
    /// MQTT (`[mqtt] listen`).
    Mqtt,
    /// MQTT over TLS (`[mqtt] tls_listen`).
    Mqtts,
    /// Not a client's: a follower asking whether this node serves; it
    /// answers [`ALIVE`] and closes.
    Probe,
}

/// What a serving node answers a [`Door::Probe`].
pub const ALIVE: &[u8] = b"serving\n";

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::Https => "https",
            Door::Mqtt => "mqtt",
            Door::Mqtts => "mqtts",
            Door::Probe => "probe",
        }
    }

    fn parse(s: &str) -> Option<Door> {
        [
            Door::Http,
            Door::Https,
            Door::Mqtt,
            Door::Mqtts,
            Door::Probe,
        ]
        .into_iter()
        .find(|d| d.name() == s)
    }
}

/// The serving node's key: 32 random bytes, shown as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// A new random key.
    pub fn random() -> Key {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the OS random source failed");
        Key(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// The key as published (`node_hold.forward_key`); `None` when empty
    /// or not 64 hex digits.
    pub fn parse(s: &str) -> Option<Key> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Key(s.to_owned()))
    }

    /// Its 64 hex digits, to publish.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this key, in time that does not depend on where
    /// they differ.
    fn matches(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The first [`PREAMBLE`] bytes of a forwarded connection:
/// `OVERLORD-FORWARD/1 <door> <client address> <key>`, padded with spaces,
/// ending in a newline.
pub struct Preamble;

impl Preamble {
    /// The preamble for a connection from `peer` that came in by `door`.
    pub fn encode(door: Door, peer: SocketAddr, key: &Key) -> [u8; PREAMBLE] {
        let text = format!("{MAGIC} {} {peer} {}", door.name(), key.as_str());
        let mut out = [b' '; PREAMBLE];
        // At most 18 + 6 + 47 + 64 + 3 spaces: always fits.
        out[..text.len()].copy_from_slice(text.as_bytes());
        out[PREAMBLE - 1] = b'\n';
        out
    }

    /// The door and client address of a preamble opened with `key`;
    /// `None` for anything else.
    pub fn decode(buf: &[u8; PREAMBLE], key: &Key) -> Option<(Door, SocketAddr)> {
        if buf[PREAMBLE - 1] != b'\n' {
            return None;
        }
        let text = std::str::from_utf8(&buf[..PREAMBLE - 1]).ok()?;
        let mut parts = text.split_ascii_whitespace();
        let (magic, door, peer, got) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if magic != MAGIC || parts.next().is_some() || !key.matches(got) {
            return None;
        }
        Some((Door::parse(door)?, peer.parse().ok()?))
    }
}

/// On the serving node: read a forwarded connection's preamble (bounded
/// in time; the caller bounds how many are read at once); the door and
/// client it names, or `None` (logged) for a connection without the key.
pub(super) async fn opened(
    stream: &mut TcpStream,
    from: SocketAddr,
    key: &Key,
) -> Option<(Door, SocketAddr)> {
    let mut buf = [0u8; PREAMBLE];
    let mut got = 0;
    let read = tokio::time::timeout(PREAMBLE_WAIT, async {
        while got < PREAMBLE {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
        }
        true
    })
    .await;
    if read == Ok(true) {
        if let Some(found) = Preamble::decode(&buf, key) {
            return Some(found);
        }
    }
    // A connection that closes without a byte (a port check, a load
    // balancer's probe of the wrong port) is not worth a line.
    if got > 0 {
        tracing::warn!(%from, "a connection on node_listen without this node's key; closed");
    }
    None
}

/// Whether the serving node `s` serves: it answers a keyed probe on its
/// `node_listen` within [`CONNECT_WAIT`]. A follower tries to take over
/// only when it does not (a serving node that is alive takes its claim
/// back itself after PostgreSQL returns); a node that is frozen, or an
/// address that now belongs to something else, does not answer.
pub async fn alive(s: &Serving) -> bool {
    let ask = async {
        let mut up = TcpStream::connect(&s.addr).await.ok()?;
        let me = up.local_addr().ok()?;
        up.write_all(&Preamble::encode(Door::Probe, me, &s.key))
            .await
            .ok()?;
        let mut got = Vec::with_capacity(ALIVE.len());
        (&mut up)
            .take(ALIVE.len() as u64)
            .read_to_end(&mut got)
            .await
            .ok()?;
        (got == ALIVE).then_some(())
    };
    matches!(tokio::time::timeout(CONNECT_WAIT, ask).await, Ok(Some(())))
}

/// The bound on preambles read at once on the serving node.
pub(super) fn pending_preambles() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(PENDING_PREAMBLES))
}

/// Where a follower forwards to: the serving node's `node_listen` address
/// as it published it, and its key.
#[derive(Clone, Debug)]
pub struct Serving {
    /// `host:port`.
    pub addr: String,
    /// What the preamble carries.
    pub key: Key,
}

/// What a follower knows of the serving node; `None` while no node has
/// published one.
pub type Leader = Arc<RwLock<Option<Serving>>>;

/// The serving node as published in `node_hold`; `None` before one has.
pub async fn lookup(
    target: &crate::pg::Target,
    client: &tokio_postgres::Client,
) -> Result<Option<Serving>, String> {
    let (addr, key) = crate::pg::hold::serving(target, client).await?;
    Ok(Key::parse(&key)
        .filter(|_| !addr.is_empty())
        .map(|key| Serving { addr, key }))
}

/// Keep `leader` up to date from `node_hold`, every [`FOLLOW_EVERY`], on
/// one session (made again when it fails); `first` is told once the
/// first look is done (found or not). Runs until aborted.
pub async fn track(
    target: crate::pg::Target,
    leader: Leader,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut client = None;
    loop {
        if client.is_none() {
            match target.connect().await {
                Ok(c) => client = Some(c),
                Err(e) => tracing::warn!(error = %e, "following: cannot reach PostgreSQL"),
            }
        }
        if let Some(c) = &client {
            match lookup(&target, c).await {
                Ok(now) => *leader.write() = now,
                Err(e) => {
                    tracing::warn!(error = %e, "following: cannot read where the serving node is");
                    client = None;
                }
            }
        }
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// A follower's public ports, borrowed for as long as it follows.
#[derive(Default)]
pub struct Doors<'a> {
    /// Each bound door, with the door it is.
    pub listeners: Vec<(Door, &'a TcpListener)>,
}

/// The connections a follower forwarded, still open.
pub struct Forwarding(Vec<Arc<Gate>>);

impl Forwarding {
    /// Nothing forwarded.
    pub fn none() -> Forwarding {
        Forwarding(Vec::new())
    }

    /// Wait (at most `grace` in all) until every forwarded connection has
    /// ended; whether they all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        let until = tokio::time::Instant::now() + grace;
        let mut all = true;
        for g in &self.0 {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            all &= g.drain(left).await;
        }
        all
    }
}

/// Follow: accept on `doors` and forward each admitted connection to the
/// serving node named by `leader`, until `until` completes; its output,
/// and the connections forwarded by then, which carry on by themselves.
///
/// The HTTP doors share one set of slots (`limits`), the MQTT doors
/// another (`[mqtt] max_connections`, no cap per source), as on the
/// serving node.
pub async fn follow<T>(
    doors: Doors<'_>,
    leader: Leader,
    limits: &crate::config::Limits,
    mqtt_max: usize,
    until: impl std::future::Future<Output = T>,
) -> (T, Forwarding) {
    let gate = Arc::new(Gate::new(limits));
    let mqtt_gate = Arc::new(Gate::new(&crate::config::Limits {
        max_connections: mqtt_max,
        max_connections_per_source: 0,
        ..limits.clone()
    }));
    tokio::pin!(until);
    let mut accepts: Vec<_> = doors.listeners.iter().map(|(d, l)| accept(*d, l)).collect();
    loop {
        let next = futures_util::future::select_all(accepts.iter_mut());
        let ((door, accepted), i, _) = tokio::select! {
            r = next => r,
            out = &mut until => return (out, Forwarding(vec![gate, mqtt_gate])),
        };
        // That door's accept again (the others' stay pending).
        accepts[i] = accept(door, doors.listeners[i].1);
        let Some((stream, peer)) = super::admission::accepted(accepted).await else {
            continue;
        };
        let slots = match door {
            Door::Mqtt | Door::Mqtts => &mqtt_gate,
            _ => &gate,
        };
        let Some(admitted) = slots.admit(peer.ip()) else {
            tokio::spawn(super::admission::refuse(stream, door != Door::Http));
            continue;
        };
        let to = leader.read().clone();
        tokio::spawn(async move {
            forward(stream, peer, door, to).await;
            drop(admitted);
        });
    }
}

/// The next connection on `l`, with the door it is.
fn accept(door: Door, l: &TcpListener) -> Accepting<'_> {
    Box::pin(async move { (door, l.accept().await) })
}

/// A door's accept in progress.
type Accepting<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (Door, std::io::Result<(TcpStream, SocketAddr)>)>
            + Send
            + 'a,
    >,
>;

/// Hand one connection to the serving node; while there is none (or it
/// does not answer), plain HTTP gets `503` + `Retry-After`, the other
/// doors a close.
async fn forward(client: TcpStream, peer: SocketAddr, door: Door, to: Option<Serving>) {
    let up = match &to {
        Some(s) => match tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(&s.addr)).await {
            Ok(Ok(up)) => Some(up),
            Ok(Err(e)) => {
                if seldom() {
                    tracing::warn!(to = %s.addr, error = %e, "following: the serving node refused");
                }
                None
            }
            Err(_) => {
                if seldom() {
                    tracing::warn!(to = %s.addr, "following: the serving node did not answer");
                }
                None
            }
        },
        None => None,
    };
    let (Some(mut up), Some(s)) = (up, to) else {
        if door == Door::Http {
            unavailable(client).await;
        }
        return;
    };
    let _ = up.set_nodelay(true);
    keepalive(&up);
    if up
        .write_all(&Preamble::encode(door, peer, &s.key))
        .await
        .is_err()
    {
        if door == Door::Http {
            unavailable(client).await;
        }
        return;
    }
    splice(client, up).await;
}

/// Whether to log a failed forward now: at most once a second (while the
/// serving node is gone, every connection fails the same way).
pub(super) fn seldom() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.swap(now, Ordering::Relaxed) != now
}

/// `503` + `Retry-After` for a plain HTTP client while no node serves.
async fn unavailable(stream: TcpStream) {
    super::admission::raw_503(
        stream,
        "no node serves the database right now; retry shortly",
    )
    .await;
}

/// After the serving node has closed its side, how long the client's
/// side is still passed on (nothing it sends can be answered any more).
const AFTER_SERVER_CLOSED: Duration = Duration::from_secs(1);

/// After the client has closed its sending side, how long the serving
/// node's reply is still passed on, at most: far longer than any reply
/// it bounds itself (a long-poll's wait, a large download), so only a
/// serving node that froze mid-reply is cut off by it.
const AFTER_CLIENT_CLOSED: Duration = Duration::from_secs(600);

/// Pass bytes both ways until both sides are done. A client that closes
/// its sending side (a board after its request) still gets the whole
/// reply: the serving node bounds that (its own timeouts, a long-poll's
/// wait; [`AFTER_CLIENT_CLOSED`] in the end). Once the serving node has
/// closed, the client's side is cut after [`AFTER_SERVER_CLOSED`], so a
/// client that vanished without a word holds nothing here.
async fn splice(client: TcpStream, up: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let to_server = async {
        let _ = pass(&mut cr, &mut uw).await;
    };
    let to_client = async {
        let _ = pass(&mut ur, &mut cw).await;
    };
    tokio::pin!(to_server, to_client);
    tokio::select! {
        () = &mut to_server => {
            let _ = tokio::time::timeout(AFTER_CLIENT_CLOSED, to_client).await;
        }
        () = &mut to_client => {
            let _ = tokio::time::timeout(AFTER_SERVER_CLOSED, to_server).await;
        }
    }
}

/// Copy `from` into `to` until `from` ends, then end `to`'s sending side.
async fn pass(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let copied = async {
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            to.write_all(&buf[..n]).await?;
        }
    };
    // Ended or failed (a reset), the other side is told: a client gone
    // ends its session on the serving node at once.
    let r: std::io::Result<()> = copied.await;
    let _ = to.shutdown().await;
    r
}

/// TCP keepalive on a follower's connection to the serving node, so one
/// to a machine that vanished is found dead within about half a minute.
fn keepalive(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    let set = |level, name, v: libc::c_int| {
        // SAFETY: `fd` is an open socket for the duration of the call, and
        // `v` a live c_int of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trips_and_refuses_a_wrong_key() {
        let key = Key::random();
        for (door, peer) in [
            (Door::Http, "127.0.0.1:40000"),
            (
                Door::Mqtts,
                "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            ),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let p = Preamble::encode(door, peer, &key);
            assert_eq!(Preamble::decode(&p, &key), Some((door, peer)));
            assert_eq!(Preamble::decode(&p, &Key::random()), None, "another key");
            let mut cut = p;
            cut[PREAMBLE - 1] = b' ';
            assert_eq!(Preamble::decode(&cut, &key), None, "no newline");
        }
        assert!(Key::parse("").is_none());
        assert!(Key::parse(&"g".repeat(64)).is_none());
        assert_eq!(Key::parse(key.as_str()), Some(key.clone()));
        assert_eq!(format!("{key:?}"), "Key(..)", "a key is never shown");
    }
}
