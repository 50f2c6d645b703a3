//! https webhooks: a receiver with a certificate from a CA of the test's
//! own gets the signed POST when `[notify] ca_file` names that CA, and a
//! server without it refuses the receiver's certificate.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{column, TestServer};
use tokio_rustls::rustls;

struct TlsReceiver {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
}

/// A CA and a server certificate for `localhost` signed by it: (CA PEM,
/// server config).
fn certificates() -> (String, Arc<rustls::ServerConfig>) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "overlord test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

impl TlsReceiver {
    fn start(config: Arc<rustls::ServerConfig>) -> TlsReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head and body (the body is small: read until it is in).
                loop {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            g.lock().unwrap().push(text.into_owned());
                            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            let _ = tls.flush();
                            break;
                        }
                    }
                }
            }
        });
        TlsReceiver { port, got }
    }
}

#[test]
fn https_receivers_are_checked_against_the_roots_and_ca_file() {
    let (ca_pem, server) = certificates();
    let rx = TlsReceiver::start(server);
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = common::enc(&format!("https://localhost:{}/secure", rx.port));
    let target = format!("name=tls&url={url}&secret=k");
    // With the CA: delivered over TLS, signed.
    let s = TestServer::start_with(|c| {
        c.notify.allow_private_targets = true;
        c.notify.ca_file = ca_file.display().to_string();
    });
    assert_eq!(s.admin_form("POST", "/v1/targets", &target).status, 201);
    let r = s.admin_form("POST", "/v1/targets/tls/test", "");
    assert_eq!(r.status, 201, "{}", r.body);
    let h = s.admin_until("/v1/targets/tls/deliveries", |b| b.contains(",delivered,"));
    assert_eq!(column(&h.body, "outcome"), ["delivered"], "{}", h.body);
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("POST /secure HTTP/1.1\r\n"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("overlord-signature: v1=") || got[0].contains("Overlord-Signature: v1="),
        "{}",
        got[0]
    );
    drop(s);
    // Without it: the certificate is refused, nothing is sent.
    let s = TestServer::start_with(|c| {
        c.notify.allow_private_targets = true;
        c.notify.retry_for_secs = 0;
    });
    assert_eq!(s.admin_form("POST", "/v1/targets", &target).status, 201);
    assert_eq!(s.admin_form("POST", "/v1/targets/tls/test", "").status, 201);
    let h = s.admin_until("/v1/targets/tls/deliveries", |b| b.contains(",dead,"));
    assert!(
        h.body.contains("TLS: invalid peer certificate"),
        "{}",
        h.body
    );
    assert_eq!(rx.got.lock().unwrap().len(), 1, "no request without trust");
}
