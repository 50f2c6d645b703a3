//! Who gets a connection slot: `[limits] max_connections` in all, and
//! `max_connections_per_source` per source with a reserve for sources
//! that hold none; the rest get a `503` and a close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::WireError;

/// The slots: a permit per open connection, and the per-source counts.
pub(super) struct Gate {
    permits: Arc<Semaphore>,
    sources: Sources,
    /// All the permits (`max_connections`, at least 1).
    all: usize,
}

/// An admitted connection's claim: its source's count and its permit,
/// given back (in that order) when it is dropped.
pub(super) struct Admitted {
    _source: SourceSlot,
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    /// The slots `limits` gives.
    pub(super) fn new(limits: &crate::config::Limits) -> Gate {
        let all = limits.max_connections.max(1);
        // `max_connections_per_source = 0` turns both off (behind a proxy
        // every client has the proxy's address).
        let sources = Sources::new(
            limits.max_connections_per_source,
            match limits.max_connections_per_source {
                0 => 0,
                _ => reserved_slots(all),
            },
        );
        Gate {
            permits: Arc::new(Semaphore::new(all)),
            sources,
            all,
        }
    }

    /// Admit a connection from `ip`, or `None` when there is no slot for
    /// it. The accept loop admits, and so do the tasks that serve
    /// connections another node forwarded (`server::forward`): between
    /// them what one sees free may be taken first by the other, so a
    /// source may take one of the reserved slots a moment early; never
    /// more than `max_connections` in all, nor more than its cap.
    pub(super) fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let source = self.sources.admit(ip, self.permits.available_permits())?;
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Admitted {
            _source: source,
            _permit: permit,
        })
    }

    /// Wait up to `grace` for every admitted connection to be gone;
    /// `false` when some were still open.
    pub(super) async fn drain(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.all).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

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

/// Answer a connection over the cap with `503` and close it. On the
/// HTTPS port a plain-text reply would be noise to a TLS client: it is
/// closed at once.
pub(super) async fn refuse(stream: TcpStream, tls: bool) {
    if tls {
        return;
    }
    raw_503(stream, "too many connections; retry shortly").await;
}

/// `503 overloaded` with `detail` and `Retry-After: 1`, sent before the
/// request is read (so in HTTP/1.1 whatever the client speaks), then a
/// close; at most 2 s.
pub(super) async fn raw_503(mut stream: TcpStream, detail: &str) {
    let body = WireError::overloaded(detail).body();
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

/// A connection an accept loop got, ready to admit (`TCP_NODELAY` set);
/// after a failed accept (`EMFILE` and friends) `None`, once a short
/// pause has passed, so the loop backs off instead of spinning.
pub(super) async fn accepted(
    r: std::io::Result<(TcpStream, std::net::SocketAddr)>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    match r {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
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
