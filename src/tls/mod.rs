//! HTTPS: the certificate, the handshake, reloads.
//!
//! [`TlsAcceptor`] is a cheap, cloneable handle that any listener can use
//! (the HTTP accept loop in `server.rs` does, and MQTT's `[mqtt]
//! tls_listen` through [`TlsAcceptor::with_alpn`]): it holds one rustls `ServerConfig`
//! (TLS 1.2 and 1.3 only, the `ring` provider) whose certificate comes
//! from a [`Certificate`] slot, so a reload swaps the certificate for the
//! next handshake while connections already open keep theirs.
//!
//! A handshake is bounded: at most `max_handshakes` run at once and each
//! connection has `handshake_timeout_secs` from its accept to the end of
//! its handshake, waiting for a slot included. A client that sends plain
//! HTTP to the HTTPS port gets a plain `400 https_required` and a close;
//! anything else that is not a TLS handshake is closed. Both are logged.
//!
//! [`watch`] reloads the files on `SIGHUP` and when they change
//! (`watch.rs`); `selfsigned.rs` makes a certificate for a LAN.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::TlsConfig;
use crate::error::WireError;
use crate::metrics::{Gauge, Metrics};

pub mod selfsigned;
mod watch;

pub use watch::watch;

/// A server-side TLS connection.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Largest certificate or key file read, in bytes: a chain of a few
/// certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The first byte of a TLS record carrying a handshake (a ClientHello).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// The handle every TLS listener accepts with. Clones share the
/// certificate, the handshake slots and the reload state.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    cert: Arc<Certificate>,
    handshakes: Arc<Semaphore>,
    timeout: Duration,
}

/// The current certificate and key, and where they come from.
#[derive(Debug)]
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Why a connection to the TLS port did not become a TLS stream.
#[derive(Debug)]
pub enum HandshakeError {
    /// Plain HTTP was sent to the HTTPS port (answered with a `400`).
    PlainHttp,
    /// The first bytes were neither a TLS handshake nor HTTP.
    NotTls,
    /// The client closed before sending anything.
    Closed,
    /// No finished handshake within `handshake_timeout_secs`.
    Timeout,
    /// The handshake failed (the reason is rustls's; no key material).
    Failed(std::io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::PlainHttp => write!(f, "plain HTTP sent to the HTTPS port"),
            HandshakeError::NotTls => write!(f, "not a TLS handshake"),
            HandshakeError::Closed => write!(f, "closed before a handshake"),
            HandshakeError::Timeout => write!(f, "handshake timed out"),
            HandshakeError::Failed(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

impl TlsAcceptor {
    /// Load `cert_file` and `key_file` from `config` (blocking file
    /// IO: call it off the async workers) and make the acceptor.
    pub fn from_config(config: &TlsConfig) -> Result<TlsAcceptor, String> {
        let cert_file = PathBuf::from(&config.cert_file);
        let key_file = PathBuf::from(&config.key_file);
        let key = load(&cert_file, &key_file)?;
        let cert = Arc::new(Certificate {
            cert_file,
            key_file,
            current: RwLock::new(Arc::new(key)),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        // Session resumption without a full handshake (a board that
        // reconnects saves the certificate check and a signature): stateless
        // tickets, their key random per process and rotated by rustls
        // every 6 h; TLS 1.3 resumption still makes a fresh key exchange.
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
        Ok(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            cert,
            handshakes: Arc::new(Semaphore::new(config.max_handshakes.max(1))),
            timeout: Duration::from_secs(config.handshake_timeout_secs.max(1)),
        })
    }

    /// Read the two files again and, if they load, serve them from the
    /// next handshake on; otherwise keep the current certificate and say
    /// why. Blocking file IO: call it off the async workers. Returns the
    /// new certificate's SHA-256 fingerprint.
    pub fn reload(&self) -> Result<String, String> {
        let key = load(&self.cert.cert_file, &self.cert.key_file)?;
        let fp = fingerprint(&key.cert[0]);
        *self.cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(fp)
    }

    /// The same acceptor (certificate, reloads, handshake slots and
    /// timeout) negotiating `alpn` instead of HTTP's protocols; empty: no
    /// ALPN (a client's offer is ignored, not refused). MQTT uses this.
    pub fn with_alpn(&self, alpn: Vec<Vec<u8>>) -> TlsAcceptor {
        let mut server = (**self.inner.config()).clone();
        server.alpn_protocols = alpn;
        TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            cert: self.cert.clone(),
            handshakes: self.handshakes.clone(),
            timeout: self.timeout,
        }
    }

    /// The SHA-256 fingerprint of the certificate now served.
    pub fn fingerprint(&self) -> String {
        let current = self.cert.current.read().unwrap_or_else(|e| e.into_inner());
        fingerprint(&current.cert[0])
    }

    /// The two files, for the reload watcher.
    pub fn files(&self) -> [&Path; 2] {
        [&self.cert.cert_file, &self.cert.key_file]
    }

    /// Take `stream` through the handshake, bounded by the handshake
    /// timeout (from now) and the handshake slots; `metrics` counts the
    /// handshakes waiting and running.
    pub async fn accept(
        &self,
        stream: TcpStream,
        metrics: &Metrics,
    ) -> Result<TlsStream, HandshakeError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Err(_) => return Err(HandshakeError::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(HandshakeError::Closed),
            Ok(Ok(_)) => {}
        }
        if first[0] != TLS_HANDSHAKE {
            if !first[0].is_ascii_uppercase() {
                return Err(HandshakeError::NotTls);
            }
            // Answered here, so the connection keeps its slot meanwhile.
            https_required(stream).await;
            return Err(HandshakeError::PlainHttp);
        }
        let slot = {
            let _waiting = GaugeGuard::new(&metrics.tls_handshakes_waiting);
            tokio::time::timeout_at(deadline, self.handshakes.acquire()).await
        };
        let Ok(Ok(_slot)) = slot else {
            return Err(HandshakeError::Timeout);
        };
        let _running = GaugeGuard::new(&metrics.tls_handshakes_running);
        match tokio::time::timeout_at(deadline, self.inner.accept(stream)).await {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// One in a gauge while alive.
struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.add(1);
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl HandshakeError {
    /// Count and log a failed handshake: one line, the peer and the
    /// reason (rustls's reasons name protocol faults, never key
    /// material). A client that merely went away is not worth a line at
    /// `info`.
    pub fn log(&self, peer: SocketAddr, metrics: &Metrics) {
        metrics.tls_handshake_failures.inc();
        match self {
            HandshakeError::Closed => tracing::debug!(%peer, "TLS: {self}"),
            _ => tracing::info!(%peer, "TLS: {self}"),
        }
    }
}

/// The crypto provider: rustls's `ring` one.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Answer plain HTTP sent to the HTTPS port with a plain `400` and close.
async fn https_required(mut stream: TcpStream) {
    let body = WireError::bad_request(
        "https_required",
        "this port speaks HTTPS; use https:// (plain HTTP is on the other port)",
    )
    .body();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client is still sending (its head), so closing
        // with unread input does not reset the reply away.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// Read and check a certificate chain and its key. The errors name the
/// file and what is wrong with it, never its contents.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = read_pem(cert_file)?;
    let key_pem = read_pem(key_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{}: not a PEM certificate file", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("{}: no PEM private key in it", key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "{} and {}: {}",
            cert_file.display(),
            key_file.display(),
            describe(&e)
        )
    })
}

/// A rustls error about a certificate and key, in words.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        rustls::Error::InvalidCertificate(_) => "the certificate does not parse".into(),
        rustls::Error::General(_) => "the key is not one rustls can use".into(),
        other => other.to_string(),
    }
}

/// A PEM file's bytes, at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    Ok(bytes)
}

/// A certificate's SHA-256 fingerprint as `AB:CD:...`, as `openssl x509
/// -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
        let made = selfsigned::generate(&["localhost".into()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &made.cert_pem).unwrap();
        std::fs::write(&k, &made.key_pem).unwrap();
        (c, k, made.fingerprint)
    }

    #[test]
    fn a_pair_loads_and_every_bad_one_says_why_without_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (c1, k1, fp1) = pair(tmp.path(), "a");
        let (_, k2, _) = pair(tmp.path(), "b");
        let loaded = load(&c1, &k1).unwrap();
        assert_eq!(fingerprint(&loaded.cert[0]), fp1);
        assert_eq!(fp1.len(), 32 * 3 - 1, "AB:CD:... over 32 bytes");
        let key_text = std::fs::read_to_string(&k2).unwrap();
        let secret = key_text.lines().nth(1).unwrap();
        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!\n").unwrap();
        let big = tmp.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let missing = tmp.path().join("missing.pem");
        for (cert, key, says) in [
            (&c1, &k2, "the key does not belong to the certificate"),
            (&garbage, &k1, "not a PEM certificate file"),
            (&k1, &k1, "no certificate in it"),
            (&c1, &c1, "no PEM private key in it"),
            (&big, &k1, "larger than 1 MiB"),
            (&missing, &k1, "missing.pem"),
        ] {
            let e = load(cert, key).expect_err("refused");
            assert!(e.contains(says), "{e}");
            assert!(!e.contains(secret), "no key material: {e}");
        }
    }
}
