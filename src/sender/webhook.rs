//! One webhook attempt: resolve, refuse private addresses (SSRF), connect
//! (TLS for `https`), POST the signed body, read the status and at most
//! [`MAX_RESPONSE_BYTES`] of the answer. Redirects are not followed (a
//! `3xx` is a failure). The caller bounds the whole attempt in time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::codec::names::log_safe;
use crate::outbox::Pending;
use crate::targets::TargetRecord;

/// Bytes of a receiver's answer read (for the history's detail); the rest
/// is not read.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// Why an attempt failed: the receiver's status (0: none) and the detail.
pub type Failed = (u16, String);

/// The TLS settings for `https` receivers: rustls with ring, the Mozilla
/// root certificates and those in `ca_file` (PEM; empty: none). The
/// error is a start-up error.
pub fn tls_config(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if !ca_file.is_empty() {
        let bad = |e: &dyn std::fmt::Display| format!("[notify] ca_file {ca_file}: {e}");
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no certificate in it"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Is `ip` one a webhook may not reach unless `allow_private_targets`:
/// loopback, private, shared (CGNAT), link-local, unique-local,
/// unspecified, broadcast, multicast, "this network"?
pub fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return private(IpAddr::V4(v4));
            }
            let seg = a.segments();
            // The deprecated IPv4-compatible form `::a.b.c.d`, and NAT64's
            // `64:ff9b::a.b.c.d`, reach the IPv4 address inside.
            if (seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]) && seg[6] != 0 {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            let s0 = seg[0];
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
        }
    }
}

/// The signature of `body` sent at unix time `ts` with `secret`:
/// hex HMAC-SHA256 of `<ts>.<body>`.
pub fn sign(secret: &str, ts: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A URL split into what a connection needs.
struct Url {
    https: bool,
    host: String,
    port: u16,
    path: String,
    authority: String,
}

/// Check a webhook URL: `http://` or `https://`, a host, no user info.
/// The error is the text of a `400`.
pub fn check_url(url: &str) -> Result<(), String> {
    parse(url).map(|_| ())
}

fn parse(url: &str) -> Result<Url, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "url is not a valid URL".to_string())?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("url must start with http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("url has no host")?;
    if authority.as_str().contains('@') {
        return Err("url must not carry a user name or password".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("url has no host".into());
    }
    Ok(Url {
        https,
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        authority: authority.as_str().to_string(),
    })
}

/// The addresses of `u` a webhook may use (all of them with
/// `allow_private`). DNS runs on tokio's blocking pool.
async fn resolve(u: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, Failed> {
    let addrs: Vec<SocketAddr> = match u.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, u.port)],
        Err(_) => tokio::net::lookup_host((u.host.as_str(), u.port))
            .await
            .map_err(|e| (0, format!("DNS: {}: {e}", log_safe(&u.host))))?
            .collect(),
    };
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| allow_private || !private(a.ip()))
        .collect();
    if allowed.is_empty() {
        let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err((
            0,
            format!(
                "refused: {} is a private address ([notify] allow_private_targets is off)",
                shown.join(" ")
            ),
        ));
    }
    Ok(allowed)
}

/// POST `p` to `target` once. `Ok(status)` for a `2xx`.
pub async fn post(
    target: &TargetRecord,
    p: &Pending,
    allow_private: bool,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, Failed> {
    let u = parse(&target.to).map_err(|e| (0, e))?;
    let addrs = resolve(&u, allow_private).await?;
    let mut last = String::new();
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or((0, last))?;
    let _ = tcp.set_nodelay(true);
    if u.https {
        let name = rustls::pki_types::ServerName::try_from(u.host.clone())
            .map_err(|_| (0, "url host is not a valid TLS name".to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| (0, format!("TLS: {e}")))?;
        exchange(stream, &u, target, p).await
    } else {
        exchange(tcp, &u, target, p).await
    }
}

async fn exchange<S>(stream: S, u: &Url, target: &TargetRecord, p: &Pending) -> Result<u16, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| (0, format!("HTTP: {e}")))?;
    let conn = tokio::spawn(conn);
    let ts = u64::try_from(crate::codec::timefmt::now_micros() / 1_000_000).unwrap_or(0);
    let mut req = Request::post(u.path.as_str())
        .header(hyper::header::HOST, u.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, target.format.content_type())
        .header(hyper::header::USER_AGENT, "overlord-webhook/1")
        .header("Overlord-Event-Id", p.id())
        .header("Overlord-Timestamp", ts.to_string());
    if !target.secret.is_empty() {
        let sig = sign(&target.secret, ts, &p.body);
        req = req.header("Overlord-Signature", format!("v1={sig}"));
    }
    let req = req
        .body(Full::new(Bytes::from(p.body.clone())))
        .map_err(|e| (0, format!("request: {e}")))?;
    let res = send
        .send_request(req)
        .await
        .map_err(|e| (0, format!("HTTP: {e}")))?;
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut got = Vec::new();
    while got.len() < MAX_RESPONSE_BYTES {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    conn.abort();
    if (200..300).contains(&status) {
        return Ok(status);
    }
    got.truncate(200);
    let text = log_safe(String::from_utf8_lossy(&got).trim()).to_string();
    let why = if (300..400).contains(&status) {
        format!("HTTP {status} (redirects are not followed)")
    } else if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    Err((status, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::192.168.0.1",
        ] {
            assert!(private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "172.32.0.1",
            "64:ff9b::1.1.1.1",
        ] {
            assert!(!private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // Python: hmac.new(b"whsec", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign("whsec", 1_700_000_000, b"{}"),
            "7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://example.com/hook").is_ok());
        assert!(check_url("https://example.com:8443/a?b=c").is_ok());
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("http://user:pw@example.com/").is_err());
        assert!(check_url("example.com").is_err());
    }
}
